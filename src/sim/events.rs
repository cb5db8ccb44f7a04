//! Zendesk's webhook events for the simulated account's changes: which event types a change of a
//! ticket, user or organization makes, with the `detail` and `event` objects of the envelope
//! Zendesk posts to event-subscribed webhooks (`account_id`, `detail`, `event`, `id`,
//! `subject`, `time`, `type`, `zendesk_event_version`).
//!
//! From Zendesk's reference ("Webhook event types", "Ticket events"): ids in `detail` are
//! strings; ticket `status`, `priority` and `type` are upper-case in ticket events; `subject` is
//! `zen:<object>:<id>`. Which field maps to which event type follows the reference's names
//! (`ticket.status_changed`, `ticket.agent_assignment_changed`, `user.name_changed`, ...);
//! fields without a documented event type (due dates, CCs, a user's phone) make no event. A
//! ticket event's `event` carries `meta.sequence` (one id per change, its position), as the
//! reference describes; the other keys of `event` are the simulator's reading of the examples
//! (`current` / `previous`, `tags_added` / `tags_removed`, `comment`).

use serde_json::{json, Map, Value};

use super::data::{rfc3339, Change, ChangeKind, Object};

/// The `zendesk_event_version` of the envelopes.
pub(crate) const EVENT_VERSION: &str = "2022-11-06";
/// Prefix of every event type.
pub(crate) const EVENT_TYPE_PREFIX: &str = "zen:event-type:";

/// One event of a change, before it gets its envelope id.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// The full type, e.g. `zen:event-type:ticket.status_changed`.
    pub(crate) event_type: String,
    /// `zen:ticket:123`.
    pub(crate) subject: String,
    pub(crate) time: String,
    pub(crate) detail: Value,
    pub(crate) event: Value,
}

fn id_text(value: Option<&Value>) -> Value {
    match value {
        Some(Value::Number(n)) => json!(n.to_string()),
        Some(Value::String(s)) => json!(s),
        _ => Value::Null,
    }
}

fn upper(value: Option<&Value>) -> Value {
    match value.and_then(Value::as_str) {
        Some(text) => json!(text.to_ascii_uppercase()),
        None => Value::Null,
    }
}

fn ticket_detail(ticket: &Map<String, Value>, actor: i64) -> Value {
    let get = |field: &str| ticket.get(field);
    json!({
        "actor_id": actor.to_string(),
        "assignee_id": id_text(get("assignee_id")),
        "brand_id": id_text(get("brand_id")),
        "created_at": get("created_at").cloned().unwrap_or(Value::Null),
        "custom_status": id_text(get("custom_status_id")),
        "description": get("description").cloned().unwrap_or(Value::Null),
        "external_id": id_text(get("external_id")),
        "form_id": id_text(get("ticket_form_id")),
        "group_id": id_text(get("group_id")),
        "id": id_text(get("id")),
        "is_public": get("is_public").cloned().unwrap_or(Value::Null),
        "organization_id": id_text(get("organization_id")),
        "priority": upper(get("priority")),
        "requester_id": id_text(get("requester_id")),
        "status": upper(get("status")),
        "subject": get("subject").cloned().unwrap_or(Value::Null),
        "submitter_id": id_text(get("submitter_id")),
        "tags": get("tags").cloned().unwrap_or(json!([])),
        "type": upper(get("type")),
        "updated_at": get("updated_at").cloned().unwrap_or(Value::Null),
        "via": {"channel": get("via").and_then(|v| v.get("channel")).cloned().unwrap_or(json!("api"))},
    })
}

fn user_detail(user: &Map<String, Value>) -> Value {
    let get = |field: &str| user.get(field);
    json!({
        "created_at": get("created_at").cloned().unwrap_or(Value::Null),
        "email": get("email").cloned().unwrap_or(Value::Null),
        "external_id": id_text(get("external_id")),
        "default_group_id": id_text(get("default_group_id")),
        "id": id_text(get("id")),
        "organization_id": id_text(get("organization_id")),
        "role": get("role").cloned().unwrap_or(Value::Null),
        "updated_at": get("updated_at").cloned().unwrap_or(Value::Null),
    })
}

fn organization_detail(org: &Map<String, Value>) -> Value {
    let get = |field: &str| org.get(field);
    json!({
        "created_at": get("created_at").cloned().unwrap_or(Value::Null),
        "external_id": id_text(get("external_id")),
        "group_id": id_text(get("group_id")),
        "id": id_text(get("id")),
        "name": get("name").cloned().unwrap_or(Value::Null),
        "shared_comments": get("shared_comments").cloned().unwrap_or(Value::Null),
        "shared_tickets": get("shared_tickets").cloned().unwrap_or(Value::Null),
        "updated_at": get("updated_at").cloned().unwrap_or(Value::Null),
    })
}

/// Field → event type (after the domain) of updates, per object.
const TICKET_FIELDS: [(&str, &str); 9] = [
    ("status", "status_changed"),
    ("priority", "priority_changed"),
    ("type", "type_changed"),
    ("subject", "subject_changed"),
    ("assignee_id", "agent_assignment_changed"),
    ("group_id", "group_assignment_changed"),
    ("organization_id", "organization_changed"),
    ("external_id", "external_id_changed"),
    ("tags", "tags_changed"),
];
const USER_FIELDS: [(&str, &str); 7] = [
    ("name", "name_changed"),
    ("tags", "tags_changed"),
    ("time_zone", "time_zone_changed"),
    ("notes", "notes_changed"),
    ("user_fields", "custom_field_changed"),
    ("last_login_at", "last_login_changed"),
    ("external_id", "external_id_changed"),
];
const ORGANIZATION_FIELDS: [(&str, &str); 6] = [
    ("name", "name_changed"),
    ("tags", "tags_changed"),
    ("notes", "notes_changed"),
    ("organization_fields", "custom_field_changed"),
    ("group_id", "group_changed"),
    ("external_id", "external_id_changed"),
];

