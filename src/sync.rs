//! One sync run: for every object, fetch → decode → merge → record, in that order
//! (DESIGN.md §2). This module only orders the steps; HTTP lives in [`crate::zendesk`], schemas in
//! [`crate::decode`], Delta in [`crate::lake`].
//!
//! Objects run concurrently. Within an object the three stages run at once, linked by bounded
//! channels (so memory stays bounded whatever the account size), and pages are gathered into
//! commits of about `commit_rows` rows. A commit happens only on a page boundary, and the
//! control row naming the position after that page is written only after the data commit, so an
//! interrupted run leaves the lake at its last commit and the next run resumes from there.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use deltalake::arrow::array::RecordBatch;
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use crate::config::Settings;
use crate::decode::{self, Decoded};
use crate::failpoint;
use crate::lake::{self, ControlRow, Lake};
use crate::objects::{LimitClass, ObjectSpec};
use crate::zendesk::{self, paginate, Client, Page, Position, RequestStats};

/// Errors that stop the whole run before any object starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Client(String),
    #[error(transparent)]
    Zendesk(#[from] zendesk::Error),
    #[error(transparent)]
    Lake(#[from] lake::Error),
}

/// An object's failure.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Zendesk(#[from] zendesk::Error),
    #[error(transparent)]
    Decode(#[from] decode::Error),
    #[error(transparent)]
    Lake(#[from] lake::Error),
    #[error("{object}: the decode task failed: {detail}")]
    Task { object: String, detail: String },
}

/// How an object's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Not readable with these credentials or on this plan (403/404): skipped with a warning.
    Skipped(String),
    Failed(String),
}

/// What one object's run did.
#[derive(Debug, Clone)]
pub struct ObjectReport {
    pub object: String,
    pub outcome: Outcome,
    /// Records received from Zendesk (after boundary duplicates were dropped).
    pub fetched: u64,
    /// Rows inserted or updated in the table.
    pub upserted: u64,
    /// Rows of this run marked `_deleted`.
    pub deleted: u64,
    pub commits: u64,
    pub requests: u64,
    pub retries: u64,
    pub seconds: f64,
    /// Watermark after the run (µs since the epoch).
    pub watermark: Option<i64>,
}

/// What a run did, object by object.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub run_id: String,
    pub objects: Vec<ObjectReport>,
}

impl SyncReport {
    pub fn failed(&self) -> bool {
        self.objects
            .iter()
            .any(|o| matches!(o.outcome, Outcome::Failed(_)))
    }
}

/// Run one sync of every configured object.
pub async fn run(settings: &Settings) -> Result<SyncReport, Error> {
    let client = Client::try_new(&settings.zendesk).map_err(Error::Client)?;
    let lake = Lake::try_new(&settings.lake, settings.storage.clone())?;
    let run_id = uuid::Uuid::new_v4().to_string();
    // One cheap request first: wrong credentials fail the run here, clearly, before anything
    // is read from or written to the lake.
    let stats = RequestStats::default();
    client
        .get_json(
            "account",
            &client.endpoint("/api/v2/users/me.json"),
            LimitClass::Account,
            &stats,
        )
        .await?;
    let state = lake.latest_state().await?;
    info!(%run_id, lake = %lake.root(), objects = settings.objects.len(), "sync started");
    let shared = Arc::new(settings.clone());
    let mut tasks = Vec::new();
    for spec in &settings.objects {
        let spec: &'static ObjectSpec = spec;
        let job = ObjectJob {
            spec,
            client: client.clone(),
            lake: lake.clone(),
            settings: shared.clone(),
            run_id: run_id.clone(),
            last: state.get(&spec.name).cloned(),
        };
        let span = info_span!("object", object = %spec.name);
        tasks.push(tokio::spawn(job.run().instrument(span)));
    }
    let mut objects = Vec::new();
    for (task, spec) in tasks.into_iter().zip(&settings.objects) {
        objects.push(task.await.unwrap_or_else(|e| ObjectReport {
            object: spec.name.clone(),
            outcome: Outcome::Failed(format!("{}: task failed: {e}", spec.name)),
            ..ObjectReport::empty(&spec.name)
        }));
    }
    Ok(SyncReport { run_id, objects })
}

impl ObjectReport {
    fn empty(object: &str) -> ObjectReport {
        ObjectReport {
            object: object.to_owned(),
            outcome: Outcome::Ok,
            fetched: 0,
            upserted: 0,
            deleted: 0,
            commits: 0,
            requests: 0,
            retries: 0,
            seconds: 0.0,
            watermark: None,
        }
    }
}

struct ObjectJob {
    spec: &'static ObjectSpec,
    client: Client,
    lake: Lake,
    settings: Arc<Settings>,
    run_id: String,
    last: Option<ControlRow>,
}

/// Counters the writer stage keeps.
#[derive(Default)]
struct Written {
    fetched: u64,
    upserted: u64,
    deleted: u64,
    commits: u64,
    watermark: Option<i64>,
}

