//! `zendesk-lake query`: SQL over the lake's tables with DataFusion: every Delta table under
//! the root, registered by its folder name (the product's, `_sync_state`, `_import_state`, and
//! any a team keeps beside them); no Zendesk credentials needed.

use deltalake::arrow::array::RecordBatch;

use crate::lake::{self, Lake};

/// The rows `sql` selects.
pub async fn query(lake: &Lake, sql: &str) -> lake::Result<Vec<RecordBatch>> {
    lake.query(sql).await
}
