//! Writing a batch into its table ([`Lake::upsert`]), the one way a sync's rows enter its
//! tables (docs/ARCHITECTURE.md, "Write modes, patches and deletions", "Layout and merges"):
//! a new table is created with the batch; after, a table keyed by int64 is spliced
//! ([`super::splice`]), and any other by deltalake's merge by primary key.
//!
//! The source batch must hold one row per key ([`crate::decode::dedup`]). A matched row is only
//! replaced by a source row whose cursor is at least as new, so re-applying an older batch (a
//! retry after a crash) can never roll a row back; a row without a cursor (a snapshot table's,
//! whose listing is the account's state when read) is replaced by its listed version.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, ArrayRef, BooleanArray, RecordBatch};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::prelude::{col, not, SessionContext};
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use futures::future::BoxFuture;
use tracing::debug;

use super::commit::{
    self, after_commit, app_id, commit_actions, txn_version, CommitFiles, Intent, CONTROL_METADATA,
};
use super::patch::PatchSet;
use super::splice::Splice;
use super::table::{table_configuration, table_id};
use super::{CommitDraft, Error, Lake, Result};
use crate::spec::Table;

/// What one data commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Delta version of the commit.
    pub version: i64,
    pub inserted: u64,
    pub updated: u64,
    /// Rows the commit inserted deleted or changed from live to `_deleted`, where the writer
    /// counts them (a splice, a table's first write); None for a deltalake merge, whose metrics
    /// do not tell.
    pub deleted: Option<u64>,
    /// The table's Delta metadata id, new whenever the table is created again.
    pub table_id: String,
    /// Whether a commit was made: a merge that changes no row makes none (deltalake skips it),
    /// and then the table does not carry this batch's application transaction.
    pub committed: bool,
    /// Data files of the table the write read (a merge's target scan; none for an append).
    pub files_scanned: u64,
    /// The data files the commit added and removed.
    pub files: CommitFiles,
}

impl Lake {
    /// An upsert of `batch` (one row per key) into the table `spec`, as batch `draft.row.seq`
    /// of the stream `draft.row.stream`: `.await` it to commit. See [`Upsert`].
    pub fn upsert<'a>(
        &'a self,
        spec: &'a Table,
        batch: RecordBatch,
        draft: &'a CommitDraft,
    ) -> Upsert<'a> {
        Upsert {
            lake: self,
            spec,
            batch,
            draft,
            patches: None,
            expected: 0,
        }
    }
}

/// Upsert a batch (one row per key) into a table in one commit tagged with the application
/// transaction `(app_id(stream), seq)` and the draft in its commit info (docs/ARCHITECTURE.md,
/// "Exactly once"). Built by [`Lake::upsert`]; awaiting it commits and returns the
/// [`CommitReport`].
#[must_use = "an upsert commits nothing until it is awaited"]
pub struct Upsert<'a> {
    lake: &'a Lake,
    spec: &'a Table,
    batch: RecordBatch,
    draft: &'a CommitDraft,
    patches: Option<PatchSet>,
    expected: i64,
}

impl<'a> Upsert<'a> {
    /// Patches that set a few columns of rows of earlier batches, in the same commit; with no
    /// table yet there is nothing for them to change. None by default.
    pub fn with_patches(mut self, patches: impl Into<Option<PatchSet>>) -> Self {
        self.patches = patches.into();
        self
    }

    /// The stream's last batch in this table as this run knows it (0, the default: none). If
    /// the table holds another, a concurrent run committed to it, and nothing is written
    /// ([`Error::Concurrent`]).
    pub fn with_expected_batch(mut self, expected: i64) -> Self {
        self.expected = expected;
        self
    }
}

