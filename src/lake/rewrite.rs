//! Rewriting some files of a table into new ones, in one commit that a concurrent change of
//! those files can never slip under (docs/ARCHITECTURE.md, "Layout and maintenance").
//!
//! deltalake's own optimize retries its commit over any concurrent commit whose removes say
//! `dataChange = false`, which is what every optimize writes: two optimizes of one table at the
//! same moment (two overlapping syncs compacting the control table, or `zendesk-lake optimize`
//! during a sync's compaction) both commit, and each adds a copy of the same rows. This module
//! does the rewrite itself:
//! 1. the chosen files are read through the table's DataFusion provider (restricted to them),
//!    sorted by a column when asked, within a bounded memory pool that spills to disk;
//! 2. the rows are written into new files of about the target size, with file statistics;
//! 3. removes of the old files and adds of the new ones are committed with no automatic retry.
//!    An error of the commit is settled from the log first ([`super::commit`]): a commit the log
//!    holds is made, whatever the error said. When another writer's commit holds the version,
//!    its commits are read: if none of them removed one of the files read, the commit is made on
//!    top of them; otherwise the new files are deleted and the table is reported busy
//!    ([`Error::Busy`]), with nothing changed. When the log cannot tell, the new files are kept
//!    ([`Error::Unresolved`]).

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::datafusion::execution::memory_pool::FairSpillPool;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::prelude::{col, SessionConfig, SessionContext};
use deltalake::kernel::{Action, Add, Remove};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::protocol::DeltaOperation;
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaResult, DeltaTable, ObjectStore};
use futures::StreamExt;
use tracing::{debug, warn};

use super::commit::{self, commit_actions, Intent, Unmade};
use super::{Error, Result};

/// Memory a sort may hold before it spills to disk.
const SORT_MEMORY: usize = 512 << 20;

/// How many times a rewrite is committed on top of other writers' commits before it gives up.
const ATTEMPTS: usize = 5;

/// The files a rewrite replaced and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rewritten {
    pub files_removed: u64,
    pub bytes_removed: u64,
    pub files_added: u64,
    pub bytes_added: u64,
}

/// Rewrite the files `paths` of `table` (paths as the snapshot lists them) into files of about
/// `target` bytes, sorted by `sort_by` when given, in one commit that changes no row. Returns the
/// table at that commit. [`Error::Busy`] when another writer removed one of the files meanwhile.
pub(crate) async fn rewrite(
    name: &str,
    table: &mut DeltaTable,
    paths: &HashSet<String>,
    sort_by: Option<&str>,
    target: NonZeroU64,
) -> Result<Rewritten> {
    let delta = |source| Error::Delta {
        table: name.to_owned(),
        source,
    };
    let datafusion = |source| Error::DataFusion {
        table: name.to_owned(),
        source,
    };
    let state = table.snapshot().map_err(delta)?;
    let read_version = state.version();
    let schema = state.snapshot().arrow_schema();
    let files: Vec<_> = state
        .log_data()
        .iter()
        .filter(|file| paths.contains(file.path().as_ref()))
        .collect();
    if files.len() != paths.len() {
        return Err(Error::Invalid {
            table: name.to_owned(),
            detail: format!(
                "{} of the {} files to rewrite are not in version {read_version}",
                paths.len() - files.len(),
                paths.len()
            ),
        });
    }
    #[allow(deprecated)] // The provider's file selection takes Add actions.
    let adds: Vec<Add> = files.iter().map(|file| file.add_action()).collect();
    let removes: Vec<Remove> = files.iter().map(|file| file.remove_action(false)).collect();
    let store = table.log_store().object_store(None);
    let mut writer = writer(table, target).map_err(delta)?;
    let mut rows = scan(name, table, adds, sort_by).await?;
    let written = async {
        while let Some(batch) = rows.next().await {
            let batch = as_table(name, &schema, batch.map_err(datafusion)?)?;
            writer.write(&batch).await.map_err(delta)?;
        }
        Ok::<_, Error>(())
    }
    .await;
    let added = match written {
        Ok(()) => writer.close().await.map_err(delta)?,
        Err(e) => {
            abort(name, writer).await;
            return Err(e);
        }
    };
    let report = Rewritten {
        files_removed: removes.len() as u64,
        bytes_removed: removes.iter().filter_map(|r| r.size).sum::<i64>().max(0) as u64,
        files_added: added.len() as u64,
        bytes_added: added.iter().map(|a| a.size).sum::<i64>().max(0) as u64,
    };
    let read: HashSet<String> = removes.iter().map(|r| decoded(&r.path)).collect();
    let actions: Vec<Action> = removes
        .into_iter()
        .map(Action::Remove)
        .chain(added.iter().cloned().map(|mut add| {
            add.data_change = false;
            Action::Add(add)
        }))
        .collect();

    // Commit, on top of other writers' commits only when none touched the files read.
    let operation = || DeltaOperation::Optimize {
        predicate: None,
        target_size: target.get() as i64,
    };
    let intent = Intent::new();
    let mut checked = read_version;
    for attempt in 1..=ATTEMPTS {
        let error = match commit::commit(name, table, actions.clone(), operation(), &intent).await {
            Ok(version) => {
                commit::load(name, table, version).await?;
                return Ok(report);
            }
            Err(Unmade::Taken(error)) => error,
            // Refused, or unknown: the files are kept while the log may still take them.
            Err(unmade) => {
                if unmade.not_made() {
                    delete(name, store.as_ref(), &added).await;
                }
                return Err(unmade.into_error(name, "optimize"));
            }
        };
        // The version aimed at holds another writer's commit: this one was not made, and
        // can be made on top of it unless it touched the files read.
        table.update_incremental(None).await.map_err(delta)?;
        let latest = table.version().unwrap_or_default();
        if let Some(why) = touched(name, table, checked + 1, latest, &read).await? {
            delete(name, store.as_ref(), &added).await;
            return Err(Error::Busy {
                table: name.to_owned(),
                operation: "optimize",
                detail: format!("{why} after version {read_version}: {error}"),
            });
        }
        debug!(
            table = name,
            attempt, latest, "other writers committed meanwhile, none to these files: retrying"
        );
        checked = latest;
    }
    delete(name, store.as_ref(), &added).await;
    Err(Error::Busy {
        table: name.to_owned(),
        operation: "optimize",
        detail: format!("other writers committed {ATTEMPTS} times while it tried to commit"),
    })
}

