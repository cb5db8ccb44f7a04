//! Committing to a table, and knowing afterwards whether a commit was made (docs/ARCHITECTURE.md,
//! "Exactly once", "Ambiguous commits").
//!
//! A Delta commit is one conditional put of `_delta_log/<version>.json`. An object store can
//! apply a put and lose its answer (a reset, a proxy restarting, an answer slower than the
//! timeout); its client then fails, or retries and is told that the version exists. Neither
//! error says whose commit the version holds. And deltalake reports an error for a commit it
//! made when something after it fails (the checkpoint it writes, the read of the new version).
//! So no writer of the lake takes an error for a commit that was not made:
//! - every commit carries a random id in its commit info ([`COMMIT_ID`]) and aims at exactly one
//!   version (no conflict retries: a retry would aim at the next one);
//! - after any error the log is read at that version: the commit is made (`Landing::Made`)
//!   when the version carries its id (the writer goes on exactly as after a success), and never
//!   made when the version holds another writer's commit (`Unmade::Taken`);
//! - when the version is still free, the put may yet land: the identical commit (same id, same
//!   version) is tried again, which is safe because conditional puts let at most one of the two
//!   land and either is this commit. If that cannot settle it either, the writer fails with
//!   `Unmade::Unknown` and keeps its data files: the next run finds the commit or not in the
//!   log, and `vacuum` removes files that no commit references once they are past the
//!   retention.
//!
//! Data files are deleted on the spot only for `Unmade::Taken` and `Unmade::Refused`.
//!
//! The module also holds what every writer shares: application ids, the conflict test, reading
//! a commit's actions and the files it added and removed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Transaction, Version};
use deltalake::logstore::LogStore;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use serde_json::Value;
use tracing::{debug, warn};

use super::{Error, Result};

/// Key of the commit-info entry holding a commit's own random id, by which it is found in the
/// log after an error.
pub const COMMIT_ID: &str = "zendesk_lake.commit";

/// Key of the commit-info entry holding the control row of a data commit, so that a crash
/// between the data commit and the control-table commit can be repaired from the log.
pub const CONTROL_METADATA: &str = "zendesk_lake.control";

/// How many times an identical commit is put when the log cannot tell whether the last put
/// landed.
const ATTEMPTS: u32 = 3;

/// The wait before the second put of an identical commit (doubled before the third).
const RETRY_WAIT: Duration = Duration::from_millis(200);

/// The Delta application id under which a stream's data commits are recorded in each of its
/// tables (in zendesk-lake 0.1 each stream fed one table of its own name, so lakes of that
/// version continue the same sequence).
pub fn app_id(stream: &str) -> String {
    format!("zendesk-lake/{stream}")
}

/// What one commit carries beside its actions: its id, commit-info entries and application
/// transaction.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    id: String,
    metadata: HashMap<String, Value>,
    transaction: Option<Transaction>,
}

impl Intent {
    /// A commit with a new random id.
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        Intent {
            metadata: HashMap::from([(COMMIT_ID.to_owned(), Value::String(id.clone()))]),
            id,
            transaction: None,
        }
    }

    /// An entry of the commit info.
    pub fn with_metadata(mut self, key: &str, value: Value) -> Self {
        self.metadata.insert(key.to_owned(), value);
        self
    }

    /// The application transaction `(app, seq)`.
    pub fn with_transaction(mut self, app: String, seq: i64) -> Self {
        self.transaction = Some(Transaction::new(app, seq));
        self
    }

    /// The properties of deltalake's operations for this commit: no conflict retries, so that
    /// the commit aims at exactly one version, the one after the version read.
    pub fn properties(&self) -> CommitProperties {
        let properties = CommitProperties::default()
            .with_metadata(self.metadata.clone())
            .with_max_retries(0);
        match &self.transaction {
            Some(txn) => properties.with_application_transaction(txn.clone()),
            None => properties,
        }
    }
}

/// Where a commit stands in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    /// The version carries the commit.
    Made(Version),
    /// The version holds another writer's commit.
    Taken,
    /// The version does not exist yet.
    Free,
}

