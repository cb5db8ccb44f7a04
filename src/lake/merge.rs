//! Writing an object's rows: append when its table is new, merge-upsert by primary key after.
//!
//! The source batch must hold one row per key ([`crate::decode::dedup`]). A matched row is only
//! replaced by a source row whose cursor is at least as new, so re-applying an older batch (a
//! retry after a crash) can never roll a row back.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::{col, SessionContext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTableError;

use super::{ControlRow, Error, Lake, Result};
use crate::objects::ObjectSpec;

/// What one data commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Delta version of the commit.
    pub version: i64,
    pub inserted: u64,
    pub updated: u64,
    /// The table's Delta metadata id, new whenever the table is created again.
    pub table_id: String,
}

/// Key of the commit-info entry holding the control row of a data commit, so that a crash
/// between the data commit and the control-table commit can be repaired from the log.
pub const CONTROL_METADATA: &str = "zendesk_lake.control";

/// The Delta application id under which an object's data commits are recorded.
pub fn app_id(object: &str) -> String {
    format!("zendesk-lake/{object}")
}

impl Lake {
    /// Upsert `batch` (one row per key) into the object's table in one commit tagged with the
    /// application transaction `(app_id(object), seq)` and `metadata` in its commit info.
    pub async fn upsert(
        &self,
        spec: &ObjectSpec,
        batch: RecordBatch,
        control: &ControlRow,
    ) -> Result<CommitReport> {
        let name = spec.name.as_str();
        let seq = control.seq;
        let delta = |source| commit_error(name, seq, source);
        let rows = batch.num_rows() as u64;
        let metadata = serde_json::to_value(control).map_err(|e| Error::Invalid {
            table: name.to_owned(),
            detail: format!("cannot serialise the control row: {e}"),
        })?;
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(app_id(name), seq))
            .with_metadata([(CONTROL_METADATA.to_owned(), metadata)])
            // A conflicting commit is another run's: retrying on top of it is never right.
            .with_max_retries(0);
        let table = self.open(name).await?;
        // The table must be exactly one batch behind: anything else means another run
        // committed to this object since this run read its position.
        let current = match &table {
            Some(table) => txn_version(name, table, &app_id(name)).await?.unwrap_or(0),
            None => 0,
        };
        if current != seq - 1 {
            return Err(Error::Concurrent {
                table: name.to_owned(),
                detail: format!(
                    "expected its last sync commit to be #{}, found #{current}",
                    seq - 1
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
                })
            }
            Some(table) => {
                check_schema(spec, &table)?;
                let source = SessionContext::new().read_batch(batch).map_err(|source| {
                    Error::DataFusion {
                        table: name.to_owned(),
                        source,
                    }
                })?;
                let key = spec.primary_key.as_str();
                let cursor = spec.cursor_field.as_str();
                let columns: Vec<String> = spec
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let (table, metrics) = table
                    .merge(
                        source,
                        col(format!("target.{key}")).eq(col(format!("source.{key}"))),
                    )
                    .with_source_alias("source")
                    .with_target_alias("target")
                    .with_commit_properties(commit)
                    .when_matched_update(|update| {
                        columns.iter().fold(
                            update.predicate(
                                col(format!("source.{cursor}"))
                                    .gt_eq(col(format!("target.{cursor}"))),
                            ),
                            |update, c| update.update(c.as_str(), col(format!("source.{c}"))),
                        )
                    })
                    .map_err(delta)?
                    .when_not_matched_insert(|insert| {
                        columns.iter().fold(insert, |insert, c| {
                            insert.set(c.as_str(), col(format!("source.{c}")))
                        })
                    })
                    .map_err(delta)?
                    .await
                    .map_err(delta)?;
                Ok(CommitReport {
                    version: table.version().unwrap_or_default() as i64,
                    inserted: metrics.num_target_rows_inserted as u64,
                    updated: metrics.num_target_rows_updated as u64,
                    table_id: table_id(name, &table)?,
                })
            }
        }
    }

    /// Make sure the object's table exists, so that queries find it even before any data.
    pub async fn ensure_table(&self, spec: &ObjectSpec) -> Result<()> {
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

/// The table's Delta metadata id: it identifies one life of the table, from its creation.
pub(crate) fn table_id(name: &str, table: &deltalake::DeltaTable) -> Result<String> {
    let state = table.snapshot().map_err(|source| Error::Delta {
        table: name.to_owned(),
        source,
    })?;
    Ok(state.metadata().id().to_owned())
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
fn check_schema(spec: &ObjectSpec, table: &deltalake::DeltaTable) -> Result<()> {
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
