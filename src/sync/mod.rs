//! One sync run: for every stream, read → decode → merge → record, in that order
//! (docs/ARCHITECTURE.md, "How a sync runs"). This module only orders the steps; HTTP lives in
//! [`crate::zendesk`], schemas in [`crate::decode`], Delta in [`crate::lake`].
//!
//! Streams run concurrently. Within a stream the three stages run at once, linked by bounded
//! channels (so memory stays bounded whatever the account size), and pages are gathered into
//! batches of at most `commit_rows` records (a single page may hold more; memory is bounded by
//! the bytes of page text in flight too, [`readers::ReadAhead`]). A batch is committed on a
//! page boundary, one data commit per table it has rows for, and the control row naming the
//! position after that page is written only after all of them, so an interrupted run leaves
//! every table at or one batch past its last recorded commit, and the next run resumes from
//! there.

pub mod progress;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use deltalake::arrow::array::RecordBatch;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::config::Settings;
use crate::decode::{self, Decoded, Key};
use crate::failpoint;
use crate::json;
use crate::lake::{self, CommitDraft, ControlRow, Lake, PatchSet, TableCommit};
use crate::page::{Page, ParentPage, RawPage, RawRecord};
use crate::spec::{Stream, StreamKind, Table, WriteMode, DELETED_COLUMN};
use crate::zendesk::readers::children::Parent;
use crate::zendesk::readers::{self, body, Context, Held, ReadAhead, READ_AHEAD_BYTES};
use crate::zendesk::{self, Client, RequestStats};
use progress::{StreamState, StreamTracker, Tracker};

