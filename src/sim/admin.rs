//! The account's configuration as its lists show it: ticket, user and organization fields,
//! ticket forms, custom statuses, macros, automations, views, SLA policies, group and
//! organization memberships, business-hours schedules and custom roles.
//!
//! Why apart from `content.rs`: these records give the rest of the account its meaning (a
//! ticket's `custom_status_id`, `ticket_form_id` and custom field ids, a user's
//! `custom_role_id` and `user_fields` keys are ids and keys of these lists), so the first
//! records of each kind are exactly the ones the tickets and users point at
//! ([`super::content::Kind::fixed`]); the rest is generated. The catalogs, paging and rounds are
//! `content.rs`'s; this file makes and changes the records, in the shapes of Zendesk's recorded
//! answers (tests/data/list_*.json) and, for schedules and custom roles, of its reference.

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::content::{Context, Kind};
use super::data::{
    pick, rfc3339, BRAND_IDS, CUSTOM_FIELD_IDS, RECORD_BASE_URL, REGIONS, STATUSES, TAGS, TIERS,
    TIME_ZONES,
};

/// The first custom role: users' `custom_role_id`s are this one and the next two.
pub(crate) const FIRST_CUSTOM_ROLE_ID: i64 = 360_000_600_001;

/// The tickets' custom fields (`CUSTOM_FIELD_IDS`, the types of the values tickets carry), then
/// the system fields every account has.
const TICKET_FIELDS: [(&str, &str); 14] = [
    ("text", "Order reference"),
    ("decimal", "Refund amount"),
    ("checkbox", "Escalated"),
    ("multiselect", "Product areas"),
    ("integer", "Seats affected"),
    ("date", "Follow-up date"),
    ("subject", "Subject"),
    ("description", "Description"),
    ("status", "Status"),
    ("tickettype", "Type"),
    ("priority", "Priority"),
    ("group", "Group"),
    ("assignee", "Assignee"),
    ("custom_status", "Ticket status"),
];

/// Ticket fields every ticket points at, never deleted.
pub(crate) const FIXED_TICKET_FIELDS: usize = TICKET_FIELDS.len();

/// The keys of users' `user_fields` (data.rs), their types and titles.
pub(crate) const USER_FIELDS: [(&str, &str, &str); 5] = [
    ("account_tier", "dropdown", "Account tier"),
    ("lifetime_value", "decimal", "Lifetime value"),
    ("newsletter", "checkbox", "Newsletter"),
    ("signup_date", "date", "Signup date"),
    ("logins", "integer", "Logins"),
];

/// The keys of organizations' `organization_fields` (data.rs), their types and titles.
pub(crate) const ORGANIZATION_FIELDS: [(&str, &str, &str); 5] = [
    ("region", "dropdown", "Region"),
    ("seats", "integer", "Seats"),
    ("enterprise", "checkbox", "Enterprise"),
    ("renewal_date", "date", "Renewal date"),
    ("health_score", "decimal", "Health score"),
];

/// The agent labels of the custom statuses of `STATUSES`, whose ids tickets carry.
pub(crate) const STATUS_LABELS: [&str; 6] =
    ["New", "Open", "Pending", "On-hold", "Solved", "Closed"];

/// The custom roles users point at.
pub(crate) const CUSTOM_ROLES: [&str; 3] = ["Advisor", "Staff", "Team lead"];

