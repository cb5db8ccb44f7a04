//! State tables: lake tables in which the write path records what it did to Zendesk, one row
//! per key and change, appended, never updated (docs/ARCHITECTURE.md, "The write path"
//! and "Exactly once"). `_import_state` records each imported
//! `external_id`: `pending` before its request is sent, its job once Zendesk answers, and
//! `imported` or `failed` once the job ends. The newest row of a key is its state
//! ([`Lake::state_latest`]); the older ones are its history.
//!
//! Writes to Zendesk are not idempotent, so the rows must be exactly what happened: each append
//! is made exactly once, even when the object store loses its answer. A writer
//! ([`StateWriter`]) is one run: every append carries the application transaction
//! `(zendesk-lake-state/<table>/<run id>, n)` for its `n`-th append, aims at exactly one
//! version (the commit toolkit's [`Intent`]), and after an error is settled from the log
//! ([`settle`]): made, or certainly not, or the transaction version read again before the same
//! rows are appended again, so an append whose answer was lost is never recorded twice.
//!
//! A state table an older version wrote lacks the columns added since: the first append adds
//! them (Delta's schema merge), empty in the older rows, which read them as absent.

use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::json::{ArrayWriter, ReaderBuilder};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::commit::{settle, txn_version, Intent, Unmade};
use super::{query_one, Error, Lake, Result};
use crate::spec::timestamp_type;

/// The columns every state table has, filled by its writer.
pub const RUN_ID_COLUMN: &str = "run_id";
/// The number of the append within its run (1, 2, ...): its transaction version.
pub const RUN_SEQ_COLUMN: &str = "run_seq";
/// When the row was appended (µs since the epoch).
pub const RECORDED_AT_COLUMN: &str = "recorded_at";

/// How many times an append is tried before a failing store is an error.
const ATTEMPTS: u32 = 5;

/// The wait before trying an append again, times the attempt.
const RETRY_WAIT: Duration = Duration::from_millis(100);

/// A state table: its name, its description, the column keying its rows, and its columns
/// (which include [`RUN_ID_COLUMN`], [`RUN_SEQ_COLUMN`] and [`RECORDED_AT_COLUMN`]).
#[derive(Debug, Clone, Copy)]
pub struct StateTable {
    pub name: &'static str,
    pub description: &'static str,
    pub key: &'static str,
    pub schema: fn() -> SchemaRef,
}

/// What the writer fills in every row of a state table: its run, the number of the append
/// within the run, and when it was appended (µs since the epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub run_seq: i64,
    #[serde(default)]
    pub recorded_at: i64,
}

/// The job of a row's request, once Zendesk answered, and the row's index in that request, by
/// which the job's results name it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub job_index: Option<i64>,
}

impl JobRef {
    /// A row at `index` of a request not answered yet.
    pub fn at(index: usize) -> JobRef {
        JobRef {
            job_id: None,
            job_index: i64::try_from(index).ok(),
        }
    }

    /// The job's id and the row's index in its request, once the job is known.
    pub fn job(&self) -> Option<(&str, Option<usize>)> {
        let index = self.job_index.and_then(|i| usize::try_from(i).ok());
        Some((self.job_id.as_deref()?, index))
    }
}

/// `_import_state`: one row per change of an imported `external_id` ([`ImportRow`]).
pub const IMPORT_STATE: StateTable = StateTable {
    name: "_import_state",
    description: "zendesk-lake import state: one row per change of an imported external_id",
    key: "external_id",
    schema: import_schema,
};

fn import_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("external_id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("ticket_id", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("job_id", DataType::Utf8, true),
        Field::new("job_index", DataType::Int64, true),
        Field::new("archive", DataType::Boolean, false),
        Field::new("submitted_at", timestamp_type(), true),
        Field::new(RUN_ID_COLUMN, DataType::Utf8, false),
        Field::new(RUN_SEQ_COLUMN, DataType::Int64, false),
        Field::new(RECORDED_AT_COLUMN, timestamp_type(), false),
    ]))
}

