//! Zendesk's Webhooks API and the part of its Triggers API that connects a trigger to a webhook,
//! as typed calls (Zendesk's reference: "Webhooks API", "Creating and monitoring webhooks",
//! "Triggers").
//!
//! A webhook reaches Zendesk's activity one of two ways, fixed at its creation: subscribed to
//! event types (`zen:event-type:user.created`, one by one: no wildcards), or connected to
//! triggers and automations (the one subscription [`CONNECTED_TO_TRIGGERS`]), which is the only
//! way to ticket activity on accounts whose webhooks cannot subscribe to ticket events. A
//! trigger then notifies the webhook with a body it writes itself ([`NewTrigger::notify`]).
//!
//! Lists are read whole: webhooks by cursor (`page[size]`, `meta.has_more`, `links.next`),
//! triggers by cursor or by Zendesk's older `next_page`, whichever the answer carries; every
//! next page is followed only on the configured host.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use crate::config::Secret;
use crate::zendesk::client::endpoint_of;
use crate::zendesk::{Client, Error, Method, Request, RequestStats, Result};

/// What requests and errors of these calls are labelled with.
pub const LABEL: &str = "webhooks";

/// The subscription of a webhook connected to triggers and automations (never combined with
/// event types).
pub const CONNECTED_TO_TRIGGERS: &str = "conditional_ticket_events";

/// Zendesk's largest list page.
const PAGE_SIZE: &str = "100";

/// Pages followed at most: a cursor that never ends is a bug at the other end, not a list.
const MAX_PAGES: usize = 10_000;

/// A webhook as the API shows it (only what registering reads of it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Webhook {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub http_method: String,
    #[serde(default)]
    pub request_format: String,
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

impl Webhook {
    /// Whether the webhook is connected to triggers rather than subscribed to event types.
    pub fn connected_to_triggers(&self) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s == CONNECTED_TO_TRIGGERS)
    }
}

/// A webhook to create, or the fields an update sets: active, POST, JSON (what an
/// event-subscribed webhook requires, and what a trigger-connected one is given too).
#[derive(Debug, Clone, Serialize)]
pub struct NewWebhook {
    pub name: String,
    pub endpoint: String,
    pub subscriptions: Vec<String>,
    status: &'static str,
    http_method: &'static str,
    request_format: &'static str,
    /// The signing secret to start with (creation only; Zendesk generates one otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_secret: Option<SigningSecret>,
}

impl NewWebhook {
    /// A webhook subscribed to `subscriptions` (event types, or [`CONNECTED_TO_TRIGGERS`]).
    pub fn new(name: &str, endpoint: &str, subscriptions: Vec<String>) -> NewWebhook {
        NewWebhook {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            subscriptions,
            status: "active",
            http_method: "POST",
            request_format: "json",
            signing_secret: None,
        }
    }

    /// Created with this signing secret instead of a new one (so that two webhooks of one
    /// endpoint sign alike). Ignored by an update.
    pub fn with_signing_secret(mut self, secret: Secret) -> NewWebhook {
        self.signing_secret = Some(SigningSecret(secret));
        self
    }

    /// Whether `webhook` already is what this describes (an update would change nothing).
    pub fn is_applied_to(&self, webhook: &Webhook) -> bool {
        webhook.name == self.name
            && webhook.endpoint == self.endpoint
            && webhook.status == self.status
            && webhook.http_method == self.http_method
            && webhook.request_format == self.request_format
            && webhook.subscriptions == self.subscriptions
    }

    /// The same fields, without the signing secret: what an update sends.
    fn update(&self) -> NewWebhook {
        NewWebhook {
            signing_secret: None,
            ..self.clone()
        }
    }
}

/// `{"algorithm": "SHA256", "secret": …}`, as Zendesk takes it at creation.
#[derive(Debug, Clone)]
struct SigningSecret(Secret);

impl Serialize for SigningSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The request body is the one place a signing secret goes to Zendesk; the body is never
        // logged, and Debug of this type shows `***`.
        json!({"algorithm": "SHA256", "secret": self.0.expose()}).serialize(serializer)
    }
}

/// A trigger as the API shows it (only what registering reads of it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Trigger {
    pub id: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub conditions: Value,
    #[serde(default)]
    pub actions: Vec<Action>,
}

/// One action of a trigger.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Action {
    pub field: String,
    #[serde(default)]
    pub value: Value,
}

impl Trigger {
    /// The webhooks this trigger notifies.
    pub fn notified_webhooks(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter(|a| a.field == NOTIFY_WEBHOOK)
            .filter_map(|a| a.value.get(0).and_then(Value::as_str))
            .collect()
    }
}

