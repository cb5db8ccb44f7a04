//! The control table `<lake>/_sync_state`: one row per commit of a stream, holding the position
//! to resume from (the reader's own JSON, opaque here), the watermark reached and, per table the
//! stream feeds, the last batch committed to it (docs/ARCHITECTURE.md, "Exactly once").
//!
//! A row is appended only after every data commit of its batch has succeeded, so the newest row
//! of a stream never points past data the lake holds. Rows are never updated: the table is also
//! the stream's sync history, which `zendesk-lake status` and SQL (`SELECT * FROM _sync_state`)
//! show.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType,
};
use deltalake::arrow::json::ReaderBuilder;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::commit::{app_id, is_conflict, txn_version, CONTROL_METADATA};
use super::table::table_id;
use super::{query_one, Error, Lake, Result};
use crate::spec::timestamp_type;

/// Name of the control table, also its name in SQL.
pub const CONTROL_TABLE: &str = "_sync_state";

const CONTROL_DESCRIPTION: &str = "zendesk-lake sync state: one row per commit of a stream";

/// The application id under which the control rows of one epoch of a stream are recorded: a
/// stream that starts again from nothing gets a new epoch, so its rows, which start again at
/// seq 1, are not mistaken for rows already recorded.
pub fn control_app_id(stream: &str, epoch: &str) -> String {
    format!("zendesk-lake-control/{stream}/{epoch}")
}

/// How many times a control row is appended before a conflict with other runs, or a failing
/// object store, is an error.
const CONTROL_ATTEMPTS: u32 = 10;

/// The wait before appending a control row again after the store failed the append, times
/// the attempt.
const CONTROL_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What one commit of a stream did to one of its tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCommit {
    /// The last batch of the stream committed to the table: this row's seq when this batch
    /// wrote to it, an earlier one when it had nothing for it.
    pub seq: i64,
    /// Delta version of that data commit.
    pub version: i64,
    /// Rows this batch inserted or updated in the table.
    pub upserted: i64,
    /// Rows this batch marked `_deleted`.
    pub deleted: i64,
}

/// One committed batch of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRow {
    pub stream: String,
    /// 1, 2, ... per stream; also the Delta app-transaction version of its data commits.
    pub seq: i64,
    /// Identifies the life of the stream's bookkeeping that this row belongs to.
    pub epoch: String,
    /// Where the stream's reader continues: its own JSON, opaque to the lake.
    pub position: Value,
    /// Largest watermark-field value read so far (µs since the epoch).
    pub watermark: Option<i64>,
    /// Every table the stream feeds, by name.
    pub tables: BTreeMap<String, TableCommit>,
    pub run_id: String,
    /// µs since the epoch.
    pub committed_at: i64,
}

impl ControlRow {
    /// Rows inserted or updated by this batch, over all its tables.
    pub fn rows_upserted(&self) -> i64 {
        self.tables
            .values()
            .filter(|t| t.seq == self.seq)
            .map(|t| t.upserted)
            .sum()
    }

    /// Rows marked deleted by this batch, over all its tables.
    pub fn rows_deleted(&self) -> i64 {
        self.tables
            .values()
            .filter(|t| t.seq == self.seq)
            .map(|t| t.deleted)
            .sum()
    }
}

/// What a data commit carries in its commit info, so that a crash before the control commit can
/// be repaired from the Delta log: the control row as far as it is known, and the tables the
/// batch writes to (the batch is complete when all of them hold it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitDraft {
    pub row: ControlRow,
    pub writes: Vec<String>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("epoch", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("watermark", timestamp_type(), true),
        Field::new("tables", DataType::Utf8, false),
        Field::new("rows_upserted", DataType::Int64, false),
        Field::new("rows_deleted", DataType::Int64, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("committed_at", timestamp_type(), false),
    ]))
}

/// The columns of a row as the table stores them (nested values as JSON text).
#[derive(Serialize)]
struct StoredRow<'a> {
    stream: &'a str,
    seq: i64,
    epoch: &'a str,
    position: String,
    watermark: Option<i64>,
    tables: String,
    rows_upserted: i64,
    rows_deleted: i64,
    run_id: &'a str,
    committed_at: i64,
}

