//! Crash tests: `zendesk-lake sync` as a child process, killed with SIGKILL at many points
//! (failpoints at every step of a commit, and random moments), then run again. Whatever the
//! point, the lake must end equal to the simulator with one row per id, and the run after the
//! recovery must find nothing left to do.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::process::Command;
use zendesk_lake::failpoint::POINTS;
use zendesk_lake::sim::{Round, SimConfig, SimServer};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_zendesk-lake");
/// Crash cases run at once: each has its own simulator and lake.
const PARALLEL: usize = 3;

pub fn account() -> SimConfig {
    SimConfig {
        tickets: 90,
        users: 40,
        organizations: 30,
        ..SimConfig::default()
    }
}

pub fn changes() -> Round {
    Round {
        creates: 10,
        updates: 20,
        silent_updates: 8,
        deletes: 5,
    }
}

/// Small pages and commits, so a run passes every failpoint many times; the [`CORE`] tables.
const PIPELINE: &str = r#"
tables = ["tickets", "users", "organizations", "ticket_metrics", "ticket_comments",
           "ticket_field_history", "groups"]
[zendesk]
account_requests_per_minute = 1000000
incremental_requests_per_minute = 1000000
retry_base_ms = 5
[sync]
page_size = 10
commit_rows = 20
"#;

/// `zendesk-lake sync` of the simulator's account into `lake` as a child process; `env` adds
/// variables (object-store credentials).
pub async fn child_sync(
    server: &SimServer,
    lake: &Path,
    failpoint: Option<String>,
    kill_after: Option<Duration>,
    env: &[(String, String)],
) -> Output {
    child_sync_of(PIPELINE, server, lake, failpoint, kill_after, env).await
}

/// [`child_sync`] with another pipeline file.
async fn child_sync_of(
    text: &str,
    server: &SimServer,
    lake: &Path,
    failpoint: Option<String>,
    kill_after: Option<Duration>,
    env: &[(String, String)],
) -> Output {
    let pipeline = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pipeline.path(), text).unwrap();
    let pipeline = pipeline.path();
    let config = SimConfig::default();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "sync",
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ])
    .env_clear()
    .envs(config.env(server.base_url()))
    .env("RUST_LOG", "warn")
    .envs(env.iter().map(|(k, v)| (k, v)))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    if let Some(point) = failpoint {
        cmd.env("ZENDESK_LAKE_FAILPOINT", point);
    }
    let mut child = cmd.spawn().expect("binary starts");
    if let Some(delay) = kill_after {
        tokio::select! {
            _ = child.wait() => {}
            _ = tokio::time::sleep(delay) => {
                // SIGKILL, as start_kill sends on Unix.
                let _ = child.start_kill();
            }
        }
    }
    child.wait_with_output().await.expect("child output")
}

enum Kill {
    Failpoint(&'static str, u32),
    After(Duration),
}

/// One crash case: optionally a complete first sync and a round of changes, then a sync killed
/// at `kill`, then a clean sync. Returns whether the kill really happened.
async fn case(kill: Kill, incremental: bool) -> bool {
    let (sim, server) = start(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    if incremental {
        sync_ok(&settings(&server, &lake, "")).await;
        sim.apply_round(&changes());
    }
    let (failpoint, delay, label) = match kill {
        Kill::Failpoint(point, n) => (Some(format!("{point}:{n}")), None, format!("{point}:{n}")),
        Kill::After(d) => (None, Some(d), format!("after {d:?}")),
    };
    let out = child_sync(&server, &lake, failpoint, delay, &[]).await;
    let killed = out.status.signal() == Some(9);
    if !killed {
        eprintln!("{label} (incremental {incremental}): the run ended before the kill");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{label}: a run that is not killed must succeed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The next run converges, through the binary as a scheduler would run it.
    let out = child_sync(&server, &lake, None, None, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{label} (incremental {incremental}): recovery failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_lake_matches(&sim, &lake).await;
    // And leaves nothing behind: a further run fetches and commits nothing.
    let before = versions(&lake).await;
    let report = sync_ok(&settings(&server, &lake, "")).await;
    for object in &report.tables {
        // Lists are read whole on every run; exports fetch nothing more.
        if !is_snapshot(&object.table) {
            assert_eq!(
                object.fetched, 0,
                "{label}: {} refetched after recovery",
                object.table
            );
        }
        assert_eq!(object.commits, 0, "{label}: {}", object.table);
    }
    assert_eq!(versions(&lake).await, before, "{label}");
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_step_of_a_sync_never_loses_or_duplicates() {
    let mut cases = Vec::new();
    for &point in POINTS {
        for n in [1, 2, 3, 5, 7] {
            cases.push((Kill::Failpoint(point, n), false));
        }
        for n in [1, 2, 4, 6] {
            cases.push((Kill::Failpoint(point, n), true));
        }
    }
    // Random moments too: inside Delta commits, between pages, during start-up.
    for (i, ms) in [40u64, 90, 150, 220, 300, 400, 520, 650]
        .into_iter()
        .enumerate()
    {
        cases.push((Kill::After(Duration::from_millis(ms)), i % 2 == 1));
    }
    let kills = AtomicUsize::new(0);
    futures::stream::iter(cases)
        .for_each_concurrent(PARALLEL, |(kill, incremental)| {
            let kills = &kills;
            async move {
                if case(kill, incremental).await {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    let kills = kills.into_inner();
    assert!(kills >= 50, "only {kills} runs were really killed");
}

/// Side conversations read their tickets from the lake after the ticket stream committed: a
/// kill between the two streams, or inside either, loses nothing, and the next run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_tickets_and_their_side_conversations_loses_nothing() {
    let pipeline = PIPELINE.replace(
        r#"tables = ["tickets", "users", "organizations", "ticket_metrics", "ticket_comments",
           "ticket_field_history", "groups"]"#,
        r#"tables = ["tickets", "side_conversations"]"#,
    );
    assert!(pipeline.contains("side_conversations"));
    let tables = ["tickets", "side_conversations"];
    let mut killed = 0;
    // Control commits 1..: the tickets' batches first, then one per parent batch.
    for (n, incremental) in [
        (3, false),
        (5, false),
        (6, false),
        (9, false),
        (2, true),
        (4, true),
    ] {
        let (sim, server) = start(account()).await;
        sim.apply_round(&changes());
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        if incremental {
            let out = child_sync_of(&pipeline, &server, &lake, None, None, &[]).await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            sim.apply_round(&changes());
        }
        let point = format!("after_control_commit:{n}");
        let out = child_sync_of(&pipeline, &server, &lake, Some(point.clone()), None, &[]).await;
        if out.status.signal() == Some(9) {
            killed += 1;
        }
        let out = child_sync_of(&pipeline, &server, &lake, None, None, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_lake_matches_tables(&sim, &lake, &tables).await;
    }
    assert!(killed >= 4, "only {killed} runs were killed");
}