/// Whether version `at` of the log carries the commit `id`.
pub(crate) async fn find(log: &dyn LogStore, id: &str, at: Version) -> DeltaResult<Landing> {
    let Some(bytes) = log.read_commit_entry(at).await? else {
        return Ok(Landing::Free);
    };
    let ours = deltalake::logstore::get_actions(at, &bytes)?
        .iter()
        .any(|action| match action {
            Action::CommitInfo(info) => {
                info.info.get(COMMIT_ID).and_then(Value::as_str) == Some(id)
            }
            _ => false,
        });
    Ok(if ours {
        Landing::Made(at)
    } else {
        Landing::Taken
    })
}

type DeltaResult<T> = std::result::Result<T, DeltaTableError>;

/// A commit that was not made, or of which the log does not tell.
#[derive(Debug)]
pub(crate) enum Unmade {
    /// Another writer's commit holds the version it aimed at: it was not made, and never will
    /// be.
    Taken(DeltaTableError),
    /// Refused before anything was sent (the protocol forbids it, the actions do not
    /// serialise): not made.
    Refused(DeltaTableError),
    /// The version it aimed at is still free after every attempt, or the log could not be read:
    /// its put may still land.
    Unknown(DeltaTableError),
}

impl Unmade {
    /// Whether the commit is certainly not in the log (its data files may be deleted).
    pub fn not_made(&self) -> bool {
        !matches!(self, Unmade::Unknown(_))
    }

    /// The error of the commit `what` (`commit #3`, `optimize`) to `table`: a version taken by
    /// another writer is a concurrent run's ([`Error::Concurrent`]), an unknown outcome says
    /// so ([`Error::Unresolved`]).
    pub fn into_error(self, table: &str, what: &str) -> Error {
        match self {
            Unmade::Taken(source) => Error::Concurrent {
                table: table.to_owned(),
                detail: format!("{what} lost to another writer's: {source}"),
            },
            Unmade::Refused(source) => Error::delta(table)(source),
            Unmade::Unknown(source) => Error::Unresolved {
                table: table.to_owned(),
                detail: format!("{what}: {source}"),
            },
        }
    }
}

/// Commit `actions` as `operation` on top of `table`'s loaded version, carrying `intent`, and
/// return the version made (the table stays at the version read: see [`load`]). When the log
/// cannot tell whether a put landed, the identical commit is put again, up to [`ATTEMPTS`]
/// times. Checkpoints and log cleanup after the commit are attempted; their failure is logged,
/// never taken for the commit's.
pub(crate) async fn commit(
    name: &str,
    table: &DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
    intent: &Intent,
) -> std::result::Result<Version, Unmade> {
    let snapshot = table.snapshot().map_err(Unmade::Refused)?;
    let at = snapshot.version() + 1;
    let log = table.log_store();
    let mut wait = RETRY_WAIT;
    let mut attempt = 1;
    loop {
        let prepared = CommitBuilder::from(intent.properties())
            .with_actions(actions.clone())
            .build(Some(snapshot), log.clone(), operation.clone())
            .into_prepared_commit_future()
            .await;
        // Preparing sends no commit (the default log store only serialises it): refused, unless
        // an earlier attempt's put may still land.
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) if attempt == 1 => return Err(Unmade::Refused(error)),
            Err(error) => return Err(Unmade::Unknown(error)),
        };
        let error = match prepared.await {
            Ok(post) => {
                let version = post.version;
                if let Err(error) = post.await {
                    warn!(table = name, version, %error, "committed; the checkpoint or log cleanup after it failed (the next one covers it)");
                }
                return Ok(version);
            }
            Err(error) => error,
        };
        match find(log.as_ref(), &intent.id, at).await {
            Ok(Landing::Made(version)) => {
                warn!(table = name, version, %error, "the store failed the commit, but the log holds it: committed");
                return Ok(version);
            }
            Ok(Landing::Taken) => return Err(Unmade::Taken(error)),
            Ok(Landing::Free) if attempt < ATTEMPTS => {
                warn!(table = name, version = at, attempt, %error, "the commit is not in the log: putting it again");
            }
            Ok(Landing::Free) => return Err(Unmade::Unknown(error)),
            Err(read) if attempt < ATTEMPTS => {
                warn!(table = name, version = at, attempt, %error, %read, "cannot read the log after a failed commit: putting it again");
            }
            Err(_) => return Err(Unmade::Unknown(error)),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
        attempt += 1;
    }
}