/// Errors that stop the whole run before any stream starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Client(String),
    #[error(transparent)]
    Zendesk(#[from] zendesk::Error),
    #[error(transparent)]
    Lake(#[from] lake::Error),
}

/// A stream's failure.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Zendesk(#[from] zendesk::Error),
    #[error(transparent)]
    Decode(#[from] decode::Error),
    #[error(transparent)]
    Lake(#[from] lake::Error),
    #[error("{stream}: the decode task failed: {detail}")]
    Task { stream: String, detail: String },
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// How a table's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Not readable with these credentials or on this plan (403/404): skipped with a warning.
    Skipped(String),
    Failed(String),
    /// The run was cancelled: the table is at its last recorded commit, and the next run goes
    /// on from there.
    Cancelled,
}

/// What one run did to one table.
#[derive(Debug, Clone)]
pub struct TableReport {
    pub table: String,
    /// The stream that feeds it.
    pub stream: String,
    pub outcome: Outcome,
    /// Rows received for the table (after boundary duplicates were dropped).
    pub fetched: u64,
    /// Rows inserted or updated in the table.
    pub upserted: u64,
    /// Rows of this run marked `_deleted`.
    pub deleted: u64,
    /// Data commits to the table.
    pub commits: u64,
    /// Requests of the stream (shared by its tables).
    pub requests: u64,
    pub retries: u64,
    pub seconds: f64,
    /// Time the stream's requests waited for the rate budgets (shared by its tables).
    pub budget_wait_seconds: f64,
    /// The stream's watermark after the run (µs since the epoch).
    pub watermark: Option<i64>,
    /// Data files this run added to the table, and their bytes.
    pub files_written: u64,
    pub bytes_written: u64,
    /// Data files this run removed from the table (rewritten by merges), and their bytes.
    pub files_removed: u64,
    pub bytes_removed: u64,
}

/// What a run did, table by table.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub run_id: String,
    pub tables: Vec<TableReport>,
}

impl SyncReport {
    pub fn failed(&self) -> bool {
        self.tables
            .iter()
            .any(|t| matches!(t.outcome, Outcome::Failed(_)))
    }
}

/// The configured tables grouped by the stream that feeds them, in the order of the tables.
pub fn streams_of(tables: &[&'static Table]) -> Vec<(&'static Stream, Vec<&'static Table>)> {
    let mut streams: Vec<(&'static Stream, Vec<&'static Table>)> = Vec::new();
    for &table in tables {
        match streams.iter_mut().find(|(s, _)| s.name == table.stream) {
            Some((_, tables)) => tables.push(table),
            None => streams.push((table.source(), vec![table])),
        }
    }
    streams
}

/// One run of every configured table, by a [`Syncer`] of its own.
pub async fn run(settings: &Settings) -> Result<SyncReport, Error> {
    let syncer = Syncer::try_new(settings.clone()).await?;
    syncer.run(&settings.tables).await
}

/// The sync engine of a process (docs/ARCHITECTURE.md, "How a sync runs"). Built once, it holds
/// what every run shares: the client, with the rate budgets it learns from Zendesk's headers,
/// and the lake's handle, the credentials checked and the control table migrated. `sync` runs
/// it once, a long-running process on every trigger.
///
/// Runs of one syncer are single-flight: a run waits for the one before it to end, so a stream
/// never runs twice at once in a process (across processes, the exactly-once protocol decides).
/// A run stops early when its [`CancellationToken`] fires: each stream finishes the commit it
/// is making and ends with [`Outcome::Cancelled`], its tables at their last recorded commit.
pub struct Syncer {
    settings: Arc<Settings>,
    client: Client,
    lake: Lake,
    flight: tokio::sync::Mutex<()>,
}

impl Syncer {
    /// Build the client and the lake's handle, check the credentials (wrong ones fail here,
    /// before anything is read from or written to the lake) and migrate the control table.
    pub async fn try_new(settings: Settings) -> Result<Syncer, Error> {
        let client = Client::try_new(&settings.zendesk).map_err(Error::Client)?;
        let lake = Lake::try_new(&settings.lake, settings.storage.clone())?
            .with_deletion_vectors(settings.maintenance.deletion_vectors);
        client.me(&RequestStats::default()).await?;
        lake.migrate().await?;
        Ok(Syncer {
            settings: Arc::new(settings),
            client,
            lake,
            flight: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The client its runs send through, lent to a command that writes beside them (`push`),
    /// so that the budgets learned from Zendesk's headers are one.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A run of `tables` (each with its stream's other configured tables: a stream always
    /// feeds all of them, or a table it leaves out would fall behind).
    pub fn run<'a>(&'a self, tables: &[&'static Table]) -> RunBuilder<'a> {
        let streams: HashSet<&str> = tables.iter().map(|t| t.stream.as_str()).collect();
        let tables = self
            .settings
            .tables
            .iter()
            .copied()
            .filter(|t| streams.contains(t.stream.as_str()))
            .collect();
        RunBuilder {
            syncer: self,
            tables,
            tracker: Tracker::default(),
            cancel: CancellationToken::new(),
        }
    }

    async fn run_once(
        &self,
        tables: &[&'static Table],
        tracker: &Tracker,
        cancel: &CancellationToken,
    ) -> Result<SyncReport, Error> {
        let _flight = self.flight.lock().await;
        let lake = &self.lake;
        let run_id = uuid::Uuid::new_v4().to_string();
        let state = lake.latest_state().await?;
        let streams = streams_of(tables);
        for (stream, _) in &streams {
            tracker.stream(&stream.name);
        }
        info!(%run_id, lake = %lake.root(), streams = streams.len(), "sync started");
        // Streams that read their parents from the lake run after the others committed, so
        // that they see this run's parents.
        let (first, then): (Vec<_>, Vec<_>) =
            streams.into_iter().partition(|(s, _)| s.parents.is_none());
        let mut reports = Vec::new();
        for phase in [first, then] {
            let run = Run {
                client: &self.client,
                lake,
                settings: &self.settings,
                run_id: &run_id,
                state: &state,
                tracker,
                cancel,
            };
            reports.extend(run_streams(&phase, run).await);
        }
        // Checkpoint interval and compaction of the tables this run wrote (logged; never fails
        // it).
        let written = reports
            .iter()
            .filter(|t| t.outcome == Outcome::Ok && t.commits > 0);
        lake.after_sync(
            &self.settings.maintenance,
            written.map(|t| t.table.as_str()),
        )
        .await;
        Ok(SyncReport {
            run_id,
            tables: reports,
        })
    }
}

/// A run of a [`Syncer`], started by awaiting it.
#[must_use = "a run does nothing until awaited"]
pub struct RunBuilder<'a> {
    syncer: &'a Syncer,
    tables: Vec<&'static Table>,
    tracker: Tracker,
    cancel: CancellationToken,
}

impl RunBuilder<'_> {
    /// Report each stream's progress to `tracker` as the run goes.
    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = tracker;
        self
    }

    /// Stop the run early when `cancel` fires.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

impl<'a> std::future::IntoFuture for RunBuilder<'a> {
    type Output = Result<SyncReport, Error>;
    type IntoFuture = futures::future::BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.syncer
                .run_once(&self.tables, &self.tracker, &self.cancel)
                .await
        })
    }
}

/// What every stream of a run shares.
#[derive(Clone, Copy)]
struct Run<'a> {
    client: &'a Client,
    lake: &'a Lake,
    settings: &'a Arc<Settings>,
    run_id: &'a str,
    state: &'a HashMap<String, ControlRow>,
    tracker: &'a Tracker,
    cancel: &'a CancellationToken,
}

/// Run streams concurrently, and report on their tables in order.
async fn run_streams(
    streams: &[(&'static Stream, Vec<&'static Table>)],
    run: Run<'_>,
) -> Vec<TableReport> {
    let mut tasks = Vec::new();
    for (stream, tables) in streams {
        let job = StreamJob {
            stream,
            tables: tables.clone(),
            client: run.client.clone(),
            lake: run.lake.clone(),
            settings: run.settings.clone(),
            run_id: run.run_id.to_owned(),
            last: run.state.get(&stream.name).cloned(),
            stats: Arc::new(RequestStats::default()),
            watch: run.tracker.stream(&stream.name),
            cancel: run.cancel.clone(),
        };
        let span = info_span!("stream", stream = %stream.name);
        tasks.push(tokio::spawn(job.run().instrument(span)));
    }
    let mut reports = Vec::new();
    for (task, (stream, tables)) in tasks.into_iter().zip(streams) {
        match task.await {
            Ok(tables) => reports.extend(tables),
            Err(e) => reports.extend(tables.iter().map(|t| {
                run.tracker.stream(&stream.name).finish(StreamState::Failed);
                TableReport {
                    outcome: Outcome::Failed(format!("{}: task failed: {e}", stream.name)),
                    ..TableReport::empty(t)
                }
            })),
        }
    }
    reports
}

impl TableReport {
    fn empty(table: &Table) -> TableReport {
        TableReport {
            table: table.name.clone(),
            stream: table.stream.clone(),
            outcome: Outcome::Ok,
            fetched: 0,
            upserted: 0,
            deleted: 0,
            commits: 0,
            requests: 0,
            retries: 0,
            seconds: 0.0,
            budget_wait_seconds: 0.0,
            watermark: None,
            files_written: 0,
            bytes_written: 0,
            files_removed: 0,
            bytes_removed: 0,
        }
    }
}

struct StreamJob {
    stream: &'static Stream,
    tables: Vec<&'static Table>,
    client: Client,
    lake: Lake,
    settings: Arc<Settings>,
    run_id: String,
    last: Option<ControlRow>,
    /// The stream's requests, listings included.
    stats: Arc<RequestStats>,
    /// Where the stream's progress is shown.
    watch: Arc<StreamTracker>,
    /// Stops the stream after the commit it is making.
    cancel: CancellationToken,
}

/// Counters of one table that the writer stage keeps.
#[derive(Default, Clone)]
struct Written {
    fetched: u64,
    upserted: u64,
    deleted: u64,
    commits: u64,
    files: lake::CommitFiles,
}

/// What the writer stage carries from batch to batch.
struct Progress {
    /// The row of the last complete batch, the base of the next one.
    row: ControlRow,
    /// Each table's last batch of this stream as the lake holds it.
    committed: HashMap<String, i64>,
    written: Vec<Written>,
    /// Per table, for snapshot tables: what the table held when the run started, and what the
    /// listing has shown so far.
    snapshots: Vec<Option<Snapshot>>,
    /// Per table, for children streams: the live children of each parent.
    children: Vec<Option<HashMap<i64, HashSet<Key>>>>,
}

/// A table whose deletions show as rows missing from a complete listing, during a run.
struct Snapshot {
    /// Key → (fingerprint, deleted) of the rows stored when the run started.
    stored: HashMap<Key, (u128, bool)>,
    /// Keys listed so far in this run.
    listed: HashSet<Key>,
    /// The listing: the stream's own pages (a snapshot table), or a list stream read whole
    /// after it (`live_listing`).
    listing: Option<&'static Stream>,
    /// Keys written by this run (they are in the table too, so a listing may mark them).
    written: HashSet<Key>,
}

/// A table's part of a batch being gathered.
#[derive(Default, Clone)]
struct Group {
    rows: Vec<RecordBatch>,
    patches: Vec<RecordBatch>,
    /// Children streams: keys of children gone from their parent, or whose parent is gone.
    vanished: Vec<Key>,
}

/// The children of `parent` that its page no longer shows (all of them when it is gone), and
/// the index updated to what the page shows.
fn vanished_children(
    table: &Table,
    children: &mut HashMap<i64, HashSet<Key>>,
    parent: &ParentPage,
    decoded: &Decoded,
) -> Result<Vec<Key>, decode::Error> {
    let listed: HashSet<Key> = if parent.gone {
        HashSet::new()
    } else {
        decode::keys(table, &decoded.batch)?
    };
    let before = children
        .insert(parent.id, listed.clone())
        .unwrap_or_default();
    Ok(before.difference(&listed).cloned().collect())
}

/// One page decoded for every table of the stream.
struct DecodedPage {
    tables: Vec<Decoded>,
    /// Children streams: whose children the page holds.
    parent: Option<ParentPage>,
    position: Value,
    end_of_stream: bool,
    /// Records of the page (progress, even when no table has rows from them).
    records: usize,
    /// Records the page held, and where its stream stands in time after it (progress).
    fetched: usize,
    until: Option<i64>,
    /// Largest watermark-field value of the page's records (µs).
    watermark: Option<i64>,
    /// The page's share of the read-ahead, kept until its commit when the page is a large
    /// part of it.
    held: Option<Held>,
}

impl StreamJob {
    async fn run(self) -> Vec<TableReport> {
        let started = Instant::now();
        let stats = self.stats.clone();
        self.watch.start(stats.clone());
        info!(from = ?self.last.as_ref().map(|l| &l.position), "stream started");
        let mut progress = None;
        let result = match self.cancel.is_cancelled() {
            true => Err(StreamError::Cancelled),
            false => self.pipeline(&stats, &mut progress).await,
        };
        let commits: u64 = progress
            .as_ref()
            .map_or(0, |p| p.written.iter().map(|w| w.commits).sum());
        let outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(StreamError::Cancelled) => {
                info!("stream cancelled; its tables keep their last committed state");
                Outcome::Cancelled
            }
            Err(StreamError::Zendesk(e))
                if matches!(e.status(), Some(403 | 404)) && commits == 0 =>
            {
                warn!(error = %e, "skipped: not readable with these credentials or on this plan");
                Outcome::Skipped(e.to_string())
            }
            Err(e) => {
                warn!(error = %e, "stream failed; its tables keep their last committed state");
                Outcome::Failed(e.to_string())
            }
        };
        self.watch.finish(match outcome {
            Outcome::Ok => StreamState::Done,
            Outcome::Skipped(_) => StreamState::Skipped,
            Outcome::Failed(_) => StreamState::Failed,
            Outcome::Cancelled => StreamState::Cancelled,
        });
        let seconds = started.elapsed().as_secs_f64();
        let mut reports = Vec::with_capacity(self.tables.len());
        for (i, table) in self.tables.iter().enumerate() {
            let written = progress
                .as_ref()
                .map(|p| p.written[i].clone())
                .unwrap_or_default();
            // A table named after another stream names itself too: `ticket_metrics: tickets: ...`.
            let outcome = match &outcome {
                Outcome::Failed(why) if table.name != self.stream.name => {
                    Outcome::Failed(format!("{}: {why}", table.name))
                }
                Outcome::Skipped(why) if table.name != self.stream.name => {
                    Outcome::Skipped(format!("{}: {why}", table.name))
                }
                other => other.clone(),
            };
            let report = TableReport {
                outcome,
                fetched: written.fetched,
                upserted: written.upserted,
                deleted: written.deleted,
                commits: written.commits,
                requests: stats.requests(),
                retries: stats.retries(),
                seconds,
                budget_wait_seconds: stats.waited().as_secs_f64(),
                watermark: progress
                    .as_ref()
                    .and_then(|p| p.row.watermark)
                    .or_else(|| self.last.as_ref().and_then(|l| l.watermark)),
                files_written: written.files.added,
                bytes_written: written.files.added_bytes,
                files_removed: written.files.removed,
                bytes_removed: written.files.removed_bytes,
                ..TableReport::empty(table)
            };
            info!(
                table = %table.name,
                fetched = report.fetched,
                upserted = report.upserted,
                deleted = report.deleted,
                commits = report.commits,
                requests = report.requests,
                retries = report.retries,
                seconds = report.seconds,
                files_written = report.files_written,
                bytes_written = report.bytes_written,
                "table finished"
            );
            reports.push(report);
        }
        reports
    }

    async fn pipeline(
        &self,
        stats: &Arc<RequestStats>,
        progress: &mut Option<Progress>,
    ) -> Result<(), StreamError> {
        let stream = self.stream;
        let settings = &self.settings;
        let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
        let resume = self
            .lake
            .reconcile(&stream.name, &names, self.last.clone())
            .await?;
        let mut position = resume.last.as_ref().map(|l| l.position.clone());
        let mut row = match resume.last {
            Some(row) => row,
            None => ControlRow {
                stream: stream.name.clone(),
                seq: 0,
                epoch: uuid::Uuid::new_v4().to_string(),
                position: Value::Null,
                watermark: None,
                tables: BTreeMap::new(),
                run_id: self.run_id.clone(),
                committed_at: 0,
            },
        };
        // A table the stream did not feed in its last commit (new, or left out of earlier
        // runs) would miss everything before the stream's position: read the stream again from
        // the start for all its tables (merges are idempotent, so the others lose nothing).
        let joining: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| !row.tables.contains_key(*name))
            .collect();
        if position.is_some() && !joining.is_empty() {
            warn!(tables = ?joining, "tables join the stream: reading it again from the start to fill them");
            position = None;
        }
        // Tables left out of this run fall behind: they join again from the start later. Every
        // table fed from here on is named in the control row, written to yet or not.
        row.tables.retain(|name, _| names.contains(&name.as_str()));
        for name in &names {
            row.tables.entry((*name).to_owned()).or_insert(TableCommit {
                seq: 0,
                version: -1,
                upserted: 0,
                deleted: 0,
            });
        }
        let mut snapshots = Vec::with_capacity(self.tables.len());
        for table in &self.tables {
            let listing = table.live_listing.as_deref().and_then(crate::spec::stream);
            snapshots.push(match (table.write, listing) {
                (WriteMode::Snapshot, _) | (WriteMode::Upsert, Some(_)) => {
                    Some(self.snapshot(table, listing).await?)
                }
                (WriteMode::Upsert, None) => None,
            });
        }
        let mut children = Vec::with_capacity(self.tables.len());
        for table in &self.tables {
            children.push(match stream.parents {
                Some(_) => Some(self.children_of(table).await?),
                None => None,
            });
        }
        *progress = Some(Progress {
            row,
            committed: resume.committed,
            written: vec![Written::default(); self.tables.len()],
            snapshots,
            children,
        });

        let parents = match &stream.parents {
            Some(spec) => {
                let after = readers::children::parents_after(position.as_ref());
                self.lake
                    .rows_after(&spec.table, &spec.cursor, after)
                    .await?
                    .into_iter()
                    .map(|(id, cursor, gone)| Parent { id, cursor, gone })
                    .collect()
            }
            None => Vec::new(),
        };
        if stream.parents.is_some() {
            // One page per parent: the stream knows how much is left.
            self.watch.total_pages(parents.len() as u64);
        }
        let context = Context {
            client: self.client.clone(),
            stream,
            page_size: settings.page_size,
            sizing: Default::default(),
            stats: stats.clone(),
            includes: includes(&self.tables),
            parents,
        };
        let reader = readers::open(context, position.as_ref(), settings.start_time)?;
        let (page_tx, mut page_rx) = mpsc::channel::<(RawPage, Held)>(settings.channel_pages);
        let (decoded_tx, decoded_rx) = mpsc::channel::<DecodedPage>(settings.channel_pages);

        let fetch = readers::drive(reader, page_tx, ReadAhead::new(READ_AHEAD_BYTES));
        let tables = self.tables.clone();
        let watch = self.watch.clone();
        let decode = async move {
            // Pages decode on blocking threads, up to DECODE_AHEAD of them at once, and leave
            // in the order they came.
            let pages = futures::stream::poll_fn(|cx| page_rx.poll_recv(cx));
            let mut decoded = pages
                .map(|(page, held): (RawPage, Held)| {
                    let tables = tables.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut decoded = decode_page(stream, &tables, page)?;
                        // The page's text is gone: the fetch may read on, unless the page was
                        // a crowded second's, whose rows are committed first (alone).
                        decoded.held = (held.bytes() >= READ_AHEAD_BYTES / 2).then_some(held);
                        Ok::<_, decode::Error>(decoded)
                    })
                })
                .buffered(DECODE_AHEAD);
            while let Some(page) = decoded.next().await {
                let page = page.map_err(|e| StreamError::Task {
                    stream: stream.name.clone(),
                    detail: e.to_string(),
                })??;
                watch.page(page.fetched, page.until);
                failpoint::hit("page_decoded");
                if decoded_tx.send(page).await.is_err() {
                    break;
                }
            }
            Ok::<(), StreamError>(())
        };
        let write = async {
            // Owned by this stage, so that when it stops (a failed commit) the channel closes
            // and the stages feeding it stop too, instead of waiting on a full channel forever.
            let mut decoded_rx = decoded_rx;
            let mut groups: Vec<Group> = vec![Group::default(); self.tables.len()];
            let mut records = 0usize;
            let mut watermark: Option<i64> = None;
            let mut ended = false;
            // Where the stream stands after the last page gathered.
            let mut gathered_to: Option<Value> = None;
            let Some(progress) = progress.as_mut() else {
                return Ok(());
            };
            loop {
                // Cancelled between pages: what is gathered is dropped, as a crash would, and
                // the stages feeding this one stop when its channel closes.
                let page = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return Err(StreamError::Cancelled),
                    page = decoded_rx.recv() => page,
                };
                let Some(mut page) = page else { break };
                // A page of many megabytes (a crowded second) is committed alone, and the
                // fetch reads on only once it is.
                let crowded = page.held.take();
                if let Some(position) = gathered_to.take() {
                    if records > 0
                        && (records + page.records > settings.commit_rows || crowded.is_some())
                    {
                        // This page would take the batch past its size (a crowded second can
                        // be many batches' worth): what is gathered commits first, so that
                        // the two are never merged as one.
                        let batch = std::mem::take(&mut groups);
                        groups = vec![Group::default(); self.tables.len()];
                        self.commit(progress, batch, position, watermark, false, records)
                            .await?;
                        records = 0;
                    }
                }
                records += page.records;
                watermark = watermark.max(page.watermark);
                for ((((group, decoded), written), children), table) in groups
                    .iter_mut()
                    .zip(page.tables)
                    .zip(progress.written.iter_mut())
                    .zip(progress.children.iter_mut())
                    .zip(&self.tables)
                {
                    if let (Some(children), Some(parent)) = (children, &page.parent) {
                        let gone = vanished_children(table, children, parent, &decoded)?;
                        group.vanished.extend(gone);
                    }
                    written.fetched += decoded.batch.num_rows() as u64;
                    if decoded.batch.num_rows() > 0 {
                        group.rows.push(decoded.batch);
                    }
                    group.patches.extend(decoded.patches);
                }
                ended = page.end_of_stream;
                // A complete listing also commits what vanished from it.
                let listed = ended && progress.snapshots.iter().any(Option::is_some);
                let full = records >= settings.commit_rows || ended || crowded.is_some();
                if (records > 0 && full) || listed {
                    let batch = std::mem::take(&mut groups);
                    groups = vec![Group::default(); self.tables.len()];
                    self.commit(progress, batch, page.position, watermark, ended, records)
                        .await?;
                    records = 0;
                } else {
                    gathered_to = Some(page.position);
                }
                drop(crowded);
            }
            if ended {
                for (table, written) in self.tables.iter().zip(&progress.written) {
                    if written.commits == 0 {
                        // A run that found nothing still leaves an (empty) table for queries.
                        self.lake.ensure_table(table).await?;
                    }
                }
            }
            // Without end_of_stream the fetch stopped early (an error, reported by its stage):
            // the pages not yet committed are dropped, the lake stays at its last commit.
            Ok::<(), StreamError>(())
        };
        let (fetched, decoded, wrote) = tokio::join!(fetch, decode, write);
        wrote?;
        decoded?;
        fetched?;
        Ok(())
    }

    /// Every key of a listing read whole (`live_listing`).
    async fn list_keys(
        &self,
        table: &Table,
        listing: &'static Stream,
    ) -> Result<HashSet<Key>, StreamError> {
        let context = Context {
            client: self.client.clone(),
            stream: listing,
            page_size: self.settings.page_size,
            sizing: Default::default(),
            stats: self.stats.clone(),
            includes: Vec::new(),
            parents: Vec::new(),
        };
        let mut reader = readers::open(context, None, self.settings.start_time)?;
        let mut keys = HashSet::new();
        while let Some(page) = reader.next_page().await? {
            for record in &page.records {
                let key = match body::field(record, &table.primary_key).as_ref() {
                    Some(Value::Number(n)) => n.as_i64().map(Key::Int),
                    Some(Value::String(s)) => Some(Key::Text(s.clone())),
                    _ => None,
                };
                keys.extend(key);
            }
            if page.end_of_stream {
                break;
            }
        }
        Ok(keys)
    }

    /// The live children of each parent, as the table holds them when the run starts.
    async fn children_of(&self, table: &Table) -> Result<HashMap<i64, HashSet<Key>>, StreamError> {
        let mut index: HashMap<i64, HashSet<Key>> = HashMap::new();
        for batch in self.lake.scan(&table.name).await? {
            for (parent, key) in decode::parents_and_keys(table, &batch)? {
                index.entry(parent).or_default().insert(key);
            }
        }
        Ok(index)
    }

    /// What a snapshot table holds when the run starts.
    async fn snapshot(
        &self,
        table: &Table,
        listing: Option<&'static Stream>,
    ) -> Result<Snapshot, StreamError> {
        let mut stored = HashMap::new();
        for batch in self.lake.scan(&table.name).await? {
            for (key, print, deleted) in decode::fingerprints(table, &batch)? {
                stored.insert(key, (print, deleted));
            }
        }
        Ok(Snapshot {
            stored,
            listed: HashSet::new(),
            listing,
            written: HashSet::new(),
        })
    }

    /// Commit one batch: one data commit per table with rows, then the control row.
    async fn commit(
        &self,
        progress: &mut Progress,
        groups: Vec<Group>,
        position: Value,
        watermark: Option<i64>,
        ended: bool,
        records: usize,
    ) -> Result<(), StreamError> {
        let mut row = progress.row.clone();
        row.seq += 1;
        row.position = position;
        row.watermark = row.watermark.max(watermark);
        row.run_id = self.run_id.clone();
        let mut batches = Vec::new();
        for (i, (table, group)) in self.tables.iter().zip(groups).enumerate() {
            let snapshot = progress.snapshots[i].as_mut();
            let vanished = !group.vanished.is_empty();
            if group.rows.is_empty()
                && group.patches.is_empty()
                && !vanished
                && !(ended && snapshot.is_some())
            {
                continue;
            }
            let batch = decode::dedup(table, &group.rows)?;
            let (batch, leftover) = decode::apply_patches(table, batch, &group.patches)?;
            let mut patches = match (leftover, &table.patches) {
                (Some(rows), Some(spec)) => Some(PatchSet {
                    column: spec.column().to_owned(),
                    sets: spec.sets().into_iter().map(str::to_owned).collect(),
                    rows,
                }),
                _ => None,
            };
            if vanished {
                patches = Some(PatchSet {
                    column: table.primary_key.clone(),
                    sets: vec![DELETED_COLUMN.to_owned()],
                    rows: decode::deletions(table, &group.vanished, Utc::now())?,
                });
            }
            let batch = match snapshot {
                Some(snapshot) => {
                    let batch = match snapshot.listing {
                        None => snapshot.changed(table, batch)?,
                        Some(_) => snapshot.written(table, batch)?,
                    };
                    if ended {
                        if let Some(listing) = snapshot.listing {
                            snapshot.listed = self.list_keys(table, listing).await?;
                        }
                        let (marked, rest) = snapshot.vanished(table, batch)?;
                        patches = rest;
                        marked
                    } else {
                        batch
                    }
                }
                None => batch,
            };
            if batch.num_rows() > 0 || patches.is_some() {
                batches.push((i, *table, batch, patches));
            }
        }
        let writes: Vec<String> = batches.iter().map(|(_, t, _, _)| t.name.clone()).collect();
        if writes.is_empty() && (records == 0 || row.position == progress.row.position) {
            // Nothing to write and no progress to record (a list that did not change).
            return Ok(());
        }
        self.watch.committing(true);
        let mut made = false;
        for (n, (i, table, batch, patches)) in batches.into_iter().enumerate() {
            if n > 0 {
                failpoint::hit("between_data_commits");
            }
            let deleted = decode::count_deleted(&batch)
                + patches
                    .as_ref()
                    .map_or(0, |p| decode::count_deleted(&p.rows));
            let previous = row.tables.get(&table.name).cloned();
            row.tables.insert(
                table.name.clone(),
                TableCommit {
                    seq: row.seq,
                    version: -1,
                    upserted: batch.num_rows() as i64,
                    deleted: deleted as i64,
                },
            );
            // Stored in the data commit's metadata, so that a crash before the control commit
            // can be repaired from the Delta log (`Lake::reconcile`).
            let draft = CommitDraft {
                row: row.clone(),
                writes: writes.clone(),
            };
            let expected = progress.committed.get(&table.name).copied().unwrap_or(0);
            failpoint::hit("before_data_commit");
            let commit = self
                .lake
                .upsert(table, batch, &draft)
                .with_patches(patches)
                .with_expected_batch(expected)
                .await?;
            failpoint::hit("after_data_commit");
            if !commit.committed {
                // Nothing changed (only patches for rows the table does not hold): Delta made
                // no commit, so the table keeps its last batch.
                match previous {
                    Some(previous) => row.tables.insert(table.name.clone(), previous),
                    None => row.tables.remove(&table.name),
                };
                continue;
            }
            made = true;
            let upserted = commit.inserted + commit.updated;
            // Only rows the commit changed: a patch of a row the table lacks, or of one already
            // deleted, deletes nothing.
            let deleted = commit.deleted.unwrap_or(deleted).min(upserted);
            if let Some(entry) = row.tables.get_mut(&table.name) {
                entry.version = commit.version;
                entry.upserted = upserted as i64;
                entry.deleted = deleted as i64;
            }
            progress.committed.insert(table.name.clone(), row.seq);
            let written = &mut progress.written[i];
            written.upserted += upserted;
            written.deleted += deleted;
            written.commits += 1;
            written.files.add(&commit.files);
            info!(
                table = %table.name,
                seq = row.seq,
                version = commit.version,
                inserted = commit.inserted,
                updated = commit.updated,
                "committed"
            );
        }
        if !made && row.position == progress.row.position {
            // Rows read again that changed nothing (a list's overlap window): no data commit
            // and no progress, so no control row either.
            self.watch.committing(false);
            return Ok(());
        }
        row.committed_at = Utc::now().timestamp_micros();
        self.lake.record(&row).await?;
        failpoint::hit("after_control_commit");
        self.watch.committing(false);
        progress.row = row;
        Ok(())
    }
}

