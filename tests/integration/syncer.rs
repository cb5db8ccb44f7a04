//! The sync engine a process builds once ([`Syncer`]) and runs many times: credentials checked
//! once, runs that take turns, runs of some tables, and cancelled runs that leave every table at
//! a recorded commit.

use std::future::IntoFuture as _;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use zendesk_lake::sim::{Faults, Round};
use zendesk_lake::spec;
use zendesk_lake::sync::progress::Tracker;
use zendesk_lake::sync::{Outcome, SyncReport, Syncer};

use crate::common::*;

fn round() -> Round {
    Round {
        creates: 9,
        updates: 20,
        silent_updates: 6,
        deletes: 3,
    }
}

fn assert_ok(report: &SyncReport) {
    for table in &report.tables {
        assert_eq!(table.outcome, Outcome::Ok, "{}", table.table);
    }
}

fn credential_checks(log: &[String]) -> usize {
    log.iter().filter(|r| r.contains("/users/me")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_syncer_runs_again_and_again_and_checks_the_credentials_once() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    let syncer = Syncer::try_new(settings.clone()).await.unwrap();
    assert_ok(&syncer.run(&settings.tables).await.unwrap());
    assert_lake_matches(&sim, dir.path()).await;
    for _ in 0..2 {
        sim.apply_round(&round());
        assert_ok(&syncer.run(&settings.tables).await.unwrap());
        assert_lake_matches(&sim, dir.path()).await;
    }
    assert_eq!(credential_checks(&sim.request_log()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_one_syncer_at_once_take_turns_and_both_succeed() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round());
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    let syncer = Syncer::try_new(settings.clone()).await.unwrap();
    // Two runs of one lake at once would make one of them lose the exactly-once race (a
    // "concurrent run" failure); runs of one syncer wait for each other instead.
    let (first, second) = tokio::join!(
        syncer.run(&settings.tables).into_future(),
        syncer.run(&settings.tables).into_future()
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ok(&first);
    assert_ok(&second);
    assert_lake_matches(&sim, dir.path()).await;
    // One of them found the lake synced by the other.
    let commits = |r: &SyncReport| r.tables.iter().map(|t| t.commits).sum::<u64>();
    assert!(
        commits(&first) == 0 || commits(&second) == 0,
        "{} and {} commits",
        commits(&first),
        commits(&second)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_one_table_runs_its_stream_with_all_the_stream_s_tables() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    let syncer = Syncer::try_new(settings.clone()).await.unwrap();
    let metrics = spec::find("ticket_metrics").unwrap();
    let report = syncer.run(&[metrics]).await.unwrap();
    assert_ok(&report);
    let stream = &metrics.stream;
    let expected: Vec<&str> = (settings.tables.iter())
        .filter(|t| &t.stream == stream)
        .map(|t| t.name.as_str())
        .collect();
    let ran: Vec<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(ran, expected);
    assert!(ran.contains(&"tickets"), "{ran:?}");
    assert_lake_matches_tables(&sim, dir.path(), &ran).await;
    for other in settings.tables.iter().filter(|t| &t.stream != stream) {
        let lake = open_lake(dir.path());
        assert!(
            lake.open(&other.name).await.unwrap().is_none(),
            "{}",
            other.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_commits_nothing_more_and_the_next_run_converges() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round());
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    let syncer = Syncer::try_new(settings.clone()).await.unwrap();

    // Cancelled before it starts: no stream reads anything.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let requests = sim.request_log().len();
    let report = syncer
        .run(&settings.tables)
        .with_cancel(cancel)
        .await
        .unwrap();
    assert!(!report.failed());
    for table in &report.tables {
        assert_eq!(table.outcome, Outcome::Cancelled, "{}", table.table);
        assert_eq!(table.commits, 0, "{}", table.table);
    }
    assert_eq!(
        sim.request_log().len(),
        requests,
        "no request after the cancel"
    );

    // Cancelled once the streams have read some pages, each answer 40 ms late so that the
    // exports have many pages still to read: each stream stops at a recorded commit.
    sim.set_faults(Faults {
        delay_every: Some(1),
        delay_ms: 40,
        ..Faults::default()
    });
    let cancel = CancellationToken::new();
    let tracker = Tracker::default();
    let run = syncer
        .run(&settings.tables)
        .with_tracker(tracker.clone())
        .with_cancel(cancel.clone())
        .into_future();
    let trigger = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tracker.views().iter().map(|v| v.pages).sum::<u64>() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "no page was read");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cancel.cancel();
    };
    let (report, ()) = tokio::join!(run, trigger);
    let report = report.unwrap();
    assert!(
        report
            .tables
            .iter()
            .any(|t| t.outcome == Outcome::Cancelled),
        "{:?}",
        report.tables
    );
    for table in &report.tables {
        assert!(
            matches!(table.outcome, Outcome::Ok | Outcome::Cancelled),
            "{}: {:?}",
            table.table,
            table.outcome
        );
    }
    nothing_half_written(dir.path()).await;

    sim.set_faults(Faults::default());
    assert_ok(&syncer.run(&settings.tables).await.unwrap());
    assert_lake_matches(&sim, dir.path()).await;
}
