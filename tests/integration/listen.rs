//! `listen`: webhook deliveries verified and counted, runs debounced, the lake exact beside a
//! scheduled sync (in one process, and as two processes), and a clean stop on SIGTERM. Deliveries are signed here with ring's HMAC,
//! independently of the product's verifier.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zendesk_lake::commands::listen::Listening;
use zendesk_lake::config::{Secret, Settings};
use zendesk_lake::listen::schedule::Cadence;
use zendesk_lake::listen::{ListenOptions, ListenReport, DELIVERY_PATH};
use zendesk_lake::sim::Round;
use zendesk_lake::sync::{self, Outcome};

use crate::common::*;

const SECRET: &str = "listen-test-signing-secret";

/// The tables whose streams follow webhook events.
const FOLLOWED: [&str; 6] = [
    "tickets",
    "ticket_metrics",
    "users",
    "organizations",
    "ticket_comments",
    "ticket_field_history",
];

/// The event types the tests' webhooks subscribe to.
const SUBSCRIPTIONS: [&str; 8] = [
    "zen:event-type:ticket.created",
    "zen:event-type:ticket.status_changed",
    "zen:event-type:ticket.priority_changed",
    "zen:event-type:ticket.comment_added",
    "zen:event-type:user.created",
    "zen:event-type:user.name_changed",
    "zen:event-type:organization.created",
    "zen:event-type:organization.name_changed",
];

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: JoinHandle<ListenReport>,
    http: reqwest::Client,
}

async fn listen(settings: Settings, debounce: Duration) -> Running {
    let cadence = Cadence {
        debounce,
        max_interval: Duration::from_secs(3600),
    };
    let options = ListenOptions::new("127.0.0.1:0".parse().unwrap(), cadence);
    let listening = Listening::start(settings, options).await.unwrap();
    let addr = listening.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        let secret = Secret::new(SECRET);
        listening
            .serve(&secret, async {
                _ = stopped.await;
            })
            .await
    });
    let running = Running {
        addr,
        stop,
        served,
        http: reqwest::Client::new(),
    };
    // The listener's first run syncs every stream.
    running.idle().await;
    running
}

fn sign(timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(body);
    base64::engine::general_purpose::STANDARD.encode(context.sign().as_ref())
}

