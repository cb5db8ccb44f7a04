//! Writing a table's rows: append when the table is new, merge-upsert by primary key after.
//!
//! The source batch must hold one row per key ([`crate::decode::dedup`]). A matched row is only
//! replaced by a source row whose cursor is at least as new, so re-applying an older batch (a
//! retry after a crash) can never roll a row back.

use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, ArrayRef, BooleanArray, RecordBatch};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::prelude::{col, not, SessionContext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::SaveMode;
use deltalake::DeltaTableError;

use super::{CommitDraft, Error, Lake, Result};
use crate::spec::Table;

/// What one data commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Delta version of the commit.
    pub version: i64,
    pub inserted: u64,
    pub updated: u64,
    /// The table's Delta metadata id, new whenever the table is created again.
    pub table_id: String,
    /// Whether a commit was made: a merge that changes no row makes none (deltalake skips it),
    /// and then the table does not carry this batch's application transaction.
    pub committed: bool,
    /// The data files the commit added and removed.
    pub files: CommitFiles,
}

/// The data files one commit (or several, summed) added and removed, with their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitFiles {
    pub added: u64,
    pub added_bytes: u64,
    /// Files removed: rewritten by a merge (their live rows are in the added files).
    pub removed: u64,
    pub removed_bytes: u64,
}

impl CommitFiles {
    pub fn add(&mut self, other: &CommitFiles) {
        self.added += other.added;
        self.added_bytes += other.added_bytes;
        self.removed += other.removed;
        self.removed_bytes += other.removed_bytes;
    }
}

/// Key of the commit-info entry holding the control row of a data commit, so that a crash
/// between the data commit and the control-table commit can be repaired from the log.
pub const CONTROL_METADATA: &str = "zendesk_lake.control";

/// The Delta application id under which a stream's data commits are recorded in each of its
/// tables (a stream's name is the name its single object had in zendesk-lake 0.1, so lakes of
/// that version continue the same sequence).
pub fn app_id(stream: &str) -> String {
    format!("zendesk-lake/{stream}")
}