impl<'a> IntoFuture for Upsert<'a> {
    type Output = Result<CommitReport>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl Upsert<'_> {
    async fn run(self) -> Result<CommitReport> {
        let Upsert {
            lake,
            spec,
            batch,
            draft,
            patches,
            expected,
        } = self;
        let name = spec.name.as_str();
        let seq = draft.row.seq;
        let app = app_id(&draft.row.stream);
        let rows = batch.num_rows() as u64;
        let metadata = serde_json::to_value(draft)
            .map_err(|e| Error::invalid(name, format!("cannot serialise the control row: {e}")))?;
        // No conflict retries: a conflicting commit is another run's, and retrying on top of
        // it is never right.
        let intent = Intent::new()
            .with_transaction(app.clone(), seq)
            .with_metadata(CONTROL_METADATA, metadata);
        let mut table = lake.cached(name).await?;
        // The table holds the batch this run expects, before anything is committed to it and
        // again on the version the data commit builds on.
        let stream = draft.row.stream.as_str();
        at_batch(name, table.as_ref(), stream, expected).await?;
        let vectors = match (&mut table, lake.deletion_vectors) {
            (Some(handle), true) => {
                let before = handle.version();
                let enabled = lake.enable_deletion_vectors(name, handle).await?;
                if handle.version() != before {
                    at_batch(name, table.as_ref(), stream, expected).await?;
                }
                enabled
            }
            _ => false,
        };
        match table {
            None => {
                let deleted = crate::decode::count_deleted(&batch);
                let handle = lake.handle(name)?;
                let log = handle.log_store();
                let written = handle
                    .write(vec![batch])
                    .with_save_mode(SaveMode::Append)
                    .with_table_name(name)
                    .with_description(spec.description.clone())
                    .with_configuration(table_configuration())
                    .with_commit_properties(intent.properties())
                    .await;
                let table = match written {
                    Ok(table) => table,
                    Err(error) => {
                        let version = commit::settle(name, log.as_ref(), None, &intent, error)
                            .await
                            .map_err(|unmade| unmade.into_error(name, &format!("commit #{seq}")))?;
                        lake.at_version(name, version).await?
                    }
                };
                lake.report(name, table, true, rows, 0)
                    .await
                    .map(|r| CommitReport {
                        deleted: Some(deleted),
                        ..r
                    })
            }
            Some(table) => {
                let table = evolve(spec, table).await?;
                let (batch, patches) = match narrow(name, spec, &table, batch, patches).await? {
                    Narrowed::Splice {
                        batch,
                        patches,
                        keys,
                    } => {
                        let mut table = table;
                        let before = table.version();
                        let done = Splice::new(spec, batch, &keys, &intent, seq)
                            .with_patches(patches)
                            .with_deletion_vectors(vectors)
                            .apply(&mut table)
                            .await?;
                        debug_assert!(done.committed == (table.version() != before));
                        return lake
                            .report(name, table, done.committed, done.inserted, done.updated)
                            .await
                            .map(|r| CommitReport {
                                files_scanned: done.files_scanned,
                                deleted: Some(done.deleted),
                                ..r
                            });
                    }
                    Narrowed::Merge { batch, patches } => (batch, patches),
                };
                let before = table.version();
                let log = table.log_store();
                let key = spec.primary_key.as_str();
                let cursor = spec.cursor_field.as_str();
                let columns: Vec<String> = spec
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let by_key = col(format!("target.{key}")).eq(col(format!("source.{key}")));
                // A side without a cursor cannot be ordered: only snapshot tables hold such
                // rows, and their listing is the account's state when read, so it wins.
                let source_cursor = col(format!("source.{cursor}"));
                let target_cursor = col(format!("target.{cursor}"));
                let newer = source_cursor
                    .clone()
                    .gt_eq(target_cursor.clone())
                    .or(source_cursor.is_null())
                    .or(target_cursor.is_null());
                let is_patch = col(format!("source.{PATCH_COLUMN}"));
                let patch = patches.filter(|p| p.rows.num_rows() > 0);
                let (source, predicate, sets) = match patch {
                    Some(patches) => {
                        let source = with_patches(spec, batch, patches.rows)?;
                        let by_patch = patches.column.as_str();
                        let predicate = if by_patch == key {
                            by_key
                        } else {
                            let by_column = col(format!("target.{by_patch}"))
                                .eq(col(format!("source.{by_patch}")));
                            (not(is_patch.clone()).and(by_key)).or(is_patch.clone().and(by_column))
                        };
                        let sets: Vec<String> = patches
                            .sets
                            .into_iter()
                            .chain([crate::spec::SYNCED_AT_COLUMN.to_owned()])
                            .collect();
                        (source, predicate, Some(sets))
                    }
                    _ => (batch, by_key, None),
                };
                let source = SessionContext::new()
                    .read_batch(source)
                    .map_err(Error::datafusion(name))?;
                let mut merge = table
                    .merge(source, predicate)
                    .with_source_alias("source")
                    .with_target_alias("target")
                    .with_commit_properties(intent.properties());
                let whole = match &sets {
                    Some(sets) => {
                        // A patch sets its few columns of the rows it matches, and is never
                        // inserted.
                        merge = merge
                            .when_matched_update(|update| {
                                sets.iter()
                                    .fold(update.predicate(is_patch.clone()), |update, c| {
                                        update.update(c.as_str(), col(format!("source.{c}")))
                                    })
                            })
                            .map_err(Error::delta(name))?;
                        not(is_patch.clone()).and(newer)
                    }
                    None => newer,
                };
                merge = merge
                    .when_matched_update(|update| {
                        columns.iter().fold(update.predicate(whole), |update, c| {
                            update.update(c.as_str(), col(format!("source.{c}")))
                        })
                    })
                    .map_err(Error::delta(name))?
                    .when_not_matched_insert(|insert| {
                        let insert = match &sets {
                            Some(_) => insert.predicate(not(is_patch.clone())),
                            None => insert,
                        };
                        columns.iter().fold(insert, |insert, c| {
                            insert.set(c.as_str(), col(format!("source.{c}")))
                        })
                    })
                    .map_err(Error::delta(name))?;
                let (table, inserted, updated, files_scanned) = match merge.await {
                    Ok((table, metrics)) => {
                        debug!(
                            table = name,
                            files_scanned = metrics.num_target_files_scanned,
                            files_skipped = metrics.num_target_files_skipped_during_scan,
                            files_added = metrics.num_target_files_added,
                            files_removed = metrics.num_target_files_removed,
                            "merged"
                        );
                        let count = |n: usize| n as u64;
                        (
                            table,
                            count(metrics.num_target_rows_inserted),
                            count(metrics.num_target_rows_updated),
                            count(metrics.num_target_files_scanned),
                        )
                    }
                    Err(error) => {
                        // Made anyway: its counts are in its commit info.
                        let version = commit::settle(name, log.as_ref(), before, &intent, error)
                            .await
                            .map_err(|unmade| unmade.into_error(name, &format!("commit #{seq}")))?;
                        let table = lake.at_version(name, version).await?;
                        let actions = commit_actions(name, &table, version)
                            .await
                            .map_err(|e| after_commit(name, version, e))?;
                        let metrics = commit::commit_info(&actions, "operationMetrics");
                        let count = |key: &str| {
                            metrics
                                .and_then(|m| m.get(key))
                                .and_then(serde_json::Value::as_u64)
                                .unwrap_or(0)
                        };
                        (
                            table,
                            count("num_target_rows_inserted"),
                            count("num_target_rows_updated"),
                            count("num_target_files_scanned"),
                        )
                    }
                };
                let committed = table.version() != before;
                let report = lake
                    .report(name, table, committed, inserted, updated)
                    .await?;
                Ok(CommitReport {
                    files_scanned,
                    ..report
                })
            }
        }
    }
}

