//! `zendesk-lake status`: per stream, where it stands (seq, watermark, last commit), and per
//! table, its rows and deleted rows, read from the lake alone (no Zendesk credentials needed).

use deltalake::arrow::array::AsArray;
use deltalake::arrow::datatypes::Int64Type;

use crate::lake::{self, control, Lake};

/// One table of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStatus {
    pub table: String,
    pub rows: i64,
    pub deleted: i64,
}

/// One stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    pub stream: String,
    /// Its last batch.
    pub seq: i64,
    /// µs since the epoch.
    pub watermark: Option<i64>,
    /// When its last batch was recorded (µs since the epoch).
    pub committed_at: i64,
    pub run_id: String,
    /// Control rows of the stream in all.
    pub commits: usize,
    pub tables: Vec<TableStatus>,
}

/// Where every stream of the lake stands, by stream name.
pub async fn status(lake: &Lake) -> Result<Vec<StreamStatus>, lake::Error> {
    let history = lake.history().await?;
    let state = control::latest(history.iter().cloned());
    let mut names: Vec<_> = state.keys().cloned().collect();
    names.sort();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // One session for every count: each one opens every table of the lake.
    let ctx = lake.session().await?;
    let mut streams = Vec::with_capacity(names.len());
    for name in names {
        let row = &state[&name];
        let mut tables = Vec::new();
        for table in row.tables.keys() {
            let counts = ctx
                .sql(&format!(
                    "SELECT count(*) AS n, count(*) FILTER (WHERE _deleted) AS d FROM {table}"
                ))
                .await
                .map_err(lake::Error::Query)?
                .collect()
                .await
                .map_err(lake::Error::Query)?;
            let (rows, deleted) = counts
                .first()
                .map(|b| {
                    (
                        b.column(0).as_primitive::<Int64Type>().value(0),
                        b.column(1).as_primitive::<Int64Type>().value(0),
                    )
                })
                .unwrap_or_default();
            tables.push(TableStatus {
                table: table.clone(),
                rows,
                deleted,
            });
        }
        streams.push(StreamStatus {
            commits: history.iter().filter(|h| h.stream == name).count(),
            stream: name,
            seq: row.seq,
            watermark: row.watermark,
            committed_at: row.committed_at,
            run_id: row.run_id.clone(),
            tables,
        });
    }
    Ok(streams)
}
