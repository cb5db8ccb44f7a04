//! The bench's `listen` scenarios (docs/ARCHITECTURE.md, "Benchmarks"; the targets are in
//! BENCHMARKS.md): how soon a listener shows a change in the lake, and how many deliveries it
//! takes a second.
//!
//! Both run against one listener: `zendesk-lake listen`, a child process of the bench serving on
//! loopback, its syncer reading a simulated account of a few thousand tickets on a real clock
//! ([`SimClock::Now`], so the exports date changes as Zendesk would), the account's webhook
//! registered to it as `webhook register` registers one. The child is started directly, not
//! through the launcher of the measured syncs: its memory is read from `/proc` while it serves
//! (VmRSS, and VmHWM, which unlike `ru_maxrss` belongs to the memory map exec made, so it is
//! the listener's own), and it is stopped by a signal to its own pid.
//!
//! - **Freshness**: one ticket changed at a time through the account's `update_many` (its
//!   webhook delivered by the simulator as Zendesk would), then the lake's `tickets` table
//!   polled until the ticket's row shows the change: the time from the account's answer to
//!   that is the change's latency (a debounce window and a run, at best).
//! - **Intake**: deliveries signed with the listener's secret, about two streams, each with its
//!   own envelope id, posted as fast as they are answered by a few client tasks over keep-alive
//!   connections; the runs they made are read off `/metrics` once the listener is idle again.
//!   The load generator runs in the bench's process, on the same two cores as the listener.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::AsArray as _;
use deltalake::arrow::datatypes::Int64Type;
use serde_json::{json, Value};

use super::{account, pipeline, setup, BenchConfig, Error, ACCOUNT_TABLES, EVENT_TABLES, LIFTED};
use crate::commands::webhook::{self, RegisterOptions, SECRET_FILE_VARIABLE};
use crate::lake::Lake;
use crate::listen::DELIVERY_PATH;
use crate::sim::{SimClock, SimConfig, Simulator};

/// The listener's account: the size of the demo's (`SimConfig::demo`), or the bench's when
/// smaller.
const LISTEN_TICKETS: usize = 2000;

/// A change not in the lake this long after it was made counts as never seen.
const SEEN_WITHIN: Duration = Duration::from_secs(60);

/// How often the lake is looked at while a change is awaited.
const POLL: Duration = Duration::from_millis(20);

/// How long the listener may take to start, or to become idle (its first run is a backfill).
const IDLE_WITHIN: Duration = Duration::from_secs(600);

/// How long the listener may take to stop after SIGTERM (it promises 30 s).
const STOP_WITHIN: Duration = Duration::from_secs(40);

/// The event types of the intake's deliveries (and their subjects' kind), taken in turn: one
/// stream each.
const INTAKE_EVENTS: [(&str, &str); 2] = [
    ("zen:event-type:user.name_changed", "user"),
    ("zen:event-type:organization.name_changed", "organization"),
];

/// The listener and what both scenarios measured against it.
#[derive(Debug, Clone, Default)]
pub struct ListenBench {
    pub tickets: usize,
    pub debounce: Duration,
    /// From the listener's start to the end of its first run (a backfill of the account).
    pub first_run_seconds: f64,
    pub freshness: Option<Freshness>,
    pub intake: Option<Intake>,
    /// The listener's CPU time and largest resident set over its life (read before it stopped).
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
}

/// How soon changes reached the lake.
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// Changes made.
    pub changes: usize,
    /// Seconds from a change to the lake showing it, for each change seen within
    /// [`SEEN_WITHIN`], in the order they were made.
    pub latencies: Vec<f64>,
    /// Webhook requests the account made during the scenario, and those answered 200.
    pub deliveries: usize,
    pub deliveries_ok: usize,
}

impl Freshness {
    /// The `q` quantile of the latencies (nearest rank); None when no change was seen.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.latencies, q)
    }
}

