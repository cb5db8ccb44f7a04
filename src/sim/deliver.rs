//! Webhook deliveries: a queue fed by the account's changes, drained by a task that
//! [`super::Simulator::serve`] spawns, so a round never waits for a webhook's endpoint.
//!
//! Each request is signed as Zendesk signs (docs "Verifying webhook authenticity"):
//! `X-Zendesk-Webhook-Signature` = base64(HMAC-SHA256(signing secret, timestamp + raw body)),
//! `X-Zendesk-Webhook-Signature-Timestamp` the real time of sending as `2021-03-25T05:09:27Z`
//! (the format of the reference's "Anatomy of a webhook request"; a receiver compares it with its
//! own clock, so it is never the account's virtual time). Other headers as there:
//! `x-zendesk-account-id`, `x-zendesk-webhook-id`, `x-zendesk-webhook-invocation-id`.
//!
//! Retries, as Zendesk's "Creating and monitoring webhooks" describes them in outline: an answer
//! 409, or 429 / 503 with a `Retry-After` of at most 60 s, is tried again (at most 3 times,
//! after the `Retry-After`, else a second); a refused connection, a timeout (10 s) or any other
//! status is not.
//!
//! Faults ([`WebhookFaults`]) hit deliveries by number (1-based, in the order they were queued,
//! a fault's extra copy not counted): a duplicate sends the same request twice (same envelope
//! id), a stale one carries a timestamp ten minutes old (signed correctly for it), a bad
//! signature is made with another secret.

use std::collections::VecDeque;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::data::splitmix;
use super::jobs::ACCOUNT_ID;
use super::webhooks::Outgoing;
use super::Simulator;

/// Zendesk gives an endpoint about this long to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RETRIES: u32 = 3;
/// How old a stale delivery's timestamp is (receivers accept five minutes).
const STALE_SECS: i64 = 600;

/// Faults of webhook deliveries, by delivery number (1-based; "every n" hits n, 2n, ...; 0
/// never).
#[derive(Debug, Clone, Default)]
pub struct WebhookFaults {
    /// Every n-th delivery is sent twice (the same envelope, same id).
    pub duplicate_every: Option<u64>,
    /// Every n-th delivery carries a signature timestamp more than five minutes old.
    pub stale_every: Option<u64>,
    /// Every n-th delivery is signed with a wrong secret.
    pub bad_signature_every: Option<u64>,
}

/// What a fault did to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFault {
    /// The second copy of a duplicated delivery.
    Duplicate,
    Stale,
    BadSignature,
}

/// One request made to a webhook (ground truth for tests).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    /// The envelope's `id` (None for a trigger's payload).
    pub event_id: Option<String>,
    /// The envelope's `type` (None for a trigger's payload).
    pub event_type: Option<String>,
    /// `zen:ticket:123` and the like.
    pub subject: Option<String>,
    /// The endpoint's answer; None when no answer came (refused, reset, timed out).
    pub status: Option<u16>,
    pub fault: Option<WebhookFault>,
    /// 1 for the first try, 2.. for retries.
    pub attempt: u32,
    pub body: String,
    /// `X-Zendesk-Webhook-Signature-Timestamp` and `X-Zendesk-Webhook-Signature` as sent.
    pub timestamp: String,
    pub signature: String,
}

struct Queued {
    outgoing: Outgoing,
    fault: Option<WebhookFault>,
}

/// The queue and what was delivered.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Queued>,
    /// Deliveries queued so far (fault copies not counted): their numbers.
    numbered: u64,
    /// Events given ids so far.
    events: u64,
    /// Changes given sequence ids so far.
    pub(crate) sequences: u64,
    /// Queued or being sent.
    outstanding: u64,
    invocations: u64,
    pub(crate) faults: WebhookFaults,
    pub(crate) records: Vec<Delivery>,
}

fn hits(every: Option<u64>, number: u64) -> bool {
    every.is_some_and(|n| n > 0 && number.is_multiple_of(n))
}