/// After a deltalake operation carrying `intent` failed with `error` while `table` was at
/// `read` (`None`: no table yet): the version its commit made anyway, or why there is none.
pub(crate) async fn settle(
    name: &str,
    log: &dyn LogStore,
    read: Option<Version>,
    intent: &Intent,
    error: DeltaTableError,
) -> std::result::Result<Version, Unmade> {
    let at = read.map_or(0, |v| v + 1);
    match find(log, &intent.id, at).await {
        Ok(Landing::Made(version)) => {
            warn!(table = name, version, %error, "the operation failed, but the log holds its commit: committed");
            Ok(version)
        }
        Ok(Landing::Taken) => Err(Unmade::Taken(error)),
        // Errors of the commit's put, or of reads that may come after it.
        Ok(Landing::Free) if may_have_sent(&error) => Err(Unmade::Unknown(error)),
        Ok(Landing::Free) => Err(Unmade::Refused(error)),
        Err(read) => {
            debug!(table = name, %read, "cannot read the log after a failed operation");
            Err(Unmade::Unknown(error))
        }
    }
}

/// Whether an operation failing with `error` may have sent its commit.
fn may_have_sent(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::Transaction { .. }
            | DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::ObjectStore { .. }
            | DeltaTableError::Io { .. }
            | DeltaTableError::KernelError(_)
            | DeltaTableError::Kernel { .. }
            | DeltaTableError::Generic(_)
            | DeltaTableError::GenericError { .. }
    )
}

/// Bring `table` to `version`, which this process just committed: a failure is
/// [`Error::AfterCommit`] (the commit stands; the next run takes it from the log).
pub(crate) async fn load(name: &str, table: &mut DeltaTable, version: Version) -> Result<()> {
    table
        .update_incremental(Some(version))
        .await
        .map_err(|source| after_commit(name, version, source))
}

/// The error of a failure after this process made commit `version` of `table`.
pub(crate) fn after_commit(
    table: &str,
    version: Version,
    failure: impl std::fmt::Display,
) -> Error {
    Error::AfterCommit {
        table: table.to_owned(),
        version,
        detail: failure.to_string(),
    }
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

/// The version of the application transaction `app` in `table` (named `name` in errors).
pub(crate) async fn txn_version(name: &str, table: &DeltaTable, app: &str) -> Result<Option<i64>> {
    let state = table.snapshot().map_err(Error::delta(name))?;
    state
        .transaction_version(table.log_store().as_ref(), app)
        .await
        .map_err(Error::delta(name))
}

/// The actions of commit `version` of `table`, from its log entry (none when it has no JSON
/// entry any more).
pub(crate) async fn commit_actions(
    name: &str,
    table: &DeltaTable,
    version: Version,
) -> Result<Vec<Action>> {
    let Some(entry) = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(Error::delta(name))?
    else {
        return Ok(Vec::new());
    };
    deltalake::logstore::get_actions(version, &entry).map_err(Error::delta(name))
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

    /// The data files `actions` (one commit's) added and removed. A file removed and added
    /// again in one commit only changed its deletion vector: nothing of it was written.
    pub(crate) fn of(actions: &[Action]) -> CommitFiles {
        let mut files = CommitFiles::default();
        let size = |bytes: i64| u64::try_from(bytes).unwrap_or(0);
        let readded: HashSet<&str> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Add(add) if add.deletion_vector.is_some() => Some(add.path.as_str()),
                _ => None,
            })
            .filter(|path| {
                actions
                    .iter()
                    .any(|a| matches!(a, Action::Remove(r) if r.path == *path))
            })
            .collect();
        for action in actions {
            match action {
                Action::Add(add) if add.data_change && !readded.contains(add.path.as_str()) => {
                    files.added += 1;
                    files.added_bytes += size(add.size);
                }
                Action::Remove(remove)
                    if remove.data_change && !readded.contains(remove.path.as_str()) =>
                {
                    files.removed += 1;
                    files.removed_bytes += remove.size.map_or(0, size);
                }
                _ => {}
            }
        }
        files
    }
}

