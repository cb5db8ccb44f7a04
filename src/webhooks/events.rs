//! What a delivery says has changed. Zendesk sends two kinds of body:
//! - an event-subscription envelope (`{"type": "zen:event-type:user.created", "id": …,
//!   "subject": "zen:user:…", "detail": …}`): its `type` names the change, and each stream
//!   declares the event types it follows (`webhook_events` in schemas/streams.json);
//! - the body a trigger or automation sends (any JSON the admin wrote, no envelope): triggers
//!   and automations act on tickets only, so it counts as a ticket event ([`TRIGGER_EVENT`]).
//!
//! Nothing else of a payload is read (its details differ between event versions). Zendesk
//! delivers some events more than once: [`Seen`] remembers the envelope ids accepted.

use std::collections::{HashSet, VecDeque};

use serde::Deserialize;

use crate::spec::Stream;

/// The event type a trigger- or automation-connected delivery counts as.
pub const TRIGGER_EVENT: &str = "zen:event-type:ticket.trigger";

/// The prefix of every event-subscription type.
const EVENT_PREFIX: &str = "zen:event-type:";

/// A verified body that is not a JSON object (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the delivery is not a JSON object: {0}")]
pub struct Malformed(String);

/// A delivery, as far as `listen` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The envelope's id (none for a trigger's body).
    pub id: Option<String>,
    /// The event type, [`TRIGGER_EVENT`] for a trigger's body.
    pub event_type: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default, rename = "type")]
    event_type: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

impl Delivery {
    pub fn parse(body: &[u8]) -> Result<Delivery, Malformed> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| Malformed(e.to_string()))?;
        if !value.is_object() {
            return Err(Malformed("a JSON value that is not an object".into()));
        }
        let envelope = Envelope::deserialize(&value).map_err(|e| Malformed(e.to_string()))?;
        let event_type = envelope
            .event_type
            .as_ref()
            .and_then(|t| t.as_str())
            .filter(|t| t.starts_with(EVENT_PREFIX));
        Ok(match event_type {
            Some(event_type) => Delivery {
                id: envelope.id.as_ref().map(|id| match id {
                    serde_json::Value::String(id) => id.clone(),
                    other => other.to_string(),
                }),
                event_type: event_type.to_owned(),
            },
            None => Delivery {
                id: None,
                event_type: TRIGGER_EVENT.to_owned(),
            },
        })
    }

    /// The streams of `streams` that follow this delivery's event type.
    pub fn streams<'a>(&self, streams: &[&'a Stream]) -> Vec<&'a Stream> {
        streams
            .iter()
            .copied()
            .filter(|s| s.follows(&self.event_type))
            .collect()
    }
}

/// The envelope ids accepted lately, at most `capacity` of them (the oldest forgotten first):
/// Zendesk retries a delivery within minutes, so a bounded memory is enough.
#[derive(Debug)]
pub struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Seen {
    pub fn new(capacity: usize) -> Seen {
        Seen {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Remember `id`; false when it was already seen.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn names(streams: &[&Stream]) -> Vec<String> {
        streams.iter().map(|s| s.name.clone()).collect()
    }

    fn all() -> Vec<&'static Stream> {
        spec::tables()
            .iter()
            .map(|t| t.source())
            .fold(Vec::new(), |mut all, s| {
                if !all.iter().any(|a: &&Stream| a.name == s.name) {
                    all.push(s);
                }
                all
            })
    }

    #[test]
    fn an_envelope_is_read_by_its_type_and_id_and_runs_the_streams_that_follow_it() {
        let body = br#"{"type":"zen:event-type:user.active_changed","account_id":12514403,
            "id":"2b24ef10-19d4-4740-93cf-8f98ec4776c0","time":"2099-07-04T05:33:18Z",
            "zendesk_event_version":"2022-06-20","subject":"zen:user:6596848315901",
            "detail":{"id":"6596848315901"},"event":{"current":false,"previous":true}}"#;
        let delivery = Delivery::parse(body).unwrap();
        assert_eq!(
            delivery.id.as_deref(),
            Some("2b24ef10-19d4-4740-93cf-8f98ec4776c0")
        );
        assert_eq!(names(&delivery.streams(&all())), ["users"]);
        for (event, streams) in [
            (
                "zen:event-type:ticket.status_changed",
                vec![
                    "tickets",
                    "ticket_events",
                    "ticket_metric_events",
                    "side_conversations",
                ],
            ),
            (
                "zen:event-type:ticket.tags_changed",
                vec![
                    "tickets",
                    "ticket_events",
                    "ticket_metric_events",
                    "tags",
                    "side_conversations",
                ],
            ),
            ("zen:event-type:organization.created", vec!["organizations"]),
            ("zen:event-type:article.published", vec!["articles"]),
            ("zen:event-type:community_post.created", vec!["posts"]),
            ("zen:event-type:agent.state_changed", vec![]),
        ] {
            let body = format!(r#"{{"type":"{event}","id":"x"}}"#);
            let delivery = Delivery::parse(body.as_bytes()).unwrap();
            assert_eq!(names(&delivery.streams(&all())), streams, "{event}");
        }
    }

    #[test]
    fn a_body_without_an_envelope_is_a_trigger_s_and_runs_the_ticket_streams() {
        for body in [
            &br#"{"ticket_id":"123","status":"Open"}"#[..],
            br#"{}"#,
            br#"{"type":"custom"}"#,
        ] {
            let delivery = Delivery::parse(body).unwrap();
            assert_eq!(delivery.event_type, TRIGGER_EVENT);
            assert_eq!(delivery.id, None);
            assert_eq!(
                names(&delivery.streams(&all())),
                [
                    "tickets",
                    "ticket_events",
                    "ticket_metric_events",
                    "side_conversations"
                ]
            );
        }
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_malformed() {
        for body in [&b""[..], b"not json", b"[1,2]", b"\"text\"", b"{\"type\":"] {
            assert!(
                Delivery::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn seen_ids_are_refused_until_forgotten_oldest_first() {
        let mut seen = Seen::new(2);
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(seen.insert("c"));
        assert!(!seen.insert("b"));
        assert!(seen.insert("a"), "the oldest was forgotten");
    }
}
