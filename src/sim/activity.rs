//! What follows from the tickets' history: ticket events (one per visible ticket update, with
//! their child events), comments, metric sets and side conversations.
//!
//! The tickets themselves are made in `data.rs` and do not depend on anything here: this module
//! reads each change (the ticket before and after it, see [`TicketLog`]) and draws its own
//! choices from a stream of its own, so the tickets' records stayed byte-identical when it was
//! added.
//!
//! History of a ticket: a `Create` event at `created_at` (its initial values and the description
//! as first comment); for the initial tickets whose `updated_at` is later, one update event at
//! `updated_at` that leads from a plausible earlier state to the current one; then one event per
//! visible update of a round (at the update's `updated_at` second) and one for a delete (status
//! changes to "deleted"). System updates (which move only `generated_timestamp`) leave no event.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::data::{
    description, pick, rfc3339, stream_rng, Table, FIRST_NAMES, FIRST_USER_ID, LAST_NAMES,
    PRIORITIES, RECORD_BASE_URL,
};

/// Ids of events and of their child events (comment ids among them) come from one counter.
pub(crate) const FIRST_EVENT_ID: i64 = 900_000_000_000;
const FIRST_ATTACHMENT_ID: i64 = 498_000_000_000;
/// A ticket's metric set has id `FIRST_METRIC_ID + ticket id`.
pub(crate) const FIRST_METRIC_ID: i64 = 800_000_000_000;
/// Random stream number of this module (see `data::stream_rng`).
const STREAM: u64 = 21;
pub(crate) const TRIGGERS: [(i64, &str); 3] = [
    (360_000_700_001, "Notify requester of comment update"),
    (360_000_700_002, "Auto-assign to first responder"),
    (360_000_700_003, "Escalate VIP tickets"),
];
/// Fields whose initial values a `Create` event records (plus each custom field).
const CREATE_FIELDS: [&str; 7] = [
    "status",
    "priority",
    "type",
    "subject",
    "assignee_id",
    "group_id",
    "tags",
];
/// Fields whose changes a `Change` event records (plus each custom field).
const CHANGE_FIELDS: [&str; 9] = [
    "status",
    "priority",
    "type",
    "subject",
    "assignee_id",
    "group_id",
    "tags",
    "due_at",
    "collaborator_ids",
];
const REPLIES: [&str; 6] = [
    "Thanks for reaching out! Could you send us the order number?",
    "We've refunded order #{n}; it takes 3–5 days ✓",
    "Internal: customer is on the \"Pro\" plan, escalate if needed.",
    "Bitte starten Sie die App neu und versuchen Sie es erneut.",
    "Merci, le problème est résolu.",
    "Still broken 😞\nSee attached log.",
];
const SIDE_SUBJECTS: [&str; 4] = [
    "Help, my printer is on fire!",
    "Question for the warehouse about order {n}",
    "Rückfrage an die Buchhaltung",
    "Escalation: \"VIP\" customer",
];
const LOCATIONS: [(&str, f64, f64); 3] = [
    ("Oslo, Norway", 59.9, 10.7),
    ("San Francisco, CA, United States", 37.77, -122.42),
    ("München, Germany", 48.14, 11.58),
];

/// What kind of ticket change a [`TicketLog`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TicketLogKind {
    Create,
    Update,
    Delete,
}

/// One visible ticket change of a round: the ticket before (None for a create) and after it, and
/// the second it happened (the ticket's new `updated_at`).
pub(crate) struct TicketLog {
    pub(crate) kind: TicketLogKind,
    pub(crate) ts: i64,
    pub(crate) before: Option<Map<String, Value>>,
    pub(crate) after: Map<String, Value>,
}

/// The name of a tracked field: a ticket field, or a custom field (named by its id as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FieldName {
    Named(&'static str),
    Custom(i64),
}

impl FieldName {
    fn text(self) -> String {
        match self {
            FieldName::Named(name) => name.to_string(),
            FieldName::Custom(id) => id.to_string(),
        }
    }
}

/// One child event. Comments (and privacy changes) are kept as JSON text; `Create` / `Change`
/// children, most of an account's events, are kept compact and written out in their event's
/// shape when served.
enum Child {
    /// `comment`: left out of the export without `include=comment_events`.
    Text { comment: bool, json: Box<str> },
    Field {
        id: i64,
        field: FieldName,
        /// JSON text of the value, and of the previous value (`Change` only).
        value: Box<str>,
        previous: Option<Box<str>>,
    },
}

/// One ticket event (an audit), stored in pieces so that both forms of the export are spliced
/// from stored text.
pub(crate) struct Event {
    ticket_id: i64,
    /// The parent's JSON object without `child_events` and without its closing brace.
    head: Box<str>,
    /// Whether the event has a comment, and whether that comment was public then.
    comment: Option<bool>,
    /// `Create` children (a new ticket) rather than `Change` ones.
    create: bool,
    /// Children in the keyed shape (`{"status": "solved", ...}`) rather than the audit one.
    keyed: bool,
    via: Via,
    children: Vec<Child>,
}