impl Lake {
    /// The report of a write that left `table` at its current version (`committed`: the write
    /// made that version, whose files it reports), reading no file of the table; its handle is
    /// kept for the next commit.
    async fn report(
        &self,
        name: &str,
        table: DeltaTable,
        committed: bool,
        inserted: u64,
        updated: u64,
    ) -> Result<CommitReport> {
        let version = table.version().unwrap_or_default();
        // The files of the commit, from its log entry: one small read, whatever the size of the
        // table (its file list is not loaded).
        let files = match committed {
            true => commit_actions(name, &table, version)
                .await
                .map(|actions| CommitFiles::of(&actions))
                .map_err(|e| after_commit(name, version, e))?,
            false => CommitFiles::default(),
        };
        let report = CommitReport {
            version: version as i64,
            inserted,
            updated,
            table_id: table_id(name, &table)?,
            committed,
            deleted: None,
            files_scanned: 0,
            files,
        };
        self.keep(name, table);
        Ok(report)
    }
}

/// At most this many key ranges narrow a merge: enough to skip most files of a table clustered
/// by key, few enough that pruning them against every file's statistics stays cheap.
const MAX_KEY_RANGES: usize = 128;

/// How a batch is written once the keys it names are looked up in the table.
enum Narrowed {
    /// Int64 keys, `keys` the batch's and its patches' (sorted, distinct): the batch is
    /// spliced into the files that may hold them ([`splice`]).
    Splice {
        batch: RecordBatch,
        patches: Option<PatchSet>,
        keys: Vec<i64>,
    },
    /// Keys that are not int64, or patches matched on a column that is not: a deltalake merge
    /// over the whole table.
    Merge {
        batch: RecordBatch,
        patches: Option<PatchSet>,
    },
}

/// How the batch is written: tables keyed by int64 are spliced, which reads only the key and
/// cursor columns of the files whose statistics may hold the batch's keys before it changes
/// any (docs/ARCHITECTURE.md, "Layout and merges"). Tables keyed by text, and patches matched
/// on another column than the key, are merged as they are.
async fn narrow(
    name: &str,
    spec: &Table,
    table: &DeltaTable,
    batch: RecordBatch,
    patches: Option<PatchSet>,
) -> Result<Narrowed> {
    let key = spec.primary_key.as_str();
    let patches = patches.filter(|p| p.rows.num_rows() > 0);
    let as_is = |batch, patches| Ok(Narrowed::Merge { batch, patches });
    // Patches matched on another column (a deleted ticket's metric set, by `ticket_id`) become
    // patches of the stored rows they match, by key.
    let patches = match patches {
        Some(patch) if patch.column != key => {
            match patches_by_key(name, spec, table, &patch).await? {
                Some(by_key) => Some(by_key).filter(|p| p.rows.num_rows() > 0),
                None => return as_is(batch, Some(patch)),
            }
        }
        other => other,
    };
    let Some(mut keys) = int_keys(&batch, key) else {
        return as_is(batch, patches);
    };
    if let Some(patches) = &patches {
        match int_keys(&patches.rows, key) {
            Some(more) => keys.extend(more),
            None => return as_is(batch, patches.clone().into()),
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(Narrowed::Splice {
        batch,
        patches,
        keys,
    })
}

/// `patch` (matched on a column other than the key) as patches of the stored rows it matches,
/// by key: the last patch of each value applies to every stored row holding that value. `None`
/// when the key or the column is not int64.
async fn patches_by_key(
    name: &str,
    spec: &Table,
    table: &DeltaTable,
    patch: &PatchSet,
) -> Result<Option<PatchSet>> {
    use deltalake::arrow::array::{AsArray, Int64Array, UInt32Array};
    use deltalake::arrow::datatypes::Int64Type;
    let key = spec.primary_key.as_str();
    let Some(values) = patch
        .rows
        .column_by_name(&patch.column)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
    else {
        return Ok(None);
    };
    let mut latest: HashMap<i64, u32> = HashMap::new();
    for (row, value) in values.iter().enumerate() {
        if let Some(value) = value {
            latest.insert(value, row as u32);
        }
    }
    let mut wanted: Vec<i64> = latest.keys().copied().collect();
    wanted.sort_unstable();
    let filter = ranges_filter(&patch.column, &wanted);
    if filter.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT \"{key}\", \"{column}\" FROM \"{name}\" WHERE {filter}",
        column = patch.column
    );
    let (mut keys, mut picks) = (Vec::new(), Vec::new());
    for batch in super::query_one(name, table, &sql).await? {
        let (Some(stored), Some(held)) = (
            batch.column(0).as_primitive_opt::<Int64Type>(),
            batch.column(1).as_primitive_opt::<Int64Type>(),
        ) else {
            return Ok(None);
        };
        for (stored, held) in stored.iter().zip(held.iter()) {
            if let (Some(stored), Some(&row)) = (stored, held.and_then(|h| latest.get(&h))) {
                keys.push(stored);
                picks.push(row);
            }
        }
    }
    let picks = UInt32Array::from(picks);
    let doing = format!("patches by {key}");
    let arrow = Error::arrow(name, &doing);
    let mut fields = vec![Field::new(key, DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(keys))];
    for set in patch
        .sets
        .iter()
        .map(String::as_str)
        .chain([crate::spec::SYNCED_AT_COLUMN])
    {
        let (at, field) = patch
            .rows
            .schema()
            .column_with_name(set)
            .map(|(at, f)| (at, f.clone()))
            .ok_or_else(|| Error::invalid(name, format!("its patches carry no {set}")))?;
        columns.push(
            deltalake::arrow::compute::take(patch.rows.column(at), &picks, None).map_err(arrow)?,
        );
        fields.push(field);
    }
    let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow)?;
    Ok(Some(PatchSet {
        column: key.to_owned(),
        sets: patch.sets.clone(),
        rows,
    }))
}

