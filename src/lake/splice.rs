//! The merge writer of tables keyed by an int64 id (docs/ARCHITECTURE.md, "Layout and merges").
//!
//! deltalake's MERGE writes the rows it copies and the rows it inserts into one new file, and
//! rewrites every file that holds a matched row. A table that grows batch by batch while each
//! batch also changes a few rows it holds (comments whose privacy changed, tickets updated
//! again) is then copied whole by every batch: its one file holds everything. A splice instead:
//! - reads only the files whose key statistics cover a key of the batch, one file at a time,
//!   and of them first only the key and the cursor: which rows change is known before any
//!   file is read whole, and a file none of whose rows changes is read no further (a batch
//!   of new keys only, a backfill's, reads key columns and appends);
//! - changes a file only when one of its rows changes: replaced by the batch's version of it
//!   when that is newer by the cursor, or as new and different in any column but `_synced_at`
//!   (re-applying an older batch never rolls a row back, and a row delivered again as it is
//!   stored is not rewritten: a re-delivery commits nothing), or patched to values it does not
//!   hold already;
//! - with deletion vectors ([`super::dv`]), hides the old versions of the changed rows in the
//!   file's vector instead of rewriting the file: the file stays, re-added with its new vector,
//!   and the new versions join the batch's new rows; without, rewrites the file;
//! - writes the batch's new rows (and the moved ones) into files of their own, sorted by key,
//!   so the files it rewrites do not grow;
//! - commits the removes and adds in one commit carrying the batch's application transaction
//!   and draft, with no conflict retry, exactly as the merge's commit; an error of the commit
//!   is settled from the log ([`super::commit`]), and the files are deleted only when the log
//!   proves the commit absent.

use std::collections::HashMap;

use deltalake::arrow::array::{make_comparator, Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::compute::SortOptions;
use deltalake::arrow::compute::{cast, concat_batches, interleave, sort_to_indices, take};
use deltalake::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaTable, Path};
use futures::TryStreamExt;
use roaring::RoaringTreemap;
use serde_json::Value;

use super::commit::{self, Intent};
use super::dv;
use super::files::{abort, as_table, delete, physical, scan, writer, Read};
use super::patch::PatchSet;
use super::{Error, Result};
use crate::spec::{Table, DELETED_COLUMN, SYNCED_AT_COLUMN};

/// What a splice changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Spliced {
    pub inserted: u64,
    pub updated: u64,
    /// Rows inserted deleted, or changed from live to `_deleted`.
    pub deleted: u64,
    pub files_scanned: u64,
    /// Whether it committed (a batch that changes no row makes no commit, as a merge).
    pub committed: bool,
}

/// Upsert a batch (one row per key) and its patches (matched on the key, none for a key of the
/// batch) into a table, in one commit carrying its intent. With deletion vectors (the table has
/// the feature), a changed row's old version is hidden by its file's deletion vector instead of
/// the file being rewritten.
pub(crate) struct Splice<'a> {
    spec: &'a Table,
    batch: RecordBatch,
    patches: Option<PatchSet>,
    /// The keys of the batch and its patches, sorted and distinct.
    keys: &'a [i64],
    deletion_vectors: bool,
    intent: &'a Intent,
    /// The batch's number, for errors.
    seq: i64,
}

impl<'a> Splice<'a> {
    /// A splice of `batch`, batch `seq` of its stream, into the table `spec`, whose commit
    /// carries `intent`; `keys` are the batch's (and its patches'), sorted and distinct.
    pub fn new(
        spec: &'a Table,
        batch: RecordBatch,
        keys: &'a [i64],
        intent: &'a Intent,
        seq: i64,
    ) -> Self {
        Splice {
            spec,
            batch,
            patches: None,
            keys,
            deletion_vectors: false,
            intent,
            seq,
        }
    }

    /// Patches of stored rows, matched on the key (none by default).
    pub fn with_patches(mut self, patches: Option<PatchSet>) -> Self {
        self.patches = patches;
        self
    }