impl Event {
    /// The event as the export serves it: with comment child events (`include=comment_events`),
    /// or without them and with `comment_present` / `comment_public` instead.
    pub(crate) fn render(&self, with_comments: bool) -> String {
        let mut text = String::with_capacity(self.head.len() + 200 * self.children.len() + 64);
        text.push_str(&self.head);
        if !with_comments {
            text.push_str(&format!(
                ",\"comment_present\":{},\"comment_public\":{}",
                self.comment.is_some(),
                self.comment == Some(true)
            ));
        }
        text.push_str(",\"child_events\":[");
        let kind = if self.create { "Create" } else { "Change" };
        // The audit shape repeats the event's `via` in every child.
        let via = (!self.keyed).then(|| {
            (
                self.via.object().to_string(),
                self.via.reference().to_string(),
            )
        });
        let mut first = true;
        for child in &self.children {
            if matches!(child, Child::Text { comment: true, .. }) && !with_comments {
                continue;
            }
            if !first {
                text.push(',');
            }
            first = false;
            match child {
                Child::Text { json, .. } => text.push_str(json),
                Child::Field {
                    id,
                    field,
                    value,
                    previous,
                } => match &via {
                    Some((via, reference)) => {
                        text.push_str(&format!(
                            "{{\"id\":{id},\"via\":{via},\"via_reference_id\":{reference},\
                             \"type\":\"{kind}\",\"field_name\":\"{}\",\"value\":{value}",
                            field.text()
                        ));
                        if let Some(previous) = previous {
                            text.push_str(&format!(",\"previous_value\":{previous}"));
                        }
                        text.push_str(&format!(",\"event_type\":\"{kind}\"}}"));
                    }
                    None => {
                        text.push_str(&format!("{{\"id\":{id},\"event_type\":\"{kind}\""));
                        if *field == FieldName::Named("tags") {
                            let parse = |text: Option<&str>| -> Vec<String> {
                                text.and_then(|t| serde_json::from_str::<Value>(t).ok())
                                    .map(|v| string_list(&v))
                                    .unwrap_or_default()
                            };
                            let new = parse(Some(value));
                            let old = parse(previous.as_deref());
                            let added: Vec<&String> =
                                new.iter().filter(|t| !old.contains(t)).collect();
                            let removed: Vec<&String> =
                                old.iter().filter(|t| !new.contains(t)).collect();
                            text.push_str(&format!(
                                ",\"added_tags\":{},\"removed_tags\":{}",
                                json!(added),
                                json!(removed)
                            ));
                        }
                        text.push_str(&format!(",\"{}\":{value}", field.text()));
                        if let Some(previous) = previous {
                            text.push_str(&format!(",\"previous_value\":{previous}"));
                        }
                        text.push('}');
                    }
                },
            }
        }
        text.push_str("]}");
        text
    }
}

/// Where a comment is and whether it is public now.
struct Comment {
    ticket_id: i64,
    public_now: bool,
}

/// A ticket's metric set: counters and times, and the JSON they render to.
struct Metric {
    ticket_id: i64,
    created: i64,
    updated: i64,
    group_stations: i64,
    assignee_stations: i64,
    reopens: i64,
    replies: i64,
    assignee_updated_at: Option<i64>,
    requester_updated_at: Option<i64>,
    status_updated_at: i64,
    initially_assigned_at: Option<i64>,
    assigned_at: Option<i64>,
    solved_at: Option<i64>,
    latest_comment_added_at: Option<i64>,
    reply_time: Option<i64>,
    first_resolution_time: Option<i64>,
    full_resolution_time: Option<i64>,
    agent_wait_time: Option<i64>,
    requester_wait_time: Option<i64>,
    on_hold_time: i64,
    /// Tickets without a business-hours schedule have null business minutes.
    business: bool,
    json: Box<str>,
}

/// What a ticket update did, as far as its metric set cares.
struct MetricUpdate {
    ts: i64,
    status: Option<(String, String)>,
    assigned: Option<bool>,
    group_changed: bool,
    /// The comment's publicity, and whether the requester wrote it.
    comment: Option<(bool, bool)>,
    by_requester: bool,
    by_assignee: bool,
}

impl MetricUpdate {
    /// What a change of `fields` at `ts` does to the metrics, before its comment and author.
    fn of_fields(ts: i64, fields: &[FieldChange]) -> MetricUpdate {
        let named = |name| fields.iter().find(|f| f.field == FieldName::Named(name));
        MetricUpdate {
            ts,
            status: named("status").map(|f| {
                (
                    f.previous.as_str().unwrap_or_default().to_string(),
                    f.value.as_str().unwrap_or_default().to_string(),
                )
            }),
            assigned: named("assignee_id").map(|f| !f.value.is_null()),
            group_changed: named("group_id").is_some(),
            comment: None,
            by_requester: false,
            by_assignee: false,
        }
    }
}

fn solved(status: &str) -> bool {
    status == "solved" || status == "closed"
}

fn minutes(from: i64, to: i64) -> i64 {
    (to - from).max(0) / 60
}

impl Metric {
    fn new(ticket: &Map<String, Value>, ts: i64, business: bool) -> Self {
        let ticket_id = int(ticket, "id").unwrap_or(0);
        let assigned = int(ticket, "assignee_id").is_some();
        let status = text(ticket, "status");
        let solved_now = solved(&status);
        let mut metric = Self {
            ticket_id,
            created: ts,
            updated: ts,
            group_stations: i64::from(int(ticket, "group_id").is_some()),
            assignee_stations: i64::from(assigned),
            reopens: 0,
            replies: 0,
            assignee_updated_at: None,
            requester_updated_at: Some(ts),
            status_updated_at: ts,
            initially_assigned_at: assigned.then_some(ts),
            assigned_at: assigned.then_some(ts),
            solved_at: solved_now.then_some(ts),
            latest_comment_added_at: Some(ts),
            reply_time: None,
            first_resolution_time: solved_now.then_some(0),
            full_resolution_time: solved_now.then_some(0),
            agent_wait_time: None,
            requester_wait_time: None,
            on_hold_time: 0,
            business,
            json: Box::from(""),
        };
        metric.render();
        metric
    }

    fn apply(&mut self, update: &MetricUpdate) {
        let ts = update.ts;
        self.updated = ts;
        if let Some((old, new)) = &update.status {
            let waited = minutes(self.status_updated_at, ts);
            match old.as_str() {
                "hold" => self.on_hold_time += waited,
                "pending" => *self.agent_wait_time.get_or_insert(0) += waited,
                "new" | "open" => *self.requester_wait_time.get_or_insert(0) += waited,
                _ => {}
            }
            self.status_updated_at = ts;
            if solved(new) && !solved(old) {
                let total = minutes(self.created, ts);
                self.solved_at = Some(ts);
                self.first_resolution_time.get_or_insert(total);
                self.full_resolution_time = Some(total);
            } else if solved(old) && !solved(new) && new != "deleted" {
                self.reopens += 1;
            }
        }
        if let Some(assigned) = update.assigned {
            if assigned {
                self.assignee_stations += 1;
                self.assigned_at = Some(ts);
                self.initially_assigned_at.get_or_insert(ts);
            }
        }
        if update.group_changed {
            self.group_stations += 1;
        }
        if let Some((public, by_requester)) = update.comment {
            self.latest_comment_added_at = Some(ts);
            if public && !by_requester {
                self.replies += 1;
                self.reply_time.get_or_insert(minutes(self.created, ts));
            }
        }
        if update.by_requester {
            self.requester_updated_at = Some(ts);
        }
        if update.by_assignee {
            self.assignee_updated_at = Some(ts);
        }
        self.render();
    }

