//! The lake: one Delta table per table name at `<lake>/<table>` and the control table
//! `<lake>/_sync_state`, on any object_store URI (local paths, `file://`, `s3://`, `gs://`,
//! `az://`; credentials from object_store's usual environment variables or storage options).
//! The lake knows Delta and nothing of Zendesk: a stream's position is JSON it stores without
//! reading (docs/ARCHITECTURE.md, "How a sync runs").
//!
//! Its modules, each importing (tests aside) only from those listed before it
//! (docs/ARCHITECTURE.md, "Layout and merges", "Layout and maintenance", "Ambiguous commits"):
//! - [`commit`]: committing to a table and settling from the log whether a commit was made,
//!   application ids, a commit's actions and files; [`dv`]: deletion vectors; [`failstore`]
//!   and [`faultstore`]: the stores of the crash and fault tests;
//! - [`files`]: a table's data files: writing, abandoning and deleting them, reading them back,
//!   what a version's files hold;
//! - [`table`]: what a table is and how it comes to exist: its handle, opening, creation, its
//!   properties, its id, the handles kept between commits;
//! - [`control`]: the control table, reconcile, the migration of 0.1 lakes;
//! - [`rewrite`]: rewriting some files of a table in a commit no concurrent rewrite slips under;
//! - `patch` ([`PatchSet`]) and [`splice`]: the merge writer of tables keyed by int64;
//! - [`merge`]: [`Lake::upsert`], a batch into its table: created with it, spliced, or merged
//!   by deltalake (text keys);
//! - [`maintenance`]: checkpoints, optimize, vacuum and the compaction after a sync;
//! - [`state`]: the write path's state tables (`_import_state`, `_push_state`), appended
//!   exactly once; [`lease`]: the lease a run takes of a state table before it writes to
//!   Zendesk, so that one run at a time does.
//!
//! # Exactly-once protocol (docs/ARCHITECTURE.md, "Exactly once")
//! Batch `n` of stream `S` is applied in one data commit per table it has rows for, then one
//! control commit:
//! 1. each data commit to `<lake>/T` carries the Delta application transaction
//!    `(zendesk-lake/S, n)` and, in its commit info, a [`CommitDraft`]: the control row it
//!    completes and the tables the batch writes;
//! 2. the control commit appends that row (with the data commits' versions) to `_sync_state`,
//!    carrying the application transaction `(zendesk-lake-control/S/<epoch>, n)`. A row whose
//!    transaction is already in the control table is not appended again, and Delta fails the
//!    second of two concurrent appends of it, so each batch has exactly one control row,
//!    whichever run records it.
//!
//! Before each data commit a run checks that the table's transaction version is the one it
//! read when it started (or last committed), and the data commit is made with no conflict
//! retries: Delta's conflict checker fails it if a concurrent commit carried the same
//! application id. So two runs of one lake cannot both apply batch `n`; the loser stops with
//! [`Error::Concurrent`].
//!
//! A run starts by reconciling each stream with its tables ([`Lake::reconcile`]): tables that
//! hold batch `n + 1` while the control table records `n` mean a crash during the commits of
//! that batch. When all of its tables hold it, its control row is recovered from the commit
//! info; when only some do, the batch is fetched and applied again (merges are idempotent). A
//! control row ahead of a table means the table lost commits, and the run refuses to skip data.
//! Merges only replace a row by one whose cursor is at least as new, so even a re-applied batch
//! could never roll data back.
//!
//! An error of a commit does not say whether it was made (an object store can apply a put and
//! lose its answer): every writer settles it from the table's log ([`commit`];
//! docs/ARCHITECTURE.md, "Ambiguous commits") and deletes data files only for a commit the log
//! proves absent.

pub mod commit;
pub mod control;
pub mod dv;
pub mod failstore;
pub mod faultstore;
pub(crate) mod files;
pub mod lease;
pub mod maintenance;
pub mod merge;
mod patch;
mod rewrite;
mod splice;
pub mod state;
pub(crate) mod table;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