/// A SQL filter on the int64 column `column` covering `values` (sorted, distinct) in at most
/// [`MAX_KEY_RANGES`] ranges; empty for no values.
fn ranges_filter(column: &str, values: &[i64]) -> String {
    key_ranges(values, MAX_KEY_RANGES)
        .into_iter()
        .map(|(lo, hi)| format!("(\"{column}\" BETWEEN {lo} AND {hi})"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The values of an int64 key column, `None` when the column is not one.
fn int_keys(batch: &RecordBatch, key: &str) -> Option<Vec<i64>> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::Int64Type;
    let column = batch.column_by_name(key)?.as_primitive_opt::<Int64Type>()?;
    Some(column.iter().flatten().collect())
}

/// At most `max` closed ranges covering every one of `keys` (sorted, distinct): the largest
/// gaps between neighbouring keys are left out.
fn key_ranges(keys: &[i64], max: usize) -> Vec<(i64, i64)> {
    let (Some(&first), Some(&last)) = (keys.first(), keys.last()) else {
        return Vec::new();
    };
    let mut gaps: Vec<(i64, usize)> = keys
        .windows(2)
        .enumerate()
        .map(|(i, pair)| (pair[1] - pair[0], i))
        .filter(|&(gap, _)| gap > 1)
        .collect();
    // The widest gaps first; ties by position, so the result does not depend on sort order.
    gaps.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    gaps.truncate(max.saturating_sub(1));
    let mut breaks: Vec<usize> = gaps.into_iter().map(|(_, i)| i).collect();
    breaks.sort_unstable();
    let mut ranges = Vec::with_capacity(breaks.len() + 1);
    let mut start = first;
    for i in breaks {
        ranges.push((start, keys[i]));
        start = keys[i + 1];
    }
    ranges.push((start, last));
    ranges
}

/// The merge source's column that tells patches from whole rows.
const PATCH_COLUMN: &str = "_patch";

/// The merge source of whole rows and patches: the table's columns, all nullable, and
/// [`PATCH_COLUMN`]; a patch's columns that it does not carry are null.
fn with_patches(spec: &Table, rows: RecordBatch, patches: RecordBatch) -> Result<RecordBatch> {
    let arrow = Error::arrow(&spec.name, "building the merge source");
    let schema = spec.schema();
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new(PATCH_COLUMN, DataType::Boolean, false));
    let source_schema = Arc::new(Schema::new(fields));
    let mut whole = rows.columns().to_vec();
    whole.push(Arc::new(BooleanArray::from(vec![false; rows.num_rows()])));
    let count = patches.num_rows();
    let mut patch: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match patches.column_by_name(f.name()) {
            Some(column) => column.clone(),
            None => new_null_array(f.data_type(), count),
        })
        .collect();
    patch.push(Arc::new(BooleanArray::from(vec![true; count])));
    let whole = RecordBatch::try_new(source_schema.clone(), whole).map_err(arrow)?;
    let patch = RecordBatch::try_new(source_schema.clone(), patch).map_err(arrow)?;
    concat_batches(&source_schema, [&whole, &patch]).map_err(arrow)
}

/// [`Error::Concurrent`] unless `table` (none: not created yet) holds batch `expected` of
/// `stream` as its last.
async fn at_batch(
    name: &str,
    table: Option<&DeltaTable>,
    stream: &str,
    expected: i64,
) -> Result<()> {
    let current = match table {
        Some(table) => txn_version(name, table, &app_id(stream))
            .await?
            .unwrap_or(0),
        None => 0,
    };
    match current == expected {
        true => Ok(()),
        false => Err(Error::Concurrent {
            table: name.to_owned(),
            detail: format!(
                "expected its last commit of stream {stream} to be #{expected}, found #{current}"
            ),
        }),
    }
}

/// The table with every column of its schema file: the columns the file gained since the
/// table was created are added to it (nullable, after its own columns, in one metadata commit;
/// the rows written before hold null in them until they are written again). A column the file
/// no longer has stays in the table, and new rows hold null in it. A column whose type differs
/// from the file's is refused: a silent cast would lose data.
async fn evolve(spec: &Table, table: DeltaTable) -> Result<DeltaTable> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;

    let name = spec.name.as_str();
    let state = table.snapshot().map_err(Error::delta(name))?;
    let stored = state.snapshot().arrow_schema();
    let expected = spec.schema();
    let mut missing = Vec::new();
    for field in expected.fields() {
        match stored.field_with_name(field.name()) {
            Ok(have) if same_type(have.data_type(), field.data_type()) => {}
            Ok(have) => {
                return Err(Error::invalid(
                    name,
                    format!(
                        "column {} is {} in the table and {} in schemas/{name}.json: write the \
                         table anew (move it away and sync it again) to change a column's type",
                        field.name(),
                        have.data_type(),
                        field.data_type()
                    ),
                ))
            }
            Err(_) => missing.push(field.as_ref().clone().with_nullable(true)),
        }
    }
    if missing.is_empty() {
        return Ok(table);
    }
    let names: Vec<String> = missing.iter().map(|f| f.name().clone()).collect();
    let fields = missing
        .iter()
        .map(|f| f.try_into_kernel())
        .collect::<std::result::Result<Vec<deltalake::kernel::StructField>, _>>()
        .map_err(|e| Error::invalid(name, format!("column types for Delta: {e}")))?;
    let before = table.version();
    match table.clone().add_columns().with_fields(fields).await {
        Ok(table) => {
            tracing::info!(table = name, columns = ?names, "added the schema file's new columns to the table");
            Ok(table)
        }
        // Another run added them first (or the answer to this one was lost): the table says.
        Err(error) => {
            let mut again = table;
            again
                .update_incremental(None)
                .await
                .map_err(Error::delta(name))?;
            let state = again.snapshot().map_err(Error::delta(name))?;
            let schema = state.snapshot().arrow_schema();
            match names.iter().all(|n| schema.field_with_name(n).is_ok())
                && again.version() != before
            {
                true => Ok(again),
                false => Err(Error::delta(name)(error)),
            }
        }
    }
}