/// The strings of a JSON array (none for anything else).
pub(crate) fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The `event` object of a field change.
fn field_event(
    object: Object,
    field: &str,
    previous: Option<&Value>,
    current: Option<&Value>,
) -> Value {
    let value = |v: Option<&Value>| -> Value {
        match (object, field) {
            (Object::Tickets, "status" | "priority" | "type") => upper(v),
            (_, f) if f.ends_with("_id") => id_text(v),
            _ => v.cloned().unwrap_or(Value::Null),
        }
    };
    if field == "tags" {
        let (old, new) = (strings(previous), strings(current));
        return json!({
            "tags_added": new.iter().filter(|t| !old.contains(t)).collect::<Vec<_>>(),
            "tags_removed": old.iter().filter(|t| !new.contains(t)).collect::<Vec<_>>(),
        });
    }
    json!({"current": value(current), "previous": value(previous)})
}

/// The events of one change, in a fixed order (a create or delete first, then field changes,
/// then comments).
pub(crate) fn events_of(change: &Change, sequence: &str) -> Vec<Event> {
    let (domain, fields): (&str, &[(&str, &str)]) = match change.object {
        Object::Tickets => ("ticket", &TICKET_FIELDS),
        Object::Users => ("user", &USER_FIELDS),
        Object::Organizations => ("organization", &ORGANIZATION_FIELDS),
    };
    let actor = change
        .comments
        .first()
        .map(|c| c.author_id)
        .or_else(|| change.after.get("assignee_id").and_then(Value::as_i64))
        .unwrap_or(-1);
    let detail = match change.object {
        Object::Tickets => ticket_detail(&change.after, actor),
        Object::Users => user_detail(&change.after),
        Object::Organizations => organization_detail(&change.after),
    };
    let mut kinds: Vec<(String, Value)> = Vec::new();
    match change.kind {
        ChangeKind::Create => kinds.push(("created".into(), json!({}))),
        ChangeKind::Delete => match change.object {
            Object::Tickets => kinds.push(("soft_deleted".into(), json!({}))),
            Object::Users => kinds.push((
                "active_changed".into(),
                json!({"current": false, "previous": true}),
            )),
            Object::Organizations => kinds.push(("deleted".into(), json!({}))),
        },
        ChangeKind::Update => {
            let before = change.before.as_ref();
            for (field, name) in fields {
                let previous = before.and_then(|b| b.get(*field));
                let current = change.after.get(*field);
                if previous != current {
                    kinds.push((
                        (*name).to_string(),
                        field_event(change.object, field, previous, current),
                    ));
                }
            }
            if change.object == Object::Tickets {
                let old = before.and_then(|b| b.get("custom_fields"));
                let new = change.after.get("custom_fields");
                if old != new {
                    let previous: Vec<Value> =
                        old.and_then(Value::as_array).cloned().unwrap_or_default();
                    for field in new.and_then(Value::as_array).into_iter().flatten() {
                        let id = field.get("id").cloned().unwrap_or(Value::Null);
                        let was = previous
                            .iter()
                            .find(|p| p.get("id") == Some(&id))
                            .and_then(|p| p.get("value"))
                            .cloned()
                            .unwrap_or(Value::Null);
                        let now = field.get("value").cloned().unwrap_or(Value::Null);
                        if was != now {
                            kinds.push((
                                "custom_field_changed".into(),
                                json!({
                                    "current": now,
                                    "previous": was,
                                    "custom_field": {"id": id_text(Some(&id))},
                                }),
                            ));
                        }
                    }
                }
            }
        }
    }
    for comment in &change.comments {
        kinds.push((
            "comment_added".into(),
            json!({"comment": {
                "id": comment.id.to_string(),
                "body": comment.body,
                "is_public": comment.public,
                "author": {"id": comment.author_id.to_string()},
            }}),
        ));
    }
    let subject = format!("zen:{domain}:{}", change.id);
    let time = rfc3339(change.ts);
    kinds
        .into_iter()
        .enumerate()
        .map(|(position, (name, mut event))| {
            if change.object == Object::Tickets {
                if let Some(map) = event.as_object_mut() {
                    map.insert(
                        "meta".into(),
                        json!({"sequence": {"id": sequence, "position": position + 1}}),
                    );
                }
            }
            Event {
                event_type: format!("{EVENT_TYPE_PREFIX}{domain}.{name}"),
                subject: subject.clone(),
                time: time.clone(),
                detail: detail.clone(),
                event,
            }
        })
        .collect()
}

/// Whether `subscription` names an event type the way Zendesk accepts: one exact type of a
/// known domain (no wildcard).
pub(crate) fn valid_event_type(subscription: &str) -> bool {
    const DOMAINS: [&str; 8] = [
        "ticket",
        "user",
        "organization",
        "article",
        "community_post",
        "agent_availability",
        "omnichannel_config",
        "messaging_ticket",
    ];
    let Some(rest) = subscription.strip_prefix(EVENT_TYPE_PREFIX) else {
        return false;
    };
    let Some((domain, name)) = rest.split_once('.') else {
        return false;
    };
    DOMAINS.contains(&domain)
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
}

/// Whether an event type is a ticket event type.
pub(crate) fn is_ticket_type(subscription: &str) -> bool {
    subscription.starts_with("zen:event-type:ticket.")
}