    /// Hide changed rows with deletion vectors (the table must have the feature) instead of
    /// rewriting their files (off by default).
    pub fn with_deletion_vectors(mut self, on: bool) -> Self {
        self.deletion_vectors = on;
        self
    }

    /// Apply the splice to `table`; on success the table is at the new commit.
    pub async fn apply(self, table: &mut DeltaTable) -> Result<Spliced> {
        splice(self, table).await
    }
}

async fn splice(op: Splice<'_>, table: &mut DeltaTable) -> Result<Spliced> {
    let Splice {
        spec,
        batch,
        patches,
        keys,
        deletion_vectors,
        intent,
        seq,
    } = op;
    let name = spec.name.as_str();
    let arrow = Error::arrow(name, "splicing");
    let key = spec.primary_key.as_str();
    let schema = table
        .snapshot()
        .map_err(Error::delta(name))?
        .snapshot()
        .arrow_schema();
    let batch = as_table(name, &schema, batch)?;
    let source =
        Source::new(spec, &batch, patches.as_ref()).map_err(|e| Error::invalid(name, e))?;

    // The files that may hold one of the keys, by their statistics.
    let candidates: Vec<(Add, Remove, Path)> = {
        let state = table.snapshot().map_err(Error::delta(name))?;
        #[allow(deprecated)] // The provider's file selection takes Add actions.
        let files = state
            .log_data()
            .iter()
            .filter(|file| covers(file.stats().as_deref(), key, keys))
            .map(|file| {
                (
                    file.add_action(),
                    file.remove_action(true),
                    file.object_store_path(),
                )
            })
            .collect();
        files
    };
    let target = table
        .snapshot()
        .map_err(Error::delta(name))?
        .table_config()
        .target_file_size();
    let mut rewritten = writer(table, target).map_err(Error::delta(name))?;
    let mut removes = Vec::new();
    let mut kept = Vec::new();
    // New versions of rows that a deletion vector now hides in their old file.
    let mut moved = Vec::new();
    let mut matched = vec![false; batch.num_rows()];
    let mut updated = 0;
    let mut deleted = 0;
    // Of each candidate file first only the columns that tell which rows change: the key, the
    // cursor, `_deleted` and the columns the patches set.
    let mut telling: Vec<&str> = vec![key, source.cursor_field];
    for name in source.patched_columns().chain([DELETED_COLUMN]) {
        if !telling.contains(&name) && schema.column_with_name(name).is_some() {
            telling.push(name);
        }
    }
    // On a failure the files being written are abandoned (`abort`).
    let read = async {
        for (add, remove, path) in &candidates {
            let in_file = |e: String| Error::invalid(name, format!("file {}: {e}", add.path));
            // With deletion vectors, the file's rows as stored (positions are what a vector
            // names) and the rows its vector hides already; without, its live rows.
            let hidden = match (&add.deletion_vector, deletion_vectors) {
                (_, false) => None,
                (None, true) => Some(RoaringTreemap::new()),
                (Some(vector), true) => dv::read_inline(vector).map_err(in_file)?,
            };
            // Which rows change is read off the key and the cursor alone: the file is read whole
            // only when it changes and is rewritten, or when a patch changes rows of it (replaced
            // rows are the batch's). A vector this run does not write (deletion vectors turned off
            // since) is applied by a scan of the file's live rows.
            let keyed = match (&hidden, &add.deletion_vector) {
                (None, Some(_)) => {
                    let rows: Vec<RecordBatch> = scan(name, table, vec![add.clone()], None)
                        .await?
                        .try_collect()
                        .await
                        .map_err(Error::datafusion(name))?;
                    let rows = rows
                        .into_iter()
                        .map(|b| as_table(name, &schema, b))
                        .collect::<Result<Vec<_>>>()?;
                    concat_batches(&schema, &rows).map_err(arrow)?
                }
                _ => {
                    let read = Read {
                        columns: Some(&telling),
                        rows: None,
                    };
                    physical(name, table, add, path, &schema, read).await?
                }
            };
            let rows = &keyed;
            let none = RoaringTreemap::new();
            let (mut picks, ties) = source
                .picks(rows, key, hidden.as_ref().unwrap_or(&none), &mut matched)
                .map_err(in_file)?;
            if !ties.is_empty() {
                // Rows as new as the batch's: kept unless a column differs.
                let whole = rows.num_columns() == schema.fields().len();
                let stored = match whole {
                    true => rows.clone(),
                    false => {
                        let read = Read {
                            columns: None,
                            rows: Some(&ties),
                        };
                        physical(name, table, add, path, &schema, read).await?
                    }
                };
                for (n, &i) in ties.iter().enumerate() {
                    let at = if whole { i } else { n };
                    if let Pick::Row(row) = picks[i] {
                        if source.holds(&stored, at, row).map_err(in_file)? {
                            picks[i] = Pick::Stored;
                        }
                    }
                }
            }
            let changed = picks.iter().filter(|p| !matches!(p, Pick::Stored)).count() as u64;
            if changed == 0 {
                continue;
            }
            updated += changed;
            deleted += source.deletes(rows, &picks).map_err(in_file)?;
            removes.push(remove.clone());
            match hidden {
                Some(mut hidden) => {
                    let positions: Vec<usize> = picks
                        .iter()
                        .enumerate()
                        .filter(|(_, pick)| !matches!(pick, Pick::Stored))
                        .map(|(i, _)| i)
                        .collect();
                    let patched = positions
                        .iter()
                        .any(|&i| matches!(picks[i], Pick::Patch(_)));
                    moved.push(
                        if patched {
                            // Only the changed rows are read: a patched row keeps the columns
                            // its patch does not set.
                            let read = Read {
                                columns: None,
                                rows: Some(&positions),
                            };
                            let rows = physical(name, table, add, path, &schema, read).await?;
                            let picks: Vec<Pick> = positions.iter().map(|&i| picks[i]).collect();
                            let all: Vec<usize> = (0..positions.len()).collect();
                            source.assemble(&rows, &picks, &all)
                        } else {
                            source.replaced(&picks, &positions)
                        }
                        .map_err(in_file)?,
                    );
                    hidden.extend(positions.iter().map(|&i| i as u64));
                    if hidden.len() < rows.num_rows() as u64 {
                        kept.push(dv::with_deleted(add, &hidden));
                    }
                }
                None => {
                    let all: Vec<usize> = (0..rows.num_rows()).collect();
                    let whole = match &add.deletion_vector {
                        Some(_) => None,
                        None => {
                            Some(physical(name, table, add, path, &schema, Read::default()).await?)
                        }
                    };
                    let spliced = source
                        .assemble(whole.as_ref().unwrap_or(rows), &picks, &all)
                        .map_err(in_file)?;
                    rewritten
                        .write(&spliced)
                        .await
                        .map_err(Error::delta(name))?;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = read {
        abort(name, rewritten).await;
        return Err(e);
    }
    let mut added = rewritten.close().await.map_err(Error::delta(name))?;
    let fresh: Vec<u32> = (0..batch.num_rows() as u32)
        .filter(|&i| !matched[i as usize])
        .collect();
    let inserted = fresh.len() as u64;
    deleted += fresh
        .iter()
        .filter(|&&row| source.deleted_row(row as usize))
        .count() as u64;
    // The batch's new rows and the moved ones, in files of their own sorted by key.
    moved.push(take_rows(&batch, &fresh.into()).map_err(arrow)?);
    let fresh = concat_batches(&schema, &moved).map_err(arrow)?;
    if fresh.num_rows() > 0 {
        let order = sort_to_indices(fresh.column_by_name(key).expect("key column"), None, None)
            .map_err(arrow)?;
        let fresh = take_rows(&fresh, &order).map_err(arrow)?;
        let mut writer = writer(table, target).map_err(Error::delta(name))?;
        if let Err(e) = writer.write(&fresh).await {
            abort(name, writer).await;
            return Err(Error::delta(name)(e));
        }
        added.extend(writer.close().await.map_err(Error::delta(name))?);
    }
    let files_scanned = candidates.len() as u64;
    if inserted == 0 && updated == 0 {
        return Ok(Spliced {
            files_scanned,
            ..Spliced::default()
        });
    }
    let actions: Vec<Action> = removes
        .into_iter()
        .map(Action::Remove)
        .chain(kept.into_iter().map(Action::Add))
        .chain(added.iter().cloned().map(Action::Add))
        .collect();
    let operation = DeltaOperation::Merge {
        predicate: Some(format!("{key} of {} keys", keys.len())),
        merge_predicate: Some(format!("target.{key} = source.{key}")),
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    };
    match commit::commit(name, table, actions, operation, intent).await {
        Ok(version) => {
            commit::load(name, table, version).await?;
            Ok(Spliced {
                inserted,
                updated,
                deleted,
                files_scanned,
                committed: true,
            })
        }
        Err(unmade) => {
            // Only a commit the log proves absent lets go of its files: one whose put may
            // still land must find them (vacuum removes them otherwise, past the retention).
            if unmade.not_made() {
                let store = table.log_store().object_store(None);
                delete(name, store.as_ref(), &added).await;
            }
            Err(unmade.into_error(name, &format!("commit #{seq}")))
        }
    }
}

/// Whether a file whose statistics are `stats` may hold one of `keys` (sorted): a file without
/// statistics for the key may hold any.
fn covers(stats: Option<&str>, key: &str, keys: &[i64]) -> bool {
    let bound = |stats: &Value, which: &str| stats.get(which)?.get(key)?.as_i64();
    let Some(stats) = stats.and_then(|s| serde_json::from_str::<Value>(s).ok()) else {
        return true;
    };
    let (Some(min), Some(max)) = (bound(&stats, "minValues"), bound(&stats, "maxValues")) else {
        return true;
    };
    let first = keys.partition_point(|&k| k < min);
    keys.get(first).is_some_and(|&k| k <= max)
}

fn take_rows(
    batch: &RecordBatch,
    indices: &deltalake::arrow::array::UInt32Array,
) -> std::result::Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// The batch and its patches, indexed by key.
struct Source<'a> {
    batch: &'a RecordBatch,
    /// The cursor column's name, and its values in the batch as int64 (µs for timestamps).
    cursor_field: &'a str,
    cursor: Vec<Option<i64>>,
    rows: HashMap<i64, usize>,
    patches: Option<(&'a RecordBatch, HashMap<i64, usize>)>,
    /// For each column of the table, the patches' column that sets it.
    sets: Vec<Option<ArrayRef>>,
    /// The batch's `_deleted`, when the table has the column.
    deleted: Option<ArrayRef>,
}

impl<'a> Source<'a> {
    fn new(
        spec: &'a Table,
        batch: &'a RecordBatch,
        patches: Option<&'a PatchSet>,
    ) -> std::result::Result<Self, String> {
        let schema = batch.schema();
        let (key, _) = schema
            .column_with_name(&spec.primary_key)
            .ok_or("the batch has no key column")?;
        let cursor = int64s(batch, &spec.cursor_field)?;
        let rows = keys(batch.column(key))?
            .into_iter()
            .enumerate()
            .filter_map(|(i, k)| Some((k?, i)))
            .collect();
        let mut sets = vec![None; schema.fields().len()];
        let patches = match patches.filter(|p| p.rows.num_rows() > 0) {
            None => None,
            Some(patch) => {
                let column = patch
                    .rows
                    .column_by_name(&patch.column)
                    .ok_or("the patches have no key column")?;
                let index = keys(column)?
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, k)| Some((k?, i)))
                    .collect();
                for name in patch
                    .sets
                    .iter()
                    .map(String::as_str)
                    .chain([crate::spec::SYNCED_AT_COLUMN])
                {
                    let (at, field) = schema
                        .column_with_name(name)
                        .ok_or_else(|| format!("patches set {name}, which the table lacks"))?;
                    let values = patch
                        .rows
                        .column_by_name(name)
                        .ok_or_else(|| format!("the patches carry no {name}"))?;
                    sets[at] = Some(cast(values, field.data_type()).map_err(|e| e.to_string())?);
                }
                Some((&patch.rows, index))
            }
        };
        Ok(Source {
            batch,
            cursor_field: &spec.cursor_field,
            cursor,
            rows,
            patches,
            sets,
            deleted: batch.column_by_name(DELETED_COLUMN).cloned(),
        })
    }

    /// The columns the patches set, but `_synced_at`.
    fn patched_columns(&self) -> impl Iterator<Item = &str> + '_ {
        let schema = self.batch.schema_ref();
        (self.sets.iter().enumerate())
            .filter(|(_, set)| set.is_some())
            .map(move |(c, _)| schema.field(c).name().as_str())
            .filter(|name| *name != SYNCED_AT_COLUMN)
    }

    /// Whether the batch's row `row` is `_deleted`.
    fn deleted_row(&self, row: usize) -> bool {
        self.deleted
            .as_ref()
            .and_then(|d| d.as_boolean_opt())
            .is_some_and(|d| d.is_valid(row) && d.value(row))
    }

    /// Whether the stored row `at` of `stored` (every column of the table) holds what the
    /// batch's row `row` holds, in every column but `_synced_at`.
    fn holds(
        &self,
        stored: &RecordBatch,
        at: usize,
        row: usize,
    ) -> std::result::Result<bool, String> {
        for (c, field) in stored.schema().fields().iter().enumerate() {
            if field.name() == SYNCED_AT_COLUMN {
                continue;
            }
            let new = self
                .batch
                .column_by_name(field.name())
                .ok_or_else(|| format!("the batch has no column {}", field.name()))?;
            if !same(stored.column(c).as_ref(), at, new.as_ref(), row)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Of the changed rows of a file (`picks` of its rows, `stored` its telling columns), how
    /// many go from live to `_deleted`.
    fn deletes(&self, stored: &RecordBatch, picks: &[Pick]) -> std::result::Result<u64, String> {
        let flags = |column: Option<&ArrayRef>| column.and_then(|c| c.as_boolean_opt().cloned());
        let Some(before) = flags(stored.column_by_name(DELETED_COLUMN)) else {
            return Ok(0);
        };
        let at = |flags: &deltalake::arrow::array::BooleanArray, i: usize| {
            flags.is_valid(i) && flags.value(i)
        };
        let patched = (self.batch.schema_ref().index_of(DELETED_COLUMN).ok())
            .and_then(|c| flags(self.sets.get(c).and_then(Option::as_ref)));
        let mut n = 0;
        for (i, pick) in picks.iter().enumerate() {
            let after = match pick {
                Pick::Stored => continue,
                Pick::Row(row) => self.deleted_row(*row),
                Pick::Patch(p) => match &patched {
                    Some(flags) => at(flags, *p),
                    None => at(&before, i),
                },
            };
            if after && !at(&before, i) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// What becomes of each of `rows` (one file's telling columns, `hidden` rows not live):
    /// kept, replaced by a row of the batch, or patched; and the rows replaced by a batch row
    /// with the same cursor (the caller keeps those the batch holds unchanged). A patch that
    /// sets only values the row holds keeps it. Marks the batch rows whose key the file holds
    /// live in `matched`.
    fn picks(
        &self,
        rows: &RecordBatch,
        key: &str,
        hidden: &RoaringTreemap,
        matched: &mut [bool],
    ) -> std::result::Result<(Vec<Pick>, Vec<usize>), String> {
        let stored_keys = keys(rows.column_by_name(key).ok_or("no key column")?)?;
        let stored_cursor = int64s(rows, self.cursor_field)?;
        let mut picks = Vec::with_capacity(rows.num_rows());
        let mut ties = Vec::new();
        for (i, key) in stored_keys.iter().enumerate() {
            let pick = match key {
                Some(_) if hidden.contains(i as u64) => Pick::Stored,
                None => Pick::Stored,
                Some(key) => match (self.rows.get(key), &self.patches) {
                    (Some(&row), _) => {
                        matched[row] = true;
                        match (self.cursor[row], stored_cursor[i]) {
                            (Some(new), Some(old)) if new > old => Pick::Row(row),
                            (Some(new), Some(old)) if new < old => Pick::Stored,
                            // As new, or without a cursor on either side (only snapshot tables
                            // hold such rows, and their listing is the account's state when
                            // read): replaced unless it holds the same values.
                            _ => {
                                ties.push(i);
                                Pick::Row(row)
                            }
                        }
                    }
                    (None, Some((_, patches))) => match patches.get(key) {
                        Some(&p) if self.patch_changes(rows, i, p)? => Pick::Patch(p),
                        _ => Pick::Stored,
                    },
                    (None, None) => Pick::Stored,
                },
            };
            picks.push(pick);
        }
        Ok((picks, ties))
    }

    /// Whether the patch `p` sets a value the stored row `i` of `rows` (which hold every
    /// column a patch sets) does not hold.
    fn patch_changes(
        &self,
        rows: &RecordBatch,
        i: usize,
        p: usize,
    ) -> std::result::Result<bool, String> {
        let schema = self.batch.schema_ref();
        for (c, set) in self.sets.iter().enumerate() {
            let (Some(set), name) = (set, schema.field(c).name()) else {
                continue;
            };
            if name == SYNCED_AT_COLUMN {
                continue;
            }
            let stored = rows
                .column_by_name(name)
                .ok_or_else(|| format!("the patched column {name} was not read"))?;
            if !same(stored.as_ref(), i, set.as_ref(), p)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The rows `which` of a file, every one of them replaced by a row of the batch
    /// ([`Pick::Row`]).
    fn replaced(
        &self,
        picks: &[Pick],
        which: &[usize],
    ) -> std::result::Result<RecordBatch, String> {
        let rows: Vec<u32> = which
            .iter()
            .map(|&i| match picks[i] {
                Pick::Row(row) => Ok(row as u32),
                _ => Err("a kept or patched row has no replacement".to_owned()),
            })
            .collect::<std::result::Result<_, _>>()?;
        take_rows(self.batch, &rows.into()).map_err(|e| e.to_string())
    }

    /// The rows `which` of `rows`, as `picks` say.
    fn assemble(
        &self,
        rows: &RecordBatch,
        picks: &[Pick],
        which: &[usize],
    ) -> std::result::Result<RecordBatch, String> {
        let schema: SchemaRef = rows.schema();
        let columns = (0..schema.fields().len())
            .map(|c| {
                let stored = rows.column(c).as_ref();
                let batch = self.batch.column(c).as_ref();
                let indices: Vec<(usize, usize)> = which
                    .iter()
                    .map(|&i| match (picks[i], &self.sets[c]) {
                        (Pick::Row(row), _) => (1, row),
                        (Pick::Patch(p), Some(_)) => (2, p),
                        _ => (0, i),
                    })
                    .collect();
                match &self.sets[c] {
                    Some(patched) => interleave(&[stored, batch, patched.as_ref()], &indices),
                    None => interleave(&[stored, batch], &indices),
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
    }
}

/// Whether `left[i]` and `right[j]` hold the same value (two nulls do; nested values compare
/// element by element).
fn same(
    left: &dyn Array,
    i: usize,
    right: &dyn Array,
    j: usize,
) -> std::result::Result<bool, String> {
    let compare =
        make_comparator(left, right, SortOptions::default()).map_err(|e| e.to_string())?;
    Ok(compare(i, j).is_eq())
}

/// What becomes of a stored row.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Stored,
    /// Replaced by this row of the batch.
    Row(usize),
    /// Patched by this row of the patches.
    Patch(usize),
}

/// The values of an int64 key column, by row.
fn keys(column: &ArrayRef) -> std::result::Result<Vec<Option<i64>>, String> {
    let keys = column
        .as_primitive_opt::<Int64Type>()
        .ok_or("the key is not an int64 column")?;
    Ok(keys.iter().collect())
}

/// A column as int64 values (timestamps as their µs), by row.
fn int64s(batch: &RecordBatch, name: &str) -> std::result::Result<Vec<Option<i64>>, String> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column {name}"))?;
    let column = cast(column, &DataType::Int64).map_err(|e| format!("{name}: {e}"))?;
    Ok(column.as_primitive::<Int64Type>().iter().collect())
}