/// Whether the table's type and the schema file's are the same, text stored as a view or not.
fn same_type(stored: &DataType, expected: &DataType) -> bool {
    let plain = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        other => other.clone(),
    };
    match (stored, expected) {
        (DataType::List(a), DataType::List(b)) | (DataType::LargeList(a), DataType::List(b)) => {
            same_type(a.data_type(), b.data_type())
        }
        (DataType::Struct(a), DataType::Struct(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.name() == y.name() && same_type(x.data_type(), y.data_type()))
        }
        _ => plain(stored) == plain(expected),
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use serde_json::Value;

    use super::*;
    use crate::lake::control::tests::draft;
    use crate::lake::files::files;
    use crate::sim::{SimConfig, Simulator};

    /// The tickets of a simulated account of `n` tickets, by id.
    fn ticket_records(n: usize) -> Vec<Value> {
        let sim = Simulator::new(SimConfig {
            tickets: n,
            ..SimConfig::default()
        });
        let mut records = sim.records("tickets");
        records.sort_by_key(|r| r["id"].as_i64());
        records
    }

    #[test]
    fn key_ranges_cover_every_key_within_the_limit() {
        assert!(key_ranges(&[], 4).is_empty());
        assert_eq!(key_ranges(&[7], 4), vec![(7, 7)]);
        // Neighbours never need a break; the widest gaps are left out first.
        assert_eq!(
            key_ranges(&[1, 2, 3, 10, 11, 50], 8),
            vec![(1, 3), (10, 11), (50, 50)]
        );
        assert_eq!(
            key_ranges(&[1, 2, 3, 10, 11, 50], 2),
            vec![(1, 11), (50, 50)]
        );
        assert_eq!(key_ranges(&[1, 5, 9], 1), vec![(1, 9)]);
        let keys: Vec<i64> = (0..1000).map(|i| i * i % 7919 + i * 13).collect();
        let mut keys = keys;
        keys.sort_unstable();
        keys.dedup();
        for max in [1, 2, 16, 128, 5000] {
            let ranges = key_ranges(&keys, max);
            assert!(ranges.len() <= max.max(1), "{max}: {}", ranges.len());
            assert!(
                ranges.windows(2).all(|w| w[0].1 < w[1].0),
                "sorted, disjoint"
            );
            for key in &keys {
                assert!(
                    ranges.iter().any(|(lo, hi)| lo <= key && key <= hi),
                    "{key}"
                );
            }
        }
    }

    /// A merge reads and rewrites only the files whose key range holds a stored key of the
    /// batch, and a batch of new keys only appends.
    #[tokio::test]
    async fn merges_rewrite_only_the_files_holding_changed_keys() {
        merges_touch_only_the_files_holding_changed_keys(false).await;
    }

    /// With deletion vectors, a merge rewrites no file at all: the file holding the changed
    /// key stays, with a vector hiding the old version.
    #[tokio::test]
    async fn merges_with_deletion_vectors_rewrite_no_file() {
        merges_touch_only_the_files_holding_changed_keys(true).await;
    }

    async fn merges_touch_only_the_files_holding_changed_keys(vectors: bool) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new())
            .unwrap()
            .with_deletion_vectors(vectors);
        let spec = crate::spec::find("tickets").unwrap();
        let records = ticket_records(60);
        let now = chrono::Utc::now();
        let decode = |records: &[Value]| {
            crate::decode::decode_values(spec, records, now)
                .unwrap()
                .batch
        };
        // Two files with disjoint key ranges: the lower and the upper half of the ids.
        let (low, high) = records.split_at(30);
        let first = lake.upsert(spec, decode(low), &draft(1)).await.unwrap();
        let second = lake
            .upsert(spec, decode(high), &draft(2))
            .with_expected_batch(1)
            .await
            .unwrap();
        assert!(first.committed && second.committed);
        let table = lake.open("tickets").await.unwrap().unwrap();
        let before = files(&table);
        assert_eq!(before.len(), 2);

        // One changed ticket of the lower half, as a newer version, and a new ticket above
        // every stored id: the batch's keys span both files, the stored one only the lower.
        let top = records.last().unwrap()["id"].as_i64().unwrap();
        let mut changed = low[3].clone();
        changed["subject"] = Value::from("changed by the test");
        let stamp = changed["generated_timestamp"].as_i64().unwrap() + 10;
        changed["generated_timestamp"] = Value::from(stamp);
        let mut highest = high[0].clone();
        highest["id"] = Value::from(top + 1000);
        let report = lake
            .upsert(spec, decode(&[changed.clone(), highest]), &draft(3))
            .with_expected_batch(2)
            .await
            .unwrap();
        assert_eq!((report.inserted, report.updated), (1, 1));
        assert_eq!(
            report.files_scanned, 1,
            "only the file holding the stored key is read"
        );
        let table = lake.open("tickets").await.unwrap().unwrap();
        let after = files(&table);
        let kept: Vec<_> = before.intersection(&after).collect();
        let vectors_of = |table: &DeltaTable| {
            table
                .snapshot()
                .unwrap()
                .log_data()
                .iter()
                .filter(|f| f.deletion_vector_descriptor().is_some())
                .count()
        };
        if vectors {
            assert_eq!(kept.len(), 2, "no file is rewritten: {before:?} {after:?}");
            assert_eq!(
                after.len(),
                3,
                "the changed and the new row in a file of their own"
            );
            assert_eq!(
                vectors_of(&table),
                1,
                "the lower half's file hides the old version"
            );
        } else {
            assert_eq!(
                kept.len(),
                1,
                "the upper half's file is untouched: {before:?} {after:?}"
            );
            assert_eq!(
                (report.files.removed, report.files.added),
                (1, 2),
                "the lower half rewritten as it was, the new row in a file of its own"
            );
            assert_eq!(vectors_of(&table), 0);
        }

        // New keys only: nothing is rewritten.
        let mut new = high[0].clone();
        new["id"] = Value::from(top + 2000);
        let report = lake
            .upsert(spec, decode(&[new]), &draft(4))
            .with_expected_batch(3)
            .await
            .unwrap();
        assert_eq!((report.inserted, report.updated), (1, 0));
        assert_eq!(
            report.files_scanned, 0,
            "new keys are appended without reading the table"
        );
        let table = lake.open("tickets").await.unwrap().unwrap();
        assert!(
            files(&table).is_superset(&after),
            "an append removes no file"
        );

        // Every key once, the changed subject stored.
        let rows = crate::lake::query_one(
            "tickets",
            &table,
            "SELECT count(*) AS n, count(DISTINCT id) AS k, \
             sum(CASE WHEN subject = 'changed by the test' THEN 1 ELSE 0 END) AS c FROM tickets",
        )
        .await
        .unwrap();
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::Int64Type;
        let value = |i: usize| rows[0].column(i).as_primitive::<Int64Type>().value(0);
        assert_eq!((value(0), value(1), value(2)), (62, 62, 1));
        let id = changed["id"].as_i64().unwrap();
        assert!(records.iter().any(|r| r["id"].as_i64() == Some(id)));
    }

    /// A splice replaces a stored row only by a version at least as new, applies patches to
    /// the rows they name (and inserts none), and changes nothing when nothing is newer.
    #[tokio::test]
    async fn splices_keep_newer_rows_and_apply_patches() {
        use crate::decode::Key;
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::Int64Type;

        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new())
            .unwrap()
            .with_deletion_vectors(true);
        let spec = crate::spec::find("tickets").unwrap();
        let records = ticket_records(20);
        let now = chrono::Utc::now();
        let decode = |records: &[Value]| {
            crate::decode::decode_values(spec, records, now)
                .unwrap()
                .batch
        };
        lake.upsert(spec, decode(&records), &draft(1))
            .await
            .unwrap();
        let stamped = |record: &Value, by: i64, subject: &str| {
            let mut record = record.clone();
            let stamp = record["generated_timestamp"].as_i64().unwrap() + by;
            record["generated_timestamp"] = Value::from(stamp);
            record["subject"] = Value::from(subject);
            record
        };
        let id = |i: usize| records[i]["id"].as_i64().unwrap();
        let older = stamped(&records[1], -10, "older");
        let same = stamped(&records[2], 0, "same");
        let newer = stamped(&records[3], 10, "newer");
        let patches = PatchSet {
            column: "id".into(),
            sets: vec![crate::spec::DELETED_COLUMN.into()],
            rows: crate::decode::deletions(spec, &[Key::Int(id(4)), Key::Int(-1)], now).unwrap(),
        };
        let report = lake
            .upsert(spec, decode(&[older.clone(), same, newer]), &draft(2))
            .with_patches(Some(patches))
            .with_expected_batch(1)
            .await
            .unwrap();
        assert!(report.committed);
        assert_eq!((report.inserted, report.updated), (0, 3));
        let table = lake.open("tickets").await.unwrap().unwrap();
        let rows = crate::lake::query_one(
            "tickets",
            &table,
            "SELECT id, subject, CAST(_deleted AS BIGINT) AS d FROM tickets ORDER BY id",
        )
        .await
        .unwrap();
        let rows = concat_batches(&rows[0].schema(), &rows).unwrap();
        assert_eq!(
            rows.num_rows(),
            records.len(),
            "no row added, the patch of -1 included"
        );
        let ids = rows.column(0).as_primitive::<Int64Type>();
        let subjects = rows.column(1).as_string_view_opt().map(|s| {
            (0..rows.num_rows())
                .map(|i| s.value(i).to_owned())
                .collect::<Vec<_>>()
        });
        let subjects = subjects.unwrap_or_else(|| {
            let s = rows.column(1).as_string::<i32>();
            (0..rows.num_rows())
                .map(|i| s.value(i).to_owned())
                .collect()
        });
        let deleted = rows.column(2).as_primitive::<Int64Type>();
        for (i, record) in records.iter().enumerate() {
            assert_eq!(ids.value(i), record["id"].as_i64().unwrap());
            let expected = match i {
                2 => "same",
                3 => "newer",
                _ => record["subject"].as_str().unwrap(),
            };
            assert_eq!(subjects[i], expected, "ticket {}", ids.value(i));
            let gone = i == 4 || record["status"] == "deleted";
            assert_eq!(deleted.value(i) == 1, gone, "ticket {}", ids.value(i));
        }

        // Only an older version: nothing changes and nothing is committed.
        let version = table.version();
        let report = lake
            .upsert(spec, decode(&[older]), &draft(3))
            .with_expected_batch(2)
            .await
            .unwrap();
        assert!(!report.committed);
        assert_eq!((report.inserted, report.updated), (0, 0));
        let table = lake.open("tickets").await.unwrap().unwrap();
        assert_eq!(table.version(), version);

        // Rows of the file changed again, one of them twice: its vector grows, the moved row's
        // file gets its own; then compaction drops every hidden row for good.
        let again = stamped(&records[3], 20, "newer again");
        let other = stamped(&records[5], 10, "other");
        lake.upsert(spec, decode(&[again, other]), &draft(3))
            .with_expected_batch(2)
            .await
            .unwrap();
        let subjects = || async {
            let rows = lake
                .query("SELECT id, subject FROM tickets ORDER BY id")
                .await
                .unwrap();
            let rows = concat_batches(&rows[0].schema(), &rows).unwrap();
            let text = deltalake::arrow::compute::cast(rows.column(1), &DataType::Utf8).unwrap();
            let text = text.as_string::<i32>();
            (0..rows.num_rows())
                .map(|i| {
                    (
                        rows.column(0).as_primitive::<Int64Type>().value(i),
                        text.value(i).to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let spliced = subjects().await;
        assert_eq!(spliced.len(), records.len());
        assert_eq!(spliced[3].1, "newer again");
        assert_eq!(spliced[5].1, "other");
        assert_eq!(spliced[2].1, "same");
        let table = lake.open("tickets").await.unwrap().unwrap();
        let compact = crate::lake::maintenance::OptimizeOptions {
            layout: crate::lake::maintenance::Layout::Compact,
            target_file_size: 64 << 20,
        };
        crate::lake::maintenance::optimize_table("tickets", table, &compact)
            .await
            .unwrap();
        let table = lake.open("tickets").await.unwrap().unwrap();
        let state = table.snapshot().unwrap();
        assert_eq!(state.log_data().iter().count(), 1);
        assert!(state
            .log_data()
            .iter()
            .all(|f| f.deletion_vector_descriptor().is_none()));
        assert_eq!(subjects().await, spliced);
    }

    /// A splice rewrites nothing for rows delivered again as they are stored (`_synced_at`
    /// aside) or patched to values they hold, and counts as deleted only the rows it changes
    /// from live to `_deleted`.
    #[tokio::test]
    async fn splices_skip_rows_and_patches_that_change_nothing() {
        for vectors in [false, true] {
            splices_skip_unchanged(vectors).await;
        }
    }

    async fn splices_skip_unchanged(vectors: bool) {
        use crate::decode::Key;
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::Int64Type;

        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new())
            .unwrap()
            .with_deletion_vectors(vectors);
        let spec = crate::spec::find("tickets").unwrap();
        let mut records = ticket_records(20);
        // Ticket 0 deleted from the start, the rest live.
        records[0]["status"] = Value::from("deleted");
        for record in &mut records[1..] {
            record["status"] = Value::from("open");
        }
        let decode = |records: &[Value], now| {
            crate::decode::decode_values(spec, records, now)
                .unwrap()
                .batch
        };
        let first = chrono::Utc::now();
        let report = lake
            .upsert(spec, decode(&records, first), &draft(1))
            .await
            .unwrap();
        assert_eq!(report.deleted, Some(1), "vectors {vectors}");
        let id = |i: usize| records[i]["id"].as_i64().unwrap();
        let version = || async { lake.open("tickets").await.unwrap().unwrap().version() };

        // Every row again, read later: nothing to commit.
        let later = first + chrono::Duration::seconds(60);
        let report = lake
            .upsert(spec, decode(&records, later), &draft(2))
            .with_expected_batch(1)
            .await
            .unwrap();
        assert!(!report.committed, "vectors {vectors}: {report:?}");
        assert_eq!((report.inserted, report.updated), (0, 0));
        // (The first write of a table with vectors on enabled them: a commit of properties.)
        let before = version().await;
        // A patch deleting the deleted ticket and a ticket the table lacks: nothing either.
        let patches = |keys: &[i64]| PatchSet {
            column: "id".into(),
            sets: vec![crate::spec::DELETED_COLUMN.into()],
            rows: crate::decode::deletions(
                spec,
                &keys.iter().map(|&k| Key::Int(k)).collect::<Vec<_>>(),
                later,
            )
            .unwrap(),
        };
        let report = lake
            .upsert(spec, decode(&[], later), &draft(2))
            .with_patches(Some(patches(&[id(0), -1])))
            .with_expected_batch(1)
            .await
            .unwrap();
        assert!(!report.committed, "vectors {vectors}: {report:?}");
        assert_eq!(version().await, before);

        // The same cursor with another subject is a change; the deleted ticket patched again
        // and a live one patched: one deletion.
        let mut renamed = records[2].clone();
        renamed["subject"] = Value::from("renamed at the same instant");
        let report = lake
            .upsert(spec, decode(&[renamed], later), &draft(2))
            .with_patches(Some(patches(&[id(0), id(3)])))
            .with_expected_batch(1)
            .await
            .unwrap();
        assert!(report.committed);
        assert_eq!(
            (report.inserted, report.updated),
            (0, 2),
            "vectors {vectors}"
        );
        assert_eq!(report.deleted, Some(1), "vectors {vectors}");
        let rows = lake
            .query(&format!(
                "SELECT subject, CAST(_deleted AS BIGINT) FROM tickets WHERE id IN ({}, {}) ORDER BY id",
                id(2),
                id(3)
            ))
            .await
            .unwrap();
        let rows = concat_batches(&rows[0].schema(), &rows).unwrap();
        let subject = deltalake::arrow::compute::cast(rows.column(0), &DataType::Utf8).unwrap();
        assert_eq!(
            subject.as_string::<i32>().value(0),
            "renamed at the same instant"
        );
        assert_eq!(rows.column(1).as_primitive::<Int64Type>().value(1), 1);
    }

    /// A table written before its schema file gained a column gets the column (null in the
    /// rows written before); a column whose type differs is refused, naming it.
    #[tokio::test]
    async fn a_table_gains_the_columns_its_schema_file_gained() {
        use deltalake::arrow::array::{Array, AsArray, Int64Array};
        use deltalake::arrow::datatypes::Int64Type;

        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let spec = crate::spec::find("tickets").unwrap();
        let records = ticket_records(10);
        let now = chrono::Utc::now();
        let batch = crate::decode::decode_values(spec, &records[..5], now)
            .unwrap()
            .batch;
        // The table as an older release wrote it: without `subject`.
        let at = batch.schema().index_of("subject").unwrap();
        let mut old = batch.clone();
        old.remove_column(at);
        lake.handle("tickets")
            .unwrap()
            .write(vec![old])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(
                Intent::new()
                    .with_transaction(app_id("tickets"), 1)
                    .properties(),
            )
            .await
            .unwrap();
        let mut newer = records[5..].to_vec();
        newer.push(records[0].clone());
        let last = newer.len() - 1;
        let stamp = newer[last]["generated_timestamp"].as_i64().unwrap() + 10;
        newer[last]["generated_timestamp"] = Value::from(stamp);
        let report = lake
            .upsert(
                spec,
                crate::decode::decode_values(spec, &newer, now)
                    .unwrap()
                    .batch,
                &draft(2),
            )
            .with_expected_batch(1)
            .await
            .unwrap();
        assert_eq!((report.inserted, report.updated), (5, 1));
        let rows = lake
            .query("SELECT id, subject FROM tickets ORDER BY id")
            .await
            .unwrap();
        let rows = concat_batches(&rows[0].schema(), &rows).unwrap();
        assert_eq!(rows.num_rows(), 10);
        let subjects = deltalake::arrow::compute::cast(rows.column(1), &DataType::Utf8).unwrap();
        let subjects = subjects.as_string::<i32>();
        let ids = rows.column(0).as_primitive::<Int64Type>();
        for (i, record) in records.iter().enumerate() {
            assert_eq!(ids.value(i), record["id"].as_i64().unwrap());
            match i {
                1..=4 => assert!(subjects.is_null(i), "ticket {i} was written before"),
                _ => assert_eq!(subjects.value(i), record["subject"].as_str().unwrap()),
            }
        }

        // `subject` stored as numbers: refused, naming the column.
        let other = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(other.path().to_str().unwrap(), HashMap::new()).unwrap();
        let numbers = Arc::new(Int64Array::from(vec![1i64; batch.num_rows()])) as ArrayRef;
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[at] = Field::new("subject", DataType::Int64, true);
        let mut columns = batch.columns().to_vec();
        columns[at] = numbers;
        let wrong = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        lake.handle("tickets")
            .unwrap()
            .write(vec![wrong])
            .with_save_mode(SaveMode::Append)
            .await
            .unwrap();
        let error = lake
            .upsert(spec, batch, &draft(2))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("column subject"), "{error}");
        assert!(error.contains("tickets"), "{error}");
    }

    /// A snapshot table's rows may have no cursor (a listing is the account's state when
    /// read, and some of Zendesk's answers omit `updated_at`): such a row is replaced by its
    /// listed version, and replaces one that had a cursor; between two cursors, the older one
    /// still never replaces the newer.
    #[tokio::test]
    async fn a_listed_row_without_a_cursor_replaces_the_stored_one() {
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::Int64Type;
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let spec = crate::spec::find("groups").unwrap();
        let now = chrono::Utc::now();
        let decode = |records: &[Value]| {
            crate::decode::decode_values(spec, records, now)
                .unwrap()
                .batch
        };
        let group = |id: i64, name: &str, updated: Option<&str>| {
            let mut group = serde_json::json!({"id": id, "name": name});
            if let Some(updated) = updated {
                group["updated_at"] = Value::from(updated);
            }
            group
        };
        let first = [
            group(1, "no cursor", None),
            group(2, "with a cursor", Some("2024-01-02T00:00:00Z")),
            group(3, "newer", Some("2024-01-02T00:00:00Z")),
        ];
        lake.upsert(spec, decode(&first), &draft(1)).await.unwrap();
        let second = [
            group(1, "listed again", None),
            group(2, "listed without one", None),
            group(3, "older", Some("2024-01-01T00:00:00Z")),
        ];
        let report = lake
            .upsert(spec, decode(&second), &draft(2))
            .with_expected_batch(1)
            .await
            .unwrap();
        assert_eq!((report.inserted, report.updated), (0, 2));
        let batches = lake
            .query("SELECT id, name FROM groups ORDER BY id")
            .await
            .unwrap();
        let names: Vec<(i64, String)> = batches
            .iter()
            .flat_map(|batch| {
                let ids = batch.column(0).as_primitive::<Int64Type>().clone();
                let names = deltalake::arrow::compute::cast(
                    batch.column(1),
                    &deltalake::arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let names = names.as_string::<i32>().clone();
                (0..batch.num_rows())
                    .map(move |i| (ids.value(i), names.value(i).to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            names,
            [
                (1, "listed again".to_owned()),
                (2, "listed without one".to_owned()),
                (3, "newer".to_owned()),
            ]
        );
    }
}
