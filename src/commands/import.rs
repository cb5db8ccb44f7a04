//! `zendesk-lake import`: tickets from a lake table or a SQL query over the lake into Zendesk
//! through the ticket import, each `external_id` created exactly once, whatever moment a run
//! was killed at (docs/ARCHITECTURE.md, "The write path").
//!
//! The rooms, in order: the lake source ([`Lake::query`], which sees every Delta table under
//! the root) → the encoder ([`TICKET_IMPORT`], which refuses a bad source before any request)
//! → the writers ([`tickets`], [`jobs`]) → the state table [`IMPORT_STATE`].
//!
//! # Exactly once
//! A batch (at most [`MAX_BULK`] rows) is recorded `pending` before its request is sent, with
//! its job id as soon as Zendesk answers, and `imported` or `failed` once its job ends (a job's
//! results name rows by their index in the request, recorded with each row). A re-run skips
//! `imported` rows. A request Zendesk may have applied is never sent again; its rows stay
//! `pending`.
//!
//! A run starts by resolving every `pending` row, before it sends anything: it waits for the
//! recorded jobs, and for every job of the account still queued or working (a killed run's
//! request may have been answered after it died, its job id never recorded), reads the rows'
//! results, and looks the rest up by `external_id`, or, for a batch sent with
//! `archive_immediately` (archived tickets are not listed), in the ticket export from the
//! batch's submit time. Only rows found nowhere are sent again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use tracing::{info, warn};

use crate::config::Settings;
use crate::encode::{Encoded, TICKET_IMPORT};
use crate::failpoint;
use crate::lake::lease::Lease;
use crate::lake::state::{ImportRow, ImportStatus, JobRef, Recorded, StateWriter, IMPORT_STATE};
use crate::lake::Lake;
use crate::sync::progress::{StreamState, StreamTracker, Tracker};
use crate::zendesk::writers::jobs::{self, JobResult, JobStatus, Poll};
use crate::zendesk::writers::tickets::{self, MAX_BULK};
use crate::zendesk::{Client, RequestStats};

/// How many failed external ids a report lists.
pub const FAILED_LISTED: usize = 20;

/// How far before a batch's recorded submit time the ticket export is searched for its
/// archived tickets: the recorded time is this machine's clock, the export's Zendesk's.
const EXPORT_MARGIN_SECS: i64 = 300;

/// The ticket export refuses a `start_time` in its last minute.
const EXPORT_HOLD_BACK_SECS: i64 = 61;

pub use super::write::Error;

/// Where the rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Delta table under the lake's root, by its folder name.
    Table(String),
    /// A query over the lake's tables.
    Sql(String),
}

/// What `import` does.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub source: Source,
    pub archive_immediately: bool,
    pub dry_run: bool,
    /// Jobs in flight at most (Zendesk runs at most 30 per account).
    pub jobs: usize,
    pub poll: Poll,
    /// The wait before the ticket export is searched, so that it holds the tickets of jobs
    /// that just ended (Zendesk holds its last minute back).
    pub export_wait: Duration,
    pub tracker: Option<Tracker>,
}

impl ImportOptions {
    pub fn new(source: Source) -> ImportOptions {
        ImportOptions {
            source,
            archive_immediately: false,
            dry_run: false,
            jobs: 4,
            poll: Poll::default(),
            export_wait: Duration::from_secs(60),
            tracker: None,
        }
    }

    pub fn table(name: &str) -> ImportOptions {
        ImportOptions::new(Source::Table(name.to_owned()))
    }

    pub fn sql(sql: &str) -> ImportOptions {
        ImportOptions::new(Source::Sql(sql.to_owned()))
    }

    pub fn with_archive_immediately(mut self, on: bool) -> Self {
        self.archive_immediately = on;
        self
    }

    pub fn with_dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.clamp(1, 30);
        self
    }

    pub fn with_poll(mut self, poll: Poll) -> Self {
        self.poll = poll;
        self
    }

    pub fn with_export_wait(mut self, wait: Duration) -> Self {
        self.export_wait = wait;
        self
    }

    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = Some(tracker);
        self
    }
}