use crate::spec;

pub use commit::CommitFiles;
pub use control::{CommitDraft, ControlRow, Resume, TableCommit, CONTROL_TABLE};
pub use merge::{CommitReport, Upsert};
pub use patch::PatchSet;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lake URI {uri:?} is invalid: {detail}")]
    Uri { uri: String, detail: String },
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: DeltaTableError,
    },
    #[error("table {table}: {source}")]
    DataFusion {
        table: String,
        #[source]
        source: DataFusionError,
    },
    #[error("table {table}: {detail}")]
    Invalid { table: String, detail: String },
    #[error(
        "table {table}: another sync of this lake committed to it concurrently ({detail}); \
         this run's batch was not applied, and the next run continues from the lake's state"
    )]
    Concurrent { table: String, detail: String },
    #[error(
        "table {table}: the object store failed a commit and the table's log does not show \
         whether it was applied ({detail}); its data files are kept, and the next run finds it \
         in the log or goes on without it"
    )]
    Unresolved { table: String, detail: String },
    #[error(
        "table {table}: committed version {version}, then reading the table failed ({detail}); \
         the next run takes the commit from the table's log"
    )]
    AfterCommit {
        table: String,
        version: u64,
        detail: String,
    },
    #[error(
        "table {table}: another writer committed while {operation} ran ({detail}); the {operation} \
         changed nothing, run it again"
    )]
    Busy {
        table: String,
        operation: &'static str,
        detail: String,
    },
    #[error(
        "table {table}: another run holds its write lease ({holder}); this run sent nothing \
         more, and the next run goes on from the table's state"
    )]
    Leased { table: String, holder: String },
    #[error(
        "table {table}: this run's write lease was taken over or could not be renewed in time; \
         it sent nothing more, and the next run goes on from the table's state"
    )]
    LeaseLost { table: String },
    #[error("query: {0}")]
    Query(#[source] DataFusionError),
    /// The object-store faults of the tests do not parse ([`faultstore`]).
    #[error("{0}")]
    Faults(String),
}

impl Error {
    /// The wrapper of deltalake's errors about `table`.
    pub(crate) fn delta(table: &str) -> impl Fn(DeltaTableError) -> Error + Copy + '_ {
        move |source| Error::Delta {
            table: table.to_owned(),
            source,
        }
    }

    /// The wrapper of DataFusion's errors about `table` (reading it, or rows bound for it).
    pub(crate) fn datafusion(table: &str) -> impl Fn(DataFusionError) -> Error + Copy + '_ {
        move |source| Error::DataFusion {
            table: table.to_owned(),
            source,
        }
    }

    /// The wrapper of Arrow's errors about rows of `table`, met while `doing` something.
    pub(crate) fn arrow<'a>(
        table: &'a str,
        doing: &'a str,
    ) -> impl Fn(ArrowError) -> Error + Copy + 'a {
        move |e| Error::invalid(table, format!("{doing}: {e}"))
    }

    /// What is wrong with `table`, or with rows read from or bound for it.
    pub(crate) fn invalid(table: &str, detail: impl Into<String>) -> Error {
        Error::Invalid {
            table: table.to_owned(),
            detail: detail.into(),
        }
    }
}

/// A lake root and the storage options to reach it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    storage: HashMap<String, String>,
    /// Serialises control-table appends of the streams of one run.
    control_lock: Arc<tokio::sync::Mutex<()>>,
    /// Each table's handle after this process's last commit to it, so that the next commit of
    /// the run reads only the log entries since (each table is written by one stream at a time).
    handles: Arc<std::sync::Mutex<HashMap<String, DeltaTable>>>,
    /// Whether merges hide replaced rows with deletion vectors (see [`dv`]) instead of
    /// rewriting their files.
    deletion_vectors: bool,
    /// The object-store faults the tests inject ([`faultstore`]), none outside them.
    faults: Option<Arc<faultstore::Plan>>,
}

