//! Patches: later events that change a few columns of rows already in a table, applied in the
//! same data commit as a batch's rows (docs/ARCHITECTURE.md, "Write modes, patches and
//! deletions"). Both writers of a batch take them: the splice and deltalake's merge.

use deltalake::arrow::array::RecordBatch;

/// Changes to a few columns of rows already in a table: each row of `rows` sets the columns
/// `sets` (and `_synced_at`) of the table's rows whose `column` equals its own.
#[derive(Debug, Clone)]
pub struct PatchSet {
    pub column: String,
    pub sets: Vec<String>,
    /// The match column, the columns set and `_synced_at`, typed as in the table.
    pub rows: RecordBatch,
}
