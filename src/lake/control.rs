//! The control table `<lake>/_sync_state`: one row per data commit of an object, holding the
//! position to resume from and the watermark reached.
//!
//! A row is appended only after the data commit it describes has succeeded, so the newest row of
//! an object never points past data the lake holds. Rows are never updated: the table is also the
//! object's sync history, which `zendesk-lake status` and SQL (`SELECT * FROM _sync_state`) show.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType,
};
use deltalake::arrow::json::ReaderBuilder;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::merge::{app_id, is_conflict, table_id, txn_version, CONTROL_METADATA};
use super::{register, Error, Lake, Result};
use crate::objects::timestamp_type;
use crate::zendesk::Position;

/// Name of the control table, also its name in SQL.
pub const CONTROL_TABLE: &str = "_sync_state";

const CONTROL_DESCRIPTION: &str = "zendesk-lake sync state: one row per data commit of an object";

/// The application id under which the control rows of one life of an object's table are
/// recorded: a table created again under the same name gets a new id, so its rows, which start
/// again at seq 1, are not mistaken for rows already recorded.
pub fn control_app_id(object: &str, table_id: &str) -> String {
    format!("zendesk-lake-control/{object}/{table_id}")
}

/// How many times a control row is appended before a conflict with other runs is an error.
const CONTROL_ATTEMPTS: u32 = 10;

/// One committed batch of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRow {
    pub object: String,
    /// 1, 2, ... per object; also the Delta app-transaction version of the data commit.
    pub seq: i64,
    /// Cursor exports: `after_cursor` to resume from.
    pub cursor: Option<String>,
    /// Time exports (and cursor exports before their first cursor): the next `start_time`.
    pub start_time: i64,
    /// Time exports: fingerprints of records of second `start_time` already applied.
    pub boundary: Vec<String>,
    /// Largest cursor-field value applied so far (µs since the epoch).
    pub watermark: Option<i64>,
    pub rows_upserted: i64,
    pub rows_deleted: i64,
    pub run_id: String,
    /// Delta version of the data commit.
    pub data_version: i64,
    /// µs since the epoch.
    pub committed_at: i64,
}

impl ControlRow {
    pub fn position(&self) -> Position {
        Position {
            cursor: self.cursor.clone(),
            start_time: self.start_time,
            boundary: self.boundary.clone(),
        }
    }
}

fn boundary_type() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

