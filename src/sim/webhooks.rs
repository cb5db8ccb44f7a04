//! The Webhooks API and a minimal Triggers API of the simulated account, and which deliveries
//! a change makes.
//!
//! Why: `listen` and `webhook register` talk to these endpoints; a test of them needs an
//! account that keeps webhooks, refuses what Zendesk refuses and then posts signed deliveries
//! (`deliver.rs`) for what changed.
//!
//! Shapes (Zendesk's reference, "Webhooks API", "Creating and monitoring webhooks"):
//! - `POST /api/v2/webhooks` `{"webhook": {name, status, endpoint, http_method,
//!   request_format, subscriptions, [description], [authentication], [custom_headers],
//!   [signing_secret: {algorithm, secret}]}}` → 201 `{"webhook": {...}}`; ids are 26-character
//!   ULID-like strings. Subscriptions are either exact event types (`zen:event-type:...`;
//!   POST and json required) or `["conditional_ticket_events"]` (connected to triggers), never
//!   both; a wildcard is refused. An account without ticket event subscriptions
//!   (`SimConfig::webhook_ticket_events` false) refuses ticket event types.
//! - `GET /api/v2/webhooks` (`page[size]` ≤ 100, `page[after]`, `page[before]`,
//!   `filter[name_contains]`, `filter[status]`) → `{webhooks, meta: {has_more, after_cursor,
//!   before_cursor}, links: {next, prev}}`; `GET /api/v2/webhooks/{id}` → `{"webhook"}`.
//! - `PUT` / `PATCH /api/v2/webhooks/{id}` → 204 (the connection method cannot change);
//!   `DELETE` → 204.
//! - `GET /api/v2/webhooks/{id}/signing_secret` → `{"signing_secret": {"algorithm": "SHA256",
//!   "secret": "..."}}`; `POST` to it resets the secret (same answer).
//! - Errors are `{"errors": [{"code", "title", "detail"}]}` (the Webhooks API's own shape; the
//!   codes are the simulator's guesses).
//! - Triggers: `GET /api/v2/triggers` (`{triggers, next_page, previous_page, count}`, or
//!   cursor pages as other Support lists when `page[size]` / `page[after]` / `page[before]` is
//!   given), `GET|PUT|DELETE /api/v2/triggers/{id}`, `POST /api/v2/triggers` (201) with `{"trigger":
//!   {title, conditions: {all, any}, actions: [{field, value}], [active], [description]}}`. An
//!   action `notification_webhook` has the value `[webhook_id, payload_json_text]` and needs a
//!   webhook connected to triggers (422 `RecordInvalid` otherwise). Conditions: only
//!   `update_type` `is` `Create` / `Change` is evaluated; any other condition counts as met.
//!
//! The account starts with the triggers its ticket events name (`activity::TRIGGERS`, never
//! deleted) and a few more; rounds create, change and delete triggers, never one made through
//! the API (the ones `webhook register` keeps), and a deleted trigger is kept as ground truth
//! ([`Hooks::gone`]) for the `triggers` table.
//!
//! Deliveries: each event-subscribed webhook gets one envelope per subscribed event of a change
//! (`events.rs`); each trigger-connected webhook gets, per ticket created or updated by a round
//! or `update_many` (triggers do not run on imports or deletions), the payload of every active
//! trigger that notifies it, with `{{ticket.id}}`, `{{ticket.external_id}}`,
//! `{{ticket.status}}`, `{{ticket.priority}}`, `{{ticket.title}}` and `{{ticket.updated_at}}`
//! replaced (JSON-escaped, unlike Zendesk, so that a payload stays JSON).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use std::collections::BTreeSet;

use rand::seq::index;
use rand::Rng;

use super::activity::TRIGGERS;
use super::api::{Export, Request, Response};
use super::content::{Catalog, Family};
use super::data::{
    pick, rfc3339, splitmix, stream_rng, Change, ChangeKind, Object, Source, RECORD_BASE_URL,
};
use super::endpoints::{cursor_page, Listed};
use super::events::{events_of, is_ticket_type, valid_event_type};
use super::Round;
use super::Simulator;

/// The subscription of a webhook connected to triggers and automations.
pub(crate) const CONDITIONAL: &str = "conditional_ticket_events";
const LIST_MAX_PAGE: usize = 100;
const FIRST_TRIGGER_ID: i64 = 360_000_710_001;
/// Triggers the account has besides the ones its ticket events name.
const MORE_TRIGGERS: [&str; 3] = [
    "Notify requester and CCs of received request",
    "Auto-tag billing requests",
    "Route “VIP” tickets to Tier 2",
];
/// The random stream of the triggers' rounds (see `data::stream_rng`; content.rs uses 11-17
/// and 40-52).
const TRIGGER_STREAM: u64 = 53;