impl Lake {
    /// Upsert `batch` (one row per key) into the table in one commit tagged with the
    /// application transaction `(app_id(stream), seq)` and the draft in its commit info.
    /// `patches` set a few columns of rows of earlier batches in the same commit; with no table
    /// yet there is nothing for them to change.
    ///
    /// `expected` is the stream's last batch in this table as this run knows it: if the table
    /// holds another, a concurrent run committed to it, and nothing is written.
    pub async fn upsert(
        &self,
        spec: &Table,
        batch: RecordBatch,
        patches: Option<PatchSet>,
        draft: &CommitDraft,
        expected: i64,
    ) -> Result<CommitReport> {
        let name = spec.name.as_str();
        let seq = draft.row.seq;
        let app = app_id(&draft.row.stream);
        let delta = |source| commit_error(name, seq, source);
        let rows = batch.num_rows() as u64;
        let metadata = serde_json::to_value(draft).map_err(|e| Error::Invalid {
            table: name.to_owned(),
            detail: format!("cannot serialise the control row: {e}"),
        })?;
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(app.clone(), seq))
            .with_metadata([(CONTROL_METADATA.to_owned(), metadata)])
            // A conflicting commit is another run's: retrying on top of it is never right.
            .with_max_retries(0);
        let table = self.open(name).await?;
        let current = match &table {
            Some(table) => txn_version(name, table, &app).await?.unwrap_or(0),
            None => 0,
        };
        if current != expected {
            return Err(Error::Concurrent {
                table: name.to_owned(),
                detail: format!(
                    "expected its last commit of stream {} to be #{expected}, found #{current}",
                    draft.row.stream
                ),
            });
        }
        match table {
            None => {
                let table = self
                    .handle(name)?
                    .write(vec![batch])
                    .with_save_mode(SaveMode::Append)
                    .with_table_name(name)
                    .with_description(spec.description.clone())
                    .with_commit_properties(commit)
                    .await
                    .map_err(delta)?;
                Ok(CommitReport {
                    version: table.version().unwrap_or_default() as i64,
                    inserted: rows,
                    updated: 0,
                    table_id: table_id(name, &table)?,
                    committed: true,
                    files: commit_files(name, &table, table.version()).await?,
                })
            }
            Some(table) => {
                check_schema(spec, &table)?;
                let before = table.version();
                let datafusion = |source| Error::DataFusion {
                    table: name.to_owned(),
                    source,
                };
                let key = spec.primary_key.as_str();
                let cursor = spec.cursor_field.as_str();
                let columns: Vec<String> = spec
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let by_key = col(format!("target.{key}")).eq(col(format!("source.{key}")));
                let newer = col(format!("source.{cursor}")).gt_eq(col(format!("target.{cursor}")));
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
                    .map_err(datafusion)?;
                let mut merge = table
                    .merge(source, predicate)
                    .with_source_alias("source")
                    .with_target_alias("target")
                    .with_commit_properties(commit);
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
                            .map_err(delta)?;
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
                    .map_err(delta)?
                    .when_not_matched_insert(|insert| {
                        let insert = match &sets {
                            Some(_) => insert.predicate(not(is_patch.clone())),
                            None => insert,
                        };
                        columns.iter().fold(insert, |insert, c| {
                            insert.set(c.as_str(), col(format!("source.{c}")))
                        })
                    })
                    .map_err(delta)?;
                let (table, metrics) = merge.await.map_err(delta)?;
                let committed = table.version() != before;
                Ok(CommitReport {
                    version: table.version().unwrap_or_default() as i64,
                    inserted: metrics.num_target_rows_inserted as u64,
                    updated: metrics.num_target_rows_updated as u64,
                    table_id: table_id(name, &table)?,
                    committed,
                    files: match committed {
                        true => commit_files(name, &table, table.version()).await?,
                        false => CommitFiles::default(),
                    },
                })
            }
        }
    }

    /// Make sure the table exists, so that queries find it even before any data.
    pub async fn ensure_table(&self, spec: &Table) -> Result<()> {
        self.create_if_missing(&spec.name, spec.schema(), &spec.description)
            .await
            .map(drop)
    }

    /// Open the table `name`, creating it empty first if it does not exist.
    ///
    /// Another run creating it at the same moment is not an error: either create makes it
    /// (deltalake commits the losing create as the next version).
    pub(crate) async fn create_if_missing(
        &self,
        name: &str,
        schema: SchemaRef,
        description: &str,
    ) -> Result<deltalake::DeltaTable> {
        if let Some(table) = self.open(name).await? {
            return Ok(table);
        }
        let created = self
            .handle(name)?
            .write(vec![RecordBatch::new_empty(schema)])
            .with_save_mode(SaveMode::Append)
            .with_table_name(name)
            .with_description(description)
            .await;
        let error = match created {
            Ok(table) => return Ok(table),
            Err(source) if is_conflict(&source) => source,
            Err(source) => {
                return Err(Error::Delta {
                    table: name.to_owned(),
                    source,
                })
            }
        };
        self.open(name).await?.ok_or_else(|| Error::Delta {
            table: name.to_owned(),
            source: error,
        })
    }
}

/// The version of the application transaction `app` in `table` (named `name` in errors).
pub(crate) async fn txn_version(
    name: &str,
    table: &deltalake::DeltaTable,
    app: &str,
) -> Result<Option<i64>> {
    let delta = |source| Error::Delta {
        table: name.to_owned(),
        source,
    };
    let state = table.snapshot().map_err(delta)?;
    state
        .transaction_version(table.log_store().as_ref(), app)
        .await
        .map_err(delta)
}