    fn render(&mut self) {
        let id = FIRST_METRIC_ID + self.ticket_id;
        let time = |t: Option<i64>| t.map(rfc3339);
        let business = self.business;
        let in_minutes = |calendar: Option<i64>| {
            json!({
                "calendar": calendar,
                "business": if business { calendar.map(|m| m * 2 / 3) } else { None },
            })
        };
        let value = json!({
            "url": format!("{RECORD_BASE_URL}/api/v2/ticket_metrics/{id}.json"),
            "id": id,
            "ticket_id": self.ticket_id,
            "created_at": rfc3339(self.created),
            "updated_at": rfc3339(self.updated),
            "group_stations": self.group_stations,
            "assignee_stations": self.assignee_stations,
            "reopens": self.reopens,
            "replies": self.replies,
            "assignee_updated_at": time(self.assignee_updated_at),
            "requester_updated_at": time(self.requester_updated_at),
            "status_updated_at": rfc3339(self.status_updated_at),
            "initially_assigned_at": time(self.initially_assigned_at),
            "assigned_at": time(self.assigned_at),
            "solved_at": time(self.solved_at),
            "latest_comment_added_at": time(self.latest_comment_added_at),
            "reply_time_in_minutes": in_minutes(self.reply_time),
            "first_resolution_time_in_minutes": in_minutes(self.first_resolution_time),
            "full_resolution_time_in_minutes": in_minutes(self.full_resolution_time),
            "agent_wait_time_in_minutes": in_minutes(self.agent_wait_time),
            "requester_wait_time_in_minutes": in_minutes(self.requester_wait_time),
            "on_hold_time_in_minutes": in_minutes(Some(self.on_hold_time)),
        });
        self.json = value.to_string().into_boxed_str();
    }
}

/// A side conversation as JSON text, by its UUID.
pub(crate) struct SideConversation {
    id: String,
    json: Box<str>,
}

impl SideConversation {
    pub(crate) fn json(&self) -> &str {
        &self.json
    }
}