/// A registered webhook.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) id: String,
    pub(crate) secret: String,
    /// Everything the API shows, `id` included.
    pub(crate) json: Map<String, Value>,
}

impl Webhook {
    fn text(&self, field: &str) -> &str {
        self.json.get(field).and_then(Value::as_str).unwrap_or("")
    }

    pub(crate) fn active(&self) -> bool {
        self.text("status") == "active"
    }

    pub(crate) fn endpoint(&self) -> &str {
        self.text("endpoint")
    }

    pub(crate) fn method(&self) -> &str {
        self.text("http_method")
    }

    fn subscriptions(&self) -> Vec<&str> {
        self.json
            .get("subscriptions")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    fn conditional(&self) -> bool {
        self.subscriptions().contains(&CONDITIONAL)
    }

    /// Extra headers of the webhook's requests: its authentication and custom headers.
    pub(crate) fn headers(&self) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        if let Some(auth) = self.json.get("authentication") {
            let data = &auth["data"];
            match auth["type"].as_str() {
                Some("basic_auth") => {
                    let pair = format!(
                        "{}:{}",
                        data["username"].as_str().unwrap_or(""),
                        data["password"].as_str().unwrap_or("")
                    );
                    headers.push((
                        "authorization".into(),
                        format!("Basic {}", STANDARD.encode(pair)),
                    ));
                }
                Some("bearer_token") => headers.push((
                    "authorization".into(),
                    format!("Bearer {}", data["token"].as_str().unwrap_or("")),
                )),
                _ => {}
            }
        }
        if let Some(custom) = self.json.get("custom_headers").and_then(Value::as_object) {
            for (name, value) in custom {
                if let Some(value) = value.as_str() {
                    headers.push((name.clone(), value.to_string()));
                }
            }
        }
        headers
    }
}

/// Webhooks and triggers of the account.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Webhooks created so far (for ids and secrets).
    created: u64,
    pub(crate) webhooks: Vec<Webhook>,
    triggers: Vec<Map<String, Value>>,
    next_trigger: i64,
    seeded: bool,
    /// Deleted triggers, as they were last listed (ground truth of the `triggers` table).
    gone: Vec<Map<String, Value>>,
    /// Triggers made through the API: rounds leave them alone.
    made_by_api: BTreeSet<i64>,
}

/// One request to make to a webhook.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) webhook: Webhook,
    pub(crate) body: String,
    /// The envelope's id, type and subject; a trigger's payload has no id nor type.
    pub(crate) event_id: Option<String>,
    pub(crate) event_type: Option<String>,
    pub(crate) subject: Option<String>,
}

fn webhook_error(status: u16, code: &str, detail: &str) -> Response {
    let title = match status {
        400 => "Invalid request",
        404 => "Not found",
        _ => "Error",
    };
    Response::json(
        status,
        &json!({"errors": [{"code": code, "title": title, "detail": detail}]}),
    )
}

fn record_invalid(description: &str) -> Response {
    Response::json(
        422,
        &json!({
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {"base": [{"description": description, "error": "InvalidValue"}]},
        }),
    )
}

/// 26 Crockford base-32 digits of a 128-bit number, as a ULID prints.
fn crockford(mut n: u128) -> String {
    const DIGITS: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = [b'0'; 26];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 31) as usize];
        n >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn body_object(request: &Request, key: &str) -> Result<Map<String, Value>, Response> {
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|_| webhook_error(400, "InvalidJSON", "The request body is not valid JSON"))?;
    match body.get(key) {
        Some(Value::Object(map)) => Ok(map.clone()),
        _ => Err(webhook_error(
            400,
            "InvalidRequest",
            &format!("{key} object is required"),
        )),
    }
}

impl Hooks {
    pub(crate) fn seed_triggers(&mut self, now: i64) {
        if self.seeded {
            return;
        }
        self.seeded = true;
        self.next_trigger = FIRST_TRIGGER_ID;
        for (position, (id, title)) in TRIGGERS.iter().enumerate() {
            self.triggers.push(trigger_json(
                *id,
                &json!({
                    "title": title,
                    "active": true,
                    "conditions": {"all": [{"field": "update_type", "operator": "is", "value": "Change"}], "any": []},
                    "actions": [{"field": "notification_user", "value": ["requester_id", "[{{ticket.account}}] Re: {{ticket.title}}", "{{ticket.comments_formatted}}"]}],
                    "description": null,
                }),
                position,
                now,
                now,
            ));
        }
        for title in MORE_TRIGGERS {
            self.add_trigger(
                &json!({
                    "title": title,
                    "active": true,
                    "conditions": {"all": [{"field": "update_type", "operator": "is", "value": "Create"}], "any": []},
                    "actions": [{"field": "set_tags", "value": "triage"}],
                    "description": "Made by the account's admins",
                }),
                now,
            );
        }
    }

