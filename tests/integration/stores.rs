//! Scenarios every object store must pass, run by the tests of each store (s3.rs, azure.rs)
//! against its emulator, and where it makes sense on a local folder too.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Output;

use zendesk_lake::lake::{ControlRow, Lake};

use crate::common::*;
use crate::crash::{account, changes, child_sync};
use crate::proxy::{Loss, Proxy, Rule};

/// Panics, showing the run's stderr, unless it exited with `code`.
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A first load and two incremental ones reproduce the account; an idle run commits nothing.
pub async fn full_and_incremental_syncs(lake: &Path) {
    let (sim, server) = start(small()).await;
    sim.apply_round(&changes());
    let settings = settings(&server, lake, "");
    sync_ok(&settings).await;
    assert_lake_matches(&sim, lake).await;
    for _ in 0..2 {
        sim.apply_round(&changes());
        sync_ok(&settings).await;
        assert_lake_matches(&sim, lake).await;
    }
    let before = versions(lake).await;
    sync_ok(&settings).await;
    assert_eq!(versions(lake).await, before, "an idle run commits nothing");
}

/// The binary, with the store's credentials in its environment only, is killed at `point`;
/// the next run converges, and so does an incremental one after it.
pub async fn a_crash_converges(lake: &Path, env: &[(String, String)], point: &str) {
    let (sim, server) = start(account()).await;
    let out = child_sync(&server, lake, Some(point.to_owned()), None, env).await;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exit(&child_sync(&server, lake, None, None, env).await, 0, point);
    assert_lake_matches(&sim, lake).await;
    sim.apply_round(&changes());
    sync_ok(&settings(&server, lake, "")).await;
    assert_lake_matches(&sim, lake).await;
}

/// The answers a proxy in front of a store loses: of log commits of data and control tables
/// (the first of each table being its creating commit), answered 503 instead (the client
/// retries and meets "already exists") or with the connection closed.
pub fn lost_answers() -> Rule {
    Rule {
        method: "PUT",
        contains: ["ticket_field_history", "tickets", "_sync_state"]
            .map(|t| format!("/{t}/_delta_log/"))
            .to_vec(),
        ends_with: ".json",
        losses: vec![
            (1, Loss::SlowDown),
            (2, Loss::Close),
            (5, Loss::Close),
            (8, Loss::SlowDown),
            (12, Loss::Close),
            (17, Loss::SlowDown),
        ],
    }
}

/// The store applies commits whose answers `proxy` loses on the way back (`env` reaches the
/// store through it): a first load and an incremental one go on as committed and equal the
/// account, and the run after them has nothing to do.
pub async fn lost_answers_of_applied_commits_converge(
    lake: &Path,
    env: &[(String, String)],
    proxy: &Proxy,
) {
    let (sim, server) = start(account()).await;
    for round in 0..2 {
        if round > 0 {
            sim.apply_round(&changes());
        }
        let out = child_sync(&server, lake, None, None, env).await;
        assert_exit(&out, 0, &format!("round {round}, answers lost"));
        assert_lake_matches(&sim, lake).await;
    }
    assert!(proxy.lost() >= 3, "only {} answers were lost", proxy.lost());
    let before = versions(lake).await;
    assert_exit(
        &child_sync(&server, lake, None, None, env).await,
        0,
        "idle run",
    );
    assert_eq!(versions(lake).await, before, "an idle run commits nothing");
}

/// Two syncs of one lake at once, on a first load and on incremental ones: each either
/// succeeds or fails saying another run committed concurrently; a later run converges.
pub async fn concurrent_runs(lake: &Path, env: &[(String, String)]) {
    let (sim, server) = start(account()).await;
    for round in 0..3 {
        if round > 0 {
            sim.apply_round(&changes());
        }
        let (a, b) = tokio::join!(
            child_sync(&server, lake, None, None, env),
            child_sync(&server, lake, None, None, env)
        );
        for out in [&a, &b] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => {}
                Some(1) => assert!(stderr.contains("committed to it concurrently"), "{stderr}"),
                other => panic!("round {round}: exit {other:?}: {stderr}"),
            }
        }
        // Whatever the interleaving: one row per id, nothing lost once a run completes alone.
        assert_one_row_per_id(lake).await;
        let alone = child_sync(&server, lake, None, None, env).await;
        assert_exit(&alone, 0, &format!("round {round}, alone"));
        assert_lake_matches(&sim, lake).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_of_one_local_lake_never_corrupt_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_runs(&dir.path().join("lake"), &[]).await;
}

/// A control row of the `organizations` stream in the epoch `epoch`.
fn control_row(run: usize, seq: i64, epoch: &str) -> ControlRow {
    ControlRow {
        stream: "organizations".into(),
        seq,
        epoch: epoch.into(),
        position: serde_json::json!({"start_time": 1}),
        watermark: None,
        tables: Default::default(),
        run_id: format!("run {run}"),
        committed_at: 0,
    }
}

/// Runs that create the control table and an object's table at the same moment all succeed.
/// Delta lets the loser of a create commit its create actions as the next version, which makes
/// a third writer's append conflict ("metadata changed"): a control row is a blind append, so it
/// is retried on top, and an empty table created twice is one table. Repeated on fresh lakes so
/// that the race is met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_creating_the_same_tables_at_once_all_succeed() {
    let spec = zendesk_lake::spec::find("organizations").unwrap();
    const RUNS: usize = 3;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        // Spawned, so that the runs go on in parallel on the runtime's threads. Each stands
        // for the commits of a different table (its own table id), so all rows must land.
        let runs: Vec<_> = (0..RUNS)
            .map(|run| {
                let lake = Lake::try_new(uri, HashMap::new()).unwrap();
                let table = format!("table {run}");
                tokio::spawn(async move {
                    lake.record(&control_row(run, 1, &table)).await?;
                    lake.ensure_table(spec).await?;
                    lake.record(&control_row(run, 2, &table)).await
                })
            })
            .collect();
        for run in runs {
            run.await.unwrap().unwrap();
        }
        let lake = Lake::try_new(uri, HashMap::new()).unwrap();
        let mut history = lake.history().await.unwrap();
        history.sort_by_key(|r| (r.run_id.clone(), r.seq));
        let expected: Vec<_> = (0..RUNS)
            .flat_map(|run| {
                let table = format!("table {run}");
                [control_row(run, 1, &table), control_row(run, 2, &table)]
            })
            .collect();
        assert_eq!(history, expected);
        assert_eq!(lake_rows(dir.path(), "organizations").await.len(), 0);
    }
}

/// The control row of one data commit is recorded once, however many runs record it (a run
/// recovering a row from the Delta log while the run that made the commit records it too),
/// at the same moment or later; the same seq of a table created again is a new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_row_is_recorded_once_however_many_runs_record_it() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().to_str().unwrap();
    for seq in 1..=4 {
        let runs: Vec<_> = (0..3)
            .map(|run| {
                let lake = Lake::try_new(uri, HashMap::new()).unwrap();
                tokio::spawn(async move { lake.record(&control_row(run, seq, "table")).await })
            })
            .collect();
        for run in runs {
            run.await.unwrap().unwrap();
        }
    }
    let lake = Lake::try_new(uri, HashMap::new()).unwrap();
    lake.record(&control_row(9, 2, "table")).await.unwrap();
    let mut seqs: Vec<_> = lake
        .history()
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4]);
    lake.record(&control_row(9, 1, "table recreated"))
        .await
        .unwrap();
    assert_eq!(lake.history().await.unwrap().len(), 5);
}