impl ObjectJob {
    async fn run(self) -> ObjectReport {
        let started = Instant::now();
        let stats = Arc::new(RequestStats::default());
        let mut report = ObjectReport::empty(&self.spec.name);
        let mut written = Written::default();
        info!(from = ?self.last.as_ref().map(|l| l.position()), "object started");
        let result = self.pipeline(&stats, &mut written).await;
        report.outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(ObjectError::Zendesk(e))
                if matches!(e.status(), Some(403 | 404)) && written.commits == 0 =>
            {
                warn!(error = %e, "skipped: not readable with these credentials or on this plan");
                Outcome::Skipped(e.to_string())
            }
            Err(e) => {
                warn!(error = %e, "object failed; the lake keeps its last committed state");
                Outcome::Failed(e.to_string())
            }
        };
        report.fetched = written.fetched;
        report.upserted = written.upserted;
        report.deleted = written.deleted;
        report.commits = written.commits;
        report.watermark = written.watermark;
        report.requests = stats.requests();
        report.retries = stats.retries();
        report.seconds = started.elapsed().as_secs_f64();
        info!(
            fetched = report.fetched,
            upserted = report.upserted,
            deleted = report.deleted,
            commits = report.commits,
            requests = report.requests,
            retries = report.retries,
            seconds = report.seconds,
            "object finished"
        );
        report
    }

    async fn pipeline(
        &self,
        stats: &Arc<RequestStats>,
        written: &mut Written,
    ) -> Result<(), ObjectError> {
        let spec = self.spec;
        let settings = &self.settings;
        let last = self.lake.reconcile(&spec.name, self.last.clone()).await?;
        let mut seq = last.as_ref().map_or(0, |l| l.seq);
        written.watermark = last.as_ref().and_then(|l| l.watermark);
        let from = last
            .as_ref()
            .map(ControlRow::position)
            .unwrap_or_else(|| Position::start(settings.start_time));

        let (page_tx, mut page_rx) = mpsc::channel::<Page>(settings.channel_pages);
        let (decoded_tx, decoded_rx) = mpsc::channel::<(Decoded, Page)>(settings.channel_pages);

        let fetch = {
            let client = self.client.clone();
            let stats = stats.clone();
            let page_size = settings.page_size;
            async move { paginate::fetch(&client, spec, from, page_size, &stats, page_tx).await }
        };
        let decode = async move {
            while let Some(mut page) = page_rx.recv().await {
                let records = std::mem::take(&mut page.records);
                let decoded =
                    tokio::task::spawn_blocking(move || decode::decode(spec, &records, Utc::now()))
                        .await
                        .map_err(|e| ObjectError::Task {
                            object: spec.name.clone(),
                            detail: e.to_string(),
                        })??;
                failpoint::hit("page_decoded");
                if decoded_tx.send((decoded, page)).await.is_err() {
                    break;
                }
            }
            Ok::<(), ObjectError>(())
        };
        let write = async {
            // Owned by this stage, so that when it stops (a failed commit) the channel closes
            // and the stages feeding it stop too, instead of waiting on a full channel forever.
            let mut decoded_rx = decoded_rx;
            let mut group: Vec<RecordBatch> = Vec::new();
            let mut rows = 0usize;
            let mut max_cursor: Option<i64> = None;
            let mut ended = false;
            while let Some((decoded, page)) = decoded_rx.recv().await {
                written.fetched += decoded.batch.num_rows() as u64;
                rows += decoded.batch.num_rows();
                max_cursor = max_cursor.max(decoded.max_cursor);
                if decoded.batch.num_rows() > 0 {
                    group.push(decoded.batch);
                }
                ended = page.end_of_stream;
                if rows > 0 && (rows >= settings.commit_rows || ended) {
                    seq += 1;
                    self.commit(
                        seq,
                        std::mem::take(&mut group),
                        &page.position,
                        max_cursor,
                        written,
                    )
                    .await?;
                    rows = 0;
                }
            }
            if ended && written.commits == 0 {
                // A run that found nothing still leaves a (empty) table for queries.
                self.lake.ensure_table(spec).await?;
            }
            // Without end_of_stream the fetch stopped early (an error, reported by its stage):
            // the pages not yet committed are dropped, the lake stays at its last commit.
            Ok::<(), ObjectError>(())
        };
        let (fetched, decoded, wrote) = tokio::join!(fetch, decode, write);
        wrote?;
        decoded?;
        fetched?;
        Ok(())
    }

    async fn commit(
        &self,
        seq: i64,
        group: Vec<RecordBatch>,
        position: &Position,
        max_cursor: Option<i64>,
        written: &mut Written,
    ) -> Result<(), ObjectError> {
        let spec = self.spec;
        let batch = decode::dedup(spec, &group)?;
        let deleted = decode::count_deleted(&batch);
        let watermark = written.watermark.max(max_cursor);
        // Also stored in the data commit's metadata, so that a crash before the control commit
        // can be repaired from the Delta log (`Lake::reconcile`).
        let mut row = ControlRow {
            object: spec.name.clone(),
            seq,
            cursor: position.cursor.clone(),
            start_time: position.start_time,
            boundary: position.boundary.clone(),
            watermark,
            rows_upserted: batch.num_rows() as i64,
            rows_deleted: deleted as i64,
            run_id: self.run_id.clone(),
            data_version: -1,
            committed_at: Utc::now().timestamp_micros(),
        };
        failpoint::hit("before_data_commit");
        let commit = self.lake.upsert(spec, batch, &row).await?;
        failpoint::hit("after_data_commit");
        row.data_version = commit.version;
        row.rows_upserted = (commit.inserted + commit.updated) as i64;
        row.committed_at = Utc::now().timestamp_micros();
        self.lake.record(&row, &commit.table_id).await?;
        failpoint::hit("after_control_commit");
        written.upserted += commit.inserted + commit.updated;
        written.deleted += deleted;
        written.commits += 1;
        written.watermark = watermark;
        info!(
            seq,
            version = commit.version,
            inserted = commit.inserted,
            updated = commit.updated,
            "committed"
        );
        Ok(())
    }
}