/// A writer of data files of `table` of about `target` bytes, with the statistics the table's
/// properties ask for.
/// Abandon `writer` after a failure: its open file's upload is aborted (a multipart upload left
/// open is invisible to vacuum); files it already completed are orphans vacuum removes past
/// retention.
pub(crate) async fn abort(name: &str, writer: DeltaWriter) {
    if let Err(error) = writer.abort().await {
        warn!(table = name, %error, "could not abort the files being written");
    }
}

pub(crate) fn writer(table: &DeltaTable, target: NonZeroU64) -> DeltaResult<DeltaWriter> {
    let state = table.snapshot()?;
    let properties = state.table_config();
    let config = WriterConfig::new(
        state.snapshot().arrow_schema(),
        Vec::new(),
        None,
        Some(target),
        None,
        properties.num_indexed_cols(),
        properties
            .data_skipping_stats_columns
            .as_ref()
            .map(|columns| columns.iter().map(|c| c.to_string()).collect()),
    );
    Ok(DeltaWriter::new(
        table.log_store().object_store(None),
        config,
    ))
}

/// The rows of the files `adds` of `table`, sorted by `sort_by` when given (in a memory pool of
/// [`SORT_MEMORY`] that spills to disk). Batches may carry text as views: see [`as_table`].
pub(crate) async fn scan(
    name: &str,
    table: &DeltaTable,
    adds: Vec<Add>,
    sort_by: Option<&str>,
) -> Result<SendableRecordBatchStream> {
    scan_within(name, table, adds, sort_by, SORT_MEMORY).await
}

/// [`scan`] with a sort's memory of `memory` bytes.
async fn scan_within(
    name: &str,
    table: &DeltaTable,
    adds: Vec<Add>,
    sort_by: Option<&str>,
    memory: usize,
) -> Result<SendableRecordBatchStream> {
    let datafusion = |source| Error::DataFusion {
        table: name.to_owned(),
        source,
    };
    // One sort, not one per core, and its merge's memory reserved before it spills: under a
    // greedy pool, two sorters' spills took all of it and the merge of the spilled runs
    // (which cannot spill) failed, so clustering a 14.9M-row table gave up.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory)))
        .build_arc()
        .map_err(datafusion)?;
    let mut config = SessionConfig::new().with_sort_spill_reservation_bytes(memory / 8);
    if sort_by.is_some() {
        config = config.with_target_partitions(1);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| Error::Delta {
            table: name.to_owned(),
            source,
        })?;
    let provider = table
        .table_provider()
        .with_adds(adds)
        .await
        .map_err(datafusion)?;
    let mut frame = ctx.read_table(provider).map_err(datafusion)?;
    if let Some(column) = sort_by {
        frame = frame
            .sort(vec![col(column).sort(true, false)])
            .map_err(datafusion)?;
    }
    frame.execute_stream().await.map_err(datafusion)
}