/// What a dry run found: the tickets it would send, the requests and the time they take at the
/// account budget.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    pub tickets: usize,
    pub requests: u64,
    pub seconds: f64,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImportReport {
    /// Rows of the source.
    pub rows: usize,
    /// Rows imported by this run (pending rows of an earlier run found imported included).
    pub imported: usize,
    /// Rows imported by an earlier run, not sent.
    pub skipped: usize,
    /// Rows Zendesk refused in this run.
    pub failed: usize,
    /// The first [`FAILED_LISTED`] of them, with Zendesk's message.
    pub failed_rows: Vec<(String, String)>,
    /// Rows left `pending`: sent, and their outcome unknown (the next run resolves them).
    pub pending: Vec<String>,
    /// Pending rows of an earlier run resolved before anything was sent.
    pub recovered: usize,
    pub requests: u64,
    pub seconds: f64,
    /// Set by a dry run, which sends and writes nothing.
    pub dry_run: Option<DryRun>,
}

impl ImportReport {
    /// No row failed and none is left pending.
    pub fn is_ok(&self) -> bool {
        self.failed == 0 && self.pending.is_empty()
    }

    /// The external ids of the first failed rows.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.failed_rows.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        match &self.dry_run {
            Some(dry) => format!(
                "dry run: {} tickets to import, {} requests, about {:.0} s at the account budget; nothing sent",
                dry.tickets, dry.requests, dry.seconds
            ),
            None => format!(
                "imported {}, skipped {}, failed {}, pending {}, requests {}, {:.1} s",
                self.imported,
                self.skipped,
                self.failed,
                self.pending.len(),
                self.requests,
                self.seconds
            ),
        }
    }
}

/// What the run shares between its batches.
struct Run {
    client: Client,
    stats: Arc<RequestStats>,
    writer: StateWriter,
    lease: Lease,
    options: ImportOptions,
}