impl Snapshot {
    /// The rows of a listed batch that are new or differ from the stored ones.
    fn changed(&mut self, table: &Table, batch: RecordBatch) -> Result<RecordBatch, decode::Error> {
        let mut keep = Vec::new();
        for (row, (key, print, _)) in decode::fingerprints(table, &batch)?.into_iter().enumerate() {
            if self.stored.get(&key).map(|(p, _)| *p) != Some(print) {
                keep.push(row as u32);
            }
            self.listed.insert(key);
        }
        if keep.len() == batch.num_rows() {
            return Ok(batch);
        }
        let keep = deltalake::arrow::array::UInt32Array::from(keep);
        deltalake::arrow::compute::take_record_batch(&batch, &keep).map_err(|source| {
            decode::Error::Arrow {
                table: table.name.clone(),
                source,
            }
        })
    }

    /// Note the keys of a batch written to a table with a live listing.
    fn written(&mut self, table: &Table, batch: RecordBatch) -> Result<RecordBatch, decode::Error> {
        for (key, _, deleted) in decode::fingerprints(table, &batch)? {
            if !deleted {
                self.written.insert(key);
            }
        }
        Ok(batch)
    }

    /// After a complete listing: the last batch with its rows that the listing did not show
    /// marked deleted, and the patch marking deleted the other live rows it did not show.
    fn vanished(
        &self,
        table: &Table,
        batch: RecordBatch,
    ) -> Result<(RecordBatch, Option<PatchSet>), decode::Error> {
        let stored = self
            .stored
            .iter()
            .filter(|(_, (_, deleted))| !deleted)
            .map(|(key, _)| key);
        let mut gone: Vec<Key> = stored
            .chain(&self.written)
            .filter(|key| !self.listed.contains(*key))
            .cloned()
            .collect();
        gone.sort_unstable();
        gone.dedup();
        // A row of this very batch is marked in it: a patch for it too would make two source
        // rows match one table row.
        let in_batch = decode::keys(table, &batch)?;
        let marked: HashSet<Key> = gone
            .iter()
            .filter(|key| in_batch.contains(*key))
            .cloned()
            .collect();
        let batch = decode::mark_deleted(table, batch, &marked)?;
        gone.retain(|key| !marked.contains(key));
        // A live listing also brings back rows it had missed once (a snapshot table rewrites
        // them from the listing itself).
        let mut back: Vec<Key> = match self.listing {
            Some(_) => self
                .stored
                .iter()
                .filter(|(key, (_, deleted))| {
                    *deleted && self.listed.contains(*key) && !in_batch.contains(*key)
                })
                .map(|(key, _)| key.clone())
                .collect(),
            None => Vec::new(),
        };
        back.sort_unstable();
        if gone.is_empty() && back.is_empty() {
            return Ok((batch, None));
        }
        let now = Utc::now();
        let rows = [
            decode::flags(table, &gone, true, now)?,
            decode::flags(table, &back, false, now)?,
        ];
        let rows = deltalake::arrow::compute::concat_batches(&rows[0].schema(), &rows).map_err(
            |source| decode::Error::Arrow {
                table: table.name.clone(),
                source,
            },
        )?;
        let patch = PatchSet {
            column: table.primary_key.clone(),
            sets: vec![DELETED_COLUMN.to_owned()],
            rows,
        };
        Ok((batch, Some(patch)))
    }
}