fn schema() -> SchemaRef {
    let list = boundary_type();
    Arc::new(Schema::new(vec![
        Field::new("object", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("cursor", DataType::Utf8, true),
        Field::new("start_time", DataType::Int64, false),
        Field::new("boundary", list, true),
        Field::new("watermark", timestamp_type(), true),
        Field::new("rows_upserted", DataType::Int64, false),
        Field::new("rows_deleted", DataType::Int64, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("data_version", DataType::Int64, false),
        Field::new("committed_at", timestamp_type(), false),
    ]))
}

impl Lake {
    /// Append the control row of a data commit to the table whose metadata id is `table_id`,
    /// exactly once.
    ///
    /// Each row is tagged with the application transaction `(control_app_id(object, table_id),
    /// seq)`. A row already recorded (by another run that recovered it, see [`Lake::reconcile`])
    /// is not appended again, and of two runs appending the same row at once, Delta lets one
    /// commit and makes the other conflict, which then finds the row recorded.
    pub async fn record(&self, row: &ControlRow, table_id: &str) -> Result<()> {
        let app = control_app_id(&row.object, table_id);
        let invalid = |detail: String| Error::Invalid {
            table: CONTROL_TABLE.to_owned(),
            detail,
        };
        let mut decoder = ReaderBuilder::new(schema())
            .build_decoder()
            .map_err(|e| invalid(e.to_string()))?;
        decoder
            .serialize(std::slice::from_ref(row))
            .map_err(|e| invalid(e.to_string()))?;
        let batch = decoder
            .flush()
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| invalid("empty control batch".into()))?;
        // Objects of this run record one at a time. Another run may still create the table or
        // append at the same moment: a conflicting append is retried on top of its commit.
        let _guard = self.control_lock.lock().await;
        // Created apart from any row: deltalake commits the loser of a create race without
        // checking it for conflicts, which would let a row in it be recorded twice.
        let mut table = self
            .create_if_missing(CONTROL_TABLE, schema(), CONTROL_DESCRIPTION)
            .await?;
        let mut attempt = 1;
        loop {
            let recorded = txn_version(CONTROL_TABLE, &table, &app).await?;
            if recorded.is_some_and(|seq| seq >= row.seq) {
                debug!(object = %row.object, seq = row.seq, "control row already recorded");
                return Ok(());
            }
            let commit = CommitProperties::default()
                .with_application_transaction(Transaction::new(app.clone(), row.seq));
            let written = table
                .write(vec![batch.clone()])
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(commit)
                .await;
            match written {
                Ok(_) => return Ok(()),
                Err(source) if is_conflict(&source) && attempt < CONTROL_ATTEMPTS => {
                    warn!(
                        attempt,
                        "another run wrote the control table at once: retrying"
                    );
                    attempt += 1;
                    table = self
                        .open(CONTROL_TABLE)
                        .await?
                        .ok_or_else(|| Error::Invalid {
                            table: CONTROL_TABLE.to_owned(),
                            detail: "it disappeared while rows were being recorded".into(),
                        })?;
                }
                Err(source) => {
                    return Err(Error::Delta {
                        table: CONTROL_TABLE.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    /// Bring an object's control row and its table into agreement before a run, returning the
    /// row to resume from.
    ///
    /// The table's application-transaction version `d` and the control row's `seq` `c` agree
    /// after every complete commit. `d == c + 1` means a run died between its data commit and its
    /// control commit: the missing control row is recovered from the data commit's metadata and
    /// appended, so the run resumes after that batch instead of fetching it again. `d < c`
    /// means the table lost commits (dropped, restored or replaced): resuming would skip data,
    /// so it is an error.
    pub async fn reconcile(
        &self,
        object: &str,
        last: Option<ControlRow>,
    ) -> Result<Option<ControlRow>> {
        let control_seq = last.as_ref().map_or(0, |row| row.seq);
        let Some(table) = self.open(object).await? else {
            if control_seq > 0 {
                return Err(self.lost_commits(object, control_seq, 0));
            }
            return Ok(last);
        };
        let data_seq = txn_version(object, &table, &app_id(object))
            .await?
            .unwrap_or(0);
        if data_seq == control_seq {
            return Ok(last);
        }
        if data_seq < control_seq {
            return Err(self.lost_commits(object, control_seq, data_seq));
        }
        let delta = |source| Error::Delta {
            table: object.to_owned(),
            source,
        };
        let latest = table.version().unwrap_or_default();
        let infos: Vec<_> = table.history(Some(64)).try_collect().await.map_err(delta)?;
        for (age, info) in infos.iter().enumerate() {
            let Some(meta) = info.info.get(CONTROL_METADATA) else {
                continue;
            };
            let Ok(mut row) = serde_json::from_value::<ControlRow>(meta.clone()) else {
                continue;
            };
            if row.seq != data_seq {
                continue;
            }
            row.data_version = (latest - age as u64) as i64;
            warn!(
                object,
                seq = row.seq,
                version = row.data_version,
                "the last run ended between a data commit and its control row: recording it now"
            );
            self.record(&row, &table_id(object, &table)?).await?;
            return Ok(Some(row));
        }
        Err(Error::Invalid {
            table: object.to_owned(),
            detail: format!(
                "its last sync commit #{data_seq} carries no readable control metadata; \
                 the control table is at #{control_seq}"
            ),
        })
    }

    fn lost_commits(&self, object: &str, control_seq: i64, data_seq: i64) -> Error {
        Error::Invalid {
            table: object.to_owned(),
            detail: format!(
                "the control table records sync commit #{control_seq} but the table's last is \
                 #{data_seq}: the table was dropped, restored or replaced. Resuming would skip \
                 data; delete its rows from {CONTROL_TABLE} (or the whole lake) to reload it"
            ),
        }
    }

    /// The newest control row of every object.
    pub async fn latest_state(&self) -> Result<HashMap<String, ControlRow>> {
        Ok(latest(self.history().await?))
    }

    /// Every control row, oldest first per object.
    pub async fn history(&self) -> Result<Vec<ControlRow>> {
        let Some(table) = self.open(CONTROL_TABLE).await? else {
            return Ok(Vec::new());
        };
        let ctx = deltalake::datafusion::prelude::SessionContext::new();
        register(&ctx, CONTROL_TABLE, &table).await?;
        let batches = ctx
            .sql(&format!(
                "SELECT * FROM {CONTROL_TABLE} ORDER BY object, seq"
            ))
            .await
            .map_err(Error::Query)?
            .collect()
            .await
            .map_err(Error::Query)?;
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(rows_of(batch)?);
        }
        Ok(rows)
    }
}

/// The newest row of every object among `rows`.
pub fn latest(rows: impl IntoIterator<Item = ControlRow>) -> HashMap<String, ControlRow> {
    let mut latest: HashMap<String, ControlRow> = HashMap::new();
    for row in rows {
        match latest.get(&row.object) {
            Some(current) if current.seq >= row.seq => {}
            _ => {
                latest.insert(row.object.clone(), row);
            }
        }
    }
    latest
}

fn rows_of(batch: &RecordBatch) -> Result<Vec<ControlRow>> {
    let missing = |name: &str| Error::Invalid {
        table: CONTROL_TABLE.to_owned(),
        detail: format!("column {name} is missing or has an unexpected type"),
    };
    // DataFusion may hand strings back as Utf8View: cast to the type the table was written with.
    let column = |name: &'static str, to: &DataType| {
        batch
            .column_by_name(name)
            .and_then(|c| cast(c, to).ok())
            .ok_or_else(|| missing(name))
    };
    let strings = |name: &'static str| column(name, &DataType::Utf8);
    let int = |name: &'static str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| missing(name))
    };
    let time = |name: &'static str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or_else(|| missing(name))
    };
    let (object, cursor, run_id) = (strings("object")?, strings("cursor")?, strings("run_id")?);
    let (object, cursor, run_id) = (
        object.as_string::<i32>(),
        cursor.as_string::<i32>(),
        run_id.as_string::<i32>(),
    );
    let (seq, start_time, upserted, deleted, version) = (
        int("seq")?,
        int("start_time")?,
        int("rows_upserted")?,
        int("rows_deleted")?,
        int("data_version")?,
    );
    let (watermark, committed_at) = (time("watermark")?, time("committed_at")?);
    let boundary = column("boundary", &boundary_type())?;
    let boundary = boundary.as_list::<i32>();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let prints = if boundary.is_null(i) {
            Vec::new()
        } else {
            let values = boundary.value(i);
            let values = values
                .as_string_opt::<i32>()
                .ok_or_else(|| missing("boundary"))?;
            (0..values.len())
                .map(|j| values.value(j).to_owned())
                .collect()
        };
        rows.push(ControlRow {
            object: object.value(i).to_owned(),
            seq: seq.value(i),
            cursor: (!cursor.is_null(i)).then(|| cursor.value(i).to_owned()),
            start_time: start_time.value(i),
            boundary: prints,
            watermark: (!watermark.is_null(i)).then(|| watermark.value(i)),
            rows_upserted: upserted.value(i),
            rows_deleted: deleted.value(i),
            run_id: run_id.value(i).to_owned(),
            data_version: version.value(i),
            committed_at: committed_at.value(i),
        });
    }
    Ok(rows)
}