/// How a set of rows ended in this run.
#[derive(Default)]
struct Outcome {
    imported: Vec<String>,
    failed: Vec<(String, String)>,
    pending: Vec<String>,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.imported.extend(other.imported);
        self.failed.extend(other.failed);
        self.pending.extend(other.pending);
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A state row of `external_id` following `before` (its job and submit time kept).
fn next_row(before: &ImportRow, status: ImportStatus) -> ImportRow {
    ImportRow {
        status,
        error: None,
        ..before.clone()
    }
}

/// Import the source's rows that are not imported yet.
pub async fn import(settings: Settings, options: ImportOptions) -> Result<ImportReport, Error> {
    let started = Instant::now();
    let lake = Lake::try_new(&settings.lake, settings.storage.clone())?;
    let sql = match &options.source {
        Source::Table(name) => format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")),
        Source::Sql(sql) => sql.clone(),
    };
    let batches = lake.query(&sql).await?;
    let rows = TICKET_IMPORT.encode(&batches)?;
    if options.dry_run {
        let state = import_state(&lake).await?;
        let skipped = rows
            .iter()
            .filter(|r| imported_before(&state, &r.key))
            .count();
        let tickets = rows.len() - skipped;
        let requests = tickets.div_ceil(MAX_BULK) as u64 * jobs::REQUESTS_PER_BATCH;
        let per_minute = f64::from(settings.zendesk.account_requests_per_minute.max(1));
        return Ok(ImportReport {
            rows: rows.len(),
            skipped,
            dry_run: Some(DryRun {
                tickets,
                requests,
                seconds: requests as f64 * 60.0 / per_minute,
            }),
            seconds: started.elapsed().as_secs_f64(),
            ..ImportReport::default()
        });
    }
    let client = Client::try_new(&settings.zendesk).map_err(Error::Settings)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    // The state is read under the lease: no other run sends rows while this one decides.
    let lease = Lease::acquire(&lake, IMPORT_STATE.name, &run_id).await?;
    let stats = Arc::new(RequestStats::default());
    let tracker = options.tracker.as_ref().map(|t| t.stream("import"));
    if let Some(tracker) = &tracker {
        tracker.start(stats.clone());
    }
    let run = Run {
        client,
        stats: stats.clone(),
        writer: StateWriter::new(&lake, IMPORT_STATE, &run_id),
        lease,
        options,
    };
    let mut report = ImportReport {
        rows: rows.len(),
        ..ImportReport::default()
    };
    let result = run_import(&run, &rows, &mut report, tracker.as_deref()).await;
    run.lease.release().await;
    if let Some(tracker) = &tracker {
        tracker.finish(match &result {
            Ok(()) if report.is_ok() => StreamState::Done,
            _ => StreamState::Failed,
        });
    }
    result?;
    report.requests = stats.requests();
    report.seconds = started.elapsed().as_secs_f64();
    info!(summary = %report.summary(), "import done");
    Ok(report)
}

/// The newest state of every external id the lake's import state records.
async fn import_state(lake: &Lake) -> Result<HashMap<String, ImportRow>, Error> {
    Ok(lake
        .state_latest::<ImportRow>(&IMPORT_STATE)
        .await?
        .into_iter()
        .map(|row| (row.external_id.clone(), row))
        .collect())
}

fn imported_before(state: &HashMap<String, ImportRow>, key: &str) -> bool {
    state
        .get(key)
        .is_some_and(|r| r.status == ImportStatus::Imported)
}

async fn run_import(
    run: &Run,
    rows: &[Encoded],
    report: &mut ImportReport,
    tracker: Option<&StreamTracker>,
) -> Result<(), Error> {
    let state = &mut import_state(run.writer.lake()).await?;
    report.skipped = rows
        .iter()
        .filter(|r| imported_before(state, &r.key))
        .count();
    info!(
        run_id = run.writer.run_id(),
        rows = rows.len(),
        skipped = report.skipped,
        "import starts"
    );
    // Nothing is sent before every pending row is resolved.
    let pending: Vec<ImportRow> = state
        .values()
        .filter(|r| r.status == ImportStatus::Pending)
        .cloned()
        .collect();
    let source: HashSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    if !pending.is_empty() {
        warn!(
            rows = pending.len(),
            "rows of an earlier run are pending: resolving them before sending anything"
        );
        let resolved = resolve(run, &pending).await?;
        report.recovered = resolved.len();
        for row in resolved {
            if row.status == ImportStatus::Imported && source.contains(row.external_id.as_str()) {
                report.imported += 1;
            }
            state.insert(row.external_id.clone(), row);
        }
    }
    let to_send: Vec<&Encoded> = rows
        .iter()
        .filter(|r| {
            state
                .get(&r.key)
                .is_none_or(|s| s.status == ImportStatus::Failed)
        })
        .collect();
    let chunks: Vec<&[&Encoded]> = to_send.chunks(MAX_BULK).collect();
    if let Some(tracker) = tracker {
        tracker.total_pages(chunks.len() as u64);
    }
    let mut outcomes = futures::stream::iter(chunks)
        .map(|chunk| send_batch(run, chunk))
        .buffer_unordered(run.options.jobs.max(1));
    let mut outcome = Outcome::default();
    while let Some(done) = outcomes.next().await {
        let done = done?;
        if let Some(tracker) = tracker {
            tracker.page(
                done.imported.len() + done.failed.len() + done.pending.len(),
                None,
            );
        }
        outcome.add(done);
    }
    report.imported += outcome.imported.len();
    report.failed = outcome.failed.len();
    outcome.failed.sort();
    report.failed_rows = outcome.failed.into_iter().take(FAILED_LISTED).collect();
    outcome.pending.sort();
    report.pending = outcome.pending;
    Ok(())
}

/// Send one batch and follow its job to the end, recording each step.
async fn send_batch(run: &Run, chunk: &[&Encoded]) -> Result<Outcome, Error> {
    let archive = run.options.archive_immediately;
    let submitted_at = now_micros();
    let mut rows: Vec<ImportRow> = chunk
        .iter()
        .enumerate()
        .map(|(index, encoded)| ImportRow {
            external_id: encoded.key.clone(),
            status: ImportStatus::Pending,
            ticket_id: None,
            error: None,
            job: JobRef::at(index),
            archive,
            submitted_at: Some(submitted_at),
            recorded: Recorded::default(),
        })
        .collect();
    run.lease.check()?;
    run.writer.append(&rows).await?;
    failpoint::hit("import_pending_recorded");
    let tickets: Vec<Value> = chunk
        .iter()
        .map(|e| Value::Object(e.object.clone()))
        .collect();
    let job = match tickets::import_many(&run.client, &run.stats, &tickets, archive).await {
        Ok(job) => job,
        Err(error) if error.may_have_applied() => {
            warn!(%error, rows = rows.len(), "the import may have been applied: its rows stay pending for the next run to look up");
            return Ok(Outcome {
                pending: rows.into_iter().map(|r| r.external_id).collect(),
                ..Outcome::default()
            });
        }
        Err(error) if error.is_unauthorized() => return Err(error.into()),
        Err(error) => {
            // Zendesk refused the request unapplied: its rows failed, and a re-run tries them.
            warn!(%error, rows = rows.len(), "the import was refused");
            let message = error.to_string();
            let failed: Vec<ImportRow> = rows
                .iter()
                .map(|r| ImportRow {
                    error: Some(message.clone()),
                    ..next_row(r, ImportStatus::Failed)
                })
                .collect();
            run.writer.append(&failed).await?;
            return Ok(Outcome {
                failed: failed
                    .into_iter()
                    .map(|r| (r.external_id, message.clone()))
                    .collect(),
                ..Outcome::default()
            });
        }
    };
    failpoint::hit("import_submitted");
    for row in &mut rows {
        row.job.job_id = Some(job.id.clone());
    }
    run.writer.append(&rows).await?;
    failpoint::hit("import_job_recorded");
    let done = jobs::ended(&run.client, &run.stats, job, run.options.poll).await;
    failpoint::hit("import_job_done");
    let (ended, outcome) = apply_results(&done, &rows);
    run.writer.append(&ended).await?;
    failpoint::hit("import_recorded");
    Ok(outcome)
}

/// The row a job's result for `row` settles: `imported` with its ticket, or `failed` with
/// Zendesk's message.
fn settled(row: &ImportRow, result: &JobResult) -> ImportRow {
    match (result.error_message(), result.id) {
        (None, Some(id)) => ImportRow {
            ticket_id: Some(id),
            ..next_row(row, ImportStatus::Imported)
        },
        (message, _) => ImportRow {
            error: Some(message.unwrap_or_else(|| "no ticket id in the result".into())),
            ..next_row(row, ImportStatus::Failed)
        },
    }
}

/// The rows a finished job settles, and the outcome of all `rows` (those it has no result for
/// stay pending).
fn apply_results(job: &JobStatus, rows: &[ImportRow]) -> (Vec<ImportRow>, Outcome) {
    let mut ended = Vec::new();
    let mut outcome = Outcome::default();
    for row in rows {
        let Some(result) = row.job.job().and_then(|(_, i)| job.result(i?)) else {
            outcome.pending.push(row.external_id.clone());
            continue;
        };
        let row = settled(row, result);
        match &row.error {
            None => outcome.imported.push(row.external_id.clone()),
            Some(message) => outcome
                .failed
                .push((row.external_id.clone(), message.clone())),
        }
        ended.push(row);
    }
    (ended, outcome)
}

/// Resolve pending rows of earlier runs: their jobs' results, then look-ups. Returns the rows
/// recorded for them; a row found nowhere is recorded `failed` (never applied), so that it is
/// sent again.
async fn resolve(run: &Run, pending: &[ImportRow]) -> Result<Vec<ImportRow>, Error> {
    let (client, stats, poll) = (&run.client, run.stats.as_ref(), run.options.poll);
    let by_jobs = jobs::resolve(client, stats, poll, pending, |r| r.job.job()).await?;
    let mut resolved: Vec<ImportRow> = by_jobs
        .results
        .iter()
        .map(|(row, result)| settled(row, result))
        .collect();
    let mut archived: Vec<&ImportRow> = Vec::new();
    let mut absent: Vec<&ImportRow> = Vec::new();
    for row in by_jobs.unknown {
        let ids = tickets::by_external_id(client, stats, &row.external_id).await?;
        match ids.first() {
            Some(&id) => resolved.push(ImportRow {
                ticket_id: Some(id),
                ..next_row(row, ImportStatus::Imported)
            }),
            None if row.archive => archived.push(row),
            None => absent.push(row),
        }
    }
    if !archived.is_empty() {
        tokio::time::sleep(run.options.export_wait).await;
        let earliest = archived
            .iter()
            .filter_map(|r| r.submitted_at)
            .min()
            .unwrap_or(0)
            / 1_000_000;
        let start = (earliest - EXPORT_MARGIN_SECS)
            .min(chrono::Utc::now().timestamp() - EXPORT_HOLD_BACK_SECS);
        let wanted: HashSet<String> = archived.iter().map(|r| r.external_id.clone()).collect();
        let found = tickets::exported_since(client, stats, start, &wanted).await?;
        for row in archived {
            match found.get(&row.external_id) {
                Some(&id) => resolved.push(ImportRow {
                    ticket_id: Some(id),
                    ..next_row(row, ImportStatus::Imported)
                }),
                None => absent.push(row),
            }
        }
    }
    for row in absent {
        resolved.push(ImportRow {
            error: Some(
                "not found in Zendesk after its run ended: never applied, sent again".into(),
            ),
            ..next_row(row, ImportStatus::Failed)
        });
    }
    run.writer.append(&resolved).await?;
    Ok(resolved)
}