const NOTIFY_WEBHOOK: &str = "notification_webhook";

/// A trigger to create, or the fields an update sets.
#[derive(Debug, Clone, Serialize)]
pub struct NewTrigger {
    pub title: String,
    active: bool,
    description: String,
    conditions: Value,
    actions: Value,
}

impl NewTrigger {
    /// "Ticket created or updated → notify `webhook_id` with `payload`" (JSON text, Zendesk's
    /// placeholders such as `{{ticket.id}}` allowed).
    pub fn notify(title: &str, description: &str, webhook_id: &str, payload: &str) -> NewTrigger {
        NewTrigger {
            title: title.to_owned(),
            active: true,
            description: description.to_owned(),
            conditions: json!({
                "all": [],
                "any": [
                    {"field": "update_type", "operator": "is", "value": "Create"},
                    {"field": "update_type", "operator": "is", "value": "Change"},
                ],
            }),
            actions: json!([{"field": NOTIFY_WEBHOOK, "value": [webhook_id, payload]}]),
        }
    }

    /// Whether `trigger` already is what this describes (an update would change nothing).
    pub fn is_applied_to(&self, trigger: &Trigger) -> bool {
        trigger.title == self.title
            && trigger.active == self.active
            && trigger.conditions == self.conditions
            && serde_json::to_value(&trigger.actions).ok().as_ref() == Some(&self.actions)
    }
}

/// The webhook and trigger calls of one client, counted in one [`RequestStats`].
pub struct Webhooks<'a> {
    client: &'a Client,
    stats: &'a RequestStats,
}

impl<'a> Webhooks<'a> {
    pub fn new(client: &'a Client, stats: &'a RequestStats) -> Self {
        Webhooks { client, stats }
    }

    /// Every webhook of the account (`GET /api/v2/webhooks`, all pages).
    pub async fn list(&self) -> Result<Vec<Webhook>> {
        let mut url = self.client.endpoint("/api/v2/webhooks");
        url.query_pairs_mut().append_pair("page[size]", PAGE_SIZE);
        self.all_pages(url, "webhooks").await
    }

    /// `POST /api/v2/webhooks`. An error that [`Error::may_have_applied`] means the webhook may
    /// exist: list before creating it again.
    pub async fn create(&self, webhook: &NewWebhook) -> Result<Webhook> {
        let url = self.client.endpoint("/api/v2/webhooks");
        let request = self.body(Method::Post, url, &json!({ "webhook": webhook }))?;
        let mut answer = self.client.send(LABEL, &request, self.stats).await?;
        self.read(&request, answer.get_mut("webhook").map(Value::take))
    }

    /// `PUT /api/v2/webhooks/{id}`: sets the name, endpoint, status, method, format and
    /// subscriptions (Zendesk answers 204).
    pub async fn update(&self, id: &str, webhook: &NewWebhook) -> Result<()> {
        let url = self.client.endpoint(&format!("/api/v2/webhooks/{id}"));
        let body = json!({ "webhook": webhook.update() });
        let request = self.body(Method::Put, url, &body)?;
        self.client.send(LABEL, &request, self.stats).await?;
        Ok(())
    }

    /// `GET /api/v2/webhooks/{id}`.
    pub async fn get(&self, id: &str) -> Result<Webhook> {
        let request = Request::get(self.client.endpoint(&format!("/api/v2/webhooks/{id}")));
        let mut answer = self.client.send(LABEL, &request, self.stats).await?;
        self.read(&request, answer.get_mut("webhook").map(Value::take))
    }

    /// The webhook's signing secret (`GET /api/v2/webhooks/{id}/signing_secret`).
    pub async fn signing_secret(&self, id: &str) -> Result<Secret> {
        let path = format!("/api/v2/webhooks/{id}/signing_secret");
        let request = Request::get(self.client.endpoint(&path));
        let answer = self.client.send(LABEL, &request, self.stats).await?;
        match answer
            .pointer("/signing_secret/secret")
            .and_then(Value::as_str)
        {
            Some(secret) if !secret.is_empty() => Ok(Secret::new(secret)),
            _ => Err(shape(&request, "no `signing_secret.secret`")),
        }
    }

    /// Every trigger of the account (`GET /api/v2/triggers`, all pages).
    pub async fn triggers(&self) -> Result<Vec<Trigger>> {
        let mut url = self.client.endpoint("/api/v2/triggers");
        url.query_pairs_mut().append_pair("page[size]", PAGE_SIZE);
        self.all_pages(url, "triggers").await
    }