const GENERATED_FIELD_TYPES: [&str; 5] = ["text", "textarea", "tagger", "checkbox", "integer"];
const STATUS_CATEGORIES: [&str; 4] = ["open", "pending", "hold", "solved"];
const EXTRA_STATUSES: [&str; 4] = [
    "Waiting on vendor",
    "Escalated to engineering",
    "Awaiting return — “café”",
    "Zurückgestellt",
];
const MACRO_TITLES: [&str; 6] = [
    "Close and redirect to topics",
    "Ask for more information",
    "Refund approved ✓",
    "Escalate to Tier 2",
    "Downgrade and inform",
    "Réponse type: livraison",
];
const AUTOMATION_TITLES: [&str; 4] = [
    "Close ticket 4 days after status is set to solved",
    "Pending notification 24 hours",
    "Pending notification 5 days",
    "Remind assignee of stale high-priority tickets",
];
const VIEW_TITLES: [&str; 6] = [
    "Your unsolved tickets",
    "Unassigned tickets",
    "All unsolved tickets",
    "Recently solved tickets",
    "Pending tickets — VIP",
    "Tickets in your groups",
];
const SLA_TITLES: [&str; 4] = [
    "Incidents",
    "VIP customers",
    "Standard",
    "Billing questions",
];
const SCHEDULE_NAMES: [&str; 4] = ["East Coast", "EMEA business hours", "APAC", "Weekend desk"];
const METRICS: [&str; 4] = [
    "first_reply_time",
    "next_reply_time",
    "requester_wait_time",
    "agent_work_time",
];
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const TICKET_ACCESS: [&str; 3] = ["all", "within-groups", "assigned-only"];