/// Where an imported row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportStatus {
    /// Its request is (about to be) sent; its outcome is not known yet.
    Pending,
    Imported,
    /// Zendesk refused it (or never got it); a later run tries it again.
    Failed,
}

/// One row of `_import_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRow {
    pub external_id: String,
    pub status: ImportStatus,
    #[serde(default)]
    pub ticket_id: Option<i64>,
    /// Zendesk's message for a failed row.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(flatten)]
    pub job: JobRef,
    /// Whether its request asked for `archive_immediately`.
    #[serde(default)]
    pub archive: bool,
    /// When its request was sent (µs since the epoch).
    #[serde(default)]
    pub submitted_at: Option<i64>,
    #[serde(flatten)]
    pub recorded: Recorded,
}

/// `_push_state`: one row per change of a push's key ([`PushRow`]): a comment pushed to a
/// ticket (`comment/<ticket id>/<hash>`), or an update Zendesk refused
/// (`refused/<ticket id>/<hash>`).
pub const PUSH_STATE: StateTable = StateTable {
    name: "_push_state",
    description:
        "zendesk-lake push state: one row per change of a pushed comment or refused update",
    key: "key",
    schema: push_schema,
};

fn push_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("ticket_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("job_id", DataType::Utf8, true),
        Field::new("job_index", DataType::Int64, true),
        Field::new(RUN_ID_COLUMN, DataType::Utf8, false),
        Field::new(RUN_SEQ_COLUMN, DataType::Int64, false),
        Field::new(RECORDED_AT_COLUMN, timestamp_type(), false),
    ]))
}

/// Where a pushed key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStatus {
    /// Its request is (about to be) sent; Zendesk may have applied it.
    Pending,
    /// Its job applied it.
    Done,
    /// Zendesk refused it: the same push does not send it again.
    Refused,
    /// Pending when its run ended, and found neither in its job nor on its ticket afterwards:
    /// never applied, so sent again.
    Unapplied,
}

impl PushStatus {
    /// Whether its comment was applied or may have been: such a key is never sent again.
    pub fn holds(self) -> bool {
        matches!(self, PushStatus::Pending | PushStatus::Done)
    }
}

/// One row of `_push_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRow {
    pub key: String,
    pub ticket_id: i64,
    pub status: PushStatus,
    /// Zendesk's message for a refused key.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(flatten)]
    pub job: JobRef,
    #[serde(flatten)]
    pub recorded: Recorded,
}

/// The application id of one run's appends to a state table.
pub fn state_app_id(table: &str, run_id: &str) -> String {
    format!("zendesk-lake-state/{table}/{run_id}")
}

/// One run's appends to a state table, each made exactly once.
///
/// Commits are made one at a time, each on the table read afresh (a handle kept between
/// commits made them slower: BENCHMARKS.md, "`listen` and `import` (issue 19)"). Rows appended
/// while a commit is being made join the next commit (a group commit): an import with sixteen
/// jobs in flight records its batches' steps in fewer commits than steps, and each caller
/// returns once the commit holding its rows is made.
#[derive(Debug)]
pub struct StateWriter {
    lake: Lake,
    table: StateTable,
    run_id: String,
    app: String,
    /// Appends made so far.
    committed: tokio::sync::Mutex<Committed>,
    /// Rows waiting for the next commit, each set with the channel that tells its caller how
    /// the commit went.
    queue: std::sync::Mutex<Vec<Queued>>,
}

#[derive(Debug, Default)]
struct Committed {
    seq: i64,
}

#[derive(Debug)]
struct Queued {
    rows: Vec<Value>,
    done: tokio::sync::oneshot::Sender<std::result::Result<(), String>>,
}

