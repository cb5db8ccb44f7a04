//! When `listen` runs which streams (docs/ARCHITECTURE.md, "Webhooks"). Deliveries mark
//! streams dirty ([`Trigger`]); the first mark of a quiet stream sets a debounce deadline, and
//! when it passes one run syncs every dirty stream. Marks that arrive during a run make at most
//! one follow-up run, once it ends. Every `max_interval` every configured stream is marked
//! anyway, so lost or never-configured webhooks cannot leave the lake stale, and the listener
//! starts with such a run (it may have been down). A stream whose run failed (a sync of the same
//! lake elsewhere won the exactly-once race, Zendesk was down) is marked again, retried after a
//! backoff. Runs go through one [`Syncer`], so no stream ever runs twice at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::Metrics;
use crate::sync::{Outcome, SyncReport, Syncer};

/// Streams marked dirty by deliveries, waiting for the scheduler. Marking never blocks and its
/// memory is bounded by the number of streams, however many deliveries arrive.
#[derive(Debug, Default)]
pub struct Trigger {
    dirty: Mutex<BTreeSet<String>>,
    notify: Notify,
}

impl Trigger {
    pub fn mark<'a>(&self, streams: impl IntoIterator<Item = &'a str>) {
        let mut dirty = lock(&self.dirty);
        dirty.extend(streams.into_iter().map(str::to_owned));
        self.notify.notify_one();
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *lock(&self.dirty))
    }

    /// The streams marked and not yet taken by the scheduler.
    pub fn marked(&self) -> BTreeSet<String> {
        lock(&self.dirty).clone()
    }
}

/// Where each stream stood after its last run, and what the scheduler is doing, for
/// `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    streams: Mutex<BTreeMap<String, StreamHealth>>,
    activity: Mutex<Activity>,
}

/// What the scheduler is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Activity {
    /// The streams of the run in progress (empty: none).
    pub running: BTreeSet<String>,
    /// Streams marked and waiting for a run.
    pub pending: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamHealth {
    /// When its last successful run ended (RFC 3339).
    pub last_success: Option<String>,
    /// Its watermark after that run (RFC 3339).
    pub watermark: Option<String>,
    /// The error of its last run, if that run failed.
    pub last_error: Option<String>,
    pub runs: u64,
}

impl Health {
    pub fn snapshot(&self) -> BTreeMap<String, StreamHealth> {
        lock(&self.streams).clone()
    }

    pub fn activity(&self) -> Activity {
        lock(&self.activity).clone()
    }

    pub(crate) fn set_activity(&self, running: &BTreeSet<String>, pending: &BTreeSet<String>) {
        *lock(&self.activity) = Activity {
            running: running.clone(),
            pending: pending.clone(),
        };
    }

