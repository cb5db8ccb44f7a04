//! `zendesk-lake query`: SQL over the lake's tables with DataFusion, each registered by its
//! name (and `_sync_state`); no Zendesk credentials needed.

use deltalake::arrow::array::RecordBatch;

use crate::lake::{self, Lake};

/// The rows `sql` selects.
pub async fn query(lake: &Lake, sql: &str) -> lake::Result<Vec<RecordBatch>> {
    lake.query(sql).await
}