/// Where resuming a stream starts, after [`Lake::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The stream's newest complete commit, `None` before its first.
    pub last: Option<ControlRow>,
    /// Each table's last batch of this stream (its app-transaction version), as the lake holds
    /// it now: a data commit expects to find exactly this, or another run committed meanwhile.
    pub committed: HashMap<String, i64>,
}

impl Lake {
    /// Append the control row of a batch exactly once.
    ///
    /// Each row is tagged with the application transaction `(control_app_id(stream, epoch),
    /// seq)`. A row already recorded (by another run that recovered it, see [`Lake::reconcile`])
    /// is not appended again, and of two runs appending the same row at once, Delta lets one
    /// commit and makes the other conflict, which then finds the row recorded.
    pub async fn record(&self, row: &ControlRow) -> Result<()> {
        let app = control_app_id(&row.stream, &row.epoch);
        let batch = control_batch(row)?;
        // Streams of this run record one at a time. Another run may still create the table or
        // append at the same moment: a conflicting append is retried on top of its commit.
        let _guard = self.control_lock.lock().await;
        let mut table = self.control_table().await?;
        let mut attempt = 1;
        loop {
            let recorded = txn_version(CONTROL_TABLE, &table, &app).await?;
            if recorded.is_some_and(|seq| seq >= row.seq) {
                debug!(stream = %row.stream, seq = row.seq, "control row already recorded");
                return Ok(());
            }
            let commit = CommitProperties::default()
                .with_application_transaction(Transaction::new(app.clone(), row.seq));
            let written = table
                .write(vec![batch.clone()])
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(commit)
                .await;
            let error = match written {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if attempt == CONTROL_ATTEMPTS {
                return Err(Error::delta(CONTROL_TABLE)(error));
            }
            // Another run appended first, or the store failed the append (and may have applied
            // it): the table, read again, says whether the row is recorded. A put of this row
            // still under way can only land on the version this run read as free, which is
            // the one its next append aims at first: one of the two lands, never both.
            match is_conflict(&error) {
                true => {
                    debug!(attempt, %error, "another run wrote the control table at once: retrying")
                }
                false => {
                    warn!(attempt, %error, "appending the control row failed: reading the table again");
                    tokio::time::sleep(CONTROL_RETRY_WAIT * attempt).await;
                }
            }
            attempt += 1;
            table = self.open(CONTROL_TABLE).await?.ok_or_else(|| {
                Error::invalid(
                    CONTROL_TABLE,
                    "it disappeared while rows were being recorded",
                )
            })?;
        }
    }

    /// The control table, created empty if missing, in the current layout.
    async fn control_table(&self) -> Result<deltalake::DeltaTable> {
        // Created apart from any row: deltalake commits the loser of a create race without
        // checking it for conflicts, which would let a row in it be recorded twice.
        let table = self
            .create_if_missing(CONTROL_TABLE, schema(), CONTROL_DESCRIPTION)
            .await?;
        if is_legacy(&table)? {
            return Err(Error::invalid(
                CONTROL_TABLE,
                "it is in the layout of zendesk-lake 0.1 (one row per table); \
                 `zendesk-lake sync` migrates it before its first commit",
            ));
        }
        Ok(table)
    }

    /// Bring a stream's control row and its tables into agreement before a run.
    ///
    /// Every table the stream wrote to carries the application transaction
    /// `(zendesk-lake/<stream>, seq)` of its last batch, and the control row records that seq per
    /// table. After a complete commit they agree. A table one batch ahead of the control row
    /// means a run died during the commits of batch `n + 1`: when every table that batch writes
    /// holds it (the data commits record which), only the control row is missing, and it is
    /// recovered from the commit info and recorded, so the run neither re-applies nor skips the
    /// batch. When only some do, the batch is half-committed: the run fetches it again from the
    /// position of batch `n`, and those tables accept batch `n + 1` a second time (merges are
    /// idempotent). A table behind its recorded seq lost commits (dropped, restored or
    /// replaced): resuming would skip data, so it is an error.
    pub async fn reconcile(
        &self,
        stream: &str,
        tables: &[&str],
        last: Option<ControlRow>,
    ) -> Result<Resume> {
        let seq = last.as_ref().map_or(0, |row| row.seq);
        let app = app_id(stream);
        // Only the tables of this run: one left out falls behind and joins again later.
        let mut committed = HashMap::new();
        let mut ahead = Vec::new();
        for &name in tables {
            let table = self.open(name).await?;
            let at = match &table {
                Some(table) => txn_version(name, table, &app).await?.unwrap_or(0),
                None => 0,
            };
            let recorded = last
                .as_ref()
                .and_then(|row| row.tables.get(name))
                .map(|t| t.seq);
            if recorded.is_some_and(|r| at < r) {
                return Err(self.lost_commits(name, stream, recorded.unwrap_or(0), at));
            }
            if at > seq + 1 {
                return Err(Error::invalid(
                    name,
                    format!(
                        "it holds batch #{at} of stream {stream} but {CONTROL_TABLE} records only \
                         #{seq}: rows of the control table were removed. Restore them, or delete \
                         the stream's tables together with its rows to reload it"
                    ),
                ));
            }
            if at == seq + 1 {
                if let Some(table) = table {
                    ahead.push((name.to_owned(), table));
                }
            }
            committed.insert(name.to_owned(), at);
        }
        if ahead.is_empty() {
            return Ok(Resume { last, committed });
        }
        // Each table's own commit of the batch: they form one complete batch only when they
        // come from the same run and position (two runs may each have committed part of it)
        // and cover every table that batch writes.
        let mut drafts = Vec::with_capacity(ahead.len());
        for (name, table) in &ahead {
            let Some((draft, version)) = find_draft(name, table, stream, seq + 1).await? else {
                return Err(Error::invalid(
                    name,
                    format!(
                        "its commit of batch #{} of stream {stream} carries no readable control \
                         metadata; the control table is at #{seq}",
                        seq + 1
                    ),
                ));
            };
            drafts.push((name, draft, version));
        }
        let first = &drafts[0].1;
        let one_batch = drafts.iter().all(|(_, d, _)| {
            d.row.run_id == first.row.run_id && d.row.position == first.row.position
        });
        let complete = one_batch
            && first
                .writes
                .iter()
                .all(|name| ahead.iter().any(|(n, _)| n == name));
        if !complete {
            warn!(
                stream,
                seq = seq + 1,
                "the last run ended between the data commits of one batch: fetching it again"
            );
            return Ok(Resume { last, committed });
        }
        let mut row = first.row.clone();
        if row.epoch.is_empty() {
            // A commit of zendesk-lake 0.1, whose epoch was its table's id.
            row.epoch = match &last {
                Some(last) => last.epoch.clone(),
                None => table_id(&ahead[0].0, &ahead[0].1)?,
            };
        }
        for (name, draft, version) in &drafts {
            if let Some(entry) = draft.row.tables.get(name.as_str()) {
                let mut entry = entry.clone();
                entry.version = *version;
                row.tables.insert((*name).clone(), entry);
            }
        }
        warn!(
            stream,
            seq = row.seq,
            "the last run ended between the data commits and the control row: recording it now"
        );
        self.record(&row).await?;
        Ok(Resume {
            last: Some(row),
            committed,
        })
    }

    fn lost_commits(&self, table: &str, stream: &str, recorded: i64, at: i64) -> Error {
        Error::invalid(
            table,
            format!(
                "the control table records batch #{recorded} of stream {stream} in it but the \
                 table's last is #{at}: the table was dropped, restored or replaced. Resuming \
                 would skip data; delete the stream's tables together with its rows in \
                 {CONTROL_TABLE} (or the whole lake) to reload it"
            ),
        )
    }

    /// The newest control row of every stream.
    pub async fn latest_state(&self) -> Result<HashMap<String, ControlRow>> {
        Ok(latest(self.history().await?))
    }

    /// Every control row, oldest first per stream. A control table still in the layout of
    /// zendesk-lake 0.1 is read through [`legacy_rows`].
    pub async fn history(&self) -> Result<Vec<ControlRow>> {
        let Some(table) = self.open(CONTROL_TABLE).await? else {
            return Ok(Vec::new());
        };
        let batches = self.control_batches(&table).await?;
        if is_legacy(&table)? {
            return self.legacy_rows(&batches).await;
        }
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(rows_of(batch)?);
        }
        rows.sort_by(|a, b| (&a.stream, a.seq).cmp(&(&b.stream, b.seq)));
        Ok(rows)
    }