    /// A new trigger of `given` (title, conditions, actions, ...) at the end of the list.
    fn add_trigger(&mut self, given: &Value, now: i64) -> Map<String, Value> {
        let id = self.next_trigger;
        self.next_trigger += 1;
        let position = self.triggers.len();
        let trigger = trigger_json(id, given, position, now, now);
        self.triggers.push(trigger.clone());
        trigger
    }

    /// Removes a trigger, keeping its last version as ground truth; false when there is none.
    fn remove_trigger(&mut self, id: i64) -> bool {
        match self.triggers.iter().position(|t| t["id"] == id) {
            Some(index) => {
                let trigger = self.triggers.remove(index);
                self.gone.push(trigger);
                true
            }
            None => false,
        }
    }

    /// Creates, changes and deletes some triggers, as `content.rs` does the other lists'
    /// records (at least one of each the round has any of, one per 20), dated in `lo..=hi`.
    /// The triggers the ticket events name are never deleted, and the ones made through the
    /// API are never touched.
    pub(crate) fn round(
        &mut self,
        seed: u64,
        round_number: u64,
        round: &Round,
        (lo, hi): (i64, i64),
        now: i64,
    ) {
        self.seed_triggers(now);
        let scale = |n: usize| if n == 0 { 0 } else { (n / 20).max(1) };
        let (creates, updates, deletes) = (
            scale(round.creates),
            scale(round.updates + round.silent_updates),
            scale(round.deletes),
        );
        let mut rng = stream_rng(seed, round_number, TRIGGER_STREAM);
        let when = |rng: &mut rand::rngs::StdRng| rng.gen_range(lo..=hi.max(lo));
        let named: BTreeSet<i64> = TRIGGERS.iter().map(|(id, _)| *id).collect();
        let ids = |hooks: &Hooks, deletable: bool| -> Vec<i64> {
            hooks
                .triggers
                .iter()
                .filter_map(|t| t["id"].as_i64())
                .filter(|id| !hooks.made_by_api.contains(id))
                .filter(|id| !deletable || !named.contains(id))
                .collect()
        };
        let deletable = ids(self, true);
        let doomed: BTreeSet<i64> =
            index::sample(&mut rng, deletable.len(), deletes.min(deletable.len()))
                .into_iter()
                .map(|i| deletable[i])
                .collect();
        let changeable: Vec<i64> = ids(self, false)
            .into_iter()
            .filter(|id| !doomed.contains(id))
            .collect();
        for i in index::sample(&mut rng, changeable.len(), updates.min(changeable.len())) {
            let id = changeable[i];
            let ts = when(&mut rng);
            let n = rng.gen_range(0..1000_i64);
            let change = rng.gen_range(0..4);
            if let Some(trigger) = self.triggers.iter_mut().find(|t| t["id"] == id) {
                let value = match change {
                    0 => json!(!trigger["active"].as_bool().unwrap_or(true)),
                    1 => json!(format!("Changed by the admins (#{n})")),
                    2 => {
                        json!({"all": [{"field": "priority", "operator": "is", "value": pick(&mut rng, &["low", "high", "urgent"])}], "any": []})
                    }
                    _ => json!(n % 20),
                };
                let field = ["active", "description", "conditions", "position"][change];
                trigger.insert(field.into(), value);
                trigger.insert("updated_at".into(), json!(rfc3339(ts)));
            }
        }
        for id in doomed {
            self.remove_trigger(id);
        }
        for _ in 0..creates {
            let ts = when(&mut rng);
            let n = rng.gen_range(0..1000_i64);
            // Zendesk writes a trigger category's id as a string.
            self.add_trigger(
                &json!({
                    "title": format!("{} {n}", pick(&mut rng, &MORE_TRIGGERS)),
                    "active": rng.gen_bool(0.8),
                    "conditions": {"all": [{"field": "status", "operator": "is", "value": "new"}], "any": []},
                    "actions": [{"field": "group_id", "value": "360000100002"}],
                    "description": null,
                    "category_id": (10_026 + n % 3).to_string(),
                }),
                ts,
            );
        }
    }