impl Lake {
    /// `uri` is a local path (relative paths resolve against the current directory) or a URL
    /// such as `file:///data/lake` or `s3://bucket/lake`. Nothing is created until data arrives.
    pub fn try_new(uri: &str, storage: HashMap<String, String>) -> Result<Lake> {
        let invalid = |detail: String| Error::Uri {
            uri: uri.to_owned(),
            detail,
        };
        let mut root = match Url::parse(uri) {
            // One-letter schemes are Windows drive letters, not URLs.
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let path = Path::new(uri);
                let path = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    std::env::current_dir()
                        .map_err(|e| invalid(format!("no current directory: {e}")))?
                        .join(path)
                };
                Url::from_directory_path(&path)
                    .map_err(|_| invalid("not a usable local path".into()))?
            }
        };
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        // Resolve the object store for the scheme now, so that an unknown scheme or bad storage
        // options fail here, not after data was fetched.
        DeltaTableBuilder::from_url(root.clone())
            .and_then(|b| b.with_storage_options(storage.clone()).build_storage())
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Lake {
            root,
            storage,
            control_lock: Arc::default(),
            handles: Arc::default(),
            deletion_vectors: false,
            faults: faultstore::Plan::from_env().map_err(Error::Faults)?,
        })
    }

    /// Inject the faults of `plan` into every request to the lake's store (tests only).
    pub fn with_faults(mut self, plan: Arc<faultstore::Plan>) -> Self {
        self.faults = Some(plan);
        self.handles = Arc::default();
        self
    }

    /// Whether merges write deletion vectors (off unless turned on): readers of the lake then
    /// need Delta reader version 3 with the `deletionVectors` feature.
    pub fn with_deletion_vectors(mut self, on: bool) -> Self {
        self.deletion_vectors = on;
        self
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The object-store options the lake is opened with.
    pub fn storage(&self) -> &HashMap<String, String> {
        &self.storage
    }

    /// The URL of a table of this lake.
    pub fn table_url(&self, name: &str) -> Url {
        // `name` is one of our table names: plain path segments, always a valid join.
        self.root
            .join(&format!("{name}/"))
            .unwrap_or_else(|_| self.root.clone())
    }

    /// A DataFusion session with every Delta table under the lake's root registered under its
    /// folder name: the product's (`tickets`, `users`, ..., `_sync_state`, `_import_state`) and
    /// any a team keeps beside them (`their_export`), which `import` reads.
    pub async fn session(&self) -> Result<SessionContext> {
        let ctx = SessionContext::new();
        for name in self.table_names().await? {
            if let Some(table) = self.open(&name).await? {
                register(&ctx, &name, &table).await?;
            }
        }
        Ok(ctx)
    }

    /// The folders right under the root that hold a Delta table (a `_delta_log`), sorted, with
    /// the product's tables (found by name, however the store lists).
    pub async fn table_names(&self) -> Result<Vec<String>> {
        use deltalake::logstore::object_store::path::Path as StorePath;
        let root = self.root.as_str();
        let store = DeltaTableBuilder::from_url(self.root.clone())
            .and_then(|b| b.with_storage_options(self.storage.clone()).build_storage())
            .map_err(Error::delta(root))?
            .object_store(None);
        let listing = store
            .list_with_delimiter(None)
            .await
            .map_err(|e| Error::delta(root)(e.into()))?;
        let mut names: Vec<String> = spec::names()
            .into_iter()
            .chain([CONTROL_TABLE, state::IMPORT_STATE.name])
            .map(String::from)
            .collect();
        for folder in listing.common_prefixes {
            let Some(name) = folder.filename().map(String::from) else {
                continue;
            };
            if names.contains(&name) {
                continue;
            }
            let log = StorePath::from(format!("{folder}/_delta_log"));
            let holds_log = store
                .list_with_delimiter(Some(&log))
                .await
                .is_ok_and(|l| !l.objects.is_empty());
            if holds_log {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every row of one table (none when it does not exist yet).
    pub async fn scan(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let Some(table) = self.open(name).await? else {
            return Ok(Vec::new());
        };
        query_one(name, &table, &format!("SELECT * FROM \"{name}\"")).await
    }

    /// The rows of `table` after `(cursor µs, id)` in the order of its timestamp column
    /// `cursor` then `id`, as `(id, cursor µs, deleted)`: the parents of a children stream.
    pub async fn rows_after(
        &self,
        table: &str,
        cursor: &str,
        after: (i64, i64),
    ) -> Result<Vec<(i64, i64, bool)>> {
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
        let Some(delta) = self.open(table).await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT id, \"{cursor}\", _deleted FROM \"{table}\" \
             WHERE \"{cursor}\" >= to_timestamp_micros({})",
            after.0.max(0)
        );
        let batches = query_one(table, &delta, &sql).await?;
        let mut rows = Vec::new();
        for batch in &batches {
            let ids = batch
                .column(0)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| Error::invalid(table, "id is not an int64 column"))?;
            let cursors = batch
                .column(1)
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| Error::invalid(table, "the cursor is not a timestamp column"))?;
            let deleted = batch
                .column(2)
                .as_boolean_opt()
                .ok_or_else(|| Error::invalid(table, "_deleted is not a boolean column"))?;
            for i in 0..batch.num_rows() {
                let row = (ids.value(i), cursors.value(i), deleted.value(i));
                if (row.1, row.0) > after {
                    rows.push(row);
                }
            }
        }
        rows.sort_by_key(|&(id, cursor, _)| (cursor, id));
        Ok(rows)
    }

    /// Run SQL over the lake's tables.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let ctx = self.session().await?;
        let df = ctx.sql(sql).await.map_err(Error::Query)?;
        df.collect().await.map_err(Error::Query)
    }
}

