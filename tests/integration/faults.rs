//! Every fault the simulator can inject: the run either succeeds with the exact result, or fails
//! clearly (object, endpoint, cause) with every table at the commit its control row names.

use zendesk_lake::sim::{Faults, Round, Simulator};
use zendesk_lake::sync::{self, SyncReport};

use crate::common::*;

fn changes() -> Round {
    Round {
        creates: 9,
        updates: 21,
        silent_updates: 7,
        deletes: 4,
    }
}

/// The tables the fault scenarios sync: cursor exports with a sideload, a time export, a list.
const FAULT_TABLES: [&str; 5] = [
    "tickets",
    "users",
    "organizations",
    "ticket_metrics",
    "groups",
];

/// A first sync and an incremental one under `faults`, each compared with the simulator.
async fn converges_under(faults: Faults, extra_toml: &str) -> (Simulator, Vec<SyncReport>) {
    let (sim, server) = start(small()).await;
    sim.apply_round(&changes());
    sim.set_faults(faults);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), extra_toml);
    // One table of each reader kind (and a sideload): faults hit requests, whatever the table.
    settings
        .tables
        .retain(|t| FAULT_TABLES.contains(&t.name.as_str()));
    let first = sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &FAULT_TABLES).await;
    sim.apply_round(&changes());
    let second = sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &FAULT_TABLES).await;
    (sim, vec![first, second])
}

fn retries(reports: &[SyncReport]) -> u64 {
    reports
        .iter()
        .flat_map(|r| &r.tables)
        .map(|o| o.retries)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_with_fractional_whole_and_missing_retry_after() {
    for retry_after in [Some("0.05"), Some("0"), None] {
        let (_, reports) = converges_under(
            Faults {
                rate_limit_every: Some(3),
                retry_after: retry_after.map(str::to_owned),
                ..Faults::default()
            },
            "",
        )
        .await;
        assert!(retries(&reports) > 0, "{retry_after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_500_502_503_504_are_retried() {
    for status in [500, 502, 503, 504] {
        let (_, reports) = converges_under(
            Faults {
                server_error_every: Some(4),
                server_error_status: Some(status),
                ..Faults::default()
            },
            "",
        )
        .await;
        assert!(retries(&reports) > 0, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_504_on_big_pages_shrinks_the_page() {
    let (sim, _) = converges_under(
        Faults {
            max_page_size: Some(12),
            ..Faults::default()
        },
        "",
    )
    .await;
    let log = sim.request_log();
    assert!(
        log.iter().any(|r| r.contains("per_page=25")),
        "asked for 25 first"
    );
    assert!(
        log.iter().any(|r| r.contains("per_page=12")),
        "then for 12: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_truncated_bodies_and_html_pages_are_retried() {
    for faults in [
        Faults {
            reset_every: Some(4),
            ..Faults::default()
        },
        Faults {
            truncate_every: Some(3),
            ..Faults::default()
        },
        Faults {
            html_every: Some(3),
            ..Faults::default()
        },
    ] {
        let (_, reports) = converges_under(faults.clone(), "").await;
        assert!(retries(&reports) > 0, "{faults:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_slower_than_the_timeout_are_retried() {
    let (_, reports) = converges_under(
        Faults {
            delay_every: Some(7),
            delay_ms: 1500,
            ..Faults::default()
        },
        "timeout_secs = 1",
    )
    .await;
    assert!(retries(&reports) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_pages_and_duplicates_within_a_page_change_nothing() {
    converges_under(
        Faults {
            duplicate_in_page_every: Some(2),
            ..Faults::default()
        },
        "",
    )
    .await;
    // Empty pages one object at a time: request numbers are global, and with objects running
    // at once one object could meet several of them in a row, which is the next test's case.
    let (sim, server) = start(small()).await;
    sim.apply_round(&changes());
    let dir = tempfile::tempdir().unwrap();
    for object in ["tickets", "users"] {
        sim.set_faults(Faults {
            empty_page_every: Some(2),
            duplicate_in_page_every: Some(3),
            ..Faults::default()
        });
        let mut settings = settings(&server, dir.path(), "");
        settings.tables.retain(|o| o.name == object);
        sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &[object]).await;
        sim.set_faults(Faults::default());
        sim.apply_round(&changes());
        sim.set_faults(Faults {
            empty_page_every: Some(2),
            ..Faults::default()
        });
        sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &[object]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_only_answers_empty_pages_fails_instead_of_looping() {
    let (sim, server) = start(small()).await;
    sim.set_faults(Faults {
        empty_page_every: Some(1),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    settings.tables.retain(|o| o.name == "tickets");
    let report = sync::run(&settings).await.unwrap();
    let message = failure(&report, "tickets");
    assert!(
        message.contains("empty pages in a row") && message.contains("does not advance"),
        "{message}"
    );
    assert!(
        message.contains("/api/v2/incremental/tickets/cursor.json"),
        "{message}"
    );
    nothing_half_written(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_faults_at_once() {
    converges_under(
        Faults {
            rate_limit_every: Some(5),
            retry_after: Some("0.01".into()),
            server_error_every: Some(7),
            server_error_status: Some(503),
            reset_every: Some(11),
            truncate_every: Some(13),
            html_every: Some(17),
            max_page_size: Some(20),
            empty_page_every: Some(19),
            duplicate_in_page_every: Some(3),
            ..Faults::default()
        },
        "max_attempts = 30",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_page_on_another_host_is_refused() {
    let (sim, server) = start(small()).await;
    sim.set_faults(Faults {
        foreign_next_url: true,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    // The exports, which follow their links at once (a list of one page follows none).
    settings
        .tables
        .retain(|t| t.source().kind != zendesk_lake::spec::StreamKind::List);
    let exported: Vec<&'static str> = settings.tables.iter().map(|&t| t.name.as_str()).collect();
    // A commit per page: a page that came with a foreign link would show up as a commit.
    settings.commit_rows = 1;
    let report = sync::run(&settings).await.unwrap();
    assert_eq!(
        versions(dir.path()).await,
        vec![None; CORE.len() + 1],
        "nothing was committed"
    );
    for object in &report.tables {
        let message = failure(&report, &object.table);
        assert!(
            message.contains("refusing to follow https://evil.example.com"),
            "{message}"
        );
        assert!(!message.contains("token"), "{message}");
    }
    // Not a single request went anywhere but the simulator, and nothing is half-written.
    assert!(sim.request_log().iter().all(|r| r.starts_with('/')));
    nothing_half_written(dir.path()).await;
    sim.set_faults(Faults::default());
    settings.commit_rows = 30;
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &exported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_account_budget_is_waited_out_instead_of_running_into_429s() {
    let (sim, server) = start(small()).await;
    sim.set_faults(Faults {
        budget_exhausted_every: Some(4),
        budget_reset: Some("0.3".into()),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    // One object, so that the waits cannot overlap.
    settings.tables.retain(|o| o.name == "tickets");
    sync_ok(&settings).await;
    // After each response that reported the budget spent (requests 4, 8, ...), the next
    // request waited out the announced reset.
    let arrivals = sim.request_arrivals();
    let mut checked = 0;
    for spent in (4..arrivals.len()).step_by(4) {
        // Request number `spent` is arrivals[spent - 1]; the next one is arrivals[spent].
        let gap = arrivals[spent] - arrivals[spent - 1];
        assert!(
            gap >= std::time::Duration::from_millis(300),
            "request {} came {gap:?} after a spent budget",
            spent + 1
        );
        checked += 1;
    }
    assert!(checked >= 2, "{checked}");
    assert_lake_matches_tables(&sim, dir.path(), &["tickets"]).await;
}
