//! `webhook register` against the simulator: one webhook per endpoint however often it runs,
//! the signing secret in a 0600 file and nowhere else, a trigger where the account cannot
//! subscribe to ticket events, a create whose answer is lost looked up instead of sent again,
//! and deliveries that reach the endpoint signed with the secret in the file.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use zendesk_lake::commands::webhook::{self, Applied, RegisterOptions};
use zendesk_lake::config::Secret;
use zendesk_lake::sim::{Faults, Round, SimConfig, SimServer, Simulator};
use zendesk_lake::spec;
use zendesk_lake::webhooks::events::TRIGGER_EVENT;
use zendesk_lake::webhooks::{Delivery, Verifier};

use crate::common::{settings, small, start};

/// A webhook endpoint on loopback answering 200 to every request; returns its URL.
async fn endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/zendesk", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read.extend_from_slice(&buf[..n]);
                    let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&read[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if read.len() >= end + 4 + length {
                        break;
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// A GET of the simulator's API with the account's credentials, read apart from the product.
async fn get(server: &SimServer, path: &str) -> Value {
    let config = SimConfig::default();
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.base_url()))
        .basic_auth(format!("{}/token", config.email), Some(&config.api_token))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn secret_of(server: &SimServer, id: &str) -> String {
    let answer = get(server, &format!("/api/v2/webhooks/{id}/signing_secret")).await;
    answer["signing_secret"]["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn at_endpoint(sim: &Simulator, url: &str) -> Vec<Value> {
    sim.webhooks()
        .into_iter()
        .filter(|w| w["endpoint"] == url)
        .collect()
}

fn subscriptions_of(webhook: &Value) -> BTreeSet<String> {
    webhook["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The registry's event types of these streams.
fn declared(streams: &[&str]) -> BTreeSet<String> {
    streams
        .iter()
        .flat_map(|s| spec::stream(s).unwrap().webhook_subscriptions.clone())
        .collect()
}

/// Everything logged at every level while it is alive, on this thread (the test's runtime is
/// single-threaded, so the simulator's and the client's logs land here too).
struct Logs {
    text: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(text.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        Logs {
            text,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }
}

fn assert_file_holds(path: &std::path::Path, secret: &str) {
    assert_eq!(std::fs::read_to_string(path).unwrap(), secret);
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

/// Every delivery so far went to the endpoint, was answered 200 and is signed with `secret`.
fn assert_delivered_signed(sim: &Simulator, ids: &[&str], secret: &str) -> Vec<Delivery> {
    let verifier = Verifier::new(&Secret::new(secret));
    let deliveries = sim.deliveries();
    assert!(!deliveries.is_empty(), "the round made deliveries");
    deliveries
        .iter()
        .map(|d| {
            assert!(ids.contains(&d.webhook_id.as_str()), "{}", d.webhook_id);
            assert_eq!(d.status, Some(200), "{d:?}");
            verifier
                .verify(
                    Some(d.timestamp.as_bytes()),
                    Some(d.signature.as_bytes()),
                    d.body.as_bytes(),
                    chrono::Utc::now(),
                )
                .unwrap_or_else(|e| panic!("{e}: {d:?}"));
            Delivery::parse(d.body.as_bytes()).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn register_twice_makes_one_webhook_and_the_secret_goes_only_to_the_file() {
    let logs = Logs::capture();
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, &dir.path().join("lake"), "");
    let url = endpoint().await;
    let secret_file = dir.path().join("secrets/webhook");
    std::fs::create_dir_all(secret_file.parent().unwrap()).unwrap();
    let options = RegisterOptions::new(&url, &secret_file).with_pipeline("pipelines/prod.toml");

    let first = webhook::register(&settings, &options).await.unwrap();
    let second = webhook::register(&settings, &options).await.unwrap();

    let registered = at_endpoint(&sim, &url);
    assert_eq!(registered.len(), 1, "{registered:?}");
    let hook = &registered[0];
    let id = hook["id"].as_str().unwrap();
    assert_eq!((first.webhook_id(), second.webhook_id()), (id, id));
    let made = first.webhook.as_ref().unwrap();
    assert_eq!(made.applied, Applied::Created);
    assert_eq!(second.webhook.as_ref().unwrap().applied, Applied::Unchanged);
    assert!(first.trigger_webhook.is_none() && first.trigger.is_none());
    assert!(first.refused.is_empty());
    assert_eq!(hook["status"], "active");
    assert_eq!(hook["http_method"], "POST");
    assert_eq!(hook["request_format"], "json");
    assert_eq!(hook["name"], webhook::DEFAULT_NAME);
    // CORE's streams: the ticket export, the ticket-event export, users, organizations, groups.
    let expected = declared(&["tickets", "ticket_events", "users", "organizations"]);
    assert_eq!(subscriptions_of(hook), expected);
    assert_eq!(
        made.subscriptions.iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );

    let secret = secret_of(&server, id).await;
    assert_file_holds(&secret_file, &secret);
    assert_eq!(
        std::fs::read_dir(secret_file.parent().unwrap())
            .unwrap()
            .count(),
        1,
        "no temporary file is left beside the secret"
    );
    assert_eq!(
        first.listen_command,
        format!(
            "ZENDESK_WEBHOOK_SECRET_FILE={} zendesk-lake listen --pipeline pipelines/prod.toml",
            secret_file.display()
        )
    );
    for shown in [format!("{first:?}"), format!("{second:?}"), logs.text()] {
        assert!(!shown.contains(&secret), "the secret was shown: {shown}");
    }
    assert!(
        logs.text().contains("webhook register finished"),
        "logs were captured"
    );

    // A round's changes reach the endpoint, signed with the secret in the file.
    sim.apply_round(&Round {
        creates: 2,
        updates: 3,
        ..Round::default()
    });
    sim.deliveries_settled().await;
    let deliveries = assert_delivered_signed(&sim, &[id], &secret);
    let types: BTreeSet<&str> = deliveries.iter().map(|d| d.event_type.as_str()).collect();
    assert!(types.iter().all(|t| expected.contains(*t)), "{types:?}");
    for domain in ["ticket.", "user.", "organization."] {
        assert!(
            types.iter().any(|t| t.contains(domain)),
            "no {domain} delivery: {types:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_account_without_ticket_events_gets_one_trigger_notifying_a_second_webhook() {
    let (sim, server) = start(SimConfig {
        webhook_ticket_events: false,
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, &dir.path().join("lake"), "");
    let url = endpoint().await;
    let secret_file = dir.path().join("webhook-secret");
    let options = RegisterOptions::new(&url, &secret_file).with_name("lake-prod");

    let first = webhook::register(&settings, &options).await.unwrap();
    let second = webhook::register(&settings, &options).await.unwrap();

    let registered = at_endpoint(&sim, &url);
    assert_eq!(registered.len(), 2, "{registered:?}");
    let (conditional, events): (Vec<&Value>, Vec<&Value>) = registered
        .iter()
        .partition(|w| w["subscriptions"] == serde_json::json!(["conditional_ticket_events"]));
    assert_eq!((conditional.len(), events.len()), (1, 1));
    let triggered = conditional[0]["id"].as_str().unwrap();
    let subscribed = events[0]["id"].as_str().unwrap();
    assert_eq!(
        subscriptions_of(events[0]),
        declared(&["users", "organizations"])
    );
    let ticket_types = declared(&["tickets", "ticket_events"]);
    assert_eq!(
        first.refused.iter().cloned().collect::<BTreeSet<_>>(),
        ticket_types
    );
    assert_eq!(first.webhook_id(), subscribed);
    assert_eq!(
        first.trigger_webhook.as_ref().map(|w| w.id.as_str()),
        Some(triggered)
    );
    let trigger = first.trigger.as_ref().unwrap();
    assert_eq!(trigger.applied, Applied::Created);
    assert_eq!(trigger.webhook_id, triggered);
    let again = second.trigger.as_ref().unwrap();
    assert_eq!((again.id, again.applied), (trigger.id, Applied::Unchanged));

    // Exactly one trigger of the account notifies the webhook, and it fires on creates and
    // changes.
    let triggers = get(&server, "/api/v2/triggers").await;
    let notifying: Vec<&Value> = triggers["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["field"] == "notification_webhook" && a["value"][0] == triggered)
        })
        .collect();
    assert_eq!(notifying.len(), 1, "{triggers}");
    assert_eq!(notifying[0]["id"], trigger.id);
    assert_eq!(notifying[0]["active"], true);

    // Both webhooks sign with the secret in the file.
    let secret = secret_of(&server, subscribed).await;
    assert_eq!(secret_of(&server, triggered).await, secret);
    assert_file_holds(&secret_file, &secret);
    assert!(!format!("{first:?}{second:?}").contains(&secret));

    sim.apply_round(&Round {
        creates: 2,
        updates: 3,
        ..Round::default()
    });
    sim.deliveries_settled().await;
    let deliveries = assert_delivered_signed(&sim, &[triggered, subscribed], &secret);
    let from_trigger = sim
        .deliveries()
        .iter()
        .filter(|d| d.webhook_id == triggered)
        .count();
    assert!(from_trigger > 0, "the trigger notified the webhook");
    assert!(deliveries.iter().any(|d| d.event_type == TRIGGER_EVENT));
    assert!(deliveries
        .iter()
        .any(|d| d.event_type.starts_with("zen:event-type:user.")));
    server.shutdown().await;
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_found_by_its_endpoint_not_sent_again() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, &dir.path().join("lake"), "");
    let url = endpoint().await;
    let secret_file = dir.path().join("secret");
    // The list, then the create: its answer is cut after the webhook was made.
    sim.set_faults(Faults {
        truncate_every: Some(sim.request_count() + 2),
        ..Faults::default()
    });
    let report = webhook::register(&settings, &RegisterOptions::new(&url, &secret_file))
        .await
        .unwrap();
    sim.set_faults(Faults::default());
    let registered = at_endpoint(&sim, &url);
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(report.webhook_id(), registered[0]["id"].as_str().unwrap());
    let creates = sim
        .write_log()
        .iter()
        .filter(|w| w.method == "POST" && w.target.starts_with("/api/v2/webhooks"))
        .count();
    assert_eq!(creates, 1, "the create was not sent again");
    let lists = sim
        .request_log()
        .iter()
        .filter(|r| r.starts_with("/api/v2/webhooks?"))
        .count();
    assert_eq!(lists, 2, "listed again to find what the lost create made");
    assert_file_holds(&secret_file, &secret_of(&server, report.webhook_id()).await);
    server.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_that_is_not_https_is_refused_before_any_request() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, &dir.path().join("lake"), "");
    let before = sim.request_count();
    let options = RegisterOptions::new(
        "http://lake.example.com/webhooks/zendesk",
        dir.path().join("s"),
    );
    let err = webhook::register(&settings, &options).await.unwrap_err();
    assert!(matches!(err, webhook::Error::Url { .. }), "{err}");
    assert!(err.to_string().contains("https"), "{err}");
    assert_eq!(sim.request_count(), before);
    assert!(!dir.path().join("s").exists());
    server.shutdown().await;
}
