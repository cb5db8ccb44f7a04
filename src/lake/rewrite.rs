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

use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::DeltaTable;
use futures::StreamExt;
use tracing::debug;

use super::commit::{self, commit_actions, Intent, Unmade};
use super::files::{abort, as_table, decoded, delete, scan, writer};
use super::{Error, Result};

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
    let state = table.snapshot().map_err(Error::delta(name))?;
    let read_version = state.version();
    let schema = state.snapshot().arrow_schema();
    let files: Vec<_> = state
        .log_data()
        .iter()
        .filter(|file| paths.contains(file.path().as_ref()))
        .collect();
    if files.len() != paths.len() {
        return Err(Error::invalid(
            name,
            format!(
                "{} of the {} files to rewrite are not in version {read_version}",
                paths.len() - files.len(),
                paths.len()
            ),
        ));
    }
    #[allow(deprecated)] // The provider's file selection takes Add actions.
    let adds: Vec<Add> = files.iter().map(|file| file.add_action()).collect();
    let removes: Vec<Remove> = files.iter().map(|file| file.remove_action(false)).collect();
    let store = table.log_store().object_store(None);
    let mut writer = writer(table, target).map_err(Error::delta(name))?;
    let mut rows = scan(name, table, adds, sort_by).await?;
    let written = async {
        while let Some(batch) = rows.next().await {
            let batch = as_table(name, &schema, batch.map_err(Error::datafusion(name))?)?;
            writer.write(&batch).await.map_err(Error::delta(name))?;
        }
        Ok::<_, Error>(())
    }
    .await;
    let added = match written {
        Ok(()) => writer.close().await.map_err(Error::delta(name))?,
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
        table
            .update_incremental(None)
            .await
            .map_err(Error::delta(name))?;
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