impl StateWriter {
    pub fn new(lake: &Lake, table: StateTable, run_id: &str) -> StateWriter {
        StateWriter {
            lake: lake.clone(),
            app: state_app_id(table.name, run_id),
            table,
            run_id: run_id.to_owned(),
            committed: tokio::sync::Mutex::new(Committed::default()),
            queue: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Append `rows`, exactly once, in one commit with any rows appended meanwhile (nothing
    /// for no rows); returns once that commit is made.
    pub async fn append<T: Serialize>(&self, rows: &[T]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let name = self.table.name;
        let rows = self.values(rows)?;
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.queued().push(Queued { rows, done });
        let mut committed = self.committed.lock().await;
        // Whoever holds the lock commits every queued set, this one's too unless an earlier
        // holder took it.
        let queued = std::mem::take(&mut *self.queued());
        if !queued.is_empty() {
            let (rows, waiting): (Vec<Vec<Value>>, Vec<_>) =
                queued.into_iter().map(|q| (q.rows, q.done)).unzip();
            let result = self
                .commit(&mut committed, rows.into_iter().flatten().collect())
                .await;
            let told = result.as_ref().map(|_| ()).map_err(ToString::to_string);
            for done in waiting {
                let _ = done.send(told.clone());
            }
            result?;
        }
        drop(committed);
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Error::invalid(name, message)),
            Err(_) => Err(Error::invalid(
                name,
                "the commit of these rows was abandoned",
            )),
        }
    }

    /// Commit `rows` as the next append, exactly once.
    async fn commit(&self, committed: &mut Committed, rows: Vec<Value>) -> Result<()> {
        let name = self.table.name;
        let next = committed.seq + 1;
        let batch = self.batch(rows, next)?;
        let mut table = self
            .lake
            .create_if_missing(name, (self.table.schema)(), self.table.description)
            .await?;
        let mut attempt = 1;
        loop {
            // An append that failed may have been made after all.
            if txn_version(name, &table, &self.app)
                .await?
                .is_some_and(|v| v >= next)
            {
                break;
            }
            match self.put(&table, &batch, next).await {
                Ok(()) => break,
                Err(Unmade::Refused(error)) => return Err(Error::delta(name)(error)),
                Err(unmade) if attempt >= ATTEMPTS => {
                    return Err(unmade.into_error(name, &format!("append #{next}")))
                }
                // Another writer took the version, or the store's answer was lost: the table,
                // read again, says whether the rows are recorded.
                Err(unmade) => {
                    warn!(table = name, seq = next, attempt, error = ?unmade, "appending state rows failed: reading the table again");
                    tokio::time::sleep(RETRY_WAIT * attempt).await;
                }
            }
            attempt += 1;
            table = self.reopen().await?;
        }
        committed.seq = next;
        Ok(())
    }

    async fn reopen(&self) -> Result<DeltaTable> {
        let name = self.table.name;
        self.lake
            .open(name)
            .await?
            .ok_or_else(|| Error::invalid(name, "it disappeared while rows were being recorded"))
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.queue.lock().expect("state writer queue poisoned")
    }

    /// Append `rows` in one commit on top of `read`, the version of the table its caller
    /// decided on, exactly once: `false`, with nothing appended, when another writer committed
    /// to the table since (the caller reads it again and decides again).
    pub async fn append_if_unchanged<T: Serialize>(
        &self,
        rows: &[T],
        read: &DeltaTable,
    ) -> Result<bool> {
        let name = self.table.name;
        let mut committed = self.committed.lock().await;
        let next = committed.seq + 1;
        let batch = self.batch(self.values(rows)?, next)?;
        match self.put(read, &batch, next).await {
            Ok(()) => {
                committed.seq = next;
                Ok(true)
            }
            Err(Unmade::Taken(_)) => Ok(false),
            Err(unmade) => Err(unmade.into_error(name, &format!("append #{next}"))),
        }
    }

    /// `rows` as JSON objects.
    fn values<T: Serialize>(&self, rows: &[T]) -> Result<Vec<Value>> {
        let name = self.table.name;
        (rows.iter())
            .map(|row| serde_json::to_value(row).map_err(|e| Error::invalid(name, e.to_string())))
            .collect()
    }

    /// `values` as the batch of append `seq`, with the writer's columns filled.
    fn batch(&self, mut values: Vec<Value>, seq: i64) -> Result<RecordBatch> {
        let name = self.table.name;
        let now = chrono::Utc::now().timestamp_micros();
        for value in &mut values {
            if let Value::Object(map) = value {
                map.insert(RUN_ID_COLUMN.into(), Value::from(self.run_id.clone()));
                map.insert(RUN_SEQ_COLUMN.into(), Value::from(seq));
                map.insert(RECORDED_AT_COLUMN.into(), Value::from(now));
            }
        }
        let mut decoder = ReaderBuilder::new((self.table.schema)())
            .build_decoder()
            .map_err(Error::arrow(name, "building the rows"))?;
        decoder
            .serialize(&values)
            .map_err(Error::arrow(name, "building the rows"))?;
        decoder
            .flush()
            .map_err(Error::arrow(name, "building the rows"))?
            .ok_or_else(|| Error::invalid(name, "no rows were built"))
    }

    /// Commit `batch` as append `seq` on top of `table`'s version (aiming at exactly the next
    /// one), settled from the log after an error.
    async fn put(
        &self,
        table: &DeltaTable,
        batch: &RecordBatch,
        seq: i64,
    ) -> std::result::Result<(), Unmade> {
        let intent = Intent::new().with_transaction(self.app.clone(), seq);
        let read = table.version();
        let log = table.log_store();
        let written = table
            .clone()
            .write(vec![batch.clone()])
            .with_save_mode(SaveMode::Append)
            // A table an older version created lacks the columns added since (`job_index`):
            // they are added, empty in its older rows.
            .with_schema_mode(SchemaMode::Merge)
            .with_commit_properties(intent.properties())
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(error) => settle(self.table.name, log.as_ref(), read, &intent, error)
                .await
                .map(|_| ()),
        }
    }
}