/// Run `sql` over one table, registered as `name`.
pub(crate) async fn query_one(
    name: &str,
    table: &DeltaTable,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    register(&ctx, name, table).await?;
    let df = ctx.sql(sql).await.map_err(Error::Query)?;
    df.collect().await.map_err(Error::Query)
}

pub(crate) async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    let provider = table
        .table_provider()
        .await
        .map_err(Error::datafusion(name))?;
    table
        .update_datafusion_session(&ctx.state())
        .map_err(Error::delta(name))?;
    ctx.register_table(name, provider)
        .map_err(Error::datafusion(name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_directory_urls() {
        let lake = Lake::try_new("/tmp/some lake", HashMap::new()).unwrap();
        assert_eq!(lake.root().as_str(), "file:///tmp/some%20lake/");
        assert_eq!(
            lake.table_url("tickets").as_str(),
            "file:///tmp/some%20lake/tickets/"
        );
        let lake = Lake::try_new("file:///data/lake", HashMap::new()).unwrap();
        assert_eq!(lake.table_url("users").as_str(), "file:///data/lake/users/");
    }

    #[test]
    fn object_store_schemes_are_registered() {
        let azure = HashMap::from([
            (
                "azure_storage_account_name".to_owned(),
                "account".to_owned(),
            ),
            ("azure_storage_account_key".to_owned(), "a2V5".to_owned()),
        ]);
        for (uri, options) in [
            ("s3://bucket/lake", HashMap::new()),
            ("gs://bucket/lake", HashMap::new()),
            ("az://container/lake", azure.clone()),
            ("abfss://container@account.dfs.core.windows.net/lake", azure),
        ] {
            let lake = Lake::try_new(uri, options).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert!(
                lake.table_url("tickets")
                    .as_str()
                    .ends_with("/lake/tickets/"),
                "{uri}"
            );
        }
        // Missing settings fail before anything is fetched, naming the lake.
        let err = Lake::try_new("az://container/lake", HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("az://container/lake"), "{err}");
        let err = Lake::try_new("nosuchstore://bucket/lake", HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("nosuchstore"), "{err}");
    }
}