/// Why the commits `from..=to` forbid a rewrite of the files `read`: one of them removed such a
/// file (whatever its `dataChange`), or changed the table's schema or protocol.
async fn touched(
    name: &str,
    table: &DeltaTable,
    from: u64,
    to: u64,
    read: &HashSet<String>,
) -> Result<Option<String>> {
    for version in from..=to {
        for action in commit_actions(name, table, version).await? {
            match action {
                Action::Remove(remove) if read.contains(&decoded(&remove.path)) => {
                    return Ok(Some(format!(
                        "version {version} replaced {} already",
                        remove.path
                    )))
                }
                Action::Metadata(_) | Action::Protocol(_) => {
                    return Ok(Some(format!(
                        "version {version} changed the table's metadata"
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(None)
}

/// A batch as the table stores it: DataFusion may read text as views; the files keep the
/// table's own types.
pub(crate) fn as_table(name: &str, schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let invalid = |detail: String| Error::Invalid {
        table: name.to_owned(),
        detail,
    };
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            cast(column, field.data_type())
                .map_err(|e| invalid(format!("column {}: {e}", field.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| invalid(format!("rewritten rows do not fit the table's schema: {e}")))
}

/// Delete files written for a commit that will not be made (vacuum would remove them past the
/// retention otherwise).
pub(crate) async fn delete(name: &str, store: &dyn ObjectStore, added: &[Add]) {
    for add in added {
        let path = deltalake::Path::from(decoded(&add.path));
        if let Err(e) = store.delete(&path).await {
            warn!(table = name, file = %add.path, error = %e, "could not delete an unused file");
        }
    }
}

/// A path of the Delta log, percent-decoded (the log encodes them; the snapshot's file views
/// decode them).
fn decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sort of more rows than its memory holds spills and merges them back in key order
    /// (clustering a 14.9M-row table once failed in the merge of the spilled runs).
    #[tokio::test]
    async fn a_sort_larger_than_its_memory_spills_and_returns_every_row_in_order() {
        use crate::lake::merge::tests::draft;
        use crate::lake::Lake;
        use crate::sim::{SimConfig, Simulator};
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::Int64Type;

        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), Default::default()).unwrap();
        let spec = crate::spec::find("tickets").unwrap();
        let sim = Simulator::new(SimConfig {
            tickets: 3000,
            ..SimConfig::default()
        });
        let mut records = sim.records("tickets");
        // Newest ids first, so that the files' order is not the key's.
        records.sort_by_key(|r| std::cmp::Reverse(r["id"].as_i64()));
        let now = chrono::Utc::now();
        let mut size = 0;
        for (i, chunk) in records.chunks(500).enumerate() {
            let batch = crate::decode::decode_values(spec, chunk, now)
                .unwrap()
                .batch;
            size += batch.get_array_memory_size();
            lake.upsert(spec, batch, None, &draft(i as i64 + 1), i as i64)
                .await
                .unwrap();
        }
        let table = lake.open("tickets").await.unwrap().unwrap();
        #[allow(deprecated)]
        let adds: Vec<Add> = table
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| f.add_action())
            .collect();
        assert_eq!(adds.len(), 6);
        // The pool holds the rows as decoded once; as read back from parquet they take several
        // times that. Two sorters under a greedy pool of this size (the earlier setup) fail in
        // the merge of their spilled runs, as they did up to twice this size.
        let stream = scan_within("tickets", &table, adds, Some("id"), size)
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream).await.unwrap();
        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
                ids.iter().flatten().collect::<Vec<_>>()
            })
            .collect();
        let mut expected: Vec<i64> = records.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected);
    }

    #[test]
    fn log_paths_are_decoded() {
        assert_eq!(decoded("part-0001.parquet"), "part-0001.parquet");
        assert_eq!(decoded("a%20b/c%3Dd.parquet"), "a b/c=d.parquet");
        assert_eq!(decoded("odd%2"), "odd%2");
        assert_eq!(decoded("100%"), "100%");
    }
}