/// A new record of one of this file's kinds (`index`: how many the kind had before).
pub(crate) fn make(
    kind: Kind,
    rng: &mut StdRng,
    context: &Context,
    id: i64,
    index: usize,
    created: i64,
    updated: i64,
) -> Value {
    let (created_at, updated_at) = (rfc3339(created), rfc3339(updated));
    let url = |path: &str| json!(format!("{RECORD_BASE_URL}{path}/{id}.json"));
    let mut record = match kind {
        Kind::TicketFields => ticket_field(rng, id, index),
        Kind::UserFields => custom_field(rng, &USER_FIELDS, index),
        Kind::OrganizationFields => {
            let mut field = custom_field(rng, &ORGANIZATION_FIELDS, index);
            if index == ORGANIZATION_FIELDS.len() {
                // A lookup field, as in Zendesk's recorded answer.
                field.insert("type".into(), json!("lookup"));
                field.insert("relationship_target_type".into(), json!("zen:user"));
                field.insert(
                    "relationship_filter".into(),
                    json!({"all": [{"field": "role", "operator": "is", "value": "4"}], "any": []}),
                );
            }
            field
        }
        Kind::TicketForms => ticket_form(rng, context, index),
        Kind::CustomStatuses => custom_status(rng, index),
        Kind::Macros => object(json!({
            "title": titled(rng, &MACRO_TITLES, index),
            "raw_title": Value::Null,
            "description": if rng.gen_bool(0.5) { json!("Sets the ticket status to `solved`") } else { Value::Null },
            "active": rng.gen_bool(0.8),
            "default": false,
            "position": index,
            "actions": [
                {"field": "status", "value": pick(rng, &STATUSES[1..5])},
                {"field": "comment_value", "value": format!("Thanks — we're on it (#{}).", rng.gen_range(1..1000))},
            ],
            "restriction": restriction(rng, context),
        })),
        Kind::Automations => object(json!({
            "title": titled(rng, &AUTOMATION_TITLES, index),
            "raw_title": Value::Null,
            "active": rng.gen_bool(0.7),
            "default": index == 0,
            "position": index,
            "conditions": {
                "all": [
                    {"field": "status", "operator": "is", "value": "solved"},
                    {"field": "SOLVED", "operator": "greater_than", "value": rng.gen_range(24..200).to_string()},
                ],
                "any": [],
            },
            "actions": [{"field": "status", "value": "closed"}],
        })),
        Kind::Views => object(json!({
            "title": titled(rng, &VIEW_TITLES, index),
            "raw_title": Value::Null,
            "description": if rng.gen_bool(0.5) { json!("This is a wonderful view of your tickets") } else { Value::Null },
            "active": rng.gen_bool(0.85),
            "default": index < 3,
            "position": index,
            "watchable": true,
            "restriction": restriction(rng, context),
            "execution": {
                "group_by": "status",
                "group_order": "asc",
                "sort_by": "nice_id",
                "sort_order": pick(rng, &["asc", "desc"]),
                "columns": [{"id": "subject", "title": "Subject"}, {"id": "requester", "title": "Requester"}],
                "fields": [{"id": "subject", "title": "Subject"}, {"id": "requester", "title": "Requester"}],
                "custom_fields": [],
            },
            "conditions": {
                "all": [{"field": "status", "operator": "less_than", "value": "solved"}],
                "any": [],
            },
        })),
        Kind::SlaPolicies => object(json!({
            "title": format!("{} {}", pick(rng, &SLA_TITLES), index + 1),
            "description": format!("For {} tickets, we respond in {} minutes", pick(rng, &PRIORITIES), rng.gen_range(10..240)),
            "position": index + 1,
            "filter": {
                "all": [{"field": "type", "operator": "is", "value": pick(rng, &["incident", "problem", "question"])}],
                "any": [],
            },
            "policy_metrics": policy_metrics(rng),
        })),
        Kind::GroupMemberships => object(json!({
            "user_id": context.user(rng),
            "group_id": context.group(rng),
            "default": rng.gen_bool(0.3),
        })),
        Kind::OrganizationMemberships => {
            let (organization, name) = context
                .organization(rng)
                .map_or((Value::Null, Value::Null), |(id, name)| {
                    (json!(id), json!(name))
                });
            object(json!({
                "user_id": context.user(rng),
                "organization_id": organization,
                "organization_name": name,
                "default": if rng.gen_bool(0.5) { json!(true) } else { Value::Null },
                "view_tickets": rng.gen_bool(0.7),
            }))
        }
        Kind::Schedules => object(json!({
            "name": format!("{} {}", pick(rng, &SCHEDULE_NAMES), index + 1),
            "time_zone": pick(rng, &TIME_ZONES).0,
            "intervals": intervals(rng.gen_range(7..10), rng.gen_range(16..19)),
        })),
        Kind::CustomRoles => object(json!({
            "name": CUSTOM_ROLES.get(index).map_or_else(|| format!("Role {}", index + 1), |n| (*n).to_owned()),
            "description": "Can automate ticket workflows and make private comments on tickets",
            "role_type": 0,
            "team_member_count": rng.gen_range(0..40),
            "configuration": {
                "chat_access": rng.gen_bool(0.5),
                "end_user_profile": "readonly",
                "forum_access": "readonly",
                "macro_access": pick(rng, &["full", "readonly"]),
                "manage_business_rules": rng.gen_bool(0.3),
                "organization_editing": false,
                "report_access": pick(rng, &["none", "readonly", "full"]),
                "ticket_access": pick(rng, &TICKET_ACCESS),
                "ticket_comment_access": "public",
                "ticket_deletion": false,
                "ticket_tag_editing": true,
                "view_access": "full",
                "voice_access": true,
            },
        })),
        // The other kinds are content.rs's.
        _ => Map::new(),
    };
    // A rule's raw title is its title before dynamic content is rendered: the same here.
    if let Some(title) = record.get("title").cloned() {
        if record.get("raw_title") == Some(&Value::Null) {
            record.insert("raw_title".into(), title);
        }
    }
    let path = kind.path();
    // Schedules and custom statuses carry no `url` in Zendesk's answers.
    if !matches!(kind, Kind::Schedules | Kind::CustomStatuses) {
        record.insert("url".into(), url(path));
    }
    record.insert("id".into(), json!(id));
    record.insert("created_at".into(), json!(created_at));
    record.insert("updated_at".into(), json!(updated_at));
    Value::Object(record)
}

