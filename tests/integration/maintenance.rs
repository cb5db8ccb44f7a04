//! Table maintenance: checkpoints at the interval, optimize (rows unchanged, files fewer and
//! sorted by key), vacuum (nothing recent removed by default; old versions and orphans of a
//! killed run removed past an explicit retention), optimize between and during syncs (nothing
//! lost, exactly one control row per batch), and the sync's automatic compaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::TryStreamExt;
use serde_json::{Map, Value};
use tokio::process::Command;
use zendesk_lake::config::Settings;
use zendesk_lake::datafusion::prelude::SessionContext;
use zendesk_lake::lake::maintenance::{Layout, OptimizeOptions, VacuumOptions};
use zendesk_lake::lake::{Error, Lake};
use zendesk_lake::sim::{Round, SimServer};
use zendesk_lake::sync::{self, Outcome};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_zendesk-lake");

fn round() -> Round {
    Round {
        creates: 12,
        updates: 25,
        silent_updates: 8,
        deletes: 4,
    }
}

/// Test settings for `objects`, with pages and commits of `rows` records (the smaller, the more
/// small files and commits) and, unless `auto`, no automatic compaction.
fn fast(server: &SimServer, lake: &Path, objects: &[&str], rows: usize, auto: bool) -> Settings {
    let mut settings = settings(server, lake, "");
    settings
        .tables
        .retain(|t| objects.contains(&t.name.as_str()));
    settings.page_size = rows as u32;
    settings.commit_rows = rows;
    settings.maintenance.auto_optimize = auto;
    settings
}

/// A ticket stream, a list and the control table: the tables most tests maintain.
const TABLES: [&str; 3] = ["tickets", "users", "groups"];

/// The tables of [`CORE`] and the control table (maintenance skips those that do not exist).
fn all_names() -> Vec<&'static str> {
    CORE.iter().copied().chain(["_sync_state"]).collect()
}

/// Paths (relative to the table's root) of the data files the table's current version reads.
async fn active_files(lake: &Lake, name: &str) -> BTreeSet<String> {
    let table = lake.open(name).await.unwrap().unwrap();
    let files = table.snapshot().unwrap().log_data();
    files.iter().map(|f| f.path().into_owned()).collect()
}

/// Paths of the files the table's log marks removed.
async fn tombstones(lake: &Lake, name: &str) -> BTreeSet<String> {
    let table = lake.open(name).await.unwrap().unwrap();
    let log = table.log_store();
    let removed: Vec<_> = table
        .snapshot()
        .unwrap()
        .all_tombstones(log.as_ref())
        .try_collect()
        .await
        .unwrap();
    removed.iter().map(|t| t.path().to_string()).collect()
}

