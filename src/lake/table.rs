//! What a table of the lake is and how it comes to exist: its handle (on the lake's store, with
//! the tests' faults when armed), opening it, creating it with the lake's properties, giving an
//! older table those properties and deletion vectors, its identity, and the handles a process
//! keeps from one commit to the next (docs/ARCHITECTURE.md, "Layout and maintenance",
//! "Layout and merges").
//!
//! Creating a table and setting a property are commits like any other: an error of one says
//! nothing of whether it was made, so each is settled by reading the table again
//! (docs/ARCHITECTURE.md, "Ambiguous commits"): it exists, or has the property, whoever
//! committed it.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use tracing::{debug, info};
use url::Url;

use super::commit::{after_commit, is_conflict, Intent};
use super::{dv, failstore, faultstore, Error, Lake, Result};
use crate::spec::Table;

/// Commits between two checkpoints of every table: a sync makes one commit per batch in each
/// table it writes and in the control table, so a reader replays at most this many JSON
/// commits after the newest checkpoint.
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// The table property holding the checkpoint interval.
pub const CHECKPOINT_PROPERTY: &str = "delta.checkpointInterval";

/// The properties a table of the lake is created with.
pub(crate) fn table_configuration() -> [(&'static str, Option<String>); 1] {
    [(CHECKPOINT_PROPERTY, Some(CHECKPOINT_INTERVAL.to_string()))]
}

impl Lake {
    /// Open a table, `None` when no table exists there yet.
    pub async fn open(&self, name: &str) -> Result<Option<DeltaTable>> {
        let mut table = self.handle(name)?;
        if !table
            .verify_deltatable_existence()
            .await
            .map_err(Error::delta(name))?
        {
            return Ok(None);
        }
        table.load().await.map_err(Error::delta(name))?;
        Ok(Some(table))
    }

    /// An uninitialised handle on a table location, for the first write.
    pub(crate) fn handle(&self, name: &str) -> Result<DeltaTable> {
        self.builder(name)?.build().map_err(Error::delta(name))
    }

    /// The builder of a table's handle: its URL and storage options, and, when the crash
    /// tests arm [`failstore::POINT`], a store that can kill the process inside a commit, or
    /// when the tests inject object-store faults, a store that fails requests ([`faultstore`]).
    fn builder(&self, name: &str) -> Result<DeltaTableBuilder> {
        let url = self.table_url(name);
        let builder = DeltaTableBuilder::from_url(url.clone())
            .map_err(Error::delta(name))?
            .with_storage_options(self.storage.clone());
        let killing = crate::failpoint::armed_at(failstore::POINT);
        if !killing && self.faults.is_none() {
            return Ok(builder);
        }
        let scheme = Url::parse(&format!("{}://", url.scheme())).map_err(|e| Error::Uri {
            uri: url.to_string(),
            detail: e.to_string(),
        })?;
        let factory = deltalake::logstore::object_store_factories()
            .get(&scheme)
            .map(|entry| entry.value().clone())
            .ok_or_else(|| {
                Error::delta(name)(DeltaTableError::InvalidTableLocation(url.to_string()))
            })?;
        let config = deltalake::logstore::StorageConfig::parse_options(self.storage.clone())
            .map_err(Error::delta(name))?;
        let (mut root, _) = factory
            .parse_url_opts(&url, &config)
            .map_err(Error::delta(name))?;
        if killing {
            root = Arc::new(failstore::FailpointStore(root));
        }
        if let Some(plan) = &self.faults {
            root = Arc::new(faultstore::FaultStore::new(root, plan.clone()));
        }
        Ok(builder.with_storage_backend(root, url))
    }

    /// Make sure the table exists, so that queries find it even before any data.
    pub async fn ensure_table(&self, spec: &Table) -> Result<()> {
        self.create_if_missing(&spec.name, spec.schema(), &spec.description)
            .await
            .map(drop)
    }

    /// Open the table `name`, creating it empty first if it does not exist.
    ///
    /// Another run creating it at the same moment is not an error: the loser of the race finds
    /// the table created. Nor is an error of the create when the table exists after it (the
    /// store applied the create and lost its answer).
    pub(crate) async fn create_if_missing(
        &self,
        name: &str,
        schema: SchemaRef,
        description: &str,
    ) -> Result<deltalake::DeltaTable> {
        if let Some(table) = self.open(name).await? {
            return Ok(table);
        }
        // No conflict retries: a create that loses the race would be committed again as the
        // next version (a second metadata action, a new table id); the loser finds the table.
        let created = self
            .handle(name)?
            .write(vec![RecordBatch::new_empty(schema)])
            .with_save_mode(SaveMode::Append)
            .with_table_name(name)
            .with_description(description)
            .with_configuration(table_configuration())
            .with_commit_properties(Intent::new().properties())
            .await;
        let error = match created {
            Ok(table) => return Ok(table),
            Err(error) => error,
        };
        debug!(table = name, %error, "creating the table failed: looking for it");
        self.open(name)
            .await?
            .ok_or_else(|| Error::delta(name)(error))
    }

    /// The table at `version`, which this process just committed ([`Error::AfterCommit`] when
    /// it cannot be read).
    pub(crate) async fn at_version(&self, name: &str, version: u64) -> Result<DeltaTable> {
        let mut table = self.handle(name)?;
        table
            .load_version(version)
            .await
            .map_err(|e| after_commit(name, version, e))?;
        Ok(table)
    }

    /// The table's handle kept from this process's last commit to it, brought up to date with
    /// the commits made since (a listing of the log after its version, not a reload), or the
    /// table opened afresh. `None` when it does not exist yet.
    pub(crate) async fn cached(&self, name: &str) -> Result<Option<DeltaTable>> {
        let kept = self.handles_lock().remove(name);
        if let Some(mut table) = kept {
            match table.update_incremental(None).await {
                Ok(()) => return Ok(Some(table)),
                Err(e) => debug!(table = name, error = %e, "reloading the table's handle"),
            }
        }
        self.open(name).await
    }

    /// Whether `table` has deletion vectors, enabling them first (one commit of the table's
    /// properties and protocol, once in its life). `table` is then at the latest version.
    pub(crate) async fn enable_deletion_vectors(
        &self,
        name: &str,
        table: &mut DeltaTable,
    ) -> Result<bool> {
        let enabled = |table: &DeltaTable| -> Result<bool> {
            let state = table.snapshot().map_err(Error::delta(name))?;
            Ok(state
                .metadata()
                .configuration()
                .get(dv::PROPERTY)
                .is_some_and(|v| v.eq_ignore_ascii_case("true")))
        };
        if enabled(table)? {
            return Ok(true);
        }
        let properties = HashMap::from([(dv::PROPERTY.to_owned(), "true".to_owned())]);
        let changed = table
            .clone()
            .set_tbl_properties()
            .with_properties(properties)
            .with_commit_properties(Intent::new().properties())
            .await;
        match changed {
            Ok(changed) => *table = changed,
            // Another writer's commit came first, or the store lost the answer: the table
            // says whether the property is set, by this run or another.
            Err(error) => {
                debug!(table = name, %error, "enabling deletion vectors failed: reading the table");
                table
                    .update_incremental(None)
                    .await
                    .map_err(Error::delta(name))?;
                if !enabled(table)? {
                    return Err(match is_conflict(&error) {
                        true => Error::Concurrent {
                            table: name.to_owned(),
                            detail: format!(
                                "enabling deletion vectors lost to its commit: {error}"
                            ),
                        },
                        false => Error::delta(name)(error),
                    });
                }
            }
        }
        debug!(table = name, "deletion vectors enabled");
        Ok(true)
    }

    /// Keep a table's handle after a commit, for the next commit of the run.
    pub(crate) fn keep(&self, name: &str, table: DeltaTable) {
        self.handles_lock().insert(name.to_owned(), table);
    }

    fn handles_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeltaTable>> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.handles.lock().expect("table handles lock poisoned")
    }

    /// Open a table and give it the lake's table properties if it lacks them (one metadata
    /// commit, once in the table's life). `None` when the table does not exist.
    pub async fn open_maintained(&self, name: &str) -> Result<Option<DeltaTable>> {
        let Some(table) = self.open(name).await? else {
            return Ok(None);
        };
        let configured = |table: &DeltaTable| -> Result<bool> {
            Ok(table
                .snapshot()
                .map_err(Error::delta(name))?
                .metadata()
                .configuration()
                .contains_key(CHECKPOINT_PROPERTY))
        };
        if configured(&table)? {
            return Ok(Some(table));
        }
        let properties: HashMap<String, String> = table_configuration()
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect();
        match table.set_tbl_properties().with_properties(properties).await {
            Ok(table) => {
                info!(
                    table = name,
                    "checkpoint interval set to {CHECKPOINT_INTERVAL}"
                );
                Ok(Some(table))
            }
            // Another writer committed first (the property is set next time), or the store
            // lost the answer to this commit (the table read again holds it).
            Err(source) => match self.open(name).await? {
                Some(table) if is_conflict(&source) || configured(&table)? => Ok(Some(table)),
                _ => Err(Error::delta(name)(source)),
            },
        }
    }
}