    async fn control_batches(&self, table: &deltalake::DeltaTable) -> Result<Vec<RecordBatch>> {
        query_one(
            CONTROL_TABLE,
            table,
            &format!("SELECT * FROM {CONTROL_TABLE}"),
        )
        .await
    }

    /// Rewrite a control table of zendesk-lake 0.1 (one row per commit of a table, position
    /// in columns) in the current layout, in one commit, keeping every row. Does nothing when it
    /// is already current or missing. Safe to repeat and to race: the overwrite is one Delta
    /// commit, and a run that loses the race finds the table migrated.
    pub async fn migrate(&self) -> Result<()> {
        let _guard = self.control_lock.lock().await;
        let Some(table) = self.open(CONTROL_TABLE).await? else {
            return Ok(());
        };
        if !is_legacy(&table)? {
            return Ok(());
        }
        let batches = self.control_batches(&table).await?;
        let rows = self.legacy_rows(&batches).await?;
        let mut converted = Vec::with_capacity(rows.len());
        for row in &rows {
            converted.push(control_batch(row)?);
        }
        let batch = deltalake::arrow::compute::concat_batches(&schema(), &converted)
            .map_err(|e| invalid(e.to_string()))?;
        let written = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
            .with_description(CONTROL_DESCRIPTION)
            .await;
        match written {
            Ok(_) => {
                info!(
                    rows = rows.len(),
                    "migrated {CONTROL_TABLE} to the layout of streams"
                );
                Ok(())
            }
            // Another run migrated it first, or the store lost the answer to this one: the
            // table says whether it is migrated.
            Err(error) => {
                let migrated = match self.open(CONTROL_TABLE).await? {
                    Some(table) => !is_legacy(&table)?,
                    None => false,
                };
                match migrated {
                    true => Ok(()),
                    false => Err(Error::delta(CONTROL_TABLE)(error)),
                }
            }
        }
    }