/// base64(HMAC-SHA256(secret, timestamp + body)).
pub(crate) fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(body.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn timestamp(secs: i64) -> String {
    super::data::rfc3339(secs)
}

impl Outbox {
    pub(crate) fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Queues the requests, giving envelopes their ids and applying the faults.
    pub(crate) fn push(&mut self, seed: u64, outgoing: Vec<Outgoing>) -> usize {
        let mut queued = 0;
        for mut item in outgoing {
            if item.event_type.is_some() {
                self.events += 1;
                let bits = (u128::from(splitmix(seed ^ splitmix(self.events))) << 64)
                    | u128::from(splitmix(self.events));
                let id = uuid::Builder::from_random_bytes(bits.to_le_bytes())
                    .into_uuid()
                    .to_string();
                let mut envelope: serde_json::Map<String, Value> =
                    serde_json::from_str(&item.body).unwrap_or_default();
                envelope.insert("account_id".into(), json!(ACCOUNT_ID));
                envelope.insert("id".into(), json!(id));
                envelope.insert(
                    "zendesk_event_version".into(),
                    json!(super::events::EVENT_VERSION),
                );
                item.body = Value::Object(envelope).to_string();
                item.event_id = Some(id);
            }
            self.numbered += 1;
            let number = self.numbered;
            let fault = if hits(self.faults.bad_signature_every, number) {
                Some(WebhookFault::BadSignature)
            } else if hits(self.faults.stale_every, number) {
                Some(WebhookFault::Stale)
            } else {
                None
            };
            let duplicate = hits(self.faults.duplicate_every, number);
            if duplicate {
                self.queue.push_back(Queued {
                    outgoing: item.clone(),
                    fault,
                });
                queued += 1;
            }
            self.queue.push_back(Queued {
                outgoing: item,
                fault: if duplicate {
                    Some(WebhookFault::Duplicate)
                } else {
                    fault
                },
            });
            queued += 1;
        }
        self.outstanding += queued as u64;
        queued
    }
}

impl Simulator {
    /// Turns changes into queued deliveries (none without active webhooks).
    pub(crate) fn deliver_changes(&self, changes: Vec<super::data::Change>) {
        if changes.is_empty() {
            return;
        }
        let mut sequences = self.outbox().sequences;
        let outgoing = self.outgoing(&changes, &mut sequences);
        let mut outbox = self.outbox();
        outbox.sequences = sequences;
        if outgoing.is_empty() {
            return;
        }
        if outbox.push(self.inner.config.seed, outgoing) > 0 {
            drop(outbox);
            self.inner.outbox_ready.notify_one();
        }
    }

    /// Sends queued deliveries until the task is aborted.
    pub(crate) async fn deliver_loop(self) {
        let client = match reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "simulator webhook client");
                return;
            }
        };
        loop {
            let ready = self.inner.outbox_ready.notified();
            let next = self.outbox().queue.pop_front();
            match next {
                Some(queued) => {
                    self.send(&client, queued).await;
                    let mut outbox = self.outbox();
                    outbox.outstanding = outbox.outstanding.saturating_sub(1);
                    if outbox.outstanding == 0 {
                        drop(outbox);
                        self.inner.settled.notify_waiters();
                    }
                }
                None => ready.await,
            }
        }
    }

    async fn send(&self, client: &reqwest::Client, queued: Queued) {
        let Queued { outgoing, fault } = queued;
        let webhook = &outgoing.webhook;
        for attempt in 1..=MAX_RETRIES + 1 {
            let real = super::data::real_now();
            let at = if fault == Some(WebhookFault::Stale) {
                real - STALE_SECS
            } else {
                real
            };
            let stamp = timestamp(at);
            let secret = if fault == Some(WebhookFault::BadSignature) {
                format!("not-{}", webhook.secret)
            } else {
                webhook.secret.clone()
            };
            let signature = sign(&secret, &stamp, &outgoing.body);
            let invocation = {
                let mut outbox = self.outbox();
                outbox.invocations += 1;
                outbox.invocations
            };
            let method = reqwest::Method::from_bytes(webhook.method().as_bytes())
                .unwrap_or(reqwest::Method::POST);
            let mut request = client
                .request(method, webhook.endpoint())
                .header("content-type", "application/json; charset=utf-8")
                .header("user-agent", "Zendesk Webhook")
                .header("x-zendesk-account-id", ACCOUNT_ID.to_string())
                .header("x-zendesk-webhook-id", &webhook.id)
                .header("x-zendesk-webhook-invocation-id", invocation.to_string())
                .header("x-zendesk-webhook-signature", &signature)
                .header("x-zendesk-webhook-signature-timestamp", &stamp)
                .body(outgoing.body.clone());
            for (name, value) in webhook.headers() {
                request = request.header(name, value);
            }
            let answer = request.send().await;
            let (status, retry_after) = match &answer {
                Ok(response) => (
                    Some(response.status().as_u16()),
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok()),
                ),
                Err(error) => {
                    tracing::debug!(%error, webhook = %webhook.id, "simulated webhook delivery failed");
                    (None, None)
                }
            };
            self.outbox().records.push(Delivery {
                webhook_id: webhook.id.clone(),
                event_id: outgoing.event_id.clone(),
                event_type: outgoing.event_type.clone(),
                subject: outgoing.subject.clone(),
                status,
                fault,
                attempt,
                body: outgoing.body.clone(),
                timestamp: stamp,
                signature,
            });
            let wait = match (status, retry_after) {
                (Some(409), after) => after.unwrap_or(1.0),
                (Some(429 | 503), Some(after)) if after <= 60.0 => after,
                _ => return,
            };
            if attempt <= MAX_RETRIES {
                tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
            }
        }
    }
}
