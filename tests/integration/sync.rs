//! Syncs against the simulated account: first load, incremental rounds, idle runs, faults and
//! failures. Every test ends by comparing the whole lake with the simulator.

use zendesk_lake::sim::{Faults, Round};
use zendesk_lake::sync::{self, Outcome};

use crate::common::*;

fn round(n: usize) -> Round {
    Round {
        creates: 7 + n,
        updates: 25,
        silent_updates: 12,
        deletes: 4,
    }
}

fn export_requests(log: &[String]) -> usize {
    log.iter().filter(|r| r.contains("/incremental/")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_reproduces_the_account_with_deleted_rows() {
    let (sim, server) = start(small()).await;
    // Deleted records must already exist in the first export.
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let report = sync_ok(&settings(&server, dir.path(), "")).await;
    assert_lake_matches(&sim, dir.path()).await;
    for object in OBJECTS {
        let in_sim = expected_rows(&sim, object).len() as u64;
        let r = report.tables.iter().find(|o| o.table == object).unwrap();
        assert_eq!(r.fetched, in_sim, "{object}: every record fetched once");
        assert_eq!(r.upserted, in_sim, "{object}");
        assert!(
            r.commits >= 2,
            "{object}: pages are grouped into several commits"
        );
        assert!(
            deleted_count(dir.path(), object).await > 0,
            "{object}: deleted rows kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_rounds_converge_including_silent_updates() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    sync_ok(&settings).await;
    assert_lake_matches(&sim, dir.path()).await;
    for n in 1..=3 {
        sim.apply_round(&round(n));
        let report = sync_ok(&settings).await;
        assert_lake_matches(&sim, dir.path()).await;
        let tickets = report.tables.iter().find(|o| o.table == "tickets").unwrap();
        // Only what changed is fetched: creates + updates + silent updates + deletes at most.
        let r = round(n);
        assert!(tickets.fetched > 0);
        assert!(tickets.fetched as usize <= r.creates + r.updates + r.silent_updates + r.deletes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_with_nothing_new_commits_nothing_and_asks_once_per_export() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    sync_ok(&settings).await;
    let before = versions(dir.path()).await;
    let log_before = sim.request_log().len();
    let report = sync_ok(&settings).await;
    assert_eq!(versions(dir.path()).await, before, "no Delta commit");
    let log = sim.request_log();
    // One request per export stream; lists are read whole (one page each here).
    let exports = zendesk_lake::sync::streams_of(&settings.tables)
        .iter()
        .filter(|(s, _)| s.kind != zendesk_lake::spec::StreamKind::List)
        .count();
    assert_eq!(
        export_requests(&log[log_before..]),
        exports,
        "{:?}",
        &log[log_before..]
    );
    for object in &report.tables {
        assert_eq!(object.commits, 0, "{}", object.table);
        if !is_snapshot(&object.table) {
            assert_eq!(object.fetched, 0, "{}", object.table);
        }
    }
    assert_lake_matches(&sim, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_do_not_change_the_result() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    sim.set_faults(Faults {
        rate_limit_every: Some(3),
        retry_after: Some("0.02".into()),
        server_error_every: Some(5),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    let report = sync_ok(&settings).await;
    assert!(report.tables.iter().map(|o| o.retries).sum::<u64>() > 0);
    assert_lake_matches(&sim, dir.path()).await;
    // Missing Retry-After falls back to backoff.
    sim.set_faults(Faults {
        rate_limit_every: Some(2),
        retry_after: None,
        ..Faults::default()
    });
    sim.apply_round(&round(1));
    sync_ok(&settings).await;
    assert_lake_matches(&sim, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_sync_keeps_the_last_commit_and_the_next_sync_converges() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    // The preflight and a few pages succeed, then every request fails until retries run out.
    sim.set_faults(Faults {
        fail_from_request: Some(12),
        ..Faults::default()
    });
    let report = sync::run(&settings).await.unwrap();
    assert!(report.failed());
    let failed: Vec<_> = report
        .tables
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Failed(_)))
        .collect();
    assert!(!failed.is_empty());
    for o in &failed {
        let message = failure(&report, &o.table);
        assert!(message.starts_with(&format!("{}:", o.table)), "{message}");
        assert!(message.contains("/api/v2/"), "{message}");
        assert!(message.contains("500"), "{message}");
    }
    // Every table is at the version its last control row names: nothing half-written.
    nothing_half_written(dir.path()).await;
    assert_one_row_per_id(dir.path()).await;
    sim.set_faults(Faults::default());
    sync_ok(&settings).await;
    assert_lake_matches(&sim, dir.path()).await;
    sim.apply_round(&round(1));
    sync_ok(&settings).await;
    assert_lake_matches(&sim, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_export_boundary_duplicates_are_not_reapplied() {
    // Organizations share seconds; with pages of 25 the boundary second is re-sent on every page.
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    let report = sync_ok(&settings).await;
    let orgs = report
        .tables
        .iter()
        .find(|o| o.table == "organizations")
        .unwrap();
    assert_eq!(
        orgs.fetched as usize,
        expected_rows(&sim, "organizations").len()
    );
    assert_lake_matches(&sim, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_export_stuck_on_one_second_fails_loudly() {
    // Zendesk cuts a second that holds more records than its largest page: the export cannot
    // advance, and looping forever would be the silent alternative.
    let (sim, server) = start(small()).await;
    sim.set_faults(Faults {
        stall_time_export_over: Some(0),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    settings.tables.retain(|o| o.name == "organizations");
    let report = sync::run(&settings).await.unwrap();
    let message = failure(&report, "organizations");
    assert!(
        message.contains("organizations") && message.contains("stalled"),
        "{message}"
    );
    assert!(
        message.contains("/api/v2/incremental/organizations.json"),
        "{message}"
    );
    // It first asked for pages large enough to hold the second: up to Zendesk's 1000.
    assert!(sim
        .request_log()
        .iter()
        .any(|r| r.contains("per_page=1000")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowded_seconds_and_tiny_pages_still_converge() {
    // Pages of 3 against seconds shared by many organizations: every page ends inside a crowded
    // second and has to grow or step over it.
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(1));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    settings.page_size = 3;
    sync_ok(&settings).await;
    sim.apply_round(&round(2));
    sync_ok(&settings).await;
    assert_lake_matches(&sim, dir.path()).await;
}