    /// Ground truth of the `triggers` table: every trigger the account has or had, by id.
    pub(crate) fn trigger_values(&self) -> Vec<Value> {
        let mut all: Vec<&Map<String, Value>> = self.triggers.iter().chain(&self.gone).collect();
        all.sort_by_key(|t| t["id"].as_i64());
        all.into_iter().map(|t| Value::Object(t.clone())).collect()
    }

    /// Ids of the deleted triggers.
    pub(crate) fn gone_triggers(&self) -> BTreeSet<String> {
        self.gone
            .iter()
            .filter_map(|t| t["id"].as_i64())
            .map(|id| id.to_string())
            .collect()
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.webhooks.iter().position(|w| w.id == id)
    }

    /// Checks a webhook's fields as Zendesk's validation would.
    fn validate(
        map: &Map<String, Value>,
        ticket_events: bool,
        old: Option<&Webhook>,
    ) -> Result<(), Response> {
        for field in [
            "name",
            "endpoint",
            "http_method",
            "request_format",
            "status",
        ] {
            if map
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(webhook_error(
                    400,
                    "InvalidRequest",
                    &format!("{field} is required"),
                ));
            }
        }
        let endpoint = map["endpoint"].as_str().unwrap_or("");
        if url::Url::parse(endpoint).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            return Err(webhook_error(
                400,
                "InvalidEndpoint",
                "endpoint must be an http(s) URL",
            ));
        }
        if !["active", "inactive"].contains(&map["status"].as_str().unwrap_or("")) {
            return Err(webhook_error(
                400,
                "InvalidStatus",
                "status must be active or inactive",
            ));
        }
        let Some(subscriptions) = map.get("subscriptions").and_then(Value::as_array) else {
            return Err(webhook_error(
                400,
                "InvalidRequest",
                "subscriptions is required",
            ));
        };
        let names: Vec<&str> = subscriptions.iter().filter_map(Value::as_str).collect();
        if names.is_empty() || names.len() != subscriptions.len() {
            return Err(webhook_error(
                400,
                "InvalidSubscription",
                "subscriptions must be a non-empty list of event types",
            ));
        }
        let conditional = names.contains(&CONDITIONAL);
        if conditional && names.len() > 1 {
            return Err(webhook_error(
                400,
                "InvalidSubscription",
                "A webhook connected to triggers or automations cannot subscribe to Zendesk events",
            ));
        }
        if !conditional {
            if let Some(bad) = names
                .iter()
                .find(|n| n.contains('*') || !valid_event_type(n))
            {
                return Err(webhook_error(
                    400,
                    "InvalidSubscription",
                    &format!("Invalid event type: {bad}"),
                ));
            }
            if !ticket_events {
                if let Some(ticket) = names.iter().find(|n| is_ticket_type(n)) {
                    return Err(webhook_error(400, "InvalidSubscription", &format!("This account cannot subscribe to ticket events ({ticket}); connect the webhook to a trigger instead")));
                }
            }
            if map["http_method"] != "POST" || map["request_format"] != "json" {
                return Err(webhook_error(
                    400,
                    "InvalidRequest",
                    "A webhook subscribed to Zendesk events must use POST and json",
                ));
            }
        }
        if let Some(old) = old {
            if old.conditional() != conditional {
                return Err(webhook_error(
                    400,
                    "InvalidSubscription",
                    "A webhook's connection method cannot change",
                ));
            }
        }
        Ok(())
    }
}

fn trigger_json(
    id: i64,
    given: &Value,
    position: usize,
    created: i64,
    updated: i64,
) -> Map<String, Value> {
    let title = given["title"].clone();
    let mut map = Map::new();
    map.insert(
        "url".into(),
        json!(format!("{RECORD_BASE_URL}/api/v2/triggers/{id}.json")),
    );
    map.insert("id".into(), json!(id));
    map.insert("title".into(), title.clone());
    map.insert("raw_title".into(), title);
    map.insert(
        "active".into(),
        given.get("active").cloned().unwrap_or(json!(true)),
    );
    map.insert(
        "conditions".into(),
        given
            .get("conditions")
            .cloned()
            .unwrap_or(json!({"all": [], "any": []})),
    );
    map.insert(
        "actions".into(),
        given.get("actions").cloned().unwrap_or(json!([])),
    );
    map.insert(
        "description".into(),
        given.get("description").cloned().unwrap_or(Value::Null),
    );
    map.insert("position".into(), json!(position));
    map.insert(
        "category_id".into(),
        given.get("category_id").cloned().unwrap_or(Value::Null),
    );
    map.insert("created_at".into(), json!(rfc3339(created)));
    map.insert("updated_at".into(), json!(rfc3339(updated)));
    map
}

