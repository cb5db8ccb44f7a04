//! What a person watching `sync` sees: the progress block on stderr (`--progress`), and the
//! summary's files and bytes per table, checked against the tables' own Delta logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;
use zendesk_lake::sim::Round;
use zendesk_lake::spec;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_zendesk-lake");

/// `zendesk-lake sync` of the CORE tables of the simulator at `base_url` into `lake`, with
/// stderr a pipe (not a terminal), and `args` added.
async fn sync(base_url: &str, dir: &Path, lake: &Path, args: &[&str]) -> Output {
    let pipeline = dir.join("fast.toml");
    std::fs::write(
        &pipeline,
        "[sync]\npage_size = 25\ncommit_rows = 60\n[zendesk]\naccount_requests_per_minute = 1000000\n\
         incremental_requests_per_minute = 1000000\nretry_base_ms = 5\n\
         [maintenance]\ndeletion_vectors = true\n",
    )
    .unwrap();
    let config = zendesk_lake::sim::SimConfig::default();
    let objects = CORE.join(",");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "sync",
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
        "--tables",
        &objects,
    ])
    .args(args)
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("ZENDESK_BASE_URL", base_url)
    .env("ZENDESK_OAUTH_TOKEN", &config.oauth_token);
    let out = cmd.output().await.expect("binary runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The streams that feed the CORE tables, from the schema registry, in order of first use.
fn core_streams() -> Vec<&'static str> {
    let mut streams: Vec<&str> = Vec::new();
    for table in CORE {
        let stream = spec::find(table).unwrap().stream.as_str();
        if !streams.contains(&stream) {
            streams.push(stream);
        }
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_always_draws_every_stream_and_never_or_off_a_terminal_draws_nothing() {
    let (_sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let streams = core_streams();

    let out = sync(
        server.base_url(),
        dir.path(),
        &dir.path().join("always"),
        &["--progress", "always"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The last block drawn is the final state of every stream, left above the summary.
    let header = format!("sync: {0}/{0} streams finished", streams.len());
    let last = stderr
        .rfind(&header)
        .unwrap_or_else(|| panic!("no final block {header:?} in {stderr}"));
    let block: Vec<&str> = stderr[last..].lines().skip(1).collect();
    assert_eq!(block.len(), streams.len(), "{}", &stderr[last..]);
    for (line, stream) in block.iter().zip(&streams) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[..2], [*stream, "done"], "{line}");
        assert!(
            line.contains(" pages ") && line.contains(" rows/s "),
            "{line}"
        );
    }
    // Redrawn in place, not appended.
    assert!(stderr.contains("\x1b[J"), "{stderr}");
    // Logs still print (above the block).
    assert!(stderr.contains("sync started"), "{stderr}");

    for (name, args) in [("never", &["--progress", "never"][..]), ("auto", &[][..])] {
        let out = sync(server.base_url(), dir.path(), &dir.path().join(name), args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("sync started"),
            "{name}: logs go on: {stderr}"
        );
        for drawn in ["streams finished", " rows/s ", "\x1b[J"] {
            assert!(!stderr.contains(drawn), "{name}: {drawn:?} in {stderr}");
        }
    }
}

/// Data files and their bytes added and removed in the versions of a table's Delta log after
/// `after`, read from the log's JSON commits (a file only given a new deletion vector counts as
/// neither); and the table's last version.
fn logged_files(table: &Path, after: Option<u64>) -> ([u64; 4], u64) {
    let mut files = [0u64; 4];
    let mut last = 0;
    for entry in std::fs::read_dir(table.join("_delta_log")).unwrap() {
        let path = entry.unwrap().path();
        let Some(version) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        last = last.max(version);
        if after.is_some_and(|after| version <= after) {
            continue;
        }
        let actions: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        // A file removed and added again with a deletion vector was not written: only its
        // vector changed.
        let revectored = |file: &Value| {
            actions.iter().any(|a| {
                a.get("add").is_some_and(|add| {
                    add["path"] == file["path"] && !add["deletionVector"].is_null()
                })
            }) && actions
                .iter()
                .any(|a| a.get("remove").is_some_and(|r| r["path"] == file["path"]))
        };
        for action in &actions {
            for (kind, slot) in [("add", 0), ("remove", 2)] {
                if let Some(file) = action.get(kind) {
                    if file["dataChange"] == Value::Bool(true) && !revectored(file) {
                        files[slot] += 1;
                        files[slot + 1] += file["size"].as_u64().unwrap();
                    }
                }
            }
        }
    }
    (files, last)
}

/// Per table of the summary: files added, bytes added, files removed, bytes removed.
fn summary_files(stdout: &str) -> BTreeMap<String, [u64; 4]> {
    let header: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("table "))
        .unwrap()
        .split_whitespace()
        .collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let columns = ["files+", "bytes+", "files-", "bytes-"].map(column);
    CORE.iter()
        .map(|table| {
            let line = stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(table))
                .unwrap_or_else(|| panic!("{table} in {stdout}"));
            let words: Vec<&str> = line.split_whitespace().collect();
            let files = columns.map(|c| words[c].parse().unwrap());
            (table.to_string(), files)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_the_files_and_bytes_each_table_logged_in_the_run() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");

    let out = sync(server.base_url(), dir.path(), &lake, &[]).await;
    let first = summary_files(&String::from_utf8_lossy(&out.stdout));
    let mut versions = BTreeMap::new();
    for table in CORE {
        let (logged, last) = logged_files(&lake.join(table), None);
        assert_eq!(first[table], logged, "{table}: first run");
        assert!(logged[0] > 0 && logged[1] > 0, "{table}: {logged:?}");
        versions.insert(table, last);
    }

    // Updates and deletes of rows already written: deletion vectors hide their old versions,
    // so no file is rewritten and the new versions go into one new file per table.
    sim.apply_round(&Round {
        creates: 5,
        updates: 30,
        silent_updates: 5,
        deletes: 4,
    });
    let out = sync(server.base_url(), dir.path(), &lake, &[]).await;
    let second = summary_files(&String::from_utf8_lossy(&out.stdout));
    for table in CORE {
        let (logged, _) = logged_files(&lake.join(table), Some(versions[table]));
        assert_eq!(second[table], logged, "{table}: second run");
    }
    let tickets = second["tickets"];
    assert_eq!(
        (tickets[0], tickets[2], tickets[3]),
        (1, 0, 0),
        "tickets: one file of changed and new rows, none rewritten: {tickets:?}"
    );
    assert_lake_matches(&sim, &lake).await;
}

/// The tracker a library run updates: every stream done, each export's records counted and its
/// position at its newest record (the time the export tells, from which it estimates what is
/// left), each read request counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_follows_each_export_to_its_newest_record() {
    use zendesk_lake::sync::progress::{StreamState, Tracker};
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, &dir.path().join("lake"), "");
    let tracker = Tracker::default();
    let report = zendesk_lake::commands::sync::sync(settings.clone(), tracker.clone())
        .await
        .unwrap();
    assert!(!report.failed(), "{:?}", report.tables);
    let views = tracker.views();
    assert_eq!(
        views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        core_streams()
    );
    for view in &views {
        assert_eq!(view.state, StreamState::Done, "{view:?}");
        let requests = report
            .tables
            .iter()
            .find(|o| o.stream == view.name)
            .unwrap()
            .requests;
        assert_eq!(view.requests, requests, "{view:?}");
        assert!(view.pages > 0, "{view:?}");
    }
    for stream in OBJECTS {
        let view = views.iter().find(|v| v.name == stream).unwrap();
        let field = &spec::find(stream).unwrap().source().watermark_field;
        let records = sim.records(stream);
        let newest = records
            .iter()
            .filter_map(|r| zendesk_lake::json::timestamp_micros(&r[field]))
            .max()
            .map(|us| us.div_euclid(1_000_000));
        assert_eq!(view.rows, records.len() as u64, "{view:?}");
        assert_eq!(view.position, newest, "{view:?}");
    }
}
