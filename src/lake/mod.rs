//! The lake: one Delta table per object at `<lake>/<object>` and the control table
//! `<lake>/_sync_state`, on any object_store URI (local paths and `file://` today).
//!
//! [`merge`] writes an object's batches (append when the table is new, merge-upsert by primary key
//! after), [`control`] keeps the watermark of every object, written only after the data commit it
//! describes. Every data commit carries a Delta application transaction (`zendesk-lake/<object>`,
//! version = the control sequence number it will be recorded under), so the log itself says which
//! batch a table has seen.

pub mod control;
pub mod merge;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

use crate::objects;

pub use control::{ControlRow, CONTROL_TABLE};
pub use merge::CommitReport;

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
        source: deltalake::datafusion::error::DataFusionError,
    },
    #[error("table {table}: {detail}")]
    Invalid { table: String, detail: String },
    #[error(
        "table {table}: another sync of this lake committed to it concurrently ({detail}); \
         this run's batch was not applied, and the next run continues from the lake's state"
    )]
    Concurrent { table: String, detail: String },
    #[error("query: {0}")]
    Query(#[source] deltalake::datafusion::error::DataFusionError),
}

/// A lake root and the storage options to reach it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    storage: HashMap<String, String>,
    /// Serialises control-table appends of the objects of one run.
    control_lock: Arc<tokio::sync::Mutex<()>>,
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
        deltalake::DeltaTableBuilder::from_url(root.clone()).map_err(|e| invalid(e.to_string()))?;
        Ok(Lake {
            root,
            storage,
            control_lock: Arc::default(),
        })
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

    /// Open a table, `None` when no table exists there yet.
    pub async fn open(&self, name: &str) -> Result<Option<DeltaTable>> {
        let delta = |source| Error::Delta {
            table: name.to_owned(),
            source,
        };
        let mut table = DeltaTableBuilder::from_url(self.table_url(name))
            .map_err(delta)?
            .with_storage_options(self.storage.clone())
            .build()
            .map_err(delta)?;
        if !table.verify_deltatable_existence().await.map_err(delta)? {
            return Ok(None);
        }
        table.load().await.map_err(delta)?;
        Ok(Some(table))
    }

    /// An uninitialised handle on a table location, for the first write.
    pub(crate) fn handle(&self, name: &str) -> Result<DeltaTable> {
        let delta = |source| Error::Delta {
            table: name.to_owned(),
            source,
        };
        DeltaTableBuilder::from_url(self.table_url(name))
            .map_err(delta)?
            .with_storage_options(self.storage.clone())
            .build()
            .map_err(delta)
    }

    /// A DataFusion session with every existing table of the lake registered under its name
    /// (`tickets`, `users`, ..., and `_sync_state`).
    pub async fn session(&self) -> Result<SessionContext> {
        let ctx = SessionContext::new();
        let names = objects::names()
            .into_iter()
            .chain(std::iter::once(CONTROL_TABLE));
        for name in names {
            if let Some(table) = self.open(name).await? {
                register(&ctx, name, &table).await?;
            }
        }
        Ok(ctx)
    }

    /// Run SQL over the lake's tables.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let ctx = self.session().await?;
        let df = ctx.sql(sql).await.map_err(Error::Query)?;
        df.collect().await.map_err(Error::Query)
    }
}

pub(crate) async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    let provider = table
        .table_provider()
        .await
        .map_err(|source| Error::DataFusion {
            table: name.to_owned(),
            source,
        })?;
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| Error::Delta {
            table: name.to_owned(),
            source,
        })?;
    ctx.register_table(name, provider)
        .map_err(|source| Error::DataFusion {
            table: name.to_owned(),
            source,
        })?;
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
}