/// A burst of deliveries.
#[derive(Debug, Clone, Default)]
pub struct Intake {
    pub deliveries: u64,
    /// Client tasks, each with a keep-alive connection of its own.
    pub clients: usize,
    /// From the first request sent to the last answer received.
    pub seconds: f64,
    /// Answers by HTTP status (0: no answer: refused, reset, timed out).
    pub statuses: BTreeMap<u16, u64>,
    /// Answer latency quantiles, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Runs of each stream from the burst's start until the listener was idle again.
    pub runs: BTreeMap<String, u64>,
    /// From the burst's start until the listener was idle again.
    pub settled_seconds: f64,
    /// CPU seconds of the listener and of the bench's process (the load generator) during the
    /// burst.
    pub listener_cpu: f64,
    pub generator_cpu: f64,
    /// The listener's resident set before the burst and once idle after it, and its high-water
    /// mark at both times, MiB.
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    pub hwm_before_mb: f64,
    pub hwm_after_mb: f64,
}

impl Intake {
    /// Deliveries answered 200, i.e. verified.
    pub fn verified(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// Verified deliveries a second.
    pub fn rate(&self) -> f64 {
        self.verified() as f64 / self.seconds.max(1e-9)
    }

    /// Debounce windows the burst spans: each stream may run once per window, and once more
    /// for the marks of the last.
    pub fn windows(&self, debounce: Duration) -> u64 {
        (self.seconds / debounce.as_secs_f64().max(1e-3)).ceil() as u64
    }
}

/// Both scenarios against one listener; None when both are skipped.
pub async fn run(config: &BenchConfig) -> Result<Option<ListenBench>, Error> {
    if config.listen_changes == 0 && config.intake_deliveries == 0 {
        return Ok(None);
    }
    let dir = config.dir.join("listen");
    std::fs::create_dir_all(&dir).map_err(setup("creating the listen directory"))?;
    let tickets = config.tickets.clamp(1, LISTEN_TICKETS);
    let account = SimConfig {
        clock: SimClock::Now,
        // A bulk update is applied as it is submitted: a change is one request.
        job_polls: 0,
        ..account(tickets)
    };
    let sim = Simulator::new(account.clone());
    let server = sim.serve(0).await.map_err(setup("serving the simulator"))?;
    let env = account.env(server.base_url());
    let tables: Vec<&str> = ACCOUNT_TABLES
        .iter()
        .chain(&EVENT_TABLES)
        .copied()
        .collect();
    let lake_dir = dir.join("lake");
    let text = pipeline(&lake_dir, &tables, LIFTED, LIFTED, config.deletion_vectors);
    let pipeline_file = dir.join("pipeline.toml");
    std::fs::write(&pipeline_file, &text).map_err(setup("writing the pipeline"))?;

    // The listener's address is chosen first, so that the webhook can be registered (and its
    // secret known) before the listener starts: a port the kernel just gave and took back.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(setup("choosing the listener's port"))?;
    let secret_file = dir.join("webhook-secret");
    let settings = super::resolve(&text, &env)?;
    let url = format!("http://{addr}{DELIVERY_PATH}");
    webhook::register(&settings, &RegisterOptions::new(&url, &secret_file))
        .await
        .map_err(setup("registering the webhook"))?;

    let log_path = dir.join("listen.log");
    let log = std::fs::File::create(&log_path).map_err(setup("creating the listener's log"))?;
    let started = Instant::now();
    let child = tokio::process::Command::new(&config.exe)
        .arg("listen")
        .arg("--pipeline")
        .arg(&pipeline_file)
        .arg("--bind")
        .arg(addr.to_string())
        .arg("--debounce-secs")
        .arg(config.debounce.as_secs().to_string())
        // No scheduled full run during the scenarios: every run is a delivery's.
        .args(["--max-interval-secs", "86400"])
        .envs(&env)
        .env(SECRET_FILE_VARIABLE, &secret_file)
        .stdout(log.try_clone().map_err(setup("the listener's log"))?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(setup("starting the listener"))?;
    let mut listener = Child::new(child, addr, log_path)?;
    listener.idle().await?;
    let mut report = ListenBench {
        tickets,
        debounce: config.debounce,
        first_run_seconds: started.elapsed().as_secs_f64(),
        ..ListenBench::default()
    };
    tracing::info!(
        seconds = report.first_run_seconds,
        "bench: the listener's first run ended"
    );

    if config.listen_changes > 0 {
        let lake = Lake::try_new(&settings.lake, Default::default()).map_err(setup("the lake"))?;
        let fresh = freshness(&sim, server.base_url(), &account, &lake, config).await?;
        tracing::info!(
            p50 = fresh.quantile(0.5),
            max = fresh.quantile(1.0),
            "bench: freshness measured"
        );
        report.freshness = Some(fresh);
        listener.idle().await?;
    }
    if config.intake_deliveries > 0 {
        let secret =
            std::fs::read_to_string(&secret_file).map_err(setup("reading the webhook's secret"))?;
        let burst = intake(&mut listener, secret.trim(), config).await?;
        tracing::info!(
            rate = burst.rate(),
            p99_ms = burst.p99_ms,
            "bench: intake measured"
        );
        report.intake = Some(burst);
    }
    report.cpu_seconds = listener.cpu_seconds();
    report.peak_rss_mb = listener.memory().1;
    listener.stop().await?;
    server.shutdown().await;
    Ok(Some(report))
}

/// Change `config.listen_changes` tickets one at a time, each seen in the lake before the next.
async fn freshness(
    sim: &Simulator,
    base_url: &str,
    account: &SimConfig,
    lake: &Lake,
    config: &BenchConfig,
) -> Result<Freshness, Error> {
    // Tickets an update may change (a closed ticket refuses one), newest first.
    let mut ids: Vec<i64> = sim
        .records("tickets")
        .iter()
        .filter(|t| !matches!(t["status"].as_str(), Some("closed" | "deleted")))
        .filter_map(|t| t["id"].as_i64())
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    if ids.is_empty() {
        return Err(Error::Setup("the listen account has no open ticket".into()));
    }
    let http = client()?;
    let mut tickets = lake
        .open("tickets")
        .await
        .map_err(setup("opening the tickets table"))?
        .ok_or_else(|| Error::Setup("the listener's first run made no tickets table".into()))?;
    let mut fresh = Freshness {
        changes: config.listen_changes,
        ..Freshness::default()
    };
    let delivered_before = sim.deliveries().len();
    for n in 0..config.listen_changes {
        let id = ids[n % ids.len()];
        let value = format!("bench-fresh-{n}");
        let body = json!({"tickets": [{"id": id, "external_id": value}]});
        let answer = http
            .put(format!("{base_url}/api/v2/tickets/update_many"))
            .basic_auth(format!("{}/token", account.email), Some(&account.api_token))
            .json(&body)
            .send()
            .await
            .map_err(setup("a ticket update"))?;
        let status = answer.status();
        let job: Value = answer.json().await.map_err(setup("a ticket update"))?;
        let result = &job["job_status"]["results"][0];
        if !status.is_success() || result["status"] != "Updated" {
            return Err(Error::Setup(format!(
                "updating ticket {id} failed: {status} {job}"
            )));
        }
        let changed = Instant::now();
        let sql = format!(
            "SELECT count(*) FROM tickets WHERE id = {id} AND external_id = '{value}' \
             AND NOT _deleted"
        );
        let mut version = None;
        while changed.elapsed() < SEEN_WITHIN {
            tickets
                .update_incremental(None)
                .await
                .map_err(setup("reading the tickets table's log"))?;
            if tickets.version() != version {
                version = tickets.version();
                let batches = crate::lake::query_one("tickets", &tickets, &sql)
                    .await
                    .map_err(setup("querying the tickets table"))?;
                let count: i64 = batches
                    .iter()
                    .filter_map(|b| b.column(0).as_primitive_opt::<Int64Type>())
                    .flat_map(|c| c.iter().flatten())
                    .sum();
                if count > 0 {
                    fresh.latencies.push(changed.elapsed().as_secs_f64());
                    break;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        if fresh.latencies.len() <= n {
            tracing::warn!(ticket = id, "bench: a change never reached the lake");
        }
    }
    tokio::time::timeout(SEEN_WITHIN, sim.deliveries_settled())
        .await
        .map_err(setup("the account's webhook deliveries"))?;
    let delivered = sim.deliveries();
    let delivered = &delivered[delivered_before.min(delivered.len())..];
    fresh.deliveries = delivered.len();
    fresh.deliveries_ok = delivered.iter().filter(|d| d.status == Some(200)).count();
    Ok(fresh)
}

/// A delivery ready to send: its body, timestamp and signature.
struct Signed {
    body: bytes::Bytes,
    timestamp: String,
    signature: String,
}

/// Post `config.intake_deliveries` signed deliveries over `config.intake_clients` keep-alive
/// connections, then wait until the runs they caused are over.
async fn intake(listener: &mut Child, secret: &str, config: &BenchConfig) -> Result<Intake, Error> {
    // Signed up front so that the load generator spends the burst on sending; the listener
    // accepts a signature five minutes either side of its clock, longer than a burst takes.
    let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let deliveries: Arc<Vec<Signed>> = Arc::new(
        (0..config.intake_deliveries)
            .map(|n| {
                let (event_type, object) = INTAKE_EVENTS[n % INTAKE_EVENTS.len()];
                let body = json!({
                    "type": event_type,
                    "account_id": 1,
                    "id": format!("bench-intake-{n}"),
                    "time": timestamp,
                    "zendesk_event_version": "2022-11-06",
                    "subject": format!("zen:{object}:{}", n + 1),
                    "detail": {"id": (n + 1).to_string(), "name": "Bench Marked"},
                    "event": {"current": "Bench Marked", "previous": "Bench"},
                })
                .to_string();
                Signed {
                    signature: crate::sim::sign_delivery(secret, &timestamp, &body),
                    timestamp: timestamp.clone(),
                    body: body.into(),
                }
            })
            .collect(),
    );
    let runs_before = listener.runs().await?;
    let (rss_before, hwm_before) = listener.memory();
    let listener_cpu = listener.cpu_seconds();
    let generator_cpu = own_cpu_seconds();
    let clients = config.intake_clients.max(1);
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(setup("the load generator's client"))?;
    let url = format!("{}{DELIVERY_PATH}", listener.base);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            let (deliveries, next) = (deliveries.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut statuses = BTreeMap::<u16, u64>::new();
                while let Some(delivery) = deliveries.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let sent = Instant::now();
                    let answer = http
                        .post(&url)
                        .header("content-type", "application/json; charset=utf-8")
                        .header("x-zendesk-webhook-signature-timestamp", &delivery.timestamp)
                        .header("x-zendesk-webhook-signature", &delivery.signature)
                        .body(delivery.body.clone())
                        .send()
                        .await;
                    let status = match answer {
                        // Read to its end, so that the connection goes back to the pool.
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            _ = answer.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    *statuses.entry(status).or_default() += 1;
                }
                (latencies, statuses)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(config.intake_deliveries);
    let mut statuses = BTreeMap::new();
    for task in tasks {
        let (l, s) = task.await.map_err(setup("a client task"))?;
        latencies.extend(l);
        for (status, n) in s {
            *statuses.entry(status).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let listener_cpu = listener.cpu_seconds() - listener_cpu;
    let generator_cpu = own_cpu_seconds() - generator_cpu;
    listener.idle().await?;
    let settled_seconds = started.elapsed().as_secs_f64();
    let runs_after = listener.runs().await?;
    let (rss_after, hwm_after) = listener.memory();
    let runs = runs_after
        .iter()
        .map(|(stream, n)| {
            let before = runs_before.get(stream).copied().unwrap_or(0);
            (stream.clone(), n.saturating_sub(before))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Intake {
        deliveries: config.intake_deliveries as u64,
        clients,
        seconds,
        statuses,
        p50_ms: quantile(&latencies, 0.5).unwrap_or(0.0),
        p99_ms: quantile(&latencies, 0.99).unwrap_or(0.0),
        max_ms: quantile(&latencies, 1.0).unwrap_or(0.0),
        runs,
        settled_seconds,
        listener_cpu,
        generator_cpu,
        rss_before_mb: rss_before,
        rss_after_mb: rss_after,
        hwm_before_mb: hwm_before,
        hwm_after_mb: hwm_after,
    })
}

/// The `q` quantile of `values` by nearest rank (`q` = 1: the largest).
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(setup("an HTTP client"))
}

/// The listener's child process, and how to ask it how it is doing.
struct Child {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Child {
    fn new(
        child: tokio::process::Child,
        addr: std::net::SocketAddr,
        log: PathBuf,
    ) -> Result<Child, Error> {
        let pid = child
            .id()
            .ok_or_else(|| Error::Setup("the listener exited at once".into()))?;
        Ok(Child {
            child,
            pid,
            base: format!("http://{addr}"),
            http: client()?,
            log,
        })
    }

    fn failed(&self, what: &str) -> Error {
        Error::Setup(format!("the listener {what}; see {}", self.log.display()))
    }

    /// Wait until it serves, no run is in progress and no stream waits for one.
    async fn idle(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + IDLE_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(&format!("exited ({status})")));
            }
            let health = match self.http.get(format!("{}/healthz", self.base)).send().await {
                Ok(answer) => answer.json::<Value>().await.ok(),
                // Not serving yet: still checking the credentials or migrating the lake.
                Err(_) => None,
            };
            let empty = |h: &Value, key: &str| h[key].as_array().is_some_and(Vec::is_empty);
            if health.is_some_and(|h| empty(&h, "running") && empty(&h, "pending")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failed(&format!("was not idle within {IDLE_WITHIN:?}")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs of each stream so far (`zendesk_lake_runs_total`, every outcome).
    async fn runs(&self) -> Result<BTreeMap<String, u64>, Error> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .map_err(setup("the listener's metrics"))?
            .text()
            .await
            .map_err(setup("the listener's metrics"))?;
        Ok(runs_total(&text))
    }

    /// Resident set and its high-water mark, MiB (0 once gone).
    fn memory(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// User and system CPU seconds so far (0 once gone).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command's name, which is in parentheses and may hold spaces:
        // utime and stime are the 14th and 15th of the line, the 12th and 13th after it.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (ticks(11) + ticks(12)) / per_second
    }

    /// SIGTERM, then wait for a clean exit.
    async fn stop(mut self) -> Result<(), Error> {
        // SAFETY: signals the child this bench started and has not yet waited for.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let status = tokio::time::timeout(STOP_WITHIN, self.child.wait()).await;
        match status {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self.failed(&format!("stopped with {status}"))),
            Ok(Err(e)) => Err(self.failed(&format!("could not be waited for: {e}"))),
            Err(_) => Err(self.failed(&format!("did not stop within {STOP_WITHIN:?}"))),
        }
    }
}

/// `zendesk_lake_runs_total{stream="…",outcome="…"} N` summed by stream.
fn runs_total(metrics: &str) -> BTreeMap<String, u64> {
    let mut runs = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("zendesk_lake_runs_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let stream = labels
            .split(',')
            .find_map(|l| l.strip_prefix("stream=\""))
            .map(|s| s.trim_end_matches('"'));
        let value = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let (Some(stream), Some(value)) = (stream, value) {
            *runs.entry(stream.to_owned()).or_default() += value as u64;
        }
    }
    runs
}

/// CPU seconds of this process so far (every thread).
fn own_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data that getrusage fills in; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a pointer to a live local.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The two scenarios as Markdown, the targets beside the figures.
pub fn markdown(out: &mut String, bench: &ListenBench) {
    use std::fmt::Write as _;
    let debounce = bench.debounce.as_secs_f64();
    let met = |ok: bool| if ok { "met" } else { "not met" };
    let _ = writeln!(
        out,
        "\n`listen` (a child process of the bench, `--debounce-secs {debounce:.0}`) on an account of \
         {} tickets on a real clock, its webhook registered to the listener; its first run (a \
         backfill) ended {:.1} s after it started. Over both scenarios it used {:.1} CPU s, peak \
         RSS {:.0} MiB.\n",
        bench.tickets, bench.first_run_seconds, bench.cpu_seconds, bench.peak_rss_mb,
    );
    if let Some(fresh) = &bench.freshness {
        let seconds = |q: f64| {
            fresh
                .quantile(q)
                .map_or("-".to_owned(), |s| format!("{s:.2} s"))
        };
        let within = |q: f64, limit: f64| {
            met(fresh.latencies.len() == fresh.changes
                && fresh.quantile(q).is_some_and(|s| s <= limit))
        };
        let _ = writeln!(
            out,
            "Freshness: {} tickets changed one at a time (`update_many`, its webhook delivered by \
             the simulator), each awaited in the lake's `tickets` table (polled every {} ms) \
             before the next; the latency is from the account's answer to the row showing the \
             change. The account's {} webhook requests were answered 200 {} times.\n",
            fresh.changes,
            POLL.as_millis(),
            fresh.deliveries,
            fresh.deliveries_ok,
        );
        let _ = writeln!(out, "| freshness | measured | target | |");
        let _ = writeln!(out, "|---|---|---|---|");
        let _ = writeln!(
            out,
            "| changes seen in the lake | {} of {} | all | {} |",
            fresh.latencies.len(),
            fresh.changes,
            met(fresh.latencies.len() == fresh.changes)
        );
        let _ = writeln!(
            out,
            "| p50 | {} | ≤ 3 s | {} |",
            seconds(0.5),
            within(0.5, 3.0)
        );
        let _ = writeln!(out, "| p90 | {} | - | |", seconds(0.9));
        let _ = writeln!(
            out,
            "| max | {} | ≤ 10 s | {} |",
            seconds(1.0),
            within(1.0, 10.0)
        );
    }
    if let Some(intake) = &bench.intake {
        let windows = intake.windows(bench.debounce);
        let most = intake.runs.values().copied().max().unwrap_or(0);
        let runs = if intake.runs.is_empty() {
            "none".to_owned()
        } else {
            (intake.runs.iter())
                .map(|(stream, n)| format!("{stream} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let others: u64 = (intake.statuses.iter())
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            out,
            "\nIntake: {} deliveries signed with the listener's secret (alternately a user's and an \
             organization's event, each its own envelope id), posted as fast as answered by {} \
             client tasks over keep-alive connections (reqwest) in the bench's process, which \
             shares the machine's cores with the listener. The burst took {:.2} s; the listener \
             was idle again {:.2} s after its start.\n",
            intake.deliveries, intake.clients, intake.seconds, intake.settled_seconds,
        );
        let _ = writeln!(out, "| intake | measured | target | |");
        let _ = writeln!(out, "|---|---|---|---|");
        let _ = writeln!(
            out,
            "| verified deliveries a second (answered 200) | {:.0} | ≥ 5,000 | {} |",
            intake.rate(),
            met(intake.rate() >= 5000.0)
        );
        let _ = writeln!(
            out,
            "| answered 200 | {} of {} ({} otherwise) | all | {} |",
            intake.verified(),
            intake.deliveries,
            others,
            met(others == 0)
        );
        let _ = writeln!(
            out,
            "| answer latency p50, p99, max | {:.2}, {:.2}, {:.1} ms | - | |",
            intake.p50_ms, intake.p99_ms, intake.max_ms
        );
        let _ = writeln!(
            out,
            "| runs per stream the burst made | {runs} | ≤ {} ({windows} debounce windows + 1) | {} |",
            windows + 1,
            met(most <= windows + 1)
        );
        let _ = writeln!(
            out,
            "| listener RSS before, after the burst (high-water mark) | {:.0} MiB ({:.0}), {:.0} MiB ({:.0}) | flat | {} |",
            intake.rss_before_mb,
            intake.hwm_before_mb,
            intake.rss_after_mb,
            intake.hwm_after_mb,
            // Flat: within a tenth, or 16 MiB, of where it started.
            met(intake.hwm_after_mb <= (intake.hwm_before_mb * 1.1).max(intake.hwm_before_mb + 16.0))
        );
        let _ = writeln!(
            out,
            "| CPU s during the burst: listener, load generator | {:.2}, {:.2} | - | |",
            intake.listener_cpu, intake.generator_cpu
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_summed_by_stream_over_outcomes() {
        let text = "# HELP zendesk_lake_runs Runs of each stream, by outcome\n\
                    # TYPE zendesk_lake_runs counter\n\
                    zendesk_lake_runs_total{stream=\"users\",outcome=\"ok\"} 3\n\
                    zendesk_lake_runs_total{stream=\"users\",outcome=\"failed\"} 1\n\
                    zendesk_lake_runs_total{stream=\"organizations\",outcome=\"ok\"} 2\n\
                    zendesk_lake_requests_total{stream=\"users\"} 40\n";
        let runs = runs_total(text);
        assert_eq!(
            runs,
            BTreeMap::from([("organizations".to_owned(), 2), ("users".to_owned(), 4)])
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(5.0));
        assert_eq!(quantile(&values, 0.9), Some(9.0));
        assert_eq!(quantile(&values, 0.99), Some(10.0));
        assert_eq!(quantile(&values, 1.0), Some(10.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_burst_spans_its_debounce_windows() {
        let intake = Intake {
            seconds: 4.1,
            ..Intake::default()
        };
        assert_eq!(intake.windows(Duration::from_secs(2)), 3);
    }
}
