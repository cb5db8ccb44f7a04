//! Table maintenance (docs/ARCHITECTURE.md, "Layout and maintenance"): checkpoints, compaction
//! and clustering by key (`zendesk-lake optimize`), removal of files no version within the
//! retention needs (`zendesk-lake vacuum`), and the policy a sync applies to the tables it wrote.
//!
//! Every sync commits at least one small file per table per batch, and the control table one per
//! batch of every stream: without maintenance, reads and merges open more and more files and
//! replay a longer and longer log. Three things keep them short:
//! - every table is created with `delta.checkpointInterval` = [`CHECKPOINT_INTERVAL`] (tables of
//!   older versions get it on their next sync or maintenance command), and an optimize or vacuum
//!   that committed writes a checkpoint at once;
//! - optimize rewrites a table's files into files of about the target size, sorted
//!   by its primary key so that each file holds its own range of keys, which lets a merge skip
//!   the files whose range its batch does not touch; the control table, which has no key, is
//!   bin-packed;
//! - vacuum deletes the files that no version within the retention reads: files replaced by
//!   merges and optimize, and orphans (files of a killed run that no commit ever referenced).
//!
//! None of these commits carries an application transaction or a draft, so the exactly-once
//! protocol does not see them: a table's transaction version is read from its snapshot, which
//! keeps it across any commit, and reconcile looks for drafts commit by commit.

use std::collections::HashSet;
use std::num::NonZeroU64;

use deltalake::operations::vacuum::VacuumMode;
use deltalake::{DeltaTable, DeltaTableError};
use tracing::{info, warn};

use super::commit::is_conflict;
use super::files::stats;
pub use super::files::FileStats;
use super::rewrite::{rewrite, Rewritten};
pub use super::table::{CHECKPOINT_INTERVAL, CHECKPOINT_PROPERTY};
use super::{Error, Lake, Result, CONTROL_TABLE};
use crate::spec;

/// How long vacuum keeps files that the current version no longer reads (7 days, Delta's own
/// default): readers and writers running now, and time travel within it, still find them.
pub const DEFAULT_RETENTION_HOURS: u64 = 168;

/// The size optimize aims for, in MiB.
pub const DEFAULT_TARGET_FILE_SIZE_MB: u64 = 128;

/// How many small files (under a quarter of the target size) a table may have before a sync
/// compacts it.
pub const DEFAULT_SMALL_FILES: usize = 32;

/// The share of a table's stored rows that deletion vectors may hide before a sync compacts
/// the table.
pub const HIDDEN_SHARE: f64 = 0.1;

/// How optimize rewrites a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every file rewritten, sorted by the primary key: files hold disjoint key
    /// ranges. The control table, which has no key, is compacted instead.
    Cluster,
    /// Only files under the target size are bin-packed together; large files stay as they are.
    Compact,
}

/// What `optimize` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizeOptions {
    pub layout: Layout,
    /// Bytes per file to aim for.
    pub target_file_size: u64,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            layout: Layout::Cluster,
            target_file_size: DEFAULT_TARGET_FILE_SIZE_MB << 20,
        }
    }
}

/// What `optimize` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizeReport {
    pub table: String,
    /// The key the files were sorted by (none when bin-packed).
    pub clustered_by: Option<String>,
    /// Data files of the version read, and of the version written.
    pub files_before: usize,
    pub files_after: usize,
    pub files_removed: u64,
    pub files_added: u64,
    pub bytes_removed: u64,
    pub bytes_added: u64,
    /// The version optimized, and the version after (equal when nothing was rewritten).
    pub version_before: u64,
    pub version: u64,
}

/// What `vacuum` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumOptions {
    /// Hours a file no longer read is kept. `None` is [`DEFAULT_RETENTION_HOURS`], checked
    /// against the table's `delta.deletedFileRetentionDuration`; a value given explicitly is
    /// taken as it is, 0 included (then versions older than the current one cannot be read any
    /// more, and the files a running writer has written but not yet committed are deleted too:
    /// its commit would reference files that are gone, so 0 is for lakes no writer is using).
    pub retention_hours: Option<u64>,
    /// Only list the files that would be deleted.
    pub dry_run: bool,
}

impl VacuumOptions {
    pub fn retention_hours(&self) -> u64 {
        self.retention_hours.unwrap_or(DEFAULT_RETENTION_HOURS)
    }
}

/// What `vacuum` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacuumReport {
    pub table: String,
    pub dry_run: bool,
    /// Files deleted (or that would be, on a dry run), relative to the table's root.
    pub files: Vec<String>,
    /// The version vacuumed, and the version after (vacuum records itself in two commits).
    pub version_before: u64,
    pub version: u64,
}