/// Whether a trigger's conditions hold for a ticket change (only `update_type` is evaluated).
fn conditions_hold(trigger: &Map<String, Value>, kind: ChangeKind) -> bool {
    let update_type = if kind == ChangeKind::Create {
        "Create"
    } else {
        "Change"
    };
    let holds = |condition: &Value| -> bool {
        if condition["field"] != "update_type" {
            return true;
        }
        let matches = condition["value"] == update_type;
        match condition["operator"].as_str() {
            Some("is_not") => !matches,
            _ => matches,
        }
    };
    let conditions = &trigger["conditions"];
    let all = conditions["all"]
        .as_array()
        .is_none_or(|all| all.iter().all(holds));
    let any = conditions["any"]
        .as_array()
        .is_none_or(|any| any.is_empty() || any.iter().any(holds));
    all && any
}

/// A trigger's payload for a ticket, placeholders replaced.
fn render_payload(template: &str, ticket: &Map<String, Value>) -> String {
    let escaped = |value: Option<&Value>| -> String {
        match value {
            Some(Value::String(text)) => {
                let quoted = json!(text).to_string();
                quoted[1..quoted.len() - 1].to_string()
            }
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    };
    let mut text = template.to_string();
    for (placeholder, field) in [
        ("{{ticket.id}}", "id"),
        ("{{ticket.external_id}}", "external_id"),
        ("{{ticket.status}}", "status"),
        ("{{ticket.priority}}", "priority"),
        ("{{ticket.title}}", "subject"),
        ("{{ticket.updated_at}}", "updated_at"),
    ] {
        if text.contains(placeholder) {
            text = text.replace(placeholder, &escaped(ticket.get(field)));
        }
    }
    text
}

impl Simulator {
    /// The webhooks' and triggers' endpoints; None for any other request.
    pub(crate) fn route_webhooks(&self, request: &Request, base_url: &str) -> Option<Response> {
        let path = request.path.strip_suffix(".json").unwrap_or(&request.path);
        let method = request.method.as_str();
        if path == "/api/v2/webhooks" {
            return Some(match method {
                "POST" => self.create_webhook(request),
                "GET" => self.list_webhooks(request, base_url),
                _ => Response::error(405, "MethodNotAllowed"),
            });
        }
        if let Some(rest) = path.strip_prefix("/api/v2/webhooks/") {
            return Some(match rest.split_once('/') {
                Some((id, "signing_secret")) => self.signing_secret(id, method == "POST"),
                Some(_) => webhook_error(404, "NotFound", "No such endpoint"),
                None => match method {
                    "GET" => self.show_webhook(rest),
                    "PUT" | "PATCH" => self.update_webhook(rest, request),
                    "DELETE" => {
                        let mut hooks = self.hooks();
                        match hooks.find(rest) {
                            Some(index) => {
                                hooks.webhooks.remove(index);
                                Response::raw(204, Vec::new())
                            }
                            None => webhook_error(404, "WebhookNotFound", "Webhook not found"),
                        }
                    }
                    _ => Response::error(405, "MethodNotAllowed"),
                },
            });
        }
        if path == "/api/v2/triggers" {
            return Some(match method {
                "GET" => {
                    let now = self.now();
                    let mut hooks = self.hooks();
                    hooks.seed_triggers(now);
                    let triggers = &hooks.triggers;
                    let active = request.param("active");
                    let listed: Vec<&Map<String, Value>> = triggers
                        .iter()
                        .filter(|t| active.is_none_or(|a| t["active"].as_bool() == a.parse().ok()))
                        .collect();
                    let paged = ["page[size]", "page[after]", "page[before]"]
                        .iter()
                        .any(|name| request.param(name).is_some());
                    if paged {
                        let values: Vec<(i64, Value)> = listed
                            .iter()
                            .map(|t| {
                                (
                                    t["id"].as_i64().unwrap_or_default(),
                                    Value::Object((*t).clone()),
                                )
                            })
                            .collect();
                        let catalog = Catalog::of(values.iter().map(|(id, value)| (*id, value)));
                        let export = Export {
                            link_base: base_url,
                            max_page_size: None,
                            stall_over: None,
                            empty_page: false,
                            duplicate_first: false,
                            whole_page: None,
                        };
                        let shape = Listed {
                            name: "triggers",
                            path: "/api/v2/triggers",
                            family: Family::Support,
                        };
                        return Some(cursor_page(&catalog, &shape, false, request, &export));
                    }
                    Response::json(
                        200,
                        &json!({"triggers": listed, "next_page": null, "previous_page": null, "count": listed.len()}),
                    )
                }
                "POST" => self.save_trigger(None, request),
                _ => Response::error(405, "MethodNotAllowed"),
            });
        }
        if let Some(rest) = path.strip_prefix("/api/v2/triggers/") {
            let Ok(id) = rest.parse::<i64>() else {
                return Some(Response::error(404, "RecordNotFound"));
            };
            return Some(match method {
                "GET" => {
                    let now = self.now();
                    let mut hooks = self.hooks();
                    hooks.seed_triggers(now);
                    match hooks.triggers.iter().find(|t| t["id"] == id) {
                        Some(trigger) => Response::json(200, &json!({ "trigger": trigger })),
                        None => Response::error(404, "RecordNotFound"),
                    }
                }
                "PUT" => self.save_trigger(Some(id), request),
                "DELETE" => {
                    let now = self.now();
                    let mut hooks = self.hooks();
                    hooks.seed_triggers(now);
                    if hooks.remove_trigger(id) {
                        Response::raw(204, Vec::new())
                    } else {
                        Response::error(404, "RecordNotFound")
                    }
                }
                _ => Response::error(405, "MethodNotAllowed"),
            });
        }
        None
    }

    fn create_webhook(&self, request: &Request) -> Response {
        let mut given = match body_object(request, "webhook") {
            Ok(map) => map,
            Err(response) => return response,
        };
        if let Err(response) =
            Hooks::validate(&given, self.inner.config.webhook_ticket_events, None)
        {
            return response;
        }
        let now = self.now();
        let seed = self.inner.config.seed;
        let mut hooks = self.hooks();
        hooks.created += 1;
        let number = hooks.created;
        let random = (u128::from(splitmix(seed ^ number)) << 64) | u128::from(splitmix(number));
        // A ULID: 48 bits of milliseconds, then 80 of randomness.
        let millis = u128::from(now.max(0) as u64) * 1000 + u128::from(number);
        let id = crockford((millis << 80) | (random & ((1u128 << 80) - 1)));
        let secret = match given
            .get("signing_secret")
            .and_then(|s| s.get("secret"))
            .and_then(Value::as_str)
        {
            Some(secret) if !secret.is_empty() => secret.to_string(),
            _ => {
                let bytes: Vec<u8> = (0..4u64)
                    .flat_map(|i| splitmix(seed ^ splitmix(number * 4 + i)).to_le_bytes())
                    .collect();
                STANDARD.encode(bytes)
            }
        };
        given.remove("signing_secret");
        given.insert("id".into(), json!(id));
        given.insert("created_at".into(), json!(rfc3339(now)));
        given.insert(
            "created_by".into(),
            json!(super::data::FIRST_USER_ID.to_string()),
        );
        given.insert("updated_at".into(), json!(rfc3339(now)));
        given.insert(
            "updated_by".into(),
            json!(super::data::FIRST_USER_ID.to_string()),
        );
        let webhook = Webhook {
            id,
            secret,
            json: given,
        };
        let shown = shown(&webhook);
        hooks.webhooks.push(webhook);
        Response::json(201, &json!({ "webhook": shown }))
    }

    fn list_webhooks(&self, request: &Request, base_url: &str) -> Response {
        let size = match request.param("page[size]") {
            None => LIST_MAX_PAGE,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if (1..=LIST_MAX_PAGE).contains(&n) => n,
                _ => {
                    return webhook_error(
                        400,
                        "InvalidPaginationParameter",
                        "page[size] is limited to 100",
                    )
                }
            },
        };
        let decode = |raw: &str| -> Option<String> {
            String::from_utf8(STANDARD.decode(raw.trim()).ok()?).ok()
        };
        let hooks = self.hooks();
        let name = request
            .param("filter[name_contains]")
            .map(str::to_lowercase);
        let status = request.param("filter[status]");
        let listed: Vec<&Webhook> = hooks
            .webhooks
            .iter()
            .filter(|w| {
                name.as_ref()
                    .is_none_or(|n| w.text("name").to_lowercase().contains(n))
            })
            .filter(|w| status.is_none_or(|s| w.text("status") == s))
            .collect();
        // Ids sort by creation (they are ULIDs), so a cursor is the id it is after or before.
        let (page, has_more): (Vec<&Webhook>, bool) = if let Some(after) =
            request.param("page[after]")
        {
            let Some(after) = decode(after) else {
                return webhook_error(
                    400,
                    "InvalidPaginationParameter",
                    "page[after] is not a valid cursor",
                );
            };
            let rest: Vec<&Webhook> = listed.iter().copied().filter(|w| w.id > after).collect();
            (rest.iter().copied().take(size).collect(), rest.len() > size)
        } else if let Some(before) = request.param("page[before]") {
            let Some(before) = decode(before) else {
                return webhook_error(
                    400,
                    "InvalidPaginationParameter",
                    "page[before] is not a valid cursor",
                );
            };
            let rest: Vec<&Webhook> = listed.iter().copied().filter(|w| w.id < before).collect();
            let start = rest.len().saturating_sub(size);
            (rest[start..].to_vec(), start > 0)
        } else {
            (
                listed.iter().copied().take(size).collect(),
                listed.len() > size,
            )
        };
        let after_cursor = page.last().map(|w| STANDARD.encode(&w.id));
        let before_cursor = page.first().map(|w| STANDARD.encode(&w.id));
        let link = |name: &str, cursor: &Option<String>| match cursor {
            Some(cursor) => json!(format!(
                "{base_url}/api/v2/webhooks?page[size]={size}&{name}={}",
                super::api::encode_param(cursor)
            )),
            None => Value::Null,
        };
        let webhooks: Vec<Map<String, Value>> = page.iter().map(|w| shown(w)).collect();
        Response::json(
            200,
            &json!({
                "webhooks": webhooks,
                "meta": {"has_more": has_more, "after_cursor": after_cursor, "before_cursor": before_cursor},
                "links": {
                    "next": if has_more { link("page[after]", &after_cursor) } else { Value::Null },
                    "prev": link("page[before]", &before_cursor),
                },
            }),
        )
    }

    fn show_webhook(&self, id: &str) -> Response {
        let hooks = self.hooks();
        match hooks.find(id) {
            Some(index) => Response::json(200, &json!({"webhook": shown(&hooks.webhooks[index])})),
            None => webhook_error(404, "WebhookNotFound", "Webhook not found"),
        }
    }

    fn update_webhook(&self, id: &str, request: &Request) -> Response {
        let given = match body_object(request, "webhook") {
            Ok(map) => map,
            Err(response) => return response,
        };
        let now = self.now();
        let mut hooks = self.hooks();
        let Some(index) = hooks.find(id) else {
            return webhook_error(404, "WebhookNotFound", "Webhook not found");
        };
        let old = hooks.webhooks[index].clone();
        let mut merged = old.json.clone();
        for (key, value) in given {
            if !["id", "created_at", "created_by", "signing_secret"].contains(&key.as_str()) {
                merged.insert(key, value);
            }
        }
        if let Err(response) =
            Hooks::validate(&merged, self.inner.config.webhook_ticket_events, Some(&old))
        {
            return response;
        }
        merged.insert("updated_at".into(), json!(rfc3339(now)));
        hooks.webhooks[index].json = merged;
        Response::raw(204, Vec::new())
    }

    fn signing_secret(&self, id: &str, reset: bool) -> Response {
        let seed = self.inner.config.seed;
        let mut hooks = self.hooks();
        let Some(index) = hooks.find(id) else {
            return webhook_error(404, "WebhookNotFound", "Webhook not found");
        };
        if reset {
            hooks.created += 1;
            let number = hooks.created;
            let bytes: Vec<u8> = (0..4u64)
                .flat_map(|i| splitmix(seed ^ splitmix(number * 4 + i + 1)).to_le_bytes())
                .collect();
            hooks.webhooks[index].secret = STANDARD.encode(bytes);
        }
        let secret = hooks.webhooks[index].secret.clone();
        Response::json(
            200,
            &json!({"signing_secret": {"algorithm": "SHA256", "secret": secret}}),
        )
    }

    fn save_trigger(&self, id: Option<i64>, request: &Request) -> Response {
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(_) => return Response::invalid("The request body is not valid JSON"),
        };
        let Some(given) = body.get("trigger").filter(|t| t.is_object()) else {
            return Response::invalid("trigger parameter is required");
        };
        let now = self.now();
        let mut hooks = self.hooks();
        hooks.seed_triggers(now);
        let existing = id.and_then(|id| hooks.triggers.iter().position(|t| t["id"] == id));
        if id.is_some() && existing.is_none() {
            return Response::error(404, "RecordNotFound");
        }
        // An update keeps what it does not name.
        let mut merged = existing
            .map(|i| Value::Object(hooks.triggers[i].clone()))
            .unwrap_or_else(|| json!({}));
        if let (Some(merged), Some(given)) = (merged.as_object_mut(), given.as_object()) {
            for (key, value) in given {
                merged.insert(key.clone(), value.clone());
            }
        }
        if merged["title"].as_str().is_none_or(str::is_empty) {
            return record_invalid("Title: cannot be blank");
        }
        let Some(actions) = merged["actions"].as_array().filter(|a| !a.is_empty()) else {
            return record_invalid("Actions: cannot be blank");
        };
        for action in actions {
            if action["field"] == "notification_webhook" {
                let webhook = action["value"].get(0).and_then(Value::as_str).unwrap_or("");
                let payload_ok = action["value"].get(1).is_some_and(Value::is_string);
                match hooks.find(webhook) {
                    Some(index) if hooks.webhooks[index].conditional() && payload_ok => {}
                    Some(_) if !payload_ok => {
                        return record_invalid("Notify webhook: the payload must be JSON text")
                    }
                    Some(_) => {
                        return record_invalid(&format!(
                            "Notify webhook: webhook {webhook} is not connected to triggers"
                        ))
                    }
                    None => {
                        return record_invalid(&format!(
                            "Notify webhook: webhook {webhook} does not exist"
                        ))
                    }
                }
            }
        }
        match existing {
            Some(index) => {
                let id = hooks.triggers[index]["id"].as_i64().unwrap_or_default();
                let created = hooks.triggers[index]["created_at"].clone();
                let mut trigger = trigger_json(id, &merged, index, now, now);
                trigger.insert("created_at".into(), created);
                hooks.triggers[index] = trigger.clone();
                Response::json(200, &json!({ "trigger": trigger }))
            }
            None => {
                let trigger = hooks.add_trigger(&merged, now);
                if let Some(id) = trigger["id"].as_i64() {
                    hooks.made_by_api.insert(id);
                }
                Response::json(201, &json!({ "trigger": trigger }))
            }
        }
    }

    /// The requests a set of changes makes to the registered webhooks.
    pub(crate) fn outgoing(&self, changes: &[Change], next_sequence: &mut u64) -> Vec<Outgoing> {
        let hooks = self.hooks();
        let active: Vec<&Webhook> = hooks.webhooks.iter().filter(|w| w.active()).collect();
        if active.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for change in changes {
            *next_sequence += 1;
            let sequence = format!(
                "{:032X}",
                u128::from(splitmix(*next_sequence)) << 64 | u128::from(*next_sequence)
            );
            let events = events_of(change, &sequence);
            for webhook in &active {
                if webhook.conditional() {
                    let fires = change.object == Object::Tickets
                        && change.source != Source::Import
                        && change.kind != ChangeKind::Delete;
                    if !fires {
                        continue;
                    }
                    for trigger in &hooks.triggers {
                        if trigger["active"] != true || !conditions_hold(trigger, change.kind) {
                            continue;
                        }
                        for action in trigger["actions"].as_array().into_iter().flatten() {
                            if action["field"] == "notification_webhook"
                                && action["value"][0] == webhook.id.as_str()
                            {
                                let template = action["value"][1].as_str().unwrap_or("");
                                out.push(Outgoing {
                                    webhook: (*webhook).clone(),
                                    body: render_payload(template, &change.after),
                                    event_id: None,
                                    event_type: None,
                                    subject: Some(format!("zen:ticket:{}", change.id)),
                                });
                            }
                        }
                    }
                } else {
                    let subscribed = webhook.subscriptions();
                    for event in &events {
                        if subscribed.contains(&event.event_type.as_str()) {
                            out.push(Outgoing {
                                webhook: (*webhook).clone(),
                                body: String::new(),
                                event_id: None,
                                event_type: Some(event.event_type.clone()),
                                subject: Some(event.subject.clone()),
                            });
                            // The envelope is written when the event gets its id (deliver.rs).
                            if let Some(last) = out.last_mut() {
                                last.body = serde_json::to_string(&json!({
                                    "detail": event.detail,
                                    "event": event.event,
                                    "subject": event.subject,
                                    "time": event.time,
                                    "type": event.event_type,
                                }))
                                .unwrap_or_default();
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Ground truth: the registered webhooks as the API shows them.
    pub fn webhooks(&self) -> Vec<Value> {
        self.hooks()
            .webhooks
            .iter()
            .map(|w| Value::Object(shown(w)))
            .collect()
    }
}

/// A webhook as the API shows it (never its secret).
fn shown(webhook: &Webhook) -> Map<String, Value> {
    webhook.json.clone()
}