/// The value of `key` in the commit info among `actions`.
pub(crate) fn commit_info<'a>(actions: &'a [Action], key: &str) -> Option<&'a Value> {
    actions.iter().find_map(|action| match action {
        Action::CommitInfo(info) => info.info.get(key),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    //! Every writer of the lake against a store that loses answers, fails requests and answers
    //! late (the faults of [`super::super::faultstore`]).

    use std::collections::{BTreeSet, HashMap};
    use std::sync::Arc;

    use deltalake::arrow::array::{AsArray, RecordBatch};
    use deltalake::arrow::datatypes::Int64Type;
    use serde_json::Value;

    use crate::lake::control::tests::draft;
    use crate::lake::faultstore::Plan;
    use crate::lake::files::files;
    use crate::lake::maintenance::{Layout, OptimizeOptions};
    use crate::lake::{Error, Lake};
    use crate::sim::{SimConfig, Simulator};

    struct Case {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        records: Vec<Value>,
    }

    fn case(tickets: usize) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lake");
        let sim = Simulator::new(SimConfig {
            tickets,
            ..SimConfig::default()
        });
        let mut records = sim.records("tickets");
        records.sort_by_key(|r| r["id"].as_i64());
        Case {
            _dir: dir,
            root,
            records,
        }
    }

    impl Case {
        /// The lake with `rules` injected (none: a store that behaves).
        fn lake(&self, rules: &str) -> Lake {
            self.lake_and_plan(rules).0
        }

        /// [`Case::lake`] and its faults, which count what they injected.
        fn lake_and_plan(&self, rules: &str) -> (Lake, Arc<Plan>) {
            let lake = Lake::try_new(self.root.to_str().unwrap(), HashMap::new()).unwrap();
            let plan = Arc::new(Plan::parse(rules).unwrap());
            (lake.with_faults(plan.clone()), plan)
        }

        fn batch(&self, records: &[Value]) -> RecordBatch {
            let spec = crate::spec::find("tickets").unwrap();
            crate::decode::decode_values(spec, records, chrono::Utc::now())
                .unwrap()
                .batch
        }

        /// The ids the table holds, read through a store that behaves: every file its log
        /// references must be there, and each id once.
        async fn ids(&self) -> Vec<i64> {
            let lake = self.lake("");
            let table = lake.open("tickets").await.unwrap().unwrap();
            for file in files(&table) {
                let path = self.root.join("tickets").join(&file);
                assert!(path.exists(), "the log references {file}, which is gone");
            }
            let batches = lake.query("SELECT id FROM tickets").await.unwrap();
            let ids: Vec<i64> = batches
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect();
            let distinct: BTreeSet<i64> = ids.iter().copied().collect();
            assert_eq!(distinct.len(), ids.len(), "an id twice");
            distinct.into_iter().collect()
        }

        fn expected(&self, upto: usize) -> Vec<i64> {
            self.records[..upto]
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect()
        }

        /// Parquet files of the table on disk.
        fn on_disk(&self) -> BTreeSet<String> {
            std::fs::read_dir(self.root.join("tickets"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".parquet"))
                .collect()
        }
    }

    const TICKETS_LOG: &str = "*tickets/_delta_log/*.json";

    /// The case of the issue this module answers: the log put of a data commit is applied, its
    /// answer lost, and the client's retry is told the version exists. The writer goes on as
    /// committed, and the table stays readable with every row once. The same for the first
    /// commit (which creates the table), a splice, and every way an answer goes missing.
    #[tokio::test]
    async fn a_data_commit_whose_log_put_was_applied_and_answered_already_exists_is_committed() {
        for fault in ["exists", "lost", "late", "late:5", "503", "drop"] {
            let case = case(40);
            // The creating commit, then a splice of new rows, then one changing stored rows.
            // The creating commit is deltalake's own, which cannot be put again identically:
            // one not applied by the time the log is read is unresolved (below).
            let first = match fault {
                "late:5" | "503" | "drop" => 2,
                _ => 1,
            };
            let lake = case.lake(&format!("{fault} create {TICKETS_LOG} #{first}..3"));
            let spec = crate::spec::find("tickets").unwrap();
            let first = lake
                .upsert(spec, case.batch(&case.records[..20]), &draft(1))
                .await
                .unwrap_or_else(|e| panic!("{fault}, first commit: {e}"));
            assert!(first.committed && first.version == 0, "{fault}: {first:?}");
            let second = lake
                .upsert(spec, case.batch(&case.records[20..]), &draft(2))
                .with_expected_batch(1)
                .await
                .unwrap_or_else(|e| panic!("{fault}, second commit: {e}"));
            assert_eq!((second.version, second.inserted), (1, 20), "{fault}");
            let mut changed = case.records[3].clone();
            changed["subject"] = Value::from("changed");
            changed["generated_timestamp"] =
                Value::from(changed["generated_timestamp"].as_i64().unwrap() + 1);
            let third = lake
                .upsert(spec, case.batch(&[changed]), &draft(3))
                .with_expected_batch(2)
                .await
                .unwrap_or_else(|e| panic!("{fault}, third commit: {e}"));
            assert_eq!((third.version, third.updated), (2, 1), "{fault}");
            assert_eq!(case.ids().await, case.expected(40), "{fault}");
            let table = case.lake("").open("tickets").await.unwrap().unwrap();
            let held = super::txn_version("tickets", &table, &super::app_id("tickets"))
                .await
                .unwrap();
            assert_eq!((table.version(), held), (Some(2), Some(3)), "{fault}");
        }
    }

    /// The creating commit of a table answered after the log was read: unresolved, with its
    /// files kept, until the put lands and the log shows it. Refused, it stays unresolved (the
    /// log cannot tell a refused put from one under way), and the next attempt creates it.
    #[tokio::test]
    async fn a_creating_commit_not_in_the_log_is_unresolved() {
        let case = case(20);
        let spec = crate::spec::find("tickets").unwrap();
        let lake = case.lake(&format!("late:5 create {TICKETS_LOG} #1"));
        let err = lake
            .upsert(spec, case.batch(&case.records), &draft(1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unresolved { .. }), "{err}");
        // Further requests of the process: the put lands, and the table holds the batch.
        for _ in 0..5 {
            let _ = lake.open("tickets").await;
        }
        assert_eq!(case.ids().await, case.expected(20));

        let case = self::case(20);
        let lake = case.lake(&format!("503 create {TICKETS_LOG} #1"));
        let err = lake
            .upsert(spec, case.batch(&case.records), &draft(1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unresolved { .. }), "{err}");
        assert!(lake.open("tickets").await.unwrap().is_none());
        lake.upsert(spec, case.batch(&case.records), &draft(1))
            .await
            .unwrap();
        assert_eq!(case.ids().await, case.expected(20));
    }

    /// A commit whose puts fail every time: the log does not hold it and cannot say it never
    /// will, so the writer fails saying so and keeps its files; the table stays at its last
    /// version, readable, and the next commit of the batch succeeds.
    #[tokio::test]
    async fn a_commit_the_log_cannot_settle_fails_keeping_its_files() {
        let case = case(30);
        let spec = crate::spec::find("tickets").unwrap();
        case.lake("")
            .upsert(spec, case.batch(&case.records[..10]), &draft(1))
            .await
            .unwrap();
        let before = case.on_disk();
        let lake = case.lake(&format!("503 create {TICKETS_LOG} #1.."));
        let err = lake
            .upsert(spec, case.batch(&case.records[10..]), &draft(2))
            .with_expected_batch(1)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unresolved { .. }), "{err}");
        assert!(err.to_string().contains("kept"), "{err}");
        assert!(case.on_disk().len() > before.len(), "its files are kept");
        assert_eq!(case.ids().await, case.expected(10));
        case.lake("")
            .upsert(spec, case.batch(&case.records[10..]), &draft(2))
            .with_expected_batch(1)
            .await
            .unwrap();
        assert_eq!(case.ids().await, case.expected(30));
    }

    /// A commit that lost its version to another writer's was never made: it says so, and its
    /// files are deleted on the spot.
    #[tokio::test]
    async fn a_commit_that_lost_its_version_deletes_its_files() {
        let case = case(30);
        let spec = crate::spec::find("tickets").unwrap();
        let lake = case.lake("");
        lake.upsert(spec, case.batch(&case.records[..10]), &draft(1))
            .await
            .unwrap();
        // This run's handle is at version 0; another writer commits version 1 meanwhile.
        let other = case.lake("");
        let mut changed = case.records[0].clone();
        changed["generated_timestamp"] =
            Value::from(changed["generated_timestamp"].as_i64().unwrap() + 1);
        other
            .upsert(spec, case.batch(&[changed]), &draft(2))
            .with_expected_batch(1)
            .await
            .unwrap();
        let before = case.on_disk();
        let mut table = lake.open("tickets").await.unwrap().unwrap();
        table.load_version(0).await.unwrap();
        let intent = super::Intent::new();
        let keys = case.expected(30);
        let splice = crate::lake::splice::Splice::new(
            spec,
            case.batch(&case.records[10..]),
            &keys[10..],
            &intent,
            2,
        );
        let err = splice.apply(&mut table).await.unwrap_err();
        assert!(matches!(err, Error::Concurrent { .. }), "{err}");
        assert_eq!(case.on_disk(), before, "the loser's files are deleted");
        assert_eq!(case.ids().await, case.expected(10));
    }

    /// Optimize, the control table and table properties, each with the answer of its commit
    /// lost: each goes on as committed, once.
    #[tokio::test]
    async fn maintenance_control_and_property_commits_whose_answers_are_lost_are_made() {
        let case = case(43);
        let spec = crate::spec::find("tickets").unwrap();
        let plain = case.lake("");
        for (i, chunk) in case.records[..40].chunks(10).enumerate() {
            plain
                .upsert(spec, case.batch(chunk), &draft(i as i64 + 1))
                .with_expected_batch(i as i64)
                .await
                .unwrap();
        }
        let version = plain.open("tickets").await.unwrap().unwrap().version();
        for (seq, fault) in [(5, "exists"), (6, "lost"), (7, "late")] {
            // A second file for the optimize to rewrite.
            let new = &case.records[35 + seq as usize..36 + seq as usize];
            plain
                .upsert(spec, case.batch(new), &draft(seq))
                .with_expected_batch(seq - 1)
                .await
                .unwrap();
            let lake = case.lake(&format!("{fault} create {TICKETS_LOG} #1"));
            let options = OptimizeOptions {
                layout: Layout::Cluster,
                target_file_size: 64 << 20,
            };
            let report = lake.optimize("tickets", &options).await.unwrap().unwrap();
            assert!(report.files_added > 0, "{fault}: {report:?}");
            assert_eq!(
                case.ids().await,
                case.expected(36 + seq as usize),
                "{fault}"
            );
        }
        let table = plain.open("tickets").await.unwrap().unwrap();
        assert_eq!(
            table.version(),
            version.map(|v| v + 6),
            "three batches, three optimizes"
        );

        // Control rows: recorded once each, the first through a store that behaves (its
        // first put creates the control table), the others with the answer of their append
        // lost.
        let row = |seq: i64| {
            let mut row = draft(seq).row;
            row.stream = "organizations".into();
            row
        };
        plain.record(&row(1)).await.unwrap();
        for (seq, fault) in [(2, "exists"), (3, "lost"), (4, "late"), (5, "503")] {
            let (lake, plan) =
                case.lake_and_plan(&format!("{fault} create *_sync_state/_delta_log/*.json #1"));
            lake.record(&row(seq)).await.unwrap();
            assert_eq!(plan.injected(), 1, "{fault}");
        }
        let seqs: Vec<i64> = plain
            .history()
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);

        // Deletion vectors enabled by a commit whose answer is lost.
        let lake = case
            .lake(&format!("exists create {TICKETS_LOG} #1"))
            .with_deletion_vectors(true);
        let mut changed = case.records[9].clone();
        changed["generated_timestamp"] =
            Value::from(changed["generated_timestamp"].as_i64().unwrap() + 1);
        let report = lake
            .upsert(spec, case.batch(&[changed]), &draft(8))
            .with_expected_batch(7)
            .await
            .unwrap();
        assert_eq!(report.updated, 1);
        assert_eq!(case.ids().await, case.expected(43));
    }

    /// Checkpoints and the reads after a commit may fail: the commit stands, whatever they do.
    #[tokio::test]
    async fn a_failed_checkpoint_never_fails_the_commit_before_it() {
        let case = case(60);
        let spec = crate::spec::find("tickets").unwrap();
        let (lake, plan) =
            case.lake_and_plan("503 put *checkpoint* #1..; 503 put *_last_checkpoint #1..");
        // Version 9 is a checkpoint's (an interval of 10).
        for (i, chunk) in case.records.chunks(5).enumerate() {
            lake.upsert(spec, case.batch(chunk), &draft(i as i64 + 1))
                .with_expected_batch(i as i64)
                .await
                .unwrap_or_else(|e| panic!("batch {}: {e}", i + 1));
        }
        let log: Vec<String> = std::fs::read_dir(case.root.join("tickets/_delta_log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!log.iter().any(|f| f.contains("checkpoint")), "{log:?}");
        assert!(plan.injected() > 0, "no checkpoint was attempted");
        assert_eq!(case.ids().await, case.expected(60));
    }

    /// Tables keyed by text are written by deltalake's merge, which cannot be put again: its
    /// commit, applied with its answer lost, is taken from the log with its counts.
    #[tokio::test]
    async fn a_merge_of_a_text_keyed_table_whose_answer_is_lost_is_committed() {
        let text = include_str!("../../schemas/groups.json")
            .replace("\"table\": \"groups\"", "\"table\": \"groups_by_name\"")
            .replace("\"primary_key\": \"id\"", "\"primary_key\": \"name\"");
        let spec = crate::spec::Table::from_json(&text).unwrap();
        assert_eq!(spec.primary_key, "name");
        let group = |i: i64, stamp: &str| serde_json::json!({"id": i, "name": format!("group {i}"), "updated_at": stamp});
        let decode = |records: &[Value]| {
            crate::decode::decode_values(&spec, records, chrono::Utc::now())
                .unwrap()
                .batch
        };
        let case = case(1);
        let first: Vec<Value> = (1..=5).map(|i| group(i, "2024-01-01T00:00:00Z")).collect();
        case.lake("")
            .upsert(&spec, decode(&first), &draft(1))
            .await
            .unwrap();
        for (seq, fault) in [(2, "exists"), (3, "lost")] {
            let (lake, plan) = case.lake_and_plan(&format!(
                "{fault} create *groups_by_name/_delta_log/*.json #1"
            ));
            let stamp = format!("2024-01-0{seq}T00:00:00Z");
            let changes = [group(2, &stamp), group(10 + seq, &stamp)];
            let report = lake
                .upsert(&spec, decode(&changes), &draft(seq))
                .with_expected_batch(seq - 1)
                .await
                .unwrap_or_else(|e| panic!("{fault}: {e}"));
            assert_eq!(plan.injected(), 1, "{fault}");
            assert!(report.committed, "{fault}");
            assert_eq!((report.inserted, report.updated), (1, 1), "{fault}");
        }
        // The table is not in the registry: it is read by its handle.
        let table = case.lake("").open("groups_by_name").await.unwrap().unwrap();
        let rows = crate::lake::query_one(
            "groups_by_name",
            &table,
            "SELECT count(*) AS n, count(DISTINCT name) AS k FROM groups_by_name",
        )
        .await
        .unwrap();
        let count = |c: usize| rows[0].column(c).as_primitive::<Int64Type>().value(0);
        assert_eq!((count(0), count(1)), (7, 7));
    }
}
