//! The rate budgets learned from Zendesk's headers (docs/ARCHITECTURE.md, "Rate budgets"),
//! against a simulator that announces and enforces them in windows shortened to fractions of a
//! second (the client's window shortened with it), and the page size's recovery from 504s.
//! Every expectation is counted on the simulator's side: its requests per window, the 429s it
//! answered, the `per_page` of every request it received.

use std::time::Duration;

use zendesk_lake::config::Settings;
use zendesk_lake::sim::{Budget, BudgetWindow, Faults, SimConfig};

use crate::common::*;

/// The exports these tests sync: three streams drawing from the export bucket at once.
const EXPORTS: [&str; 3] = ["tickets", "users", "organizations"];

fn export_settings(settings: &mut Settings, window: Duration, exports_per_window: u32) {
    settings
        .tables
        .retain(|t| EXPORTS.contains(&t.name.as_str()));
    settings.zendesk.rate_window = window;
    settings.zendesk.incremental_requests_per_minute = exports_per_window;
}

fn refused(windows: &[BudgetWindow]) -> u64 {
    windows.iter().map(|w| w.refused).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_budget_announced_larger_than_configured_is_used() {
    let (sim, server) = start(small()).await;
    let window = Duration::from_secs(1);
    sim.set_budget(Budget {
        window,
        incremental_exports: Some(30),
        ..Budget::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    // Configured for 10 export requests a window, as for an account without High Volume.
    export_settings(&mut settings, window, 10);
    settings.page_size = 8;
    // One commit per table at the end: the writer never holds the fetching up.
    settings.commit_rows = 100_000;
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &EXPORTS).await;

    let windows = sim.budget_windows();
    let busiest = windows
        .iter()
        .map(|w| w.incremental_exports)
        .max()
        .unwrap_or(0);
    // The configured pacing allows at most 20 in a window (a burst of 10, 10 refilled); the
    // announced budget 30.
    assert!(busiest > 20, "export requests per window: {windows:?}");
    assert!(busiest <= 30, "{windows:?}");
    assert_eq!(refused(&windows), 0, "no 429: {windows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_drained_by_another_integration_slows_the_sync_down_without_429s() {
    let (sim, server) = start(small()).await;
    let window = Duration::from_millis(500);
    // 10 export requests a window, of which another integration spends 6 the moment the window
    // starts: 4 are left for the sync, which is configured for all 10.
    sim.set_budget(Budget {
        window,
        incremental_exports: Some(10),
        foreign_exports: 6,
        ..Budget::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    export_settings(&mut settings, window, 10);
    let report = sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &EXPORTS).await;

    let windows = sim.budget_windows();
    assert_eq!(refused(&windows), 0, "no 429: {windows:?}");
    let exports: u64 = windows.iter().map(|w| w.incremental_exports).sum();
    // More requests than one window leaves room for: the sync had to spread them out.
    assert!(exports > 4, "{windows:?}");
    assert!(
        windows.iter().all(|w| w.incremental_exports <= 4),
        "{windows:?}"
    );
    // Each table has a stream of its own here: their requests, and the credential check, are
    // every request the simulator received.
    let counted: u64 = report.tables.iter().map(|o| o.requests).sum();
    assert_eq!(counted + 1, sim.request_count(), "{:?}", report.tables);
    assert!(
        report.tables.iter().any(|o| o.budget_wait_seconds > 0.0),
        "the waits are reported: {:?}",
        report.tables
    );
    // A second run, the budget as drained: still none.
    sim.apply_round(&zendesk_lake::sim::Round {
        creates: 5,
        updates: 9,
        silent_updates: 3,
        deletes: 2,
    });
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &EXPORTS).await;
    assert_eq!(refused(&sim.budget_windows()), 0);
}

/// `per_page` of every export request of `path`, in order.
fn page_sizes(log: &[String], path: &str) -> Vec<u32> {
    log.iter()
        .filter(|r| r.starts_with(path))
        .filter_map(|r| {
            let query = r.split_once('?')?.1;
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "per_page")
                .and_then(|(_, v)| v.parse().ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_504_shrinks_the_page_and_answered_pages_grow_it_back_to_1000() {
    let (sim, server) = start(SimConfig {
        tickets: 3200,
        users: 20,
        organizations: 5,
        ..SimConfig::default()
    })
    .await;
    // Heavy pages time out for the first requests only (request 1 checks the credentials).
    sim.set_faults(Faults {
        max_page_size: Some(600),
        max_page_size_until: Some(3),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    settings.tables.retain(|t| t.name == "tickets");
    settings.page_size = 1000;
    settings.commit_rows = 100_000;
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &["tickets"]).await;

    let sizes = page_sizes(&sim.request_log(), "/api/v2/incremental/tickets/cursor");
    // 1000 timed out; 500 five times in a row; then 1000 again.
    assert_eq!(sizes[0], 1000, "{sizes:?}");
    assert_eq!(&sizes[1..6], &[500; 5], "{sizes:?}");
    assert!(
        sizes[6..].iter().all(|&s| s == 1000) && sizes.len() > 6,
        "{sizes:?}"
    );
}
