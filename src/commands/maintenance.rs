//! `zendesk-lake optimize` and `vacuum`: one maintenance operation over a set of tables
//! (docs/ARCHITECTURE.md, "Layout and merges"). A table that fails is reported and the others
//! are done; the operations themselves live in [`crate::lake::maintenance`].

use crate::lake::maintenance::{
    self, OptimizeOptions, OptimizeReport, VacuumOptions, VacuumReport,
};
use crate::lake::{self, Lake};

/// What one operation did to each table, in order: a table the lake does not hold yet is left
/// out, a table that failed is named by its error.
#[derive(Debug)]
pub struct TablesReport<R> {
    pub tables: Vec<Result<R, lake::Error>>,
}

impl<R> TablesReport<R> {
    /// Whether every table was done.
    pub fn ok(&self) -> bool {
        self.tables.iter().all(Result::is_ok)
    }
}

/// Optimize the named tables (default: every table and `_sync_state`).
pub async fn optimize(
    lake: &Lake,
    tables: Option<&[String]>,
    options: &OptimizeOptions,
) -> lake::Result<TablesReport<OptimizeReport>> {
    each_table(tables, async |name| lake.optimize(name, options).await).await
}

/// Vacuum the named tables (default: every table and `_sync_state`).
pub async fn vacuum(
    lake: &Lake,
    tables: Option<&[String]>,
    options: &VacuumOptions,
) -> lake::Result<TablesReport<VacuumReport>> {
    each_table(tables, async |name| lake.vacuum(name, options).await).await
}

/// Run `op` on each table named; an unknown name fails before any table is touched.
async fn each_table<R>(
    tables: Option<&[String]>,
    mut op: impl AsyncFnMut(&str) -> lake::Result<Option<R>>,
) -> lake::Result<TablesReport<R>> {
    let mut done = Vec::new();
    for name in maintenance::tables(tables)? {
        if let Some(report) = op(&name).await.transpose() {
            done.push(report);
        }
    }
    Ok(TablesReport { tables: done })
}