/// One visible change of a record of one of this file's kinds (its `updated_at` is set by the
/// caller); the fixed records are never deactivated.
pub(crate) fn change(
    kind: Kind,
    map: &mut Map<String, Value>,
    change: u32,
    n: i64,
    _ts: i64,
    context: &Context,
) {
    let fixed = map
        .get("id")
        .and_then(Value::as_i64)
        .is_some_and(|id| id < kind.first_id() + kind.fixed() as i64);
    let mut set = |field: &str, value: Value| {
        map.insert(field.into(), value);
    };
    let flip_active = |map: &mut Map<String, Value>| {
        let active = map.get("active").and_then(Value::as_bool).unwrap_or(true);
        map.insert("active".into(), json!(!active));
    };
    match (kind, change) {
        (Kind::TicketFields | Kind::UserFields | Kind::OrganizationFields, 0) => {
            set("description", json!(format!("Updated ✓ #{n}")));
            set("raw_description", json!(format!("Updated ✓ #{n}")));
        }
        (Kind::TicketFields | Kind::UserFields | Kind::OrganizationFields, 1) => {
            set("position", json!(n % 50))
        }
        (Kind::TicketFields | Kind::UserFields | Kind::OrganizationFields, 2) if !fixed => {
            flip_active(map)
        }
        (Kind::TicketFields, _) => set("title_in_portal", json!(format!("Field “{n}”"))),
        (Kind::UserFields | Kind::OrganizationFields, _) => {
            set("raw_title", json!(format!("{{{{dc.field_{n}}}}}")))
        }
        (Kind::TicketForms, 0) => {
            let name = format!("Form {n} — “renamed”");
            set("display_name", json!(name));
            set("raw_display_name", json!(name));
        }
        (Kind::TicketForms, 1) if !fixed => flip_active(map),
        (Kind::TicketForms, 2) if !context.ticket_fields.is_empty() => {
            let fields = &context.ticket_fields;
            let take = 1 + n as usize % fields.len();
            set("ticket_field_ids", json!(&fields[..take]));
        }
        (Kind::TicketForms, _) => set("end_user_visible", json!(n % 2 == 0)),
        (Kind::CustomStatuses, 0) => {
            set("agent_label", json!(format!("Waiting #{n}")));
            set("raw_agent_label", json!(format!("Waiting #{n}")));
        }
        (Kind::CustomStatuses, 1) if !fixed => flip_active(map),
        (Kind::CustomStatuses, _) => set(
            "end_user_description",
            json!(format!("We'll be back to you — {n}")),
        ),
        (Kind::Macros | Kind::Automations | Kind::Views, 0) => {
            let title = format!("Rule {n} — “edited”");
            set("title", json!(title));
            set("raw_title", json!(title));
        }
        (Kind::Macros | Kind::Automations | Kind::Views, 1) => flip_active(map),
        (Kind::Macros | Kind::Views, 2) => {
            let group = context.groups.get(n as usize % context.groups.len().max(1));
            set(
                "restriction",
                group.map_or(
                    Value::Null,
                    |id| json!({"type": "Group", "id": id, "ids": [id]}),
                ),
            );
        }
        (Kind::Macros, _) => set(
            "actions",
            json!([{"field": "priority", "value": PRIORITIES[n as usize % 4]}]),
        ),
        (Kind::Automations, _) => set(
            "conditions",
            json!({"all": [
                {"field": "status", "operator": "is", "value": "pending"},
                {"field": "PENDING", "operator": "is", "value": (24 + n % 100).to_string()},
            ], "any": []}),
        ),
        (Kind::Views, _) => set("position", json!(n % 30)),
        (Kind::SlaPolicies, 0 | 1) => set(
            "policy_metrics",
            json!([{"priority": PRIORITIES[n as usize % 4], "metric": METRICS[n as usize % 4],
                    "target": 10 + n % 120, "business_hours": n % 2 == 0}]),
        ),
        (Kind::SlaPolicies, 2) => set("description", json!(format!("Revised ✓ {n}"))),
        (Kind::SlaPolicies, _) => set("position", json!(1 + n % 10)),
        (Kind::GroupMemberships, _) => {
            let default = map.get("default").and_then(Value::as_bool).unwrap_or(false);
            map.insert("default".into(), json!(!default));
        }
        (Kind::OrganizationMemberships, 0 | 1) => {
            let view = map
                .get("view_tickets")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            map.insert("view_tickets".into(), json!(!view));
        }
        (Kind::OrganizationMemberships, _) => set(
            "default",
            if n % 2 == 0 { json!(true) } else { Value::Null },
        ),
        (Kind::Schedules, 0) => set("name", json!(format!("Schedule {n} — “edited”"))),
        (Kind::Schedules, 1) => set("time_zone", json!(TIME_ZONES[n as usize % 5].0)),
        (Kind::Schedules, _) => set("intervals", intervals(7 + n % 3, 16 + n % 3)),
        (Kind::CustomRoles, 0) => set("team_member_count", json!(n % 40)),
        (Kind::CustomRoles, 1) => set("description", json!(format!("Revised ✓ {n}"))),
        (Kind::CustomRoles, _) => {
            if let Some(Value::Object(configuration)) = map.get_mut("configuration") {
                configuration.insert(
                    "ticket_access".into(),
                    json!(TICKET_ACCESS[n as usize % TICKET_ACCESS.len()]),
                );
            }
        }
        // The kinds of content.rs.
        _ => {}
    }
}