/// Every parquet file under a table's directory, relative to it.
fn files_on_disk(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("_delta_log") {
                    walk(root, &path, out);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let relative = path.strip_prefix(root).unwrap();
                out.insert(relative.to_str().unwrap().to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Every row of a table at one of its versions.
async fn rows_at(
    lake: &Lake,
    name: &str,
    version: u64,
) -> Result<BTreeMap<String, Map<String, Value>>, String> {
    let mut table = lake.open(name).await.unwrap().unwrap();
    table
        .load_version(version)
        .await
        .map_err(|e| e.to_string())?;
    let ctx = SessionContext::new();
    let provider = table.table_provider().await.map_err(|e| e.to_string())?;
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", provider).unwrap();
    let df = ctx
        .sql("SELECT * FROM t")
        .await
        .map_err(|e| e.to_string())?;
    let batches = df.collect().await.map_err(|e| e.to_string())?;
    Ok(rows_by_id(&batches))
}

/// The key range `(min id, max id)` of every data file of a table, from the Delta statistics.
async fn key_ranges(lake: &Lake, name: &str) -> Vec<(i64, i64)> {
    let table = lake.open(name).await.unwrap().unwrap();
    let files = table.snapshot().unwrap().log_data();
    let mut ranges: Vec<(i64, i64)> = files
        .iter()
        .map(|f| {
            let stats: Value = serde_json::from_str(&f.stats().unwrap()).unwrap();
            let bound = |side: &str| stats[side]["id"].as_i64().unwrap();
            (bound("minValues"), bound("maxValues"))
        })
        .collect();
    ranges.sort_unstable();
    ranges
}

async fn optimize_all(lake: &Lake, options: &OptimizeOptions) {
    for name in all_names() {
        lake.optimize(name, options).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_written_every_ten_commits_in_data_and_control_tables() {
    let (sim, server) = start(crate::crash::account()).await;
    sim.apply_round(&round());
    let dir = tempfile::tempdir().unwrap();
    sync_ok(&fast(&server, dir.path(), &["tickets", "users"], 4, false)).await;
    let lake = open_lake(dir.path());
    for name in ["tickets", "_sync_state"] {
        let table = lake.open(name).await.unwrap().unwrap();
        let config = table.snapshot().unwrap().metadata().configuration().clone();
        assert_eq!(
            config.get("delta.checkpointInterval").map(String::as_str),
            Some("10"),
            "{name}"
        );
        let version = table.version().unwrap();
        assert!(version >= 19, "{name}: only {version} commits");
        let log = dir.path().join(name).join("_delta_log");
        for v in 0..=version {
            let checkpoint = log.join(format!("{v:020}.checkpoint.parquet"));
            assert_eq!(checkpoint.exists(), (v + 1) % 10 == 0, "{name} version {v}");
        }
        assert!(log.join("_last_checkpoint").exists(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_keeps_every_row_and_sorts_the_files_by_key() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round());
    let dir = tempfile::tempdir().unwrap();
    let objects = ["tickets", "ticket_field_history", "groups"];
    let settings = fast(&server, dir.path(), &objects, 25, false);
    sync_ok(&settings).await;
    let lake = open_lake(dir.path());
    // The table with the most rows: the writer starts a new file every 1024 rows at most.
    let name = "ticket_field_history";
    let rows_before = lake_rows(dir.path(), name).await;
    assert!(rows_before.len() > 2048, "{} rows", rows_before.len());
    let before_files = lake.file_stats(name, 0).await.unwrap().unwrap();
    let before_version = lake.open(name).await.unwrap().unwrap().version().unwrap();

    // The smallest target, so that the table comes out in several files.
    let options = OptimizeOptions {
        layout: Layout::Cluster,
        target_file_size: 1,
    };
    let report = lake.optimize(name, &options).await.unwrap().unwrap();
    assert_eq!(report.clustered_by.as_deref(), Some("id"));
    assert_eq!(report.files_before, before_files.files);
    assert!(
        report.files_after > 1 && report.files_after < report.files_before,
        "{report:?}"
    );
    assert_eq!(report.version, before_version + 1);
    // Sorted by key: no two files' key ranges overlap.
    let ranges = key_ranges(&lake, name).await;
    assert_eq!(ranges.len(), report.files_after);
    for pair in ranges.windows(2) {
        assert!(pair[0].1 < pair[1].0, "overlapping key ranges: {ranges:?}");
    }
    // A checkpoint of the optimized version.
    let log = dir.path().join(name).join("_delta_log");
    assert!(log
        .join(format!("{:020}.checkpoint.parquet", report.version))
        .exists());
    // The rows are those of the account, and the version before still reads the same.
    assert_eq!(lake_rows(dir.path(), name).await, rows_before);
    assert_eq!(
        rows_at(&lake, name, before_version).await.unwrap(),
        rows_before
    );
    optimize_all(&lake, &OptimizeOptions::default()).await;
    for name in objects.iter().chain(&["_sync_state"]) {
        let files = lake.file_stats(name, 0).await.unwrap().unwrap().files;
        assert!(files <= 1, "{name}: {files} files after optimize");
    }
    assert_lake_matches_tables(&sim, dir.path(), &objects).await;

    // Syncs continue over the optimize commits: the transaction versions are the snapshots'.
    for _ in 0..2 {
        sim.apply_round(&round());
        let report = sync_ok(&settings).await;
        assert!(report.tables.iter().any(|o| o.commits > 0));
        assert_lake_matches_tables(&sim, dir.path(), &objects).await;
        let compact = OptimizeOptions {
            layout: Layout::Compact,
            ..OptimizeOptions::default()
        };
        optimize_all(&lake, &compact).await;
        assert_lake_matches_tables(&sim, dir.path(), &objects).await;
    }
    let report = sync_ok(&settings).await;
    for object in report.tables.iter().filter(|o| !is_snapshot(&o.table)) {
        assert_eq!(object.fetched, 0, "{}", object.table);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_removes_old_files_and_orphans_only_past_the_retention() {
    let (sim, server) = start(crate::crash::account()).await;
    sim.apply_round(&round());
    let dir = tempfile::tempdir().unwrap();
    let settings = fast(&server, dir.path(), &TABLES, 10, false);
    sync_ok(&settings).await;
    let lake = open_lake(dir.path());
    let table_dir = dir.path().join("tickets");
    let before_optimize = lake
        .open("tickets")
        .await
        .unwrap()
        .unwrap()
        .version()
        .unwrap();
    lake.optimize("tickets", &OptimizeOptions::default())
        .await
        .unwrap();
    // A file no commit references, as a run killed inside a commit leaves one.
    let any = active_files(&lake, "tickets").await.pop_first().unwrap();
    let stray = "part-00000-stray-orphan-c000.snappy.parquet";
    std::fs::copy(table_dir.join(&any), table_dir.join(stray)).unwrap();
    let replaced = tombstones(&lake, "tickets").await;
    assert!(replaced.len() > 1);

    // The default retention (a week) removes nothing that recent.
    for name in TABLES.iter().chain(&["_sync_state"]) {
        let report = lake
            .vacuum(name, &VacuumOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert!(report.files.is_empty(), "{name}: {:?}", report.files);
        assert_eq!(report.version, report.version_before, "{name}");
    }
    // A dry run with no retention lists them and deletes nothing.
    let zero = VacuumOptions {
        retention_hours: Some(0),
        dry_run: true,
    };
    let listed = lake.vacuum("tickets", &zero).await.unwrap().unwrap();
    let expected: BTreeSet<String> = replaced.iter().cloned().chain([stray.to_owned()]).collect();
    assert_eq!(
        listed.files.iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert!(table_dir.join(stray).exists());
    let on_disk = files_on_disk(&table_dir);
    assert!(expected.is_subset(&on_disk));

    // Asked for explicitly: only the current version's files remain.
    let zero = VacuumOptions {
        retention_hours: Some(0),
        dry_run: false,
    };
    let report = lake.vacuum("tickets", &zero).await.unwrap().unwrap();
    assert_eq!(report.files.len(), expected.len());
    assert_eq!(report.version, report.version_before + 2);
    assert_eq!(
        files_on_disk(&table_dir),
        active_files(&lake, "tickets").await
    );
    assert_lake_matches_tables(&sim, dir.path(), &TABLES).await;
    // Versions that read the deleted files are gone.
    assert!(rows_at(&lake, "tickets", before_optimize).await.is_err());
    // And the lake goes on syncing.
    sim.apply_round(&round());
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &TABLES).await;
}

/// `zendesk-lake sync` as a child process with the test pipeline, killed at `failpoint`.
async fn killed_sync(server: &SimServer, lake: &Path, failpoint: String) -> Output {
    crate::crash::child_sync(server, lake, Some(failpoint), None, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_runs_killed_inside_a_commit_are_vacuumed() {
    let (sim, server) = start(crate::crash::account()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    sync_ok(&settings(&server, &lake_dir, "")).await;
    // Killed inside Delta commits: data files written, the log entry that adds them not.
    for n in [3, 6] {
        sim.apply_round(&crate::crash::changes());
        let out = killed_sync(&server, &lake_dir, format!("delta_commit:{n}")).await;
        assert!(!out.status.success());
    }
    let lake = open_lake(&lake_dir);
    let mut orphans = 0;
    for name in all_names() {
        let referenced: HashSet<String> = active_files(&lake, name)
            .await
            .into_iter()
            .chain(tombstones(&lake, name).await)
            .collect();
        orphans += files_on_disk(&lake_dir.join(name))
            .iter()
            .filter(|f| !referenced.contains(*f))
            .count();
    }
    assert!(orphans > 0, "the killed runs left no orphan file");
    // The next run converges whatever is left.
    sync_ok(&settings(&server, &lake_dir, "")).await;
    assert_lake_matches(&sim, &lake_dir).await;
    let zero = VacuumOptions {
        retention_hours: Some(0),
        dry_run: false,
    };
    for name in all_names() {
        lake.vacuum(name, &zero).await.unwrap();
        assert_eq!(
            files_on_disk(&lake_dir.join(name)),
            active_files(&lake, name).await,
            "{name}"
        );
    }
    assert_lake_matches(&sim, &lake_dir).await;
}

/// Whether the commit `version` of a local table applied batch `seq` of `stream`.
fn commit_holds_batch(lake: &Path, table: &str, version: i64, stream: &str, seq: i64) -> bool {
    let path = lake
        .join(table)
        .join(format!("_delta_log/{version:020}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines().any(|line| {
        let action: Value = serde_json::from_str(line).unwrap();
        let txn = &action["txn"];
        txn["appId"] == format!("zendesk-lake/{stream}") && txn["version"] == seq
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_recovered_after_an_optimize_is_recorded_once_with_its_own_versions() {
    let (sim, server) = start(crate::crash::account()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let settings = settings(&server, &lake_dir, "");
    sync_ok(&settings).await;
    let lake = open_lake(&lake_dir);
    for n in [2, 5] {
        sim.apply_round(&crate::crash::changes());
        // Killed after a data commit, before its control row (or between two tables' commits).
        killed_sync(&server, &lake_dir, format!("after_data_commit:{n}")).await;
        // Optimize commits, which carry no batch, now sit on top of the batch's data commits.
        optimize_all(&lake, &OptimizeOptions::default()).await;
        sync_ok(&settings).await;
        assert_lake_matches(&sim, &lake_dir).await;
    }
    // Every control row names, per table, the commit that holds its batch.
    for row in lake.history().await.unwrap() {
        for (table, commit) in row.tables.iter().filter(|(_, c)| c.seq == row.seq) {
            assert!(
                commit_holds_batch(&lake_dir, table, commit.version, &row.stream, row.seq),
                "{} #{}: {table} version {}",
                row.stream,
                row.seq,
                commit.version
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_concurrent_with_optimize_loses_nothing() {
    let (sim, server) = start(crate::crash::account()).await;
    let dir = tempfile::tempdir().unwrap();
    let objects = ["tickets", "ticket_metrics", "users", "groups"];
    let settings = fast(&server, dir.path(), &objects, 10, false);
    sync_ok(&settings).await;
    let lake = open_lake(dir.path());
    let mut lost = 0;
    for _ in 0..2 {
        sim.apply_round(&round());
        let done = Arc::new(AtomicBool::new(false));
        let sync = {
            let done = done.clone();
            let settings = settings.clone();
            async move {
                let report = sync::run(&settings).await.unwrap();
                done.store(true, Ordering::SeqCst);
                report
            }
        };
        // Optimize every table, again and again, for as long as the sync runs.
        let optimize = async {
            let (mut optimized, mut busy) = (0, 0);
            while !done.load(Ordering::SeqCst) {
                for name in all_names() {
                    match lake.optimize(name, &OptimizeOptions::default()).await {
                        Ok(Some(r)) if r.version != r.version_before => optimized += 1,
                        Ok(_) => {}
                        Err(Error::Busy { .. }) => busy += 1,
                        Err(e) => panic!("{name}: {e}"),
                    }
                }
            }
            (optimized, busy)
        };
        let (report, (optimized, busy)) = tokio::join!(sync, optimize);
        eprintln!("during the sync: {optimized} optimize commits, {busy} lost to the sync");
        for object in &report.tables {
            match &object.outcome {
                Outcome::Ok => {}
                Outcome::Failed(why) if why.contains("concurrently") => lost += 1,
                other => panic!("{}: {other:?}", object.table),
            }
        }
        // Whatever lost, the next run converges.
        sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &objects).await;
    }
    eprintln!("tables whose sync lost to an optimize: {lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_compacts_tables_with_many_small_files_unless_turned_off() {
    let (sim, server) = start(crate::crash::account()).await;
    sim.apply_round(&round());
    let auto_dir = tempfile::tempdir().unwrap();
    let off_dir = tempfile::tempdir().unwrap();
    let mut auto = fast(&server, auto_dir.path(), &TABLES, 10, true);
    auto.maintenance.small_files = 4;
    let mut off = fast(&server, off_dir.path(), &TABLES, 10, false);
    off.maintenance.small_files = 4;
    for settings in [&auto, &off] {
        sync_ok(settings).await;
    }
    let small_below = auto.maintenance.target_file_size / 4;
    let (auto_lake, off_lake) = (open_lake(auto_dir.path()), open_lake(off_dir.path()));
    for name in ["tickets", "users", "_sync_state"] {
        let compacted = auto_lake
            .file_stats(name, small_below)
            .await
            .unwrap()
            .unwrap();
        let left = off_lake
            .file_stats(name, small_below)
            .await
            .unwrap()
            .unwrap();
        assert!(compacted.small <= 4, "{name}: {compacted:?}");
        assert!(left.small > 4, "{name}: {left:?}");
    }
    assert_lake_matches_tables(&sim, auto_dir.path(), &TABLES).await;
    assert_lake_matches_tables(&sim, off_dir.path(), &TABLES).await;
    // The next run too: a table compacts again once its small files pass the threshold.
    for _ in 0..1 {
        sim.apply_round(&round());
        sync_ok(&auto).await;
        let files = auto_lake
            .file_stats("_sync_state", small_below)
            .await
            .unwrap()
            .unwrap();
        assert!(files.small <= 4, "{files:?}");
        assert_lake_matches_tables(&sim, auto_dir.path(), &TABLES).await;
    }
}

async fn run_bin(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_and_vacuum_through_the_binary() {
    let (sim, server) = start(crate::crash::account()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake_dir: PathBuf = dir.path().join("lake");
    sync_ok(&fast(&server, &lake_dir, &TABLES, 10, false)).await;
    let lake = lake_dir.to_str().unwrap();

    let out = run_bin(&[
        "optimize",
        "--lake",
        lake,
        "--tables",
        "tickets,_sync_state",
    ])
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{stdout}"))
            .to_owned()
    };
    assert!(line("tickets").contains("by id"), "{stdout}");
    assert!(line("_sync_state").contains("compacted"), "{stdout}");
    assert!(!stdout.contains("groups"), "{stdout}");
    let tickets = open_lake(&lake_dir).file_stats("tickets", 0).await.unwrap();
    assert_eq!(tickets.unwrap().files, 1);

    // By default a week is kept: nothing of today goes.
    let out = run_bin(&["vacuum", "--lake", lake, "--dry-run"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        line_of(&stdout, "tickets").contains("would delete 0 files (retention 168 h)"),
        "{stdout}"
    );
    let out = run_bin(&["vacuum", "--lake", lake, "--tables", "tickets"]).await;
    assert!(
        text(&out.stdout).contains("deleted 0 files"),
        "{}",
        text(&out.stdout)
    );
    // Only when asked for: no retention at all.
    let out = run_bin(&[
        "vacuum",
        "--lake",
        lake,
        "--tables",
        "tickets",
        "--retention-hours",
        "0",
    ])
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    let deleted: usize = line_of(&stdout, "tickets")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(deleted > 1, "{stdout}");
    assert_lake_matches_tables(&sim, &lake_dir, &TABLES).await;

    let out = run_bin(&["vacuum", "--lake", lake, "--tables", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

fn line_of<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
}