/// The table's Delta metadata id: it identifies one life of the table, from its creation.
pub(crate) fn table_id(name: &str, table: &deltalake::DeltaTable) -> Result<String> {
    let state = table.snapshot().map_err(Error::delta(name))?;
    Ok(state.metadata().id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    #[tokio::test]
    async fn tables_without_the_checkpoint_interval_get_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        // A table as an earlier version created it: no properties.
        let spec = spec::find("groups").unwrap();
        lake.handle("groups")
            .unwrap()
            .write(vec![deltalake::arrow::array::RecordBatch::new_empty(
                spec.schema(),
            )])
            .await
            .unwrap();
        let interval = |table: &DeltaTable| {
            let config = table.snapshot().unwrap().metadata().configuration().clone();
            config.get(CHECKPOINT_PROPERTY).cloned()
        };
        let table = lake.open("groups").await.unwrap().unwrap();
        assert_eq!(interval(&table), None);
        let table = lake.open_maintained("groups").await.unwrap().unwrap();
        assert_eq!(interval(&table).as_deref(), Some("10"));
        assert_eq!(table.version(), Some(1));
        // Once: the next open commits nothing.
        let table = lake.open_maintained("groups").await.unwrap().unwrap();
        assert_eq!(table.version(), Some(1));
        // The same commit applied with its answer lost: set, once.
        for fault in ["exists", "lost"] {
            lake.handle("users")
                .unwrap()
                .write(vec![deltalake::arrow::array::RecordBatch::new_empty(
                    spec::find("users").unwrap().schema(),
                )])
                .await
                .unwrap();
            let plan = std::sync::Arc::new(
                crate::lake::faultstore::Plan::parse(&format!(
                    "{fault} create *users/_delta_log/*.json #1"
                ))
                .unwrap(),
            );
            let faulty = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new())
                .unwrap()
                .with_faults(plan.clone());
            let table = faulty.open_maintained("users").await.unwrap().unwrap();
            assert_eq!(plan.injected(), 1, "{fault}");
            assert_eq!(interval(&table).as_deref(), Some("10"), "{fault}");
            assert_eq!(table.version(), Some(1), "{fault}");
            std::fs::remove_dir_all(dir.path().join("users")).unwrap();
        }
        assert!(lake.open_maintained("tickets").await.unwrap().is_none());
        // A table this version creates has it from the start.
        lake.ensure_table(spec::find("users").unwrap())
            .await
            .unwrap();
        let table = lake.open("users").await.unwrap().unwrap();
        assert_eq!(interval(&table).as_deref(), Some("10"));
    }
}
