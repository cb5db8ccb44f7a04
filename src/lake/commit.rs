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
//! - after any error the log is read at that version: the commit is [`Made`](Landing::Made)
//!   when the version carries its id (the writer goes on exactly as after a success), and never
//!   made when the version holds another writer's commit ([`Unmade::Taken`]);
//! - when the version is still free, the put may yet land: the identical commit (same id, same
//!   version) is tried again, which is safe because conditional puts let at most one of the two
//!   land and either is this commit. If that cannot settle it either, the writer fails with
//!   [`Unmade::Unknown`] and keeps its data files: the next run finds the commit or not in the
//!   log, and `vacuum` removes files that no commit references once they are past the
//!   retention.
//!
//! Data files are deleted on the spot only for [`Unmade::Taken`] and [`Unmade::Refused`].
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
/// tables (a stream's name is the name its single object had in zendesk-lake 0.1, so lakes of
/// that version continue the same sequence).
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

    /// The error of a data commit of batch `seq` to `table`: a version taken by another writer
    /// is a concurrent run's ([`Error::Concurrent`]), an unknown outcome says so
    /// ([`Error::Unresolved`]).
    pub fn into_error(self, table: &str, seq: i64) -> Error {
        match self {
            Unmade::Taken(source) => Error::Concurrent {
                table: table.to_owned(),
                detail: format!("commit #{seq} lost to another writer's: {source}"),
            },
            Unmade::Refused(source) => Error::delta(table)(source),
            Unmade::Unknown(source) => Error::Unresolved {
                table: table.to_owned(),
                detail: source.to_string(),
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
            .await
            .map_err(Unmade::Refused)?;
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
        .map_err(|source| Error::AfterCommit {
            table: name.to_owned(),
            version,
            detail: source.to_string(),
        })
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