fn now_rfc3339(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn event(event_type: &str, id: &str) -> Vec<u8> {
    json!({
        "type": event_type,
        "account_id": 1,
        "id": id,
        "time": now_rfc3339(0),
        "zendesk_event_version": "2022-11-06",
        "subject": "zen:user:1",
        "detail": {"id": "1"},
        "event": {},
    })
    .to_string()
    .into_bytes()
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Post `body` with these signature headers; the status answered.
    async fn post(&self, body: Vec<u8>, timestamp: Option<&str>, signature: Option<&str>) -> u16 {
        let mut request = self.http.post(self.url(DELIVERY_PATH)).body(body);
        if let Some(timestamp) = timestamp {
            request = request.header("X-Zendesk-Webhook-Signature-Timestamp", timestamp);
        }
        if let Some(signature) = signature {
            request = request.header("X-Zendesk-Webhook-Signature", signature);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// Post `body` signed now.
    async fn deliver(&self, body: Vec<u8>) -> u16 {
        let timestamp = now_rfc3339(0);
        let signature = sign(&timestamp, &body);
        self.post(body, Some(&timestamp), Some(&signature)).await
    }

    async fn health(&self) -> Value {
        health(&self.http, &self.url("")).await
    }

    async fn idle(&self) {
        idle(&self.http, &self.url("")).await
    }

    async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }

    /// The value of the sample `name{labels}` (0 when absent).
    async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn runs(&self, stream: &str) -> f64 {
        let ok = format!("zendesk_lake_runs_total{{stream=\"{stream}\",outcome=\"ok\"}}");
        let failed = format!("zendesk_lake_runs_total{{stream=\"{stream}\",outcome=\"failed\"}}");
        self.metric(&ok).await + self.metric(&failed).await
    }

    async fn stop(self) -> ListenReport {
        _ = self.stop.send(());
        self.served.await.unwrap()
    }
}

/// `/healthz` of the listener at `base`, which must answer 200.
async fn health(http: &reqwest::Client, base: &str) -> Value {
    let response = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

/// Wait until the listener at `base` runs nothing and no stream waits for a run.
async fn idle(http: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let health = health(http, base).await;
        let empty = |key: &str| health[key].as_array().is_some_and(|a| a.is_empty());
        if empty("running") && empty("pending") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never idle: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scene's settings with the [`FOLLOWED`] tables only.
fn followed(scene: &Scene) -> Settings {
    let mut settings = scene.settings();
    settings
        .tables
        .retain(|t| FOLLOWED.contains(&t.name.as_str()));
    settings
}

/// Register a webhook of the scene's account delivering these event types to `endpoint`,
/// signed with [`SECRET`].
async fn register_webhook(scene: &Scene, endpoint: &str, subscriptions: &[&str]) {
    let config = small();
    let created = reqwest::Client::new()
        .post(format!("{}/api/v2/webhooks", scene.server.base_url()))
        .basic_auth(format!("{}/token", config.email), Some(&config.api_token))
        .json(&json!({"webhook": {
            "name": "lake",
            "status": "active",
            "endpoint": endpoint,
            "http_method": "POST",
            "request_format": "json",
            "subscriptions": subscriptions,
            "signing_secret": {"algorithm": "SHA256", "secret": SECRET},
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status().as_u16(),
        201,
        "{}",
        created.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signature_rule_is_enforced_and_each_outcome_counted() {
    let scene = Scene::small().await;
    let settings = followed(&scene);
    let listener = listen(settings, Duration::from_millis(100)).await;
    let (users, tickets) = (listener.runs("users").await, listener.runs("tickets").await);
    assert!(users >= 1.0, "the first run");

    let genuine = event("zen:event-type:user.created", "e-1");
    assert_eq!(listener.deliver(genuine.clone()).await, 200);
    assert_eq!(
        listener.deliver(genuine.clone()).await,
        200,
        "a replayed envelope"
    );
    let timestamp = now_rfc3339(0);
    let signature = sign(&timestamp, &genuine);
    let forged = event("zen:event-type:user.created", "e-2");
    for (body, timestamp, signature, status) in [
        (
            forged.clone(),
            Some(timestamp.as_str()),
            Some(signature.as_str()),
            401,
        ),
        (forged.clone(), Some(timestamp.as_str()), None, 401),
        (forged.clone(), None, Some(signature.as_str()), 401),
    ] {
        assert_eq!(listener.post(body, timestamp, signature).await, status);
    }
    for offset in [-600, 600] {
        let at = now_rfc3339(offset);
        let body = event("zen:event-type:user.created", &format!("e-stale{offset}"));
        let signature = sign(&at, &body);
        assert_eq!(
            listener.post(body, Some(&at), Some(&signature)).await,
            401,
            "{offset}"
        );
    }
    assert_eq!(listener.deliver(Vec::new()).await, 400, "an empty body");
    assert_eq!(
        listener.deliver(b"{\"type\": ".to_vec()).await,
        400,
        "not JSON"
    );
    let unknown = event("zen:event-type:agent.state_changed", "e-3");
    assert_eq!(listener.deliver(unknown).await, 200);
    let mut huge = br#"{"type":"zen:event-type:user.created","id":"e-4","pad":""#.to_vec();
    huge.resize((1 << 20) + 10, b'x');
    huge.extend_from_slice(b"\"}");
    assert_eq!(listener.deliver(huge).await, 413, "a body over 1 MiB");

    for (outcome, count) in [
        ("accepted", 1.0),
        ("duplicate", 1.0),
        ("bad_signature", 3.0),
        ("stale", 2.0),
        ("malformed", 2.0),
        ("ignored", 1.0),
    ] {
        let sample = format!("zendesk_lake_webhook_deliveries_total{{outcome=\"{outcome}\"}}");
        assert_eq!(listener.metric(&sample).await, count, "{outcome}");
    }
    listener.idle().await;
    assert_eq!(
        listener.runs("users").await,
        users + 1.0,
        "one run for the genuine one"
    );
    assert_eq!(
        listener.runs("tickets").await,
        tickets,
        "no ticket event was accepted"
    );
    let report = listener.stop().await;
    assert_eq!(report.accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_deliveries_makes_one_run_and_forged_ones_none() {
    let scene = Scene::small().await;
    let settings = followed(&scene);
    let listener = listen(settings, Duration::from_secs(1)).await;
    let (users, tickets) = (listener.runs("users").await, listener.runs("tickets").await);

    let deliveries = (0..500).map(|i| {
        let listener = &listener;
        async move {
            let body = event("zen:event-type:user.updated", &format!("flood-{i}"));
            listener.deliver(body).await
        }
    });
    let statuses = futures::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    listener.idle().await;
    let after = listener.runs("users").await;
    assert!(
        after > users && after <= users + 2.0,
        "{users} -> {after} runs"
    );
    assert_eq!(listener.runs("tickets").await, tickets);

    // Forged deliveries mark nothing: no stream waits for a run once they are answered.
    for i in 0..50 {
        let body = event(
            "zen:event-type:ticket.status_changed",
            &format!("forged-{i}"),
        );
        let timestamp = now_rfc3339(0);
        assert_eq!(
            listener
                .post(body, Some(&timestamp), Some("Zm9yZ2Vk"))
                .await,
            401
        );
    }
    let health = listener.health().await;
    assert_eq!(health["pending"], json!([]), "{health}");
    assert_eq!(health["running"], json!([]), "{health}");
    assert_eq!(listener.runs("tickets").await, tickets);
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_s_deliveries_keep_the_lake_exact_beside_a_scheduled_sync() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let settings = followed(&scene);
    let listener = listen(settings.clone(), Duration::from_millis(200)).await;
    // The account delivers its changes to the listener, signed with the secret it was given.
    register_webhook(&scene, &listener.url(DELIVERY_PATH), &SUBSCRIPTIONS).await;

    for n in 0..3 {
        sim.apply_round(&Round {
            creates: 5 + n,
            updates: 12,
            silent_updates: 4,
            deletes: 2,
        });
        // A scheduled sync of the same lake at the same time: the exactly-once protocol decides
        // which commits a batch; the loser's streams fail as concurrent, and run again later.
        let report = sync::run(&settings).await.unwrap();
        for table in &report.tables {
            if let Outcome::Failed(why) = &table.outcome {
                assert!(why.contains("concurrent"), "{}: {why}", table.table);
            }
        }
    }
    sim.deliveries_settled().await;
    let delivered = sim.deliveries();
    assert!(!delivered.is_empty());
    assert!(
        delivered.iter().all(|d| d.status == Some(200)),
        "{delivered:?}"
    );
    listener.idle().await;
    assert_lake_matches_tables(sim, &scene.lake(), &FOLLOWED).await;
    nothing_half_written(&scene.lake()).await;
    assert!(listener.stop().await.accepted > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_refuses_to_start_without_a_signing_secret() {
    let scene = Scene::small().await;
    let out = scene
        .binary()
        .args(["listen", "--bind", "127.0.0.1:0", "--lake"])
        .arg(scene.lake())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ZENDESK_WEBHOOK_SECRET"), "{stderr}");
    assert!(!scene.lake().exists(), "nothing written");
}

/// A `zendesk-lake listen` process, its stderr read on and where it serves; killed on drop.
struct ListenProcess {
    child: tokio::process::Child,
    /// Reads its stderr to the end (read on, so that its logs never fill the pipe and block
    /// it), into what it returns.
    logs: JoinHandle<Vec<String>>,
    /// `http://127.0.0.1:{port}`.
    base: String,
    http: reqwest::Client,
}

impl ListenProcess {
    /// `listen` of the scene's account and lake.
    async fn spawn(scene: &Scene) -> Self {
        let mut command = scene.binary();
        command
            .args([
                "listen",
                "--bind",
                "127.0.0.1:0",
                "--debounce-secs",
                "0",
                "--tables",
                &FOLLOWED.join(","),
            ])
            .arg("--pipeline")
            .arg(scene.pipeline())
            .env("ZENDESK_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "warn,zendesk_lake=info");
        ListenProcess::start(command, "listening on http://").await
    }

    /// Start `command` (a `listen`) and read its stderr up to the line containing `marker`,
    /// which says where it serves.
    async fn start(mut command: tokio::process::Command, marker: &str) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut logged = Vec::new();
        let line = line_with(&mut lines, marker, &mut logged).await;
        let url = &line[line.find("http://").unwrap()..];
        let base = url.trim().trim_end_matches(DELIVERY_PATH).to_owned();
        let logs = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                logged.push(line);
            }
            logged
        });
        ListenProcess {
            child,
            logs,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn health(&self) -> Value {
        health(&self.http, &self.base).await
    }

    async fn idle(&self) {
        idle(&self.http, &self.base).await
    }

    /// Send it `signal`; its exit code (it must stop within 30 s) and its stderr.
    async fn stop(mut self, signal: libc::c_int) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: sends a signal to the child this test spawned.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("listen stops within 30 s");
        (status.unwrap().code(), self.logs.await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run_exits_0_and_the_next_run_converges() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    sim.apply_round(&Round {
        creates: 8,
        updates: 20,
        silent_updates: 5,
        deletes: 3,
    });
    // Slow answers, so that the listener's first run is still going when the signal comes.
    sim.set_faults(zendesk_lake::sim::Faults {
        delay_every: Some(1),
        delay_ms: 40,
        ..Default::default()
    });
    let lake = scene.lake();
    let listener = ListenProcess::spawn(&scene).await;
    // Wait for the first run to have committed something, then stop the process mid-run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = listener.health().await;
        let committed = open_lake(&lake)
            .latest_state()
            .await
            .is_ok_and(|s| !s.is_empty());
        if committed {
            assert_ne!(
                health["running"],
                json!([]),
                "the first run is still going: {health}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no commit: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, logged) = listener.stop(libc::SIGTERM).await;
    assert_eq!(code, Some(0), "{}", logged.join("\n"));

    sim.set_faults(Default::default());
    sync_ok(&followed(&scene)).await;
    assert_lake_matches_tables(sim, &lake, &FOLLOWED).await;
    nothing_half_written(&lake).await;
}

/// `zendesk-lake sync` of [`FOLLOWED`] on the scene's lake, as a scheduler runs it beside
/// `listen`.
async fn sync_binary(scene: &Scene) -> std::process::Output {
    scene
        .binary()
        .args(["sync", "--tables", &FOLLOWED.join(",")])
        .arg("--pipeline")
        .arg(scene.pipeline())
        .output()
        .await
        .expect("the binary runs")
}

/// `listen` and a scheduled `sync` of the same lake as two processes, both running after each
/// round of changes (the listener on the account's deliveries): every sync exits 0 or exits 1
/// having lost a commit to the listener, whose own lost runs are retried; the listener stays
/// healthy; the lake ends equal to the account, and the listener stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_sync_processes_on_one_lake_keep_it_exact() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let listener = ListenProcess::spawn(&scene).await;
    listener.idle().await;
    let endpoint = format!("{}{DELIVERY_PATH}", listener.base);
    register_webhook(&scene, &endpoint, &SUBSCRIPTIONS).await;

    for n in 0..3 {
        sim.apply_round(&Round {
            creates: 5 + n,
            updates: 12,
            silent_updates: 4,
            deletes: 2,
        });
        // The scheduled sync starts with the round's deliveries, and runs beside the runs they
        // make.
        let (out, ()) = tokio::join!(sync_binary(&scene), async {
            sim.deliveries_settled().await;
            listener.idle().await;
        });
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(1) => assert!(stderr.contains("committed to it concurrently"), "{stderr}"),
            other => panic!("sync exited {other:?}: {stderr}"),
        }
        // The listener is healthy and has caught up (a run it lost is retried).
        listener.idle().await;
    }
    let delivered = sim.deliveries();
    assert!(!delivered.is_empty());
    assert!(
        delivered.iter().all(|d| d.status == Some(200)),
        "{delivered:?}"
    );
    assert_lake_matches_tables(sim, &scene.lake(), &FOLLOWED).await;
    nothing_half_written(&scene.lake()).await;
    let health = listener.health().await;
    let (code, logged) = listener.stop(libc::SIGTERM).await;
    assert_eq!(code, Some(0), "{health}\n{}", logged.join("\n"));
}

/// Lines of a child's stderr, read on.
type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// Read `lines` until one contains `marker`; that line.
async fn line_with(lines: &mut Lines, marker: &str, seen: &mut Vec<String>) -> String {
    loop {
        let line = lines.next_line().await.unwrap();
        let line = line.unwrap_or_else(|| panic!("no {marker:?} in:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if line.contains(marker) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_demo_syncs_the_changes_its_account_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .args([
            "listen",
            "--demo",
            "--bind",
            "127.0.0.1:0",
            "--debounce-secs",
            "1",
        ])
        .arg("--lake")
        .arg(dir.path().join("lake"))
        .env_clear()
        .env("RUST_LOG", "warn");
    let listener = ListenProcess::start(command, "its webhooks deliver to http://").await;
    // The account changes every few seconds; its deliveries make runs beyond the first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let sample = "zendesk_lake_runs_total{stream=\"users\",outcome=\"ok\"}";
    loop {
        let text = listener
            .http
            .get(format!("{}/metrics", listener.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let accepted = value("zendesk_lake_webhook_deliveries_total{outcome=\"accepted\"}");
        if accepted > 0.0 && value(sample) >= 2.0 {
            assert_eq!(
                value("zendesk_lake_webhook_deliveries_total{outcome=\"bad_signature\"}"),
                0.0
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, logged) = listener.stop(libc::SIGINT).await;
    assert_eq!(code, Some(0), "{}", logged.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_register_twice_makes_one_webhook_and_never_prints_the_secret() {
    let scene = Scene::small().await;
    let secret_file = scene.dir().join("secret");
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let out = scene
            .binary()
            .args([
                "webhook",
                "register",
                "--url",
                "http://127.0.0.1:9/webhooks/zendesk",
            ])
            .arg("--secret-file")
            .arg(&secret_file)
            .env("RUST_LOG", "trace")
            .output()
            .await
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{shown}");
        outputs.push(shown);
    }
    let hooks = scene.sim.webhooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(secret.trim().len() >= 16);
    for shown in &outputs {
        assert!(!shown.contains(secret.trim()), "{shown}");
        assert!(shown.contains("ZENDESK_WEBHOOK_SECRET_FILE="), "{shown}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