/// The `include` values the stream's tables need.
pub(crate) fn includes(tables: &[&Table]) -> Vec<String> {
    let mut includes: Vec<String> = Vec::new();
    for table in tables {
        if let Some(include) = table.rows.include() {
            if !includes.iter().any(|i| i == include) {
                includes.push(include.to_owned());
            }
        }
    }
    includes
}

/// Records parsed and decoded at a time: a page's parsed records are about ten times its text,
/// and a time export's page holds every record of its last second, however many (a bulk
/// import's tens of thousands), so a page is decoded a slice at a time.
const DECODE_CHUNK: usize = 500;

/// Pages of one stream decoded at once: both cores of a small machine, when one stream (the
/// ticket events of a backfill) is all that is left to read.
const DECODE_AHEAD: usize = 2;

/// Parse and decode one page for every table of its stream, [`DECODE_CHUNK`] records at a
/// time: a slice's parsed records are dropped once its rows are in Arrow.
fn decode_page(
    stream: &Stream,
    tables: &[&Table],
    page: RawPage,
) -> Result<DecodedPage, decode::Error> {
    let RawPage {
        records,
        mut sideloads,
        position,
        end_of_stream,
        parent,
        until,
    } = page;
    let fetched = records.len();
    let now = Utc::now();
    let mut chunks: Vec<Vec<Decoded>> = vec![Vec::new(); tables.len()];
    let mut watermark: Option<i64> = None;
    let mut records = records.into_iter();
    let mut offset = 0;
    // An empty page still decodes once: every table gets its (empty) batch.
    loop {
        let slice: Vec<RawRecord> = records.by_ref().take(DECODE_CHUNK).collect();
        let n = slice.len();
        // Sideloads go with the first slice: no table correlates them with records before the
        // commit.
        let slice_sideloads = std::mem::take(&mut sideloads);
        let located = |e: decode::Error| e.offset_by(offset);
        let page = Page::parse(stream, &slice, &slice_sideloads, parent.as_ref()).map_err(
            |(index, detail)| {
                located(decode::Error::Unreadable {
                    stream: stream.name.clone(),
                    index,
                    detail,
                })
            },
        )?;
        for (table, out) in tables.iter().zip(&mut chunks) {
            let rows = decode::extract(table, &page).map_err(located)?;
            let mut table_rows = decode::decode(table, &rows, now).map_err(located)?;
            let patches = decode::extract_patches(table, &page).map_err(located)?;
            table_rows.patches = decode::decode_patches(table, &patches, now)?;
            out.push(table_rows);
        }
        watermark = watermark.max(
            page.records
                .iter()
                .filter_map(|r| r.get(&stream.watermark_field))
                .filter_map(json::micros)
                .max(),
        );
        offset += n;
        if records.len() == 0 {
            break;
        }
    }
    let decoded = tables
        .iter()
        .zip(chunks)
        .map(|(table, chunks)| decode::concat(table, chunks))
        .collect::<Result<Vec<_>, _>>()?;
    // A parent's page is progress even with no children (its position moves on).
    let records = fetched.max(usize::from(parent.is_some()));
    Ok(DecodedPage {
        tables: decoded,
        parent,
        position,
        end_of_stream,
        records,
        fetched,
        // A cursor export is ordered by its watermark field: its newest record is where it
        // stands.
        until: until.or(match stream.kind {
            StreamKind::CursorExport => watermark.map(|us| us.div_euclid(1_000_000)),
            _ => None,
        }),
        watermark,
        held: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{AsArray, Int64Array};
    use deltalake::arrow::datatypes::Int64Type;

    /// The sample's ticket events, copied `copies` times under new ids (the event's, and its
    /// children's), all in the sample's seconds: a time-export page as Zendesk sends when
    /// more records share their second than a page holds.
    fn crowded_events(copies: usize) -> Vec<Value> {
        let text = include_str!("../../tests/data/incremental_ticket_events_comment_events.json");
        let sample: Value = serde_json::from_str(text).unwrap();
        let events = sample["body"]["ticket_events"].as_array().unwrap().clone();
        let mut out = Vec::new();
        for copy in 0..copies as i64 {
            for event in &events {
                let mut event = event.clone();
                let shift = |v: &mut Value| {
                    if let Some(id) = v.as_i64() {
                        *v = Value::from(id + copy * 1_000_000_000_000);
                    }
                };
                shift(&mut event["id"]);
                let children = event["child_events"].as_array_mut().unwrap();
                for child in children.iter_mut() {
                    shift(&mut child["id"]);
                }
                // Every copy makes a comment of the copy before private (the shape of
                // Zendesk's reference: the sample has none).
                let comment = children
                    .iter()
                    .find(|c| c["event_type"] == "Comment")
                    .map(|c| c["id"].as_i64().unwrap());
                if let (Some(comment), true) = (comment, copy > 0) {
                    children.push(serde_json::json!({
                        "id": comment + 1_000,
                        "type": "CommentPrivacyChange",
                        "comment_id": comment - 1_000_000_000_000,
                        "public": false,
                        "event_type": "CommentPrivacyChange",
                    }));
                }
                out.push(event);
            }
        }
        out
    }

    fn raw(records: &[Value]) -> RawPage {
        RawPage {
            records: records
                .iter()
                .map(|r| RawRecord::from_text(&r.to_string()).unwrap())
                .collect(),
            sideloads: Vec::new(),
            position: Value::from(1),
            end_of_stream: true,
            parent: None,
            until: None,
        }
    }

    fn ids(batch: &RecordBatch) -> Vec<i64> {
        let ids: &Int64Array = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let mut ids: Vec<i64> = ids.iter().flatten().collect();
        ids.sort_unstable();
        ids
    }

    /// A page of many more records than a slice decodes into exactly the rows its JSON holds,
    /// the patches included, whatever slice they fall in.
    #[test]
    fn a_crowded_page_decodes_slice_by_slice_into_all_its_rows() {
        let stream = crate::spec::stream("ticket_events").unwrap();
        let tables: Vec<&Table> = ["ticket_comments", "ticket_field_history"]
            .iter()
            .map(|t| crate::spec::find(t).unwrap())
            .collect();
        let events = crowded_events(DECODE_CHUNK + 100);
        assert!(events.len() > 2 * DECODE_CHUNK);
        let children: Vec<&Value> = events
            .iter()
            .flat_map(|e| e["child_events"].as_array().unwrap())
            .collect();
        let of = |types: &[&str]| -> Vec<i64> {
            let mut ids: Vec<i64> = children
                .iter()
                .filter(|c| types.contains(&c["event_type"].as_str().unwrap()))
                .map(|c| c["id"].as_i64().unwrap())
                .collect();
            ids.sort_unstable();
            ids
        };
        let privacy = of(&["CommentPrivacyChange"]);
        assert!(!privacy.is_empty(), "the sample has privacy changes");

        let page = decode_page(stream, &tables, raw(&events)).unwrap();
        assert_eq!(page.fetched, events.len());
        assert_eq!(ids(&page.tables[0].batch), of(&["Comment", "VoiceComment"]));
        assert_eq!(ids(&page.tables[1].batch), of(&["Create", "Change"]));
        let patches = page.tables[0].patches.as_ref().unwrap();
        assert_eq!(patches.num_rows(), privacy.len());
        let newest = events
            .iter()
            .map(|e| json::timestamp_micros(&e["created_at"]).unwrap())
            .max();
        assert_eq!(page.watermark, newest);
    }

    /// A bad record past the first slice is reported at its position in the page.
    #[test]
    fn a_bad_record_of_a_later_slice_is_named_by_its_position_in_the_page() {
        let stream = crate::spec::stream("ticket_events").unwrap();
        let tables = [crate::spec::find("ticket_comments").unwrap()];
        let mut events = crowded_events(DECODE_CHUNK + 100);
        let bad = DECODE_CHUNK * 2 + 7;
        events[bad] = Value::from("not an event");
        let Err(error) = decode_page(stream, &tables, raw(&events)) else {
            panic!("a page with a bad record decoded");
        };
        assert!(
            error.to_string().contains(&format!("record #{bad} ")),
            "{error}"
        );
    }
}