    /// The rows of a 0.1 control table in the current layout. In 0.1 each stream fed one table
    /// of its own name; its epoch was that table's Delta metadata id, read here so that rows
    /// keep being recorded under the same application ids.
    async fn legacy_rows(&self, batches: &[RecordBatch]) -> Result<Vec<ControlRow>> {
        let mut legacy = Vec::new();
        for batch in batches {
            let mut decoded: Vec<LegacyRow> = Vec::new();
            let json = batch_json(batch)?;
            for row in json {
                decoded.push(serde_json::from_value(row).map_err(|e| invalid(e.to_string()))?);
            }
            legacy.extend(decoded);
        }
        let mut epochs: HashMap<String, String> = HashMap::new();
        let mut rows = Vec::with_capacity(legacy.len());
        for old in legacy {
            if !epochs.contains_key(&old.table) {
                let epoch = match self.open(&old.table).await? {
                    Some(table) => table_id(&old.table, &table)?,
                    None => String::from("legacy"),
                };
                epochs.insert(old.table.clone(), epoch);
            }
            let epoch = epochs[&old.table].clone();
            rows.push(old.into_row(epoch));
        }
        rows.sort_by(|a, b| (&a.stream, a.seq).cmp(&(&b.stream, b.seq)));
        Ok(rows)
    }
}

/// How far back, in commits, the commit of a batch is looked for.
const DRAFT_LOOKBACK: u64 = 1000;