impl Lake {
    /// The newest row of every key of a state table (none when it does not exist yet).
    pub async fn state_latest<T: DeserializeOwned>(&self, table: &StateTable) -> Result<Vec<T>> {
        let name = table.name;
        let Some(delta) = self.open(name).await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY \"{key}\" \
             ORDER BY {RECORDED_AT_COLUMN} DESC, {RUN_SEQ_COLUMN} DESC) AS _rank FROM \"{name}\") \
             WHERE _rank = 1",
            key = table.key,
        );
        state_rows(name, &delta, &sql).await
    }
}

/// The rows `sql` reads from state table `name` at `delta`'s version.
pub(crate) async fn state_rows<T: DeserializeOwned>(
    name: &str,
    delta: &DeltaTable,
    sql: &str,
) -> Result<Vec<T>> {
    let batches = query_one(name, delta, sql).await?;
    let mut rows = Vec::new();
    for batch in &batches {
        for mut value in batch_values(name, batch)? {
            if let Value::Object(map) = &mut value {
                map.remove("_rank");
            }
            rows.push(
                serde_json::from_value(value)
                    .map_err(|e| Error::invalid(name, format!("a row does not read: {e}")))?,
            );
        }
    }
    Ok(rows)
}

/// A batch's rows as JSON objects, timestamps as µs and nulls left out.
pub(crate) fn batch_values(name: &str, batch: &RecordBatch) -> Result<Vec<Value>> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let to = match field.data_type() {
            DataType::Timestamp(_, _) => Some(DataType::Int64),
            DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
            _ => None,
        };
        let column = match &to {
            Some(to) => cast(column, to).map_err(Error::arrow(name, "reading the rows"))?,
            None => column.clone(),
        };
        fields.push(Field::new(
            field.name(),
            column.data_type().clone(),
            field.is_nullable(),
        ));
        columns.push(column);
    }
    let plain = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(Error::arrow(name, "reading the rows"))?;
    let mut writer = ArrayWriter::new(Vec::new());
    writer
        .write(&plain)
        .map_err(Error::arrow(name, "reading the rows"))?;
    writer
        .finish()
        .map_err(Error::arrow(name, "reading the rows"))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::lake::faultstore;

    fn row(external_id: &str, status: ImportStatus, ticket_id: Option<i64>) -> ImportRow {
        ImportRow {
            external_id: external_id.into(),
            status,
            ticket_id,
            error: None,
            job: JobRef::at(0),
            archive: false,
            submitted_at: Some(1_700_000_000_000_000),
            recorded: Recorded::default(),
        }
    }

    #[tokio::test]
    async fn the_latest_row_of_each_key_is_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        assert!(lake
            .state_latest::<ImportRow>(&IMPORT_STATE)
            .await
            .unwrap()
            .is_empty());
        let writer = StateWriter::new(&lake, IMPORT_STATE, "run-1");
        writer
            .append(&[
                row("a", ImportStatus::Pending, None),
                row("b", ImportStatus::Pending, None),
            ])
            .await
            .unwrap();
        writer
            .append(&[row("a", ImportStatus::Imported, Some(9))])
            .await
            .unwrap();
        let mut latest: Vec<ImportRow> = lake.state_latest(&IMPORT_STATE).await.unwrap();
        latest.sort_by(|x, y| x.external_id.cmp(&y.external_id));
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].status, ImportStatus::Imported);
        assert_eq!(latest[0].ticket_id, Some(9));
        assert_eq!(latest[0].recorded.run_seq, 2);
        assert_eq!(latest[0].recorded.run_id, "run-1");
        assert_eq!(latest[1].status, ImportStatus::Pending);
        assert_eq!(latest[1].submitted_at, Some(1_700_000_000_000_000));
        // The whole table is queryable like any other of the lake.
        let rows = lake
            .query("SELECT count(*) AS n FROM _import_state")
            .await
            .unwrap();
        assert_eq!(rows[0].num_rows(), 1);
    }

    /// The store applies every put of the log and loses its answer: each append is recorded
    /// once all the same.
    #[tokio::test]
    async fn an_append_whose_answer_is_lost_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(
            faultstore::Plan::parse("lost create *00000000000000000001.json #1; exists create *00000000000000000002.json #1").unwrap(),
        );
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new())
            .unwrap()
            .with_faults(plan);
        let writer = StateWriter::new(&lake, IMPORT_STATE, "run-1");
        writer
            .append(&[row("a", ImportStatus::Pending, None)])
            .await
            .unwrap();
        writer
            .append(&[row("a", ImportStatus::Imported, Some(3))])
            .await
            .unwrap();
        let table = lake.open(IMPORT_STATE.name).await.unwrap().unwrap();
        let rows = query_one(
            IMPORT_STATE.name,
            &table,
            "SELECT count(*) AS n FROM _import_state",
        )
        .await
        .unwrap();
        let n = rows[0]
            .column(0)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 2);
    }

    /// Appends made while a commit is being made join the next one: each row is recorded once,
    /// in fewer commits than appends, and every caller returns after its rows are committed.
    #[tokio::test]
    async fn concurrent_appends_share_commits_and_record_each_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let writer = StateWriter::new(&lake, IMPORT_STATE, "run-1");
        let appends = 32;
        let ids: Vec<String> = (0..appends).map(|i| format!("e-{i}")).collect();
        futures::future::try_join_all(ids.iter().map(|id| {
            let writer = &writer;
            async move {
                writer
                    .append(&[row(id, ImportStatus::Pending, None)])
                    .await?;
                // Returned: its row is in the table.
                let latest: Vec<ImportRow> = writer.lake().state_latest(&IMPORT_STATE).await?;
                assert!(latest.iter().any(|r| &r.external_id == id), "{id}");
                Ok::<_, Error>(())
            }
        }))
        .await
        .unwrap();
        let latest: Vec<ImportRow> = lake.state_latest(&IMPORT_STATE).await.unwrap();
        assert_eq!(latest.len(), appends);
        let rows = lake
            .query("SELECT count(*) AS n, count(DISTINCT run_seq) AS commits FROM _import_state")
            .await
            .unwrap();
        let count = |c: usize| {
            rows[0]
                .column(c)
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        };
        assert_eq!(count(0), appends as i64, "every row once");
        assert!(
            count(1) < appends as i64,
            "{} commits for {appends} appends",
            count(1)
        );
    }
}
