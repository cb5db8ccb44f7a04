//! The benchmark suite end to end on a small account: every measured run is answered from the
//! pre-rendered pages (no cache misses), makes no more requests than the minimum, and leaves the
//! lake holding every ticket the account's rounds created; the `listen` scenarios see every
//! change in the lake, have every delivery verified, and make at most one run per debounce
//! window and stream; the import scenario creates every ticket of its table. Structure only: timing targets are the bench's to report, not a test's.

use std::time::Duration;

use zendesk_lake::commands::bench::{self, BenchConfig};
use zendesk_lake::lake::Lake;

const BIN: &str = env!("CARGO_BIN_EXE_zendesk-lake");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_every_scenario_from_pre_rendered_pages() {
    let dir = tempfile::tempdir().unwrap();
    let tickets = 400;
    let config = BenchConfig {
        tickets,
        dir: dir.path().join("bench"),
        runs: 3,
        exe: BIN.into(),
        budget_tickets: 0,
        deletion_vectors: true,
        wrap: Vec::new(),
        listen_changes: 3,
        intake_deliveries: 500,
        intake_clients: 4,
        debounce: Duration::from_secs(1),
        import_tickets: 250,
    };
    let report = bench::run(&config).await.unwrap();

    let listen = report.listen.as_ref().expect("the listen scenarios ran");
    let fresh = listen
        .freshness
        .as_ref()
        .expect("the freshness scenario ran");
    assert_eq!(fresh.changes, 3);
    assert_eq!(fresh.latencies.len(), 3, "a change never reached the lake");
    assert!(fresh.deliveries >= 3, "{fresh:?}");
    assert_eq!(fresh.deliveries_ok, fresh.deliveries, "{fresh:?}");
    let intake = listen.intake.as_ref().expect("the intake scenario ran");
    assert_eq!(
        intake.statuses.get(&200),
        Some(&500),
        "{:?}",
        intake.statuses
    );
    assert_eq!(intake.statuses.len(), 1, "{:?}", intake.statuses);
    let windows = intake.windows(config.debounce);
    assert!(!intake.runs.is_empty(), "the burst made no run");
    for (stream, runs) in &intake.runs {
        assert!(
            *runs <= windows + 1,
            "{stream}: {runs} runs in {:.2} s of burst",
            intake.seconds
        );
    }
    assert!(listen.peak_rss_mb > 0.0, "{listen:?}");
    let text = bench::markdown(&config, &report);
    assert!(text.contains("| p50 |"), "{text}");
    assert!(text.contains("| verified deliveries a second"), "{text}");

    let import = report.import.as_ref().expect("the import scenario ran");
    assert_eq!(import.created, 250, "{import:?}");
    assert_eq!(import.batches, 3, "{import:?}");
    assert_eq!(import.refused, 0, "{import:?}");
    assert!(import.requests >= import.needed(), "{import:?}");
    assert!(text.contains("| 429s |"), "{text}");

    let labels: Vec<&str> = report.runs.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels.len(), 5, "{labels:?}");
    for run in &report.runs {
        assert_eq!(run.cache_misses, 0, "{}: answered by rendering", run.label);
        assert!(
            run.requests <= run.minimum_requests && run.requests > 1,
            "{}: {} requests for a minimum of {}",
            run.label,
            run.requests,
            run.minimum_requests
        );
        assert!(run.json_bytes > 0, "{}: no page bytes counted", run.label);
    }
    let backfill = &report.runs[0];
    assert!(backfill.records.values().sum::<u64>() > tickets as u64);
    for (table, delta) in &backfill.tables {
        assert!(delta.files_after > 0, "backfill wrote no file of {table}");
        assert_eq!(delta.files_removed, 0, "backfill removed files of {table}");
    }
    // With deletion vectors, the 1% run changes rows of `tickets` without rewriting a file.
    let incremental = &report.runs[1];
    let tickets_delta = &incremental.tables["tickets"];
    assert_eq!(tickets_delta.files_removed, 0, "{tickets_delta:?}");
    assert!(tickets_delta.versions > 0, "{tickets_delta:?}");

    // The page cache is gone with the bench's simulator.
    assert!(!config.dir.join("pages.cache").exists());

    // Every created ticket is in the lake (deletes are soft): the account's tickets, a
    // thousandth created by each of the two 1% rounds (at least one), a ten-thousandth by each
    // earlier run (at least one).
    let created = 2 * (tickets / 1000).max(1) + config.runs * (tickets / 10_000).max(1);
    let lake = Lake::try_new(
        config.dir.join("lake").to_str().unwrap(),
        Default::default(),
    )
    .unwrap();
    let rows: usize = lake
        .scan("tickets")
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, tickets + created);
    // The report's live rows, read off the files' statistics and deletion vectors, agree.
    let last = report
        .runs
        .iter()
        .rev()
        .find(|r| r.tables.contains_key("tickets"));
    assert_eq!(last.unwrap().tables["tickets"].rows_after, rows as u64);
}