    fn ran(&self, report: &SyncReport) {
        let now = chrono::Utc::now();
        let mut streams = lock(&self.streams);
        for table in &report.tables {
            let health = streams.entry(table.stream.clone()).or_default();
            match &table.outcome {
                Outcome::Cancelled => continue,
                Outcome::Failed(error) => health.last_error = Some(error.clone()),
                Outcome::Ok | Outcome::Skipped(_) => {
                    health.last_success = Some(now.to_rfc3339());
                    health.last_error = None;
                }
            }
            health.watermark = table
                .watermark
                .and_then(chrono::DateTime::from_timestamp_micros)
                .map(|w| w.to_rfc3339());
        }
        let ran: BTreeSet<&str> = report.tables.iter().map(|t| t.stream.as_str()).collect();
        for stream in ran {
            if let Some(health) = streams.get_mut(stream) {
                health.runs += 1;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data, still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often runs happen.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// From a stream's first mark to the run that syncs it.
    pub debounce: Duration,
    /// Every configured stream runs at least this often.
    pub max_interval: Duration,
}

/// The scheduler's loop: runs until `cancel` fires, then lets the run in progress stop at its
/// next page (it shares the token) and returns.
pub async fn schedule(
    syncer: Arc<Syncer>,
    trigger: Arc<Trigger>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cadence: Cadence,
    cancel: CancellationToken,
) {
    let all: BTreeSet<String> = (syncer.settings().tables.iter())
        .map(|t| t.stream.clone())
        .collect();
    let mut dirty: BTreeSet<String> = all.clone();
    let mut due = Some(Instant::now());
    let mut running: Option<tokio::task::JoinHandle<Ran>> = None;
    let mut running_streams = BTreeSet::new();
    let mut full_at = Instant::now() + cadence.max_interval;
    // Consecutive failed runs, for the retry's backoff.
    let mut failures = 0u32;
    loop {
        health.set_activity(&running_streams, &dirty);
        // A run starts when it is due and none is running.
        let start_at = due.filter(|_| running.is_none());
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = trigger.notify.notified() => {
                let marked = trigger.take();
                if dirty.is_empty() && !marked.is_empty() {
                    due = Some(Instant::now() + cadence.debounce);
                }
                dirty.extend(marked);
            }
            _ = async { tokio::time::sleep_until(start_at.unwrap_or_else(Instant::now)).await }, if start_at.is_some() => {
                let streams = std::mem::take(&mut dirty);
                running_streams = streams.clone();
                due = None;
                running = Some(tokio::spawn(run(syncer.clone(), streams, cancel.clone())));
            }
            ran = async { running.as_mut().expect("enabled only while running").await }, if running.is_some() => {
                running = None;
                running_streams.clear();
                let retry = match ran {
                    Ok(ran) => record(&ran, &metrics, &health),
                    Err(e) => {
                        warn!(error = %e, "a listen run panicked; its streams run again");
                        all.clone()
                    }
                };
                match retry.is_empty() {
                    true => failures = 0,
                    false => failures = failures.saturating_add(1),
                }
                if !retry.is_empty() {
                    let backoff = cadence.debounce.max(Duration::from_secs(1))
                        * 2u32.saturating_pow(failures.min(10));
                    let at = Instant::now() + backoff.min(cadence.max_interval);
                    due = Some(due.map_or(at, |due| due.max(at)));
                    dirty.extend(retry);
                }
            }
            _ = tokio::time::sleep_until(full_at) => {
                full_at = Instant::now() + cadence.max_interval;
                dirty.extend(all.iter().cloned());
                due = Some(due.map_or(Instant::now(), |due| due.min(Instant::now())));
            }
        }
    }
    if let Some(run) = running {
        // The run shares the cancelled token: it stops after the commit it is making.
        if let Ok(ran) = run.await {
            record(&ran, &metrics, &health);
        }
    }
}

/// A run's streams and what it did.
struct Ran {
    streams: BTreeSet<String>,
    report: Result<SyncReport, crate::sync::Error>,
}

async fn run(syncer: Arc<Syncer>, streams: BTreeSet<String>, cancel: CancellationToken) -> Ran {
    let tables: Vec<_> = (syncer.settings().tables.iter())
        .filter(|t| streams.contains(&t.stream))
        .copied()
        .collect();
    info!(streams = ?streams, "listen: run started");
    let report = syncer.run(&tables).with_cancel(cancel).await;
    Ran { streams, report }
}

/// Count a run; the streams to run again (those that failed).
fn record(ran: &Ran, metrics: &Metrics, health: &Health) -> BTreeSet<String> {
    let now = chrono::Utc::now();
    match &ran.report {
        Ok(report) => {
            metrics.ran(report, now.timestamp_millis() as f64 / 1e3);
            health.ran(report);
            let failed: BTreeSet<String> = (report.tables.iter())
                .filter(|t| matches!(t.outcome, Outcome::Failed(_)))
                .map(|t| t.stream.clone())
                .collect();
            for table in &report.tables {
                if let Outcome::Failed(error) = &table.outcome {
                    warn!(table = %table.table, %error, "listen: the run of a table failed; it runs again later");
                }
            }
            info!(run_id = %report.run_id, failed = failed.len(), "listen: run ended");
            failed
        }
        Err(error) => {
            warn!(%error, "listen: a run could not start; its streams run again later");
            ran.streams.clone()
        }
    }
}