/// How an update reached Zendesk: the parent's `via` string and the children's `via` object.
#[derive(Clone, Copy)]
struct Via {
    label: &'static str,
    channel: &'static str,
    trigger: Option<(i64, &'static str)>,
}

const WEB: Via = Via {
    label: "Web form",
    channel: "web",
    trigger: None,
};
const MAIL: Via = Via {
    label: "Mail",
    channel: "email",
    trigger: None,
};
const API: Via = Via {
    label: "API",
    channel: "api",
    trigger: None,
};
const SAMPLE: Via = Via {
    label: "Sample ticket",
    channel: "sample_ticket",
    trigger: None,
};

impl Via {
    fn rule(trigger: (i64, &'static str)) -> Self {
        Self {
            label: "Rule",
            channel: "rule",
            trigger: Some(trigger),
        }
    }

    fn object(self) -> Value {
        match self.trigger {
            Some((id, title)) => json!({
                "channel": "rule",
                "source": {"from": {"id": id, "title": title}, "to": {}, "rel": "trigger"},
            }),
            None if self.channel == "email" => json!({
                "channel": "email",
                "source": {
                    "from": {"address": "customer@example.com", "name": "Customer"},
                    "to": {"address": "support@simulated.zendesk.com", "name": "Support"},
                    "rel": null,
                },
            }),
            None => json!({
                "channel": self.channel,
                "source": {"from": {}, "to": {}, "rel": null},
            }),
        }
    }

    fn reference(self) -> Value {
        match self.trigger {
            Some((id, _)) => json!(id),
            None => Value::Null,
        }
    }
}

/// A field's value as an event records it.
struct FieldChange {
    field: FieldName,
    value: Value,
    previous: Value,
}

/// A comment to add to an event.
struct CommentDraft {
    author: i64,
    public: bool,
    voice: bool,
    body: String,
    /// Written through the API (an import or an update): its own time (when given), and no
    /// attachments.
    given: Option<i64>,
}

/// An event to add.
struct Draft {
    ticket_id: i64,
    ts: i64,
    updater: i64,
    via: Via,
    /// `Create` events (true) or `Change` events.
    create: bool,
    fields: Vec<FieldChange>,
    comment: Option<CommentDraft>,
    /// Make this earlier comment private.
    privacy: Option<i64>,
    /// Keyed child shape (`{"status": "solved", ...}`) instead of the audit one.
    keyed: bool,
}

/// Ticket events, comments, metric sets and side conversations.
#[derive(Default)]
pub(crate) struct Activity {
    seed: u64,
    next_id: i64,
    next_attachment: i64,
    /// By (timestamp, id): the export order.
    events: BTreeMap<(i64, i64), Event>,
    comments: BTreeMap<i64, Comment>,
    /// Public comments per ticket, candidates for a later `CommentPrivacyChange`.
    public_comments: BTreeMap<i64, Vec<i64>>,
    metrics: BTreeMap<i64, Metric>,
    side: BTreeMap<i64, Vec<SideConversation>>,
}

fn int(map: &Map<String, Value>, field: &str) -> Option<i64> {
    map.get(field).and_then(Value::as_i64)
}

fn text(map: &Map<String, Value>, field: &str) -> String {
    map.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn unix(map: &Map<String, Value>, field: &str) -> Option<i64> {
    let text = map.get(field)?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

/// "YYYY-MM-DDTHH:MM:SS.mmmZ", as side conversations write timestamps.
pub(crate) fn rfc3339_millis(millis: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => String::from("1970-01-01T00:00:00.000Z"),
    }
}

/// The tracked fields of a ticket with their values: `fields`, then each custom field by its id
/// as a string.
fn tracked(ticket: &Map<String, Value>, fields: &[&'static str]) -> Vec<(FieldName, Value)> {
    let mut values: Vec<(FieldName, Value)> = fields
        .iter()
        .map(|field| {
            let value = ticket.get(*field).cloned().unwrap_or(Value::Null);
            (FieldName::Named(field), value)
        })
        .collect();
    if let Some(custom) = ticket.get("custom_fields").and_then(Value::as_array) {
        for field in custom {
            if let Some(id) = field.get("id").and_then(Value::as_i64) {
                let value = field.get("value").cloned().unwrap_or(Value::Null);
                values.push((FieldName::Custom(id), value));
            }
        }
    }
    values
}

/// The tracked fields that differ between two versions of a ticket.
fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<FieldChange> {
    let old: BTreeMap<FieldName, Value> = tracked(before, &CHANGE_FIELDS).into_iter().collect();
    tracked(after, &CHANGE_FIELDS)
        .into_iter()
        .filter_map(|(field, value)| {
            let previous = old.get(&field).cloned().unwrap_or(Value::Null);
            (previous != value).then_some(FieldChange {
                field,
                value,
                previous,
            })
        })
        .collect()
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn reply(rng: &mut StdRng) -> String {
    pick(rng, &REPLIES).replace("{n}", &rng.gen_range(1000..100_000).to_string())
}

fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

impl Activity {
    /// The history of the initial tickets.
    pub(crate) fn new(seed: u64, tickets: &Table, users: usize) -> Self {
        let mut activity = Self {
            seed,
            next_id: FIRST_EVENT_ID,
            next_attachment: FIRST_ATTACHMENT_ID,
            ..Self::default()
        };
        let mut rng = stream_rng(seed, 0, STREAM);
        for text in tickets.values() {
            let Ok(Value::Object(ticket)) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let (Some(created), Some(updated)) =
                (unix(&ticket, "created_at"), unix(&ticket, "updated_at"))
            else {
                continue;
            };
            activity.initial_history(&mut rng, &ticket, created, updated, users);
        }
        activity
    }

    /// Events and the rest for one round's visible ticket changes.
    pub(crate) fn apply_round(&mut self, round: u64, log: &[TicketLog], users: usize) {
        let mut rng = stream_rng(self.seed, round, STREAM);
        for entry in log {
            match (entry.kind, &entry.before) {
                (TicketLogKind::Create, _) => self.created(&mut rng, &entry.after, entry.ts),
                (TicketLogKind::Update, Some(before)) => {
                    self.updated(&mut rng, before, &entry.after, entry.ts, users, true);
                }
                (TicketLogKind::Delete, Some(before)) => {
                    self.deleted(&mut rng, before, &entry.after, entry.ts);
                }
                _ => {}
            }
        }
    }

    fn initial_history(
        &mut self,
        rng: &mut StdRng,
        ticket: &Map<String, Value>,
        created: i64,
        updated: i64,
        users: usize,
    ) {
        if updated <= created {
            self.created(rng, ticket, created);
            return;
        }
        // A plausible earlier state: new, perhaps unassigned, a tag fewer, another priority.
        let mut initial = ticket.clone();
        initial.insert("status".into(), json!("new"));
        if rng.gen_bool(0.6) {
            initial.insert("assignee_id".into(), Value::Null);
        }
        if rng.gen_bool(0.4) {
            initial.insert("group_id".into(), Value::Null);
        }
        if rng.gen_bool(0.5) {
            let priority = if rng.gen_bool(0.3) {
                Value::Null
            } else {
                json!(pick(rng, &PRIORITIES))
            };
            initial.insert("priority".into(), priority);
        }
        let mut tags = string_list(initial.get("tags").unwrap_or(&Value::Null));
        if !tags.is_empty() && rng.gen_bool(0.5) {
            tags.remove(rng.gen_range(0..tags.len()));
            initial.insert("tags".into(), json!(tags));
        }
        self.created(rng, &initial, created);
        // The update from that state to the current one happened at updated_at; without rounds
        // yet, it carries the first side conversations too.
        self.updated(rng, &initial, ticket, updated, users, false);
    }

    /// The `Create` event of a new ticket, its metric set and perhaps side conversations.
    fn created(&mut self, rng: &mut StdRng, ticket: &Map<String, Value>, ts: i64) {
        let Some(ticket_id) = int(ticket, "id") else {
            return;
        };
        let requester = int(ticket, "requester_id").unwrap_or(FIRST_USER_ID);
        let via = match ticket
            .get("via")
            .and_then(|v| v.get("channel"))
            .and_then(Value::as_str)
        {
            Some("email") => MAIL,
            Some("api") => API,
            Some("sample_ticket") => SAMPLE,
            _ => WEB,
        };
        let fields = tracked(ticket, &CREATE_FIELDS)
            .into_iter()
            .map(|(field, value)| FieldChange {
                field,
                value,
                previous: Value::Null,
            })
            .collect();
        let body = ticket
            .get("description")
            .and_then(Value::as_str)
            .map_or_else(|| description(rng), String::from);
        let keyed = rng.gen_bool(0.5);
        self.push_event(
            rng,
            Draft {
                ticket_id,
                ts,
                updater: requester,
                via,
                create: true,
                fields,
                comment: Some(CommentDraft {
                    author: requester,
                    public: true,
                    voice: false,
                    body,
                    given: None,
                }),
                privacy: None,
                keyed,
            },
        );
        let business = rng.gen_bool(0.7);
        self.metrics
            .insert(ticket_id, Metric::new(ticket, ts, business));
        if rng.gen_bool(0.08) {
            self.new_side_conversation(rng, ticket, ts);
        }
    }

    /// The event of a visible update, its metric set change and perhaps a side conversation's.
    fn updated(
        &mut self,
        rng: &mut StdRng,
        before: &Map<String, Value>,
        after: &Map<String, Value>,
        ts: i64,
        users: usize,
        may_be_rule: bool,
    ) {
        let Some(ticket_id) = int(after, "id") else {
            return;
        };
        let requester = int(after, "requester_id").unwrap_or(FIRST_USER_ID);
        let assignee = int(after, "assignee_id");
        let random_user = FIRST_USER_ID + rng.gen_range(0..users.max(1) as i64);
        let roll = rng.gen_range(0..100);
        let (via, updater) = match roll {
            0..=14 if may_be_rule => (Via::rule(*pick(rng, &TRIGGERS)), -1),
            15..=34 => (MAIL, requester),
            35..=39 => (API, random_user),
            _ => (WEB, assignee.unwrap_or(random_user)),
        };
        let fields = diff(before, after);
        let comment = if fields.is_empty() || rng.gen_bool(0.6) {
            let author = if updater > 0 {
                updater
            } else {
                assignee.unwrap_or(requester)
            };
            let voice = via.channel == "web" && rng.gen_bool(0.08);
            let public = if via.trigger.is_some() || voice {
                rng.gen_bool(0.3)
            } else {
                rng.gen_bool(0.75)
            };
            Some(CommentDraft {
                author,
                public,
                voice,
                body: reply(rng),
                given: None,
            })
        } else {
            None
        };
        let privacy = match self.public_comments.get_mut(&ticket_id) {
            Some(candidates) if !candidates.is_empty() && rng.gen_bool(0.12) => {
                Some(candidates.swap_remove(rng.gen_range(0..candidates.len())))
            }
            _ => None,
        };
        let update = MetricUpdate {
            comment: comment.as_ref().map(|c| (c.public, c.author == requester)),
            by_requester: updater == requester,
            by_assignee: assignee == Some(updater),
            ..MetricUpdate::of_fields(ts, &fields)
        };
        let keyed = rng.gen_bool(0.5);
        self.push_event(
            rng,
            Draft {
                ticket_id,
                ts,
                updater,
                via,
                create: false,
                fields,
                comment,
                privacy,
                keyed,
            },
        );
        if let Some(metric) = self.metrics.get_mut(&ticket_id) {
            metric.apply(&update);
        }
        if rng.gen_bool(0.12) {
            // A ticket keeps to 1-3 side conversations; more activity changes one of them.
            let count = self.side.get(&ticket_id).map_or(0, Vec::len);
            if count >= 3 || (count > 0 && rng.gen_bool(0.6)) {
                self.change_side_conversation(rng, ticket_id, ts);
            } else {
                self.new_side_conversation(rng, after, ts);
            }
        }
    }

    /// The event of a delete: status changes to "deleted".
    fn deleted(
        &mut self,
        rng: &mut StdRng,
        before: &Map<String, Value>,
        after: &Map<String, Value>,
        ts: i64,
    ) {
        let Some(ticket_id) = int(after, "id") else {
            return;
        };
        let updater = int(after, "assignee_id")
            .or_else(|| int(after, "requester_id"))
            .unwrap_or(FIRST_USER_ID);
        let keyed = rng.gen_bool(0.5);
        self.push_event(
            rng,
            Draft {
                ticket_id,
                ts,
                updater,
                via: WEB,
                create: false,
                fields: vec![FieldChange {
                    field: FieldName::Named("status"),
                    value: json!("deleted"),
                    previous: before.get("status").cloned().unwrap_or(Value::Null),
                }],
                comment: None,
                privacy: None,
                keyed,
            },
        );
    }

    /// The events of an imported ticket, all at `ts` (the import), each comment keeping its
    /// own `created_at`: a `Create` event with the first comment, then one event per further
    /// comment; its metric set. `comments` are (author, body, public, created_at). Returns the
    /// comments' ids.
    pub(crate) fn imported(
        &mut self,
        rng: &mut StdRng,
        ticket: &Map<String, Value>,
        ts: i64,
        comments: &[(i64, String, bool, i64)],
    ) -> Vec<i64> {
        let Some(ticket_id) = int(ticket, "id") else {
            return Vec::new();
        };
        let requester = int(ticket, "requester_id").unwrap_or(FIRST_USER_ID);
        let fields = tracked(ticket, &CREATE_FIELDS)
            .into_iter()
            .map(|(field, value)| FieldChange {
                field,
                value,
                previous: Value::Null,
            })
            .collect();
        let draft = |(author, body, public, at): &(i64, String, bool, i64)| CommentDraft {
            author: *author,
            public: *public,
            voice: false,
            body: body.clone(),
            given: Some(*at),
        };
        let mut ids = Vec::new();
        ids.extend(self.push_event(
            rng,
            Draft {
                ticket_id,
                ts,
                updater: comments.first().map_or(requester, |c| c.0),
                via: API,
                create: true,
                fields,
                comment: comments.first().map(draft),
                privacy: None,
                keyed: false,
            },
        ));
        for comment in comments.iter().skip(1) {
            ids.extend(self.push_event(
                rng,
                Draft {
                    ticket_id,
                    ts,
                    updater: comment.0,
                    via: API,
                    create: false,
                    fields: Vec::new(),
                    comment: Some(draft(comment)),
                    privacy: None,
                    keyed: false,
                },
            ));
        }
        self.metrics
            .insert(ticket_id, Metric::new(ticket, ts, false));
        ids
    }

    /// The event of an update through the API (`update_many`) by `updater` at `ts`: its field
    /// changes and comment (body, public); none when it changed nothing. Returns the comment's
    /// id.
    pub(crate) fn api_updated(
        &mut self,
        rng: &mut StdRng,
        before: &Map<String, Value>,
        after: &Map<String, Value>,
        ts: i64,
        updater: i64,
        comment: Option<(String, bool)>,
    ) -> Option<i64> {
        let ticket_id = int(after, "id")?;
        let fields = diff(before, after);
        if fields.is_empty() && comment.is_none() {
            return None;
        }
        let requester = int(after, "requester_id").unwrap_or(FIRST_USER_ID);
        let update = MetricUpdate {
            comment: comment
                .as_ref()
                .map(|(_, public)| (*public, updater == requester)),
            by_requester: updater == requester,
            by_assignee: int(after, "assignee_id") == Some(updater),
            ..MetricUpdate::of_fields(ts, &fields)
        };
        let id = self.push_event(
            rng,
            Draft {
                ticket_id,
                ts,
                updater,
                via: API,
                create: false,
                fields,
                comment: comment.map(|(body, public)| CommentDraft {
                    author: updater,
                    public,
                    voice: false,
                    body,
                    given: Some(ts),
                }),
                privacy: None,
                keyed: false,
            },
        );
        if let Some(metric) = self.metrics.get_mut(&ticket_id) {
            metric.apply(&update);
        }
        id
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds the event; returns the id of its comment, if it has one.
    fn push_event(&mut self, rng: &mut StdRng, draft: Draft) -> Option<i64> {
        let id = self.take_id();
        let via = draft.via;
        let system = if via.channel == "web" {
            let (location, latitude, longitude) = *pick(rng, &LOCATIONS);
            json!({
                "client": "Mozilla/5.0 (X11; Linux x86_64) Simulated/1.0",
                "ip_address": format!("192.0.2.{}", rng.gen_range(1..255)),
                "location": location,
                "latitude": latitude,
                "longitude": longitude,
            })
        } else {
            json!({})
        };
        let mut head = json!({
            "id": id,
            "ticket_id": draft.ticket_id,
            "timestamp": draft.ts,
            "created_at": rfc3339(draft.ts),
            "updater_id": draft.updater,
            "via": via.label,
            "via_reference_id": via.reference(),
            "system": system,
            "metadata": {},
            "event_type": "Audit",
        });
        if via.trigger.is_none() {
            head["merged_ticket_ids"] = json!([]);
        }
        let head = head.to_string();
        let head = head.strip_suffix('}').unwrap_or(&head).into();

        let mut children = Vec::new();
        let mut comment_flag = None;
        let mut added = None;
        if let Some(comment) = draft.comment {
            let comment_id = self.take_id();
            added = Some(comment_id);
            let value = self.comment_child(rng, comment_id, id, draft.ts, via, &comment);
            children.push(Child::Text {
                comment: true,
                json: value.to_string().into_boxed_str(),
            });
            comment_flag = Some(comment.public);
            self.comments.insert(
                comment_id,
                Comment {
                    ticket_id: draft.ticket_id,
                    public_now: comment.public,
                },
            );
            if comment.public {
                self.public_comments
                    .entry(draft.ticket_id)
                    .or_default()
                    .push(comment_id);
            }
        }
        for change in draft.fields {
            children.push(Child::Field {
                id: self.take_id(),
                field: change.field,
                value: change.value.to_string().into_boxed_str(),
                previous: (!draft.create).then(|| change.previous.to_string().into_boxed_str()),
            });
        }
        if let Some(comment_id) = draft.privacy {
            let child_id = self.take_id();
            if let Some(comment) = self.comments.get_mut(&comment_id) {
                comment.public_now = false;
            }
            let value = json!({
                "id": child_id,
                "event_type": "CommentPrivacyChange",
                "comment_id": comment_id,
                "public": false,
            });
            children.push(Child::Text {
                comment: false,
                json: value.to_string().into_boxed_str(),
            });
        }
        self.events.insert(
            (draft.ts, id),
            Event {
                ticket_id: draft.ticket_id,
                head,
                comment: comment_flag,
                create: draft.create,
                keyed: draft.keyed,
                via,
                children,
            },
        );
        added
    }

    fn comment_child(
        &mut self,
        rng: &mut StdRng,
        id: i64,
        audit_id: i64,
        ts: i64,
        via: Via,
        comment: &CommentDraft,
    ) -> Value {
        let mut attachments = Vec::new();
        if !comment.voice && comment.given.is_none() && rng.gen_bool(0.2) {
            for _ in 0..rng.gen_range(1..=2) {
                let attachment = self.next_attachment;
                self.next_attachment += 2;
                attachments.push(attachment_json(rng, attachment));
            }
        }
        let (kind, body) = if comment.voice {
            let seconds = rng.gen_range(20..900);
            (
                "VoiceComment",
                format!(
                    "Inbound call from +1555{:07}\nCall duration: {seconds} seconds",
                    rng.gen_range(0..10_000_000)
                ),
            )
        } else {
            ("Comment", comment.body.clone())
        };
        let html = format!(
            "<div class=\"zd-comment\" dir=\"auto\"><p dir=\"auto\">{}</p></div>",
            html_escape(&body).replace('\n', "<br>")
        );
        let mut value = json!({
            "id": id,
            "via": via.object(),
            "via_reference_id": via.reference(),
            "type": kind,
            "author_id": comment.author,
            "body": body,
            "html_body": html,
            "plain_body": body,
            "public": comment.public,
            "attachments": attachments,
            "audit_id": audit_id,
            "created_at": rfc3339(comment.given.unwrap_or(ts)),
            "metadata": {
                "system": {"client": "Simulated/1.0", "ip_address": "192.0.2.1"},
                "custom": {},
            },
            "event_type": "Comment",
        });
        if comment.voice {
            value["data"] = json!({
                "from": format!("+1555{:07}", rng.gen_range(0..10_000_000)),
                "to": "+15550000000",
                "recording_url": format!("{RECORD_BASE_URL}/v2/recordings/{id}"),
                "call_id": id,
                "answered_by_id": comment.author,
                "started_at": rfc3339(ts - 60),
                "location": "Oslo, Norway",
            });
        }
        value
    }

    fn new_side_conversation(&mut self, rng: &mut StdRng, ticket: &Map<String, Value>, ts: i64) {
        let Some(ticket_id) = int(ticket, "id") else {
            return;
        };
        let created = unix(ticket, "created_at").unwrap_or(ts).min(ts);
        let count = if self.side.contains_key(&ticket_id) {
            1
        } else {
            rng.gen_range(1..=3)
        };
        for n in 0..count {
            // The first starts at `ts`; earlier ones (of a new ticket's history) between its
            // creation and `ts`.
            let second = if n == 0 {
                ts
            } else {
                rng.gen_range(created..=ts)
            };
            let start = second * 1000 + rng.gen_range(0..1000);
            let agent = int(ticket, "assignee_id").unwrap_or(FIRST_USER_ID);
            let id = uuid(rng);
            let state = if n > 0 && rng.gen_bool(0.4) {
                "closed"
            } else {
                "open"
            };
            let external_ids = if rng.gen_bool(0.3) {
                json!({"my_system_id": format!("abc-{}-xyz", rng.gen_range(100..1000))})
            } else {
                json!({})
            };
            let name = format!("{} {}", pick(rng, &FIRST_NAMES), pick(rng, &LAST_NAMES));
            let value = json!({
                "url": format!("{RECORD_BASE_URL}/api/v2/tickets/{ticket_id}/side_conversations/{id}"),
                "id": id,
                "subject": pick(rng, &SIDE_SUBJECTS).replace("{n}", &rng.gen_range(1000..100_000).to_string()),
                "preview_text": reply(rng),
                "state": state,
                "participants": [
                    {"user_id": agent, "name": name, "email": format!("agent{}@simulated.zendesk.com", agent % 10_000)},
                    {"user_id": null, "name": null, "email": format!("partner{}@example.org", rng.gen_range(1..100))},
                ],
                "created_at": rfc3339_millis(start),
                "updated_at": rfc3339_millis(start),
                "message_added_at": rfc3339_millis(start),
                "state_updated_at": rfc3339_millis(start),
                "external_ids": external_ids,
            });
            self.side
                .entry(ticket_id)
                .or_default()
                .push(SideConversation {
                    id,
                    json: value.to_string().into_boxed_str(),
                });
        }
        if let Some(list) = self.side.get_mut(&ticket_id) {
            // Listed by creation time, as Zendesk lists them.
            list.sort_by_cached_key(|s| {
                serde_json::from_str::<Value>(&s.json)
                    .ok()
                    .and_then(|v| v["created_at"].as_str().map(String::from))
                    .unwrap_or_default()
            });
        }
    }

    /// A state change (open ↔ closed) or a new message on one of the ticket's side
    /// conversations, at second `ts`.
    fn change_side_conversation(&mut self, rng: &mut StdRng, ticket_id: i64, ts: i64) {
        let Some(list) = self.side.get_mut(&ticket_id) else {
            return;
        };
        if list.is_empty() {
            return;
        }
        let chosen = rng.gen_range(0..list.len());
        let at = json!(rfc3339_millis(ts * 1000 + rng.gen_range(0..1000)));
        let message = rng.gen_bool(0.5);
        let preview = reply(rng);
        let conversation = &mut list[chosen];
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&conversation.json) else {
            return;
        };
        let closed = map.get("state").and_then(Value::as_str) == Some("closed");
        if message {
            map.insert("message_added_at".into(), at.clone());
            map.insert("preview_text".into(), json!(preview));
            if closed {
                map.insert("state".into(), json!("open"));
                map.insert("state_updated_at".into(), at.clone());
            }
        } else {
            let state = if closed { "open" } else { "closed" };
            map.insert("state".into(), json!(state));
            map.insert("state_updated_at".into(), at.clone());
        }
        map.insert("updated_at".into(), at);
        conversation.json = Value::Object(map).to_string().into_boxed_str();
    }

    /// Events from second `start` on, in export order (timestamp, id).
    pub(crate) fn events_from(&self, start: i64) -> impl Iterator<Item = (i64, &Event)> {
        self.events
            .range((Bound::Included((start, i64::MIN)), Bound::Unbounded))
            .map(|(&(ts, _), event)| (ts, event))
    }

    /// A ticket's current metric set as JSON text.
    pub(crate) fn metric(&self, ticket_id: i64) -> Option<&str> {
        self.metrics.get(&ticket_id).map(|m| &*m.json)
    }

    /// A ticket's side conversations, oldest first (empty when it has none).
    pub(crate) fn side_conversations(&self, ticket_id: i64) -> &[SideConversation] {
        self.side.get(&ticket_id).map_or(&[], Vec::as_slice)
    }

    /// Every event, with comments, in export order.
    pub(crate) fn event_values(&self) -> Vec<Value> {
        self.events
            .values()
            .filter_map(|event| serde_json::from_str(&event.render(true)).ok())
            .collect()
    }

    /// Every comment child event, in export order, with `ticket_id` and its `public` as now.
    pub(crate) fn comment_values(&self) -> Vec<Value> {
        let mut values = Vec::new();
        for event in self.events.values() {
            for child in &event.children {
                let Child::Text {
                    comment: true,
                    json,
                } = child
                else {
                    continue;
                };
                let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(json) else {
                    continue;
                };
                let id = int(&map, "id").unwrap_or(0);
                if let Some(comment) = self.comments.get(&id) {
                    map.insert("public".into(), json!(comment.public_now));
                    map.insert("ticket_id".into(), json!(comment.ticket_id));
                }
                values.push(Value::Object(map));
            }
        }
        values
    }

    /// One normalised row per `Create` / `Change` child event, in export order.
    pub(crate) fn field_history_values(&self) -> Vec<Value> {
        let mut values = Vec::new();
        for event in self.events.values() {
            let Ok(Value::Object(parent)) = serde_json::from_str::<Value>(&event.render(false))
            else {
                continue;
            };
            let children = parent.get("child_events").and_then(Value::as_array);
            for child in children.into_iter().flatten() {
                if let Some(row) = child
                    .as_object()
                    .and_then(|child| history_row(&parent, child, event.ticket_id))
                {
                    values.push(row);
                }
            }
        }
        values
    }

    /// Every metric set, by ticket id.
    pub(crate) fn metric_values(&self) -> Vec<Value> {
        self.metrics
            .values()
            .filter_map(|m| serde_json::from_str(&m.json).ok())
            .collect()
    }

    /// Every side conversation, by ticket id and then creation.
    pub(crate) fn side_conversation_values(&self) -> Vec<Value> {
        // Served without their ticket's id (the URL names it); the ground truth carries it.
        self.side
            .iter()
            .flat_map(|(ticket, list)| list.iter().map(move |s| (*ticket, s)))
            .filter_map(|(ticket, s)| {
                let mut value: Value = serde_json::from_str(&s.json).ok()?;
                value
                    .as_object_mut()?
                    .insert("ticket_id".into(), Value::from(ticket));
                Some(value)
            })
            .collect()
    }

    /// The ids of the side conversations of these tickets.
    pub(crate) fn side_conversation_ids<'a>(
        &'a self,
        tickets: impl Iterator<Item = i64> + 'a,
    ) -> impl Iterator<Item = String> + 'a {
        tickets.flat_map(move |ticket| self.side_conversations(ticket).iter().map(|s| s.id.clone()))
    }

    /// Ids of the metric sets of these tickets.
    pub(crate) fn metric_ids(&self, tickets: impl Iterator<Item = i64>) -> BTreeSet<String> {
        tickets
            .filter(|ticket| self.metrics.contains_key(ticket))
            .map(|ticket| (FIRST_METRIC_ID + ticket).to_string())
            .collect()
    }
}

/// Keys of a keyed child event that are not the field.
const KEYED_RESERVED: [&str; 5] = [
    "id",
    "event_type",
    "previous_value",
    "added_tags",
    "removed_tags",
];

/// A `ticket_field_history` row from a `Create` / `Change` child: `{id, ticket_id, audit_id,
/// updater_id, event_type, field_name, value, previous_value, via_channel, created_at}`.
/// `via_channel` is the child's `via.channel` when the child carries a `via` object (the audit
/// shape), else the parent's `via`: its `channel`, or the plain string it is.
fn history_row(
    parent: &Map<String, Value>,
    child: &Map<String, Value>,
    ticket_id: i64,
) -> Option<Value> {
    let event_type = child.get("event_type")?.as_str()?;
    if event_type != "Create" && event_type != "Change" {
        return None;
    }
    let (field, value) = match child.get("field_name").and_then(Value::as_str) {
        Some(field) => (
            field.to_string(),
            child.get("value").cloned().unwrap_or(Value::Null),
        ),
        None => child
            .iter()
            .find(|(key, _)| !KEYED_RESERVED.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))?,
    };
    let previous = if event_type == "Create" {
        Value::Null
    } else {
        child.get("previous_value").cloned().unwrap_or(Value::Null)
    };
    let channel = |event: &Map<String, Value>| match event.get("via") {
        Some(Value::Object(via)) => via.get("channel").cloned(),
        Some(Value::String(via)) => Some(Value::from(via.as_str())),
        _ => None,
    };
    let via_channel = channel(child)
        .filter(|c| !c.is_null())
        .or_else(|| channel(parent))
        .unwrap_or(Value::Null);
    Some(json!({
        "id": child.get("id").cloned().unwrap_or(Value::Null),
        "ticket_id": ticket_id,
        "audit_id": parent.get("id").cloned().unwrap_or(Value::Null),
        "updater_id": parent.get("updater_id").cloned().unwrap_or(Value::Null),
        "event_type": event_type,
        "field_name": field,
        "value": value,
        "previous_value": previous,
        "via_channel": via_channel,
        "created_at": parent.get("created_at").cloned().unwrap_or(Value::Null),
    }))
}

fn attachment_json(rng: &mut StdRng, id: i64) -> Value {
    let (name, content_type, image) = *pick(
        rng,
        &[
            ("crash.log", "text/plain", false),
            ("screenshot.png", "image/png", true),
            ("Rechnung März.pdf", "application/pdf", false),
        ],
    );
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let content_url = format!("{RECORD_BASE_URL}/attachments/token/sim{id}/?name={encoded}");
    let thumbnails = if image {
        json!([{
            "id": id + 1,
            "file_name": "screenshot_thumb.png",
            "content_url": format!("{RECORD_BASE_URL}/attachments/token/sim{}/?name=screenshot_thumb.png", id + 1),
            "content_type": "image/png",
            "size": rng.gen_range(500..5_000),
            "inline": false,
            "deleted": false,
        }])
    } else {
        json!([])
    };
    json!({
        "url": format!("{RECORD_BASE_URL}/api/v2/attachments/{id}.json"),
        "id": id,
        "file_name": name,
        "content_url": content_url,
        "mapped_content_url": content_url,
        "content_type": content_type,
        "size": rng.gen_range(200..2_000_000),
        "inline": image && rng.gen_bool(0.3),
        "deleted": false,
        "thumbnails": thumbnails,
    })
}

/// What the metric events of a ticket event follow from (`metric_events.rs`).
pub(crate) struct TicketChange {
    pub(crate) ts: i64,
    pub(crate) event_id: i64,
    pub(crate) ticket_id: i64,
    /// A new ticket (its `Create` event).
    pub(crate) create: bool,
    /// The event added a public comment.
    pub(crate) public_comment: bool,
    /// The status it set, if it set one.
    pub(crate) status: Option<String>,
    /// The priority it set, if it set one.
    pub(crate) priority: Option<String>,
}

impl Activity {
    /// Every ticket event as a [`TicketChange`], in export order (timestamp, id).
    pub(crate) fn ticket_changes(&self) -> impl Iterator<Item = TicketChange> + '_ {
        self.events.iter().map(|(&(ts, event_id), event)| {
            let field = |name: &'static str| {
                event.children.iter().find_map(|child| match child {
                    Child::Field { field, value, .. } if *field == FieldName::Named(name) => {
                        serde_json::from_str::<Value>(value)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                    }
                    _ => None,
                })
            };
            TicketChange {
                ts,
                event_id,
                ticket_id: event.ticket_id,
                create: event.create,
                public_comment: event.comment == Some(true),
                status: field("status"),
                priority: field("priority"),
            }
        })
    }
}