    /// `POST /api/v2/triggers`. An error that [`Error::may_have_applied`] means the trigger may
    /// exist: list before creating it again.
    pub async fn create_trigger(&self, trigger: &NewTrigger) -> Result<Trigger> {
        let url = self.client.endpoint("/api/v2/triggers");
        let request = self.body(Method::Post, url, &json!({ "trigger": trigger }))?;
        let mut answer = self.client.send(LABEL, &request, self.stats).await?;
        self.read(&request, answer.get_mut("trigger").map(Value::take))
    }

    /// `PUT /api/v2/triggers/{id}`: sets the title, conditions and actions, and activates it.
    pub async fn update_trigger(&self, id: i64, trigger: &NewTrigger) -> Result<Trigger> {
        let url = self.client.endpoint(&format!("/api/v2/triggers/{id}"));
        let request = self.body(Method::Put, url, &json!({ "trigger": trigger }))?;
        let mut answer = self.client.send(LABEL, &request, self.stats).await?;
        self.read(&request, answer.get_mut("trigger").map(Value::take))
    }

    fn body(&self, method: Method, url: Url, body: &Value) -> Result<Request> {
        let request = Request::new(method, url);
        let endpoint = endpoint_of(request.url());
        request.with_json(body).map_err(|e| Error::Shape {
            stream: LABEL.to_owned(),
            method,
            endpoint,
            detail: format!("cannot serialise the request body: {e}"),
        })
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request,
        value: Option<Value>,
    ) -> Result<T> {
        let value = value.ok_or_else(|| shape(request, "the answer has no record"))?;
        serde_json::from_value(value).map_err(|e| shape(request, &e.to_string()))
    }

    /// The records under `key` of every page from `url` on.
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        mut url: Url,
        key: &str,
    ) -> Result<Vec<T>> {
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let request = Request::get(url.clone());
            let mut page = self.client.send(LABEL, &request, self.stats).await?;
            let records = page
                .get_mut(key)
                .map(Value::take)
                .ok_or_else(|| shape(&request, &format!("no `{key}` array")))?;
            let records: Vec<T> =
                serde_json::from_value(records).map_err(|e| shape(&request, &e.to_string()))?;
            all.extend(records);
            let next = match page.pointer("/meta/has_more").and_then(Value::as_bool) {
                Some(true) => page.pointer("/links/next").and_then(Value::as_str),
                Some(false) => None,
                // Offset pagination (the triggers' default): `next_page` until null.
                None => page.get("next_page").and_then(Value::as_str),
            };
            match next {
                Some(next) => {
                    let next = self.client.pinned(LABEL, next)?;
                    if next == url {
                        return Err(shape(&request, "the next page is this page again"));
                    }
                    url = next;
                }
                None => return Ok(all),
            }
        }
        Err(shape(
            &Request::get(url),
            &format!("more than {MAX_PAGES} pages"),
        ))
    }
}

fn shape(request: &Request, detail: &str) -> Error {
    Error::Shape {
        stream: LABEL.to_owned(),
        method: request.method(),
        endpoint: endpoint_of(request.url()),
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_webhook_is_active_posts_json_and_hides_its_secret() {
        let hook = NewWebhook::new(
            "lake",
            "https://example.com/webhooks/zendesk",
            vec!["zen:event-type:user.created".into()],
        )
        .with_signing_secret(Secret::new("s3cr3t-value"));
        let body = serde_json::to_value(&hook).unwrap();
        assert_eq!(body["status"], "active");
        assert_eq!(body["http_method"], "POST");
        assert_eq!(body["request_format"], "json");
        assert_eq!(body["signing_secret"]["secret"], "s3cr3t-value");
        assert!(!format!("{hook:?}").contains("s3cr3t-value"));
        let update = serde_json::to_value(hook.update()).unwrap();
        assert!(update.get("signing_secret").is_none(), "{update}");
    }

    #[test]
    fn a_trigger_notifies_its_webhook_on_creates_and_changes() {
        let trigger = NewTrigger::notify("t", "d", "01HWEBHOOK", r#"{"a":1}"#);
        let body = serde_json::to_value(&trigger).unwrap();
        assert_eq!(body["actions"][0]["value"][0], "01HWEBHOOK");
        let listed: Trigger = serde_json::from_value(json!({
            "id": 7, "title": "t", "active": true, "actions": body["actions"],
        }))
        .unwrap();
        assert_eq!(listed.notified_webhooks(), ["01HWEBHOOK"]);
        let updates: Vec<&Value> = body["conditions"]["any"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["value"])
            .collect();
        assert_eq!(updates, [&json!("Create"), &json!("Change")]);
    }
}