/// The data files that commit `version` of `table` added and removed, from its log entry: one
/// small read, whatever the size of the table (its file list is not loaded).
async fn commit_files(
    name: &str,
    table: &deltalake::DeltaTable,
    version: Option<deltalake::kernel::Version>,
) -> Result<CommitFiles> {
    let mut files = CommitFiles::default();
    let Some(version) = version else {
        return Ok(files);
    };
    let delta = |source| Error::Delta {
        table: name.to_owned(),
        source,
    };
    let Some(entry) = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(delta)?
    else {
        return Ok(files);
    };
    let size = |bytes: i64| u64::try_from(bytes).unwrap_or(0);
    for action in deltalake::logstore::get_actions(version, &entry).map_err(delta)? {
        match action {
            Action::Add(add) if add.data_change => {
                files.added += 1;
                files.added_bytes += size(add.size);
            }
            Action::Remove(remove) if remove.data_change => {
                files.removed += 1;
                files.removed_bytes += remove.size.map_or(0, size);
            }
            _ => {}
        }
    }
    Ok(files)
}

/// The table's Delta metadata id: it identifies one life of the table, from its creation.
pub(crate) fn table_id(name: &str, table: &deltalake::DeltaTable) -> Result<String> {
    let state = table.snapshot().map_err(|source| Error::Delta {
        table: name.to_owned(),
        source,
    })?;
    Ok(state.metadata().id().to_owned())
}

/// Changes to a few columns of rows already in a table: each row of `rows` sets the columns
/// `sets` (and `_synced_at`) of the table's rows whose `column` equals its own.
#[derive(Debug, Clone)]
pub struct PatchSet {
    pub column: String,
    pub sets: Vec<String>,
    /// The match column, the columns set and `_synced_at`, typed as in the table.
    pub rows: RecordBatch,
}

/// The merge source's column that tells patches from whole rows.
const PATCH_COLUMN: &str = "_patch";

/// The merge source of whole rows and patches: the table's columns, all nullable, and
/// [`PATCH_COLUMN`]; a patch's columns that it does not carry are null.
fn with_patches(spec: &Table, rows: RecordBatch, patches: RecordBatch) -> Result<RecordBatch> {
    let arrow = |source: deltalake::arrow::error::ArrowError| Error::Invalid {
        table: spec.name.clone(),
        detail: format!("building the merge source: {source}"),
    };
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

/// Whether a commit failed because another writer committed first.
pub(crate) fn is_conflict(error: &DeltaTableError) -> bool {
    match error {
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::CommitConflict(_)
                | TransactionError::VersionAlreadyExists(_)
                | TransactionError::MaxCommitAttempts(_)
        ),
        _ => false,
    }
}

/// A commit that lost to a concurrent writer is reported as such; other errors as they are.
fn commit_error(table: &str, seq: i64, source: DeltaTableError) -> Error {
    if is_conflict(&source) {
        Error::Concurrent {
            table: table.to_owned(),
            detail: format!("commit #{seq} conflicted: {source}"),
        }
    } else {
        Error::Delta {
            table: table.to_owned(),
            source,
        }
    }
}

/// Refuse to merge into a table whose columns differ from the schema file: a silent cast
/// would lose data.
fn check_schema(spec: &Table, table: &deltalake::DeltaTable) -> Result<()> {
    let invalid = |detail: String| Error::Invalid {
        table: spec.name.clone(),
        detail,
    };
    let state = table.snapshot().map_err(|source| Error::Delta {
        table: spec.name.clone(),
        source,
    })?;
    let existing: Vec<String> = state.schema().fields().map(|f| f.name().clone()).collect();
    let expected: Vec<String> = spec
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if existing != expected {
        let missing: Vec<_> = expected.iter().filter(|c| !existing.contains(c)).collect();
        let extra: Vec<_> = existing.iter().filter(|c| !expected.contains(c)).collect();
        return Err(invalid(format!(
            "the table's columns differ from schemas/{}.json (missing: {missing:?}, unexpected: {extra:?})",
            spec.name
        )));
    }
    Ok(())
}