fn titled(rng: &mut StdRng, titles: &[&str], index: usize) -> String {
    format!("{} {}", pick(rng, titles), index + 1)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn ticket_field(rng: &mut StdRng, id: i64, index: usize) -> Map<String, Value> {
    let (kind, title) = match TICKET_FIELDS.get(index) {
        Some(&(kind, title)) => (kind, title.to_owned()),
        None => (
            *pick(rng, &GENERATED_FIELD_TYPES),
            format!("Custom field {}", index + 1),
        ),
    };
    let custom = index < CUSTOM_FIELD_IDS.len() || index >= FIXED_TICKET_FIELDS;
    let mut field = object(json!({
        "type": kind,
        "title": title,
        "raw_title": title,
        "description": if custom { format!("{title} — as the agent sees it") } else { String::new() },
        "raw_description": if custom { format!("{title} — as the agent sees it") } else { String::new() },
        "position": index,
        "active": true,
        "required": false,
        "collapsed_for_agents": false,
        "regexp_for_validation": null,
        "title_in_portal": title,
        "raw_title_in_portal": title,
        "visible_in_portal": !custom || rng.gen_bool(0.5),
        "editable_in_portal": !custom,
        "required_in_portal": false,
        "tag": if kind == "checkbox" { json!(format!("checked_{id}")) } else { Value::Null },
        "removable": custom,
        "agent_description": if custom && rng.gen_bool(0.3) { json!("Only agents see this") } else { Value::Null },
    }));
    match kind {
        "tagger" | "multiselect" => {
            let options: Vec<Value> = TAGS
                .iter()
                .take(if kind == "multiselect" { TAGS.len() } else { 4 })
                .enumerate()
                .map(|(i, tag)| {
                    json!({"id": id * 100 + i as i64, "name": tag.replace('_', " "), "raw_name": tag, "value": tag, "default": false})
                })
                .collect();
            field.insert("custom_field_options".into(), json!(options));
        }
        "status" | "priority" | "tickettype" => {
            let values: &[&str] = match kind {
                "status" => &STATUSES[..5],
                "priority" => &PRIORITIES,
                _ => &["question", "incident", "problem", "task"],
            };
            let options: Vec<Value> = values
                .iter()
                .map(|v| json!({"name": capitalised(v), "value": v}))
                .collect();
            field.insert("system_field_options".into(), json!(options));
            if kind != "tickettype" {
                field.insert("sub_type_id".into(), json!(0));
            }
        }
        "custom_status" => {
            let statuses: Vec<Value> = STATUSES
                .iter()
                .zip(STATUS_LABELS)
                .map(|(status, label)| {
                    json!({"id": super::data::custom_status_id(status), "agent_label": label})
                })
                .collect();
            field.insert("custom_statuses".into(), json!(statuses));
        }
        _ => {}
    }
    field
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn custom_field(
    rng: &mut StdRng,
    fixed: &[(&str, &str, &str)],
    index: usize,
) -> Map<String, Value> {
    let (key, kind, title) = match fixed.get(index) {
        Some(&(key, kind, title)) => (key.to_owned(), kind, title.to_owned()),
        None => (
            format!("custom_field_{}", index + 1),
            "text",
            format!("Custom field {}", index + 1),
        ),
    };
    let mut field = object(json!({
        "type": kind,
        "key": key,
        "title": title,
        "raw_title": title,
        "description": format!("{title} of the account"),
        "raw_description": format!("{title} of the account"),
        "position": index,
        "active": true,
        "system": false,
        "regexp_for_validation": null,
        "relationship_target_type": "",
        "relationship_filter": {"all": null, "any": null},
    }));
    if kind == "dropdown" {
        let values: &[&str] = if key == "region" { &REGIONS } else { &TIERS };
        let options: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": 360_000_590_000 + index as i64 * 10 + i as i64, "name": capitalised(v), "raw_name": capitalised(v), "value": v}))
            .collect();
        field.insert("custom_field_options".into(), json!(options));
    }
    if kind == "checkbox" {
        field.insert("tag".into(), json!(format!("{key}_checked")));
    }
    if rng.gen_bool(0.1) && index >= fixed.len() {
        field.insert("active".into(), json!(false));
    }
    field
}

fn ticket_form(rng: &mut StdRng, context: &Context, index: usize) -> Map<String, Value> {
    let name = match index {
        0 => "Default ticket form".to_owned(),
        1 => "Returns and refunds".to_owned(),
        n => format!("Form {}", n + 1),
    };
    let fields: Vec<i64> = context
        .ticket_fields
        .iter()
        .copied()
        .filter(|_| rng.gen_bool(0.6))
        .collect();
    let restricted = index > 0 && rng.gen_bool(0.3);
    object(json!({
        "name": name,
        "raw_name": name,
        "display_name": name,
        "raw_display_name": name,
        "end_user_visible": index == 0 || rng.gen_bool(0.7),
        "position": index + 1,
        "ticket_field_ids": fields,
        "active": index < 2 || rng.gen_bool(0.8),
        "default": index == 0,
        "in_all_brands": !restricted,
        "restricted_brand_ids": if restricted { json!([BRAND_IDS[1]]) } else { json!([]) },
        "agent_conditions": [],
        "end_user_conditions": [],
    }))
}

fn custom_status(rng: &mut StdRng, index: usize) -> Map<String, Value> {
    let (category, label, default) = match STATUSES.get(index) {
        // A closed ticket is in the solved category.
        Some(&status) => (
            if status == "closed" { "solved" } else { status },
            STATUS_LABELS[index].to_owned(),
            status != "closed",
        ),
        None => (
            *pick(rng, &STATUS_CATEGORIES),
            format!("{} {}", pick(rng, &EXTRA_STATUSES), index + 1),
            false,
        ),
    };
    object(json!({
        "status_category": category,
        "agent_label": label,
        "raw_agent_label": label,
        "end_user_label": label,
        "raw_end_user_label": label,
        "description": format!("Tickets that are {}", label.to_lowercase()),
        "raw_description": format!("Tickets that are {}", label.to_lowercase()),
        "end_user_description": "Your ticket is being looked at",
        "raw_end_user_description": "Your ticket is being looked at",
        "active": true,
        "default": default,
    }))
}

/// Who may use a macro or see a view: anyone, a group or the agent who made it.
fn restriction(rng: &mut StdRng, context: &Context) -> Value {
    match rng.gen_range(0..4) {
        0 => {
            let group = context.group(rng);
            json!({"type": "Group", "id": group, "ids": [group]})
        }
        1 => json!({"type": "User", "id": context.user(rng)}),
        _ => Value::Null,
    }
}

fn policy_metrics(rng: &mut StdRng) -> Value {
    let mut metrics = Vec::new();
    for priority in PRIORITIES {
        if rng.gen_bool(0.6) {
            metrics.push(json!({"priority": priority, "metric": pick(rng, &METRICS),
                "target": rng.gen_range(10..480), "business_hours": rng.gen_bool(0.5)}));
        }
    }
    json!(metrics)
}

/// Monday to Friday, `open` to `close` o'clock, as minutes since Sunday midnight.
fn intervals(open: i64, close: i64) -> Value {
    let days: Vec<Value> = (1..=5)
        .map(|day| json!({"start_time": day * 1440 + open * 60, "end_time": day * 1440 + close * 60}))
        .collect();
    json!(days)
}