/// The maintenance a sync does after a run (`[maintenance]` in the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Compact a table written by the run when it has more than `small_files` small files.
    pub auto_optimize: bool,
    pub small_files: usize,
    /// Bytes per file compaction aims for; a file under a quarter of it is small.
    pub target_file_size: u64,
    /// Merges write deletion vectors ([`crate::lake::dv`]).
    pub deletion_vectors: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            auto_optimize: true,
            small_files: DEFAULT_SMALL_FILES,
            target_file_size: DEFAULT_TARGET_FILE_SIZE_MB << 20,
            deletion_vectors: false,
        }
    }
}

/// The tables maintenance applies to: the named ones (table names or `_sync_state`), or every
/// table the registry knows and the control table.
pub fn tables(names: Option<&[String]>) -> Result<Vec<String>> {
    let all = || {
        spec::names()
            .into_iter()
            .chain(std::iter::once(CONTROL_TABLE))
    };
    let Some(names) = names else {
        return Ok(all().map(str::to_owned).collect());
    };
    let mut out: Vec<String> = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        if !all().any(|known| known == name) {
            return Err(Error::invalid(
                name,
                format!(
                    "no such table; known tables: {}",
                    all().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

impl Lake {
    /// The data files of a table's current version (`None` when it does not exist); files
    /// under `small_below` bytes count as small.
    pub async fn file_stats(&self, name: &str, small_below: u64) -> Result<Option<FileStats>> {
        let Some(table) = self.open(name).await? else {
            return Ok(None);
        };
        Ok(Some(stats(name, &table, small_below)?))
    }

    /// Rewrite a table's files (see [`Layout`]), in one commit that changes no row. `None` when
    /// the table does not exist.
    pub async fn optimize(
        &self,
        name: &str,
        options: &OptimizeOptions,
    ) -> Result<Option<OptimizeReport>> {
        let Some(table) = self.open_maintained(name).await? else {
            return Ok(None);
        };
        optimize_table(name, table, options).await.map(Some)
    }
    /// Delete the files of a table that no version within the retention reads: files removed
    /// by earlier commits once their removal is older than the retention, and files no commit
    /// references (a killed run's) once they are older than it. `None` when the table does not
    /// exist.
    pub async fn vacuum(
        &self,
        name: &str,
        options: &VacuumOptions,
    ) -> Result<Option<VacuumReport>> {
        // A dry run commits nothing, the table properties included.
        let table = match options.dry_run {
            true => self.open(name).await?,
            false => self.open_maintained(name).await?,
        };
        let Some(table) = table else {
            return Ok(None);
        };
        let version_before = table.version().unwrap_or_default();
        let hours = options.retention_hours();
        let retention = i64::try_from(hours)
            .ok()
            .and_then(chrono::Duration::try_hours)
            .ok_or_else(|| {
                Error::invalid(name, format!("a retention of {hours} hours is too long"))
            })?;
        let (table, metrics) = table
            .vacuum()
            .with_mode(VacuumMode::Full)
            .with_retention_period(retention)
            // A retention given explicitly is what the user asked for, below the table's
            // `delta.deletedFileRetentionDuration` too.
            .with_enforce_retention_duration(options.retention_hours.is_none())
            .with_dry_run(options.dry_run)
            .await
            .map_err(|source| busy_or_delta(name, "vacuum", source))?;
        let version = table.version().unwrap_or_default();
        if version != version_before {
            checkpoint(name, &table).await;
        }
        let mut files = metrics.files_deleted;
        files.sort();
        info!(
            table = name,
            files = files.len(),
            dry_run = options.dry_run,
            retention_hours = hours,
            "vacuumed"
        );
        Ok(Some(VacuumReport {
            table: name.to_owned(),
            dry_run: options.dry_run,
            files,
            version_before,
            version,
        }))
    }

    /// The maintenance of a sync, for the tables its run wrote (and the control table): set
    /// the checkpoint interval where it is missing and, unless the policy is off, compact a
    /// table with more than `policy.small_files` small files. Never fails the run: the data is
    /// committed already, so a failure is logged and the next run tries again. Returns the
    /// compactions done.
    pub async fn after_sync<'a>(
        &self,
        policy: &Policy,
        written: impl IntoIterator<Item = &'a str>,
    ) -> Vec<OptimizeReport> {
        let mut names: Vec<&str> = written.into_iter().collect();
        if !names.is_empty() {
            names.push(CONTROL_TABLE);
        }
        let mut done = Vec::new();
        for name in names {
            // `optimize_table` logs what it did.
            match self.maintain(name, policy).await {
                Ok(Some(report)) => done.push(report),
                Ok(None) => {}
                Err(e) => {
                    warn!(table = name, error = %e, "table maintenance failed; the next run tries again")
                }
            }
        }
        done
    }

    async fn maintain(&self, name: &str, policy: &Policy) -> Result<Option<OptimizeReport>> {
        let Some(table) = self.open_maintained(name).await? else {
            return Ok(None);
        };
        if !policy.auto_optimize {
            return Ok(None);
        }
        let stats = stats(name, &table, policy.target_file_size / 4)?;
        // Rows hidden by deletion vectors are still read by every scan of their files.
        let hidden = stats.hidden as f64 > HIDDEN_SHARE * stats.rows as f64;
        if stats.small <= policy.small_files && !hidden {
            return Ok(None);
        }
        let options = OptimizeOptions {
            layout: Layout::Compact,
            target_file_size: policy.target_file_size,
        };
        self.optimize(name, &options).await
    }
}

/// [`Lake::optimize`] of the table as `table` holds it: a rewrite that another writer's commit
/// since then makes unsafe fails as [`Error::Busy`].
pub(crate) async fn optimize_table(
    name: &str,
    mut table: DeltaTable,
    options: &OptimizeOptions,
) -> Result<OptimizeReport> {
    let target = NonZeroU64::new(options.target_file_size)
        .ok_or_else(|| Error::invalid(name, "the target file size must be at least 1 byte"))?;
    let before = stats(name, &table, 0)?;
    let version_before = table.version().unwrap_or_default();
    let key = match (options.layout, spec::find(name)) {
        (Layout::Cluster, Some(spec)) => Some(spec.primary_key.clone()),
        _ => None,
    };
    if before.files <= 1 && before.hidden == 0 {
        // Nothing to merge, sort or drop: running optimize again rewrites nothing.
        return Ok(OptimizeReport {
            table: name.to_owned(),
            clustered_by: key,
            files_before: before.files,
            files_after: before.files,
            files_removed: 0,
            files_added: 0,
            bytes_removed: 0,
            bytes_added: 0,
            version_before,
            version: version_before,
        });
    }
    // Clustering rewrites every file, sorted by the key; compaction the files under the
    // target size and those with rows hidden by a deletion vector.
    let chosen: HashSet<String> = table
        .snapshot()
        .map_err(Error::delta(name))?
        .log_data()
        .iter()
        .filter(|file| {
            key.is_some()
                || (file.size().max(0) as u64) < target.get()
                || file.deletion_vector_descriptor().is_some()
        })
        .map(|file| file.path().into_owned())
        .collect();
    let metrics = match chosen.len() {
        0 => Rewritten::default(),
        1 if before.hidden == 0 => Rewritten::default(),
        _ => rewrite(name, &mut table, &chosen, key.as_deref(), target).await?,
    };
    let version = table.version().unwrap_or_default();
    if version != version_before {
        checkpoint(name, &table).await;
    }
    let after = stats(name, &table, 0)?;
    let report = OptimizeReport {
        table: name.to_owned(),
        clustered_by: key,
        files_before: before.files,
        files_after: after.files,
        files_removed: metrics.files_removed,
        files_added: metrics.files_added,
        bytes_removed: metrics.bytes_removed,
        bytes_added: metrics.bytes_added,
        version_before,
        version,
    };
    info!(
        table = name,
        files_before = report.files_before,
        files_after = report.files_after,
        version = report.version,
        "optimized"
    );
    Ok(report)
}

/// A maintenance commit that lost to another writer changed nothing: say so.
fn busy_or_delta(name: &str, operation: &'static str, source: DeltaTableError) -> Error {
    if is_conflict(&source) {
        Error::Busy {
            table: name.to_owned(),
            operation,
            detail: source.to_string(),
        }
    } else {
        Error::delta(name)(source)
    }
}

/// A checkpoint of the table's current version, so that readers replay no commit before it.
/// A checkpoint that cannot be written is logged: the commit before it stands, and readers
/// replay its log from the checkpoint before.
async fn checkpoint(name: &str, table: &DeltaTable) {
    if let Err(error) = deltalake::checkpoints::create_checkpoint(table, None).await {
        warn!(table = name, %error, "writing a checkpoint failed; the next one covers this version");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn tables_are_checked_against_the_registry() {
        let all = tables(None).unwrap();
        assert!(all.iter().any(|t| t == "tickets"));
        assert!(all.iter().any(|t| t == CONTROL_TABLE));
        let some = tables(Some(&[
            "users".into(),
            "_sync_state".into(),
            "users".into(),
        ]))
        .unwrap();
        assert_eq!(some, ["users", "_sync_state"]);
        let err = tables(Some(&["tickets".into(), "nope".into()])).unwrap_err();
        assert!(err.to_string().contains("nope") && err.to_string().contains("tickets"));
    }

    /// Two optimizes of one table from the same version (overlapping runs compacting it, or
    /// `zendesk-lake optimize` during a sync's compaction): one commits, the other finds its
    /// files replaced, changes nothing and leaves no file behind. A commit that touched none of
    /// the files read (a batch of new rows) does not stop a rewrite. Every row stays once.
    #[tokio::test]
    async fn optimizes_racing_on_one_table_never_duplicate_rows() {
        use crate::lake::control::tests::draft;
        use crate::lake::files::files;
        use crate::sim::{SimConfig, Simulator};
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::Int64Type;
        use deltalake::arrow::util::pretty::pretty_format_batches;

        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let spec = spec::find("tickets").unwrap();
        let sim = Simulator::new(SimConfig {
            tickets: 50,
            ..SimConfig::default()
        });
        let mut records = sim.records("tickets");
        records.sort_by_key(|r| r["id"].as_i64());
        let now = chrono::Utc::now();
        let decode = |records: &[serde_json::Value]| {
            crate::decode::decode_values(spec, records, now)
                .unwrap()
                .batch
        };
        let (old, new) = records.split_at(40);
        for (i, chunk) in old.chunks(10).enumerate() {
            lake.upsert(spec, decode(chunk), &draft(i as i64 + 1))
                .with_expected_batch(i as i64)
                .await
                .unwrap();
        }
        let rows = || async {
            let batches = lake
                .query("SELECT * FROM tickets ORDER BY id")
                .await
                .unwrap();
            pretty_format_batches(&batches).unwrap().to_string()
        };
        let stored = rows().await;
        let on_disk = || {
            std::fs::read_dir(dir.path().join("tickets"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("parquet".as_ref()))
                .count()
        };
        let compact = OptimizeOptions {
            layout: Layout::Compact,
            target_file_size: 64 << 20,
        };

        let first = lake.open("tickets").await.unwrap().unwrap();
        let second = lake.open("tickets").await.unwrap().unwrap();
        assert_eq!(files(&first).len(), 4);
        let won = optimize_table("tickets", first, &compact).await.unwrap();
        assert_eq!((won.files_removed, won.files_added), (4, 1));
        let files_before_loser = on_disk();
        let lost = optimize_table("tickets", second, &compact)
            .await
            .unwrap_err();
        assert!(matches!(lost, Error::Busy { .. }), "{lost}");
        assert_eq!(
            on_disk(),
            files_before_loser,
            "the loser's files are deleted"
        );
        let table = lake.open("tickets").await.unwrap().unwrap();
        assert_eq!(table.version(), Some(won.version));
        assert_eq!(rows().await, stored);

        // A stale handle, then a batch of new tickets: clustering commits on top of it.
        let (newer, newest) = new.split_at(5);
        lake.upsert(spec, decode(newer), &draft(5))
            .with_expected_batch(4)
            .await
            .unwrap();
        let stale = lake.open("tickets").await.unwrap().unwrap();
        lake.upsert(spec, decode(newest), &draft(6))
            .with_expected_batch(5)
            .await
            .unwrap();
        let with_new = rows().await;
        let cluster = OptimizeOptions {
            layout: Layout::Cluster,
            target_file_size: 64 << 20,
        };
        let report = optimize_table("tickets", stale, &cluster).await.unwrap();
        assert_eq!(
            report.files_removed, 2,
            "only the files of the version read"
        );
        let table = lake.open("tickets").await.unwrap().unwrap();
        assert_eq!(files(&table).len(), 2);
        assert_eq!(rows().await, with_new);
        let all = lake
            .query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM tickets")
            .await
            .unwrap();
        let count = |c: usize| all[0].column(c).as_primitive::<Int64Type>().value(0);
        let expected = records.len() as i64;
        assert_eq!((count(0), count(1)), (expected, expected));
    }

    #[test]
    fn vacuum_keeps_a_week_unless_told_otherwise() {
        let default = VacuumOptions::default();
        assert_eq!(default.retention_hours(), 168);
        let explicit = VacuumOptions {
            retention_hours: Some(0),
            dry_run: false,
        };
        assert_eq!(explicit.retention_hours(), 0);
    }
}