/// The commit of `table` that applied batch `seq` of `stream`: its draft and Delta version.
///
/// The batch's commit is the table's newest unless something else committed to it since (an
/// optimize, a vacuum, a change of table properties: none carries a draft), so commits are read
/// one by one from the version loaded downwards, each by its own version number, never by its
/// place in a listing, which a commit made meanwhile would shift.
async fn find_draft(
    name: &str,
    table: &deltalake::DeltaTable,
    stream: &str,
    seq: i64,
) -> Result<Option<(CommitDraft, i64)>> {
    let latest = table.version().unwrap_or_default();
    let store = table.log_store();
    for version in (latest.saturating_sub(DRAFT_LOOKBACK - 1)..=latest).rev() {
        // A commit removed by log cleanup (older than delta.logRetentionDuration) ends the search.
        let Some(bytes) = store
            .read_commit_entry(version)
            .await
            .map_err(Error::delta(name))?
        else {
            break;
        };
        let actions =
            deltalake::logstore::get_actions(version, &bytes).map_err(Error::delta(name))?;
        let draft = actions.iter().find_map(|action| match action {
            deltalake::kernel::Action::CommitInfo(info) => {
                info.info.get(CONTROL_METADATA).and_then(parse_draft)
            }
            _ => None,
        });
        if let Some(draft) = draft.filter(|d| d.row.stream == stream && d.row.seq == seq) {
            return Ok(Some((draft, version as i64)));
        }
    }
    Ok(None)
}

/// A draft as this version writes it, or a control row as zendesk-lake 0.1 did.
fn parse_draft(meta: &Value) -> Option<CommitDraft> {
    if let Ok(draft) = serde_json::from_value::<CommitDraft>(meta.clone()) {
        return Some(draft);
    }
    let old: LegacyRow = serde_json::from_value(meta.clone()).ok()?;
    // Its epoch is unknown here; it is only read from drafts of this version's commits.
    let row = old.into_row(String::new());
    Some(CommitDraft {
        writes: row.tables.keys().cloned().collect(),
        row,
    })
}

/// A control row of zendesk-lake 0.1.
#[derive(Deserialize)]
struct LegacyRow {
    /// The stream, and the one table it fed, of one name (0.1 called both an object).
    #[serde(rename = "object")]
    table: String,
    seq: i64,
    cursor: Option<String>,
    start_time: i64,
    #[serde(default)]
    boundary: Option<Vec<String>>,
    watermark: Option<i64>,
    rows_upserted: i64,
    rows_deleted: i64,
    run_id: String,
    data_version: i64,
    committed_at: i64,
}

impl LegacyRow {
    fn into_row(self, epoch: String) -> ControlRow {
        // The readers of cursor and time exports read the fields they use from this position.
        let position = serde_json::json!({
            "cursor": self.cursor,
            "start_time": self.start_time,
            "boundary": self.boundary.unwrap_or_default(),
        });
        let tables = BTreeMap::from([(
            self.table.clone(),
            TableCommit {
                seq: self.seq,
                version: self.data_version,
                upserted: self.rows_upserted,
                deleted: self.rows_deleted,
            },
        )]);
        ControlRow {
            stream: self.table,
            seq: self.seq,
            epoch,
            position,
            watermark: self.watermark,
            tables,
            run_id: self.run_id,
            committed_at: self.committed_at,
        }
    }
}

/// Whether the control table is in the layout of zendesk-lake 0.1.
fn is_legacy(table: &deltalake::DeltaTable) -> Result<bool> {
    let state = table.snapshot().map_err(Error::delta(CONTROL_TABLE))?;
    Ok(state.schema().fields().any(|f| f.name() == "object"))
}

fn invalid(detail: String) -> Error {
    Error::invalid(CONTROL_TABLE, detail)
}

fn control_batch(row: &ControlRow) -> Result<RecordBatch> {
    let stored = StoredRow {
        stream: &row.stream,
        seq: row.seq,
        epoch: &row.epoch,
        position: row.position.to_string(),
        watermark: row.watermark,
        tables: serde_json::to_string(&row.tables).map_err(|e| invalid(e.to_string()))?,
        rows_upserted: row.rows_upserted(),
        rows_deleted: row.rows_deleted(),
        run_id: &row.run_id,
        committed_at: row.committed_at,
    };
    let mut decoder = ReaderBuilder::new(schema())
        .build_decoder()
        .map_err(|e| invalid(e.to_string()))?;
    decoder
        .serialize(std::slice::from_ref(&stored))
        .map_err(|e| invalid(e.to_string()))?;
    decoder
        .flush()
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| invalid("empty control batch".into()))
}

