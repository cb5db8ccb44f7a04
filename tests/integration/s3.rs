//! Lakes on S3, against moto's S3 server on loopback (`pip install "moto[server]"`): full and
//! incremental syncs, a crash between data and control commits, and concurrent runs.
//!
//! Each test starts its own `moto_server` (or uses `ZENDESK_LAKE_TEST_S3_ENDPOINT`). Without
//! moto on PATH the tests say so and pass, unless `ZENDESK_LAKE_REQUIRE_S3` is set, as CI does.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::common::*;
use crate::crash::{account, changes, child_sync};

/// A local S3 server for one test, stopped on drop.
struct S3 {
    endpoint: String,
    _server: Option<Emulator>,
}

impl S3 {
    async fn start() -> Option<S3> {
        if let Ok(endpoint) = std::env::var("ZENDESK_LAKE_TEST_S3_ENDPOINT") {
            return Some(S3 {
                endpoint,
                _server: None,
            });
        }
        let server = Emulator::start(
            "moto_server",
            &["-H", "127.0.0.1", "-p", "{port}"],
            "ZENDESK_LAKE_REQUIRE_S3",
            "pip install \"moto[server]\"",
        )
        .await?;
        Some(S3 {
            endpoint: server.endpoint.clone(),
            _server: Some(server),
        })
    }

    fn options(&self) -> HashMap<String, String> {
        HashMap::from([
            ("AWS_ENDPOINT_URL".to_owned(), self.endpoint.clone()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
            ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ])
    }

    /// A new bucket and a lake URI in it, registered with the test helpers.
    async fn lake(&self, name: &str) -> PathBuf {
        let bucket = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let status = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "creating bucket {bucket}: {status}");
        let uri = format!("s3://{bucket}/lake");
        STORAGE.lock().unwrap().push((uri.clone(), self.options()));
        PathBuf::from(uri)
    }

    fn env(&self) -> Vec<(String, String)> {
        self.options().into_iter().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_syncs_on_s3() {
    let Some(s3) = S3::start().await else { return };
    let lake = s3.lake("sync").await;
    let (sim, server) = start(small()).await;
    sim.apply_round(&changes());
    let settings = settings(&server, &lake, "");
    sync_ok(&settings).await;
    assert_lake_matches(&sim, &lake).await;
    for _ in 0..2 {
        sim.apply_round(&changes());
        sync_ok(&settings).await;
        assert_lake_matches(&sim, &lake).await;
    }
    let before = versions(&lake).await;
    sync_ok(&settings).await;
    assert_eq!(
        versions(&lake).await,
        before,
        "an idle run commits nothing on S3 either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_data_and_control_commit_on_s3_converges() {
    let Some(s3) = S3::start().await else { return };
    for point in [
        "after_data_commit:2",
        "before_data_commit:3",
        "page_decoded:4",
    ] {
        let lake = s3.lake("crash").await;
        let (sim, server) = start(account()).await;
        let out = child_sync(&server, &lake, Some(point.to_owned()), None, &s3.env()).await;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = child_sync(&server, &lake, None, None, &s3.env()).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_lake_matches(&sim, &lake).await;
        sim.apply_round(&changes());
        sync_ok(&settings(&server, &lake, "")).await;
        assert_lake_matches(&sim, &lake).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_of_one_lake_on_s3_never_corrupt_or_duplicate() {
    let Some(s3) = S3::start().await else { return };
    let lake = s3.lake("concurrent").await;
    concurrent_runs(&lake, &s3.env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_of_one_local_lake_never_corrupt_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_runs(&dir.path().join("lake"), &[]).await;
}

/// Two syncs of one lake at once, on a first load and on an incremental one: each either
/// succeeds or fails saying another run committed concurrently; a later run converges.
async fn concurrent_runs(lake: &std::path::Path, env: &[(String, String)]) {
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
        // Whatever the interleaving: one row per id (checked by lake_rows), nothing lost once
        // a run completes alone.
        let written = versions(lake).await;
        for (object, version) in OBJECTS.iter().zip(written) {
            if version.is_some() {
                lake_rows(lake, object).await;
            }
        }
        let out = child_sync(&server, lake, None, None, env).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_lake_matches(&sim, lake).await;
    }
}

/// Runs that create the control table and an object's table at the same moment all succeed.
/// Delta lets the loser of a create commit its create actions as the next version, which makes
/// a third writer's append conflict ("metadata changed"): a control row is a blind append, so it
/// is retried on top, and an empty table created twice is one table. Repeated on fresh lakes so
/// that the race is met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_creating_the_same_tables_at_once_all_succeed() {
    use zendesk_lake::lake::{ControlRow, Lake};
    let spec = zendesk_lake::objects::find("organizations").unwrap();
    let row = move |run: usize, seq| ControlRow {
        object: "organizations".into(),
        seq,
        cursor: None,
        start_time: 1,
        boundary: vec![],
        watermark: None,
        rows_upserted: 0,
        rows_deleted: 0,
        run_id: format!("run {run}"),
        data_version: 0,
        committed_at: 0,
    };
    const RUNS: usize = 3;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        // Spawned, so that the runs go on in parallel on the runtime's threads.
        let runs: Vec<_> = (0..RUNS)
            .map(|run| {
                let lake = Lake::try_new(uri, HashMap::new()).unwrap();
                tokio::spawn(async move {
                    lake.record(&row(run, 1)).await?;
                    lake.ensure_table(spec).await?;
                    lake.record(&row(run, 2)).await
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
            .flat_map(|run| [row(run, 1), row(run, 2)])
            .collect();
        assert_eq!(history, expected);
        assert_eq!(lake_rows(dir.path(), "organizations").await.len(), 0);
    }
}