/// The newest row of every stream among `rows`.
pub fn latest(rows: impl IntoIterator<Item = ControlRow>) -> HashMap<String, ControlRow> {
    let mut latest: HashMap<String, ControlRow> = HashMap::new();
    for row in rows {
        match latest.get(&row.stream) {
            Some(current) if current.seq >= row.seq => {}
            _ => {
                latest.insert(row.stream.clone(), row);
            }
        }
    }
    latest
}

/// A batch's rows as JSON objects (timestamps as µs), whatever its layout.
fn batch_json(batch: &RecordBatch) -> Result<Vec<Value>> {
    let mut out: Vec<serde_json::Map<String, Value>> =
        vec![serde_json::Map::new(); batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = field.name();
        if let Some(times) = column.as_primitive_opt::<TimestampMicrosecondType>() {
            for (i, row) in out.iter_mut().enumerate() {
                let value = (!times.is_null(i)).then(|| Value::from(times.value(i)));
                row.insert(name.clone(), value.unwrap_or(Value::Null));
            }
        } else if let Some(ints) = column.as_primitive_opt::<Int64Type>() {
            for (i, row) in out.iter_mut().enumerate() {
                let value = (!ints.is_null(i)).then(|| Value::from(ints.value(i)));
                row.insert(name.clone(), value.unwrap_or(Value::Null));
            }
        } else if let DataType::List(_) = column.data_type() {
            let list = column.as_list::<i32>();
            for (i, row) in out.iter_mut().enumerate() {
                let value = if list.is_null(i) {
                    Value::Null
                } else {
                    let items = cast(&list.value(i), &DataType::Utf8)
                        .map_err(|e| invalid(e.to_string()))?;
                    let items = items.as_string::<i32>();
                    Value::Array(
                        (0..items.len())
                            .map(|j| Value::from(items.value(j)))
                            .collect(),
                    )
                };
                row.insert(name.clone(), value);
            }
        } else {
            // DataFusion may hand strings back as Utf8View: cast to plain strings.
            let strings = cast(column, &DataType::Utf8)
                .map_err(|_| invalid(format!("column {name} has an unexpected type")))?;
            let strings = strings.as_string::<i32>();
            for (i, row) in out.iter_mut().enumerate() {
                let value = (!strings.is_null(i)).then(|| Value::from(strings.value(i)));
                row.insert(name.clone(), value.unwrap_or(Value::Null));
            }
        }
    }
    Ok(out.into_iter().map(Value::Object).collect())
}

fn rows_of(batch: &RecordBatch) -> Result<Vec<ControlRow>> {
    let mut rows = Vec::with_capacity(batch.num_rows());
    for stored in batch_json(batch)? {
        let text = |name: &str| -> Result<&str> {
            stored[name]
                .as_str()
                .ok_or_else(|| invalid(format!("column {name} is missing or not text")))
        };
        let int = |name: &str| -> Result<i64> {
            stored[name]
                .as_i64()
                .ok_or_else(|| invalid(format!("column {name} is missing or not an integer")))
        };
        let position = serde_json::from_str(text("position")?)
            .map_err(|e| invalid(format!("column position is not JSON: {e}")))?;
        let tables = serde_json::from_str(text("tables")?)
            .map_err(|e| invalid(format!("column tables is not valid: {e}")))?;
        rows.push(ControlRow {
            stream: text("stream")?.to_owned(),
            seq: int("seq")?,
            epoch: text("epoch")?.to_owned(),
            position,
            watermark: stored["watermark"].as_i64(),
            tables,
            run_id: text("run_id")?.to_owned(),
            committed_at: int("committed_at")?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The draft of batch `seq` of the tickets stream.
    pub(crate) fn draft(seq: i64) -> CommitDraft {
        CommitDraft {
            row: ControlRow {
                stream: "tickets".into(),
                seq,
                epoch: "test".into(),
                position: Value::Null,
                watermark: None,
                tables: BTreeMap::new(),
                run_id: "test".into(),
                committed_at: 0,
            },
            writes: vec!["tickets".into()],
        }
    }
}
