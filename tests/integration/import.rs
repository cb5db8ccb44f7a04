//! `import` against the simulated account: each external_id created exactly once, the state
//! table's rows, rejected rows, re-runs, recovery of pending rows after a crash (simulated by
//! writing the state a killed run leaves, and submitting its job through the simulator), a
//! request whose answer was lost after the account applied it, validation before any request,
//! and a 429 storm. Expectations come from the simulator.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use zendesk_lake::arrow::datatypes::{DataType, Field, Schema};
use zendesk_lake::commands::import::{import, ImportOptions, ImportReport};
use zendesk_lake::lake::state::{
    ImportRow, ImportStatus, JobRef, Recorded, StateWriter, IMPORT_STATE,
};
use zendesk_lake::sim::{Faults, SimClock, SimConfig, SimServer, Simulator};

use crate::common::{batch, open_lake, small, timestamp, write_table, Scene, FAST_POLL};

const SOURCE: &str = "their_export";

fn fast(options: ImportOptions) -> ImportOptions {
    options
        .with_poll(FAST_POLL)
        .with_export_wait(Duration::ZERO)
}

fn source_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("external_id", DataType::Utf8, true),
        Field::new("subject", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("requester_id", DataType::Int64, true),
        Field::new("status", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
        Field::new("created_at", timestamp(), true),
    ]))
}

/// Write `rows` as the team's own table [`SOURCE`] beside the product's tables.
async fn write_source(scene: &Scene, rows: &[Value]) {
    write_table(&scene.lake(), SOURCE, batch(source_schema(), rows)).await;
}

/// A requester the account has.
fn requester(sim: &Simulator) -> i64 {
    sim.records("users")[1]["id"].as_i64().unwrap()
}

fn rows(prefix: &str, n: usize, requester: i64, status: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "external_id": format!("{prefix}-{i}"), "subject": format!("Subject {i}"),
                "description": format!("Body {i}"), "requester_id": requester,
                "status": status, "tags": ["imported", prefix],
                "created_at": 1_600_000_000_000_000i64 + i as i64 * 1_000_000,
            })
        })
        .collect()
}

async fn run(scene: &Scene, options: ImportOptions) -> ImportReport {
    import(scene.settings(), fast(options))
        .await
        .expect("import runs")
}

fn create_manys(sim: &Simulator) -> usize {
    sim.write_log()
        .iter()
        .filter(|w| w.target.contains("create_many"))
        .count()
}

/// Every ticket the account holds with an external id, by it.
fn sim_ticket_ids(sim: &Simulator) -> BTreeMap<String, i64> {
    sim.records("tickets")
        .iter()
        .filter_map(|t| Some((t["external_id"].as_str()?.to_owned(), t["id"].as_i64()?)))
        .collect()
}

async fn state(scene: &Scene) -> HashMap<String, ImportRow> {
    open_lake(&scene.lake())
        .state_latest::<ImportRow>(&IMPORT_STATE)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.external_id.clone(), r))
        .collect()
}

fn pending(external_id: &str, job: Option<&str>, index: i64, archive: bool) -> ImportRow {
    ImportRow {
        external_id: external_id.into(),
        status: ImportStatus::Pending,
        ticket_id: None,
        error: None,
        job: JobRef {
            job_id: job.map(String::from),
            job_index: Some(index),
        },
        archive,
        submitted_at: Some(chrono::Utc::now().timestamp_micros()),
        recorded: Recorded::default(),
    }
}

/// Submit an import through the simulator directly, as a killed run would have; its job id.
async fn submit(server: &SimServer, tickets: &[Value], archive: bool) -> String {
    let query = if archive {
        "?archive_immediately=true"
    } else {
        ""
    };
    let reply: Value = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/imports/tickets/create_many.json{query}",
            server.base_url()
        ))
        .basic_auth("demo@example.com/token", Some("demo-token"))
        .json(&json!({ "tickets": tickets }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["job_status"]["id"].as_str().unwrap().to_owned()
}

fn assert_once(sim: &Simulator, ids: &[String]) {
    let created = sim.tickets_created_per_external_id();
    for id in ids {
        assert_eq!(created.get(id), Some(&1), "{id} created once: {created:?}");
    }
}

async fn assert_all_imported(scene: &Scene, ids: &[String]) {
    let state = state(scene).await;
    let tickets = sim_ticket_ids(&scene.sim);
    for id in ids {
        let row = &state[id];
        assert_eq!(row.status, ImportStatus::Imported, "{id}: {row:?}");
        assert_eq!(row.ticket_id, tickets.get(id).copied(), "{id}");
    }
}

fn keys(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["external_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_team_table_imports_each_external_id_once_and_a_rerun_sends_nothing() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let source = rows("ext", 250, requester(sim), "open");
    write_source(&scene, &source).await;

    let report = run(&scene, ImportOptions::table(SOURCE).with_jobs(2)).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        (report.rows, report.imported, report.skipped),
        (250, 250, 0)
    );
    assert_eq!(create_manys(sim), 3, "batches of at most 100");
    assert_once(sim, &keys(&source));
    assert_all_imported(&scene, &keys(&source)).await;
    let imported = sim
        .records("tickets")
        .into_iter()
        .find(|t| t["external_id"] == "ext-7")
        .unwrap();
    assert_eq!(imported["subject"], "Subject 7");
    assert_eq!(imported["created_at"], "2020-09-13T12:26:47Z");

    let report = run(&scene, ImportOptions::table(SOURCE)).await;
    assert_eq!((report.imported, report.skipped), (0, 250));
    assert_eq!(create_manys(sim), 3, "the re-run sends no create_many");
    assert_once(sim, &keys(&source));
}

#[tokio::test]
async fn a_rejected_row_is_recorded_failed_with_zendesks_message_and_retried_alone() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let mut source = rows("ok", 5, requester(sim), "open");
    source[2]["requester_id"] = json!(987_654_321);
    write_source(&scene, &source).await;

    let sql = format!("SELECT * FROM {SOURCE} WHERE external_id LIKE 'ok-%'");
    let report = run(&scene, ImportOptions::sql(&sql)).await;
    assert!(!report.is_ok());
    assert_eq!((report.imported, report.failed), (4, 1));
    assert_eq!(report.failed_ids(), ["ok-2"]);
    assert!(
        report.failed_rows[0].1.contains("987654321"),
        "{:?}",
        report.failed_rows
    );
    let state = state(&scene).await;
    assert_eq!(state["ok-2"].status, ImportStatus::Failed);
    assert!(state["ok-2"]
        .error
        .as_deref()
        .unwrap()
        .contains("RecordInvalid"));
    let landed: Vec<String> = keys(&source).into_iter().filter(|k| k != "ok-2").collect();
    assert_once(sim, &landed);
    assert!(!sim.tickets_created_per_external_id().contains_key("ok-2"));

    let before = create_manys(sim);
    let report = run(&scene, ImportOptions::sql(&sql)).await;
    assert_eq!((report.skipped, report.failed), (4, 1));
    let log = sim.write_log();
    let retried: Vec<_> = log
        .iter()
        .filter(|w| w.target.contains("create_many"))
        .skip(before)
        .collect();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].body["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(retried[0].body["tickets"][0]["external_id"], "ok-2");
}

#[tokio::test]
async fn a_bad_source_is_refused_before_any_request() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let good = rows("v", 2, 1, "open");
    write_source(&scene, &good).await;
    let cases = [
        (format!("SELECT *, 'red' AS colour FROM {SOURCE}"), "colour"),
        (
            format!("SELECT * FROM {SOURCE} UNION ALL SELECT * FROM {SOURCE}"),
            "v-",
        ),
        (
            format!("SELECT external_id, 'x' AS requester_id FROM {SOURCE}"),
            "requester_id",
        ),
        (format!("SELECT subject FROM {SOURCE}"), "external_id"),
        (
            format!("SELECT CAST(NULL AS VARCHAR) AS external_id, subject FROM {SOURCE}"),
            "external_id",
        ),
    ];
    for (sql, named) in cases {
        let err = import(scene.settings(), fast(ImportOptions::sql(&sql)))
            .await
            .expect_err(&sql)
            .to_string();
        assert!(err.contains(named), "{sql}: {err}");
    }
    assert_eq!(sim.request_count(), 0, "nothing was sent");
    assert!(open_lake(&scene.lake())
        .open(IMPORT_STATE.name)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_dry_run_counts_and_sends_and_writes_nothing() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let source = rows("d", 150, requester(sim), "open");
    write_source(&scene, &source).await;
    let report = run(&scene, ImportOptions::table(SOURCE).with_dry_run(true)).await;
    let dry = report.dry_run.expect("a dry run's figures");
    assert_eq!((dry.tickets, dry.requests), (150, 4));
    assert_eq!(sim.request_count(), 0);
    assert!(open_lake(&scene.lake())
        .open(IMPORT_STATE.name)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn pending_rows_of_a_killed_run_are_resolved_before_anything_is_sent() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let source = rows("k", 8, requester(sim), "open");
    write_source(&scene, &source).await;
    let lake = open_lake(&scene.lake());
    let encode = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .map(|r| {
                json!({"external_id": r["external_id"], "subject": r["subject"],
                       "requester_id": r["requester_id"], "comments": [{"value": r["description"]}]})
            })
            .collect()
    };
    // k-0, k-1: sent, job id recorded, the job completed while no one polled.
    let done = submit(&scene.server, &encode(&source[0..2]), false).await;
    sim.complete_jobs();
    // k-2, k-3: sent and answered, killed before the job id was recorded; still queued.
    submit(&scene.server, &encode(&source[2..4]), false).await;
    // k-4, k-5: recorded pending, killed before the request went out.
    let writer = StateWriter::new(&lake, IMPORT_STATE, "killed-run");
    writer
        .append(&[
            pending("k-0", Some(&done), 0, false),
            pending("k-1", Some(&done), 1, false),
            pending("k-2", None, 0, false),
            pending("k-3", None, 1, false),
            pending("k-4", None, 0, false),
            pending("k-5", None, 1, false),
        ])
        .await
        .unwrap();
    let before = create_manys(sim);

    let report = run(&scene, ImportOptions::table(SOURCE)).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.recovered, 6);
    assert_eq!(report.imported, 8);
    let log = sim.write_log();
    let sent: Vec<&Value> = log
        .iter()
        .filter(|w| w.target.contains("create_many"))
        .skip(before)
        .flat_map(|w| w.body["tickets"].as_array().unwrap())
        .collect();
    let sent: Vec<&str> = sent
        .iter()
        .map(|t| t["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        ["k-4", "k-5", "k-6", "k-7"],
        "only the rows found nowhere"
    );
    assert_once(sim, &keys(&source));
    assert_all_imported(&scene, &keys(&source)).await;
}

#[tokio::test]
async fn an_archived_batchs_pending_rows_are_found_in_the_ticket_export() {
    let scene = Scene::new(SimConfig {
        clock: SimClock::Now,
        ..small()
    })
    .await;
    let sim = &scene.sim;
    let source = rows("a", 3, requester(sim), "closed");
    write_source(&scene, &source).await;
    let lake = open_lake(&scene.lake());
    let tickets: Vec<Value> = source[0..2]
        .iter()
        .map(|r| json!({"external_id": r["external_id"], "status": "closed", "description": "old"}))
        .collect();
    let writer = StateWriter::new(&lake, IMPORT_STATE, "killed-run");
    writer
        .append(&[pending("a-0", None, 0, true), pending("a-1", None, 1, true)])
        .await
        .unwrap();
    submit(&scene.server, &tickets, true).await;

    let report = run(
        &scene,
        ImportOptions::table(SOURCE).with_archive_immediately(true),
    )
    .await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.recovered, report.imported), (2, 3));
    assert!(
        sim.request_log()
            .iter()
            .any(|r| r.contains("incremental/tickets/cursor")),
        "searched the export"
    );
    assert_once(sim, &keys(&source));
    assert_all_imported(&scene, &keys(&source)).await;
}

#[tokio::test]
async fn a_429_storm_still_imports_each_external_id_once() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let source = rows("s", 120, requester(sim), "open");
    write_source(&scene, &source).await;
    sim.set_faults(Faults {
        rate_limit_every: Some(3),
        retry_after: Some("0.05".into()),
        ..Faults::default()
    });
    let report = run(&scene, ImportOptions::table(SOURCE).with_jobs(3)).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.imported, 120);
    assert_once(sim, &keys(&source));
    assert_all_imported(&scene, &keys(&source)).await;
}

/// The external ids of the `n`-th `create_many` the account received (0-based).
fn sent_in(sim: &Simulator, n: usize) -> Vec<String> {
    let log = sim.write_log();
    let request = log
        .iter()
        .filter(|w| w.target.contains("create_many"))
        .nth(n)
        .expect("the request was received");
    let mut ids: Vec<String> = request.body["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["external_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The account applies a `create_many` and its answer is lost (the client sees the connection
/// reset: `Error::Ambiguous`): the batch's rows stay pending, and the next run finds their
/// tickets, through the account's running jobs and the look-up by external id, instead of
/// sending them again; whether the job is still running when the next run starts or completed
/// meanwhile.
#[tokio::test]
async fn a_create_many_whose_answer_was_lost_is_found_by_the_next_run_not_sent_again() {
    for completed_meanwhile in [false, true] {
        let scene = Scene::small().await;
        let sim = &scene.sim;
        let source = rows("lost", 250, requester(sim), "open");
        write_source(&scene, &source).await;
        sim.set_faults(Faults {
            lose_write_answer_every: Some(2),
            ..Faults::default()
        });
        let options = || ImportOptions::table(SOURCE).with_jobs(1);

        let report = run(&scene, options()).await;
        assert!(!report.is_ok(), "{report:?}");
        assert_eq!(create_manys(sim), 3);
        assert_eq!(
            sim.jobs().len(),
            3,
            "the account applied all three requests"
        );
        let lost = sent_in(sim, 1);
        assert_eq!(report.pending, lost, "the rows of the lost answer");
        assert_eq!((report.imported, report.failed), (150, 0));
        let recorded = state(&scene).await;
        for id in &lost {
            let row = &recorded[id];
            assert_eq!(row.status, ImportStatus::Pending, "{row:?}");
            assert_eq!(row.job.job_id, None, "{row:?}");
        }

        sim.set_faults(Faults::default());
        if completed_meanwhile {
            sim.complete_jobs();
        }
        let report = run(&scene, options()).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.recovered, 100, "{report:?}");
        assert_eq!(create_manys(sim), 3, "nothing sent again");
        assert_once(sim, &keys(&source));
        assert_all_imported(&scene, &keys(&source)).await;

        let report = run(&scene, options()).await;
        assert_eq!((report.imported, report.skipped), (0, 250));
        assert_eq!(create_manys(sim), 3, "a third run sends nothing");
    }
}

/// `zendesk-lake import` of `SOURCE` into the simulator, killed at `failpoint` if given.
async fn import_binary(scene: &Scene, failpoint: Option<&str>) -> std::process::Output {
    let mut command = scene.binary();
    command
        .args(["import", "--table", SOURCE, "--jobs", "4", "--lake"])
        .arg(scene.lake());
    if let Some(failpoint) = failpoint {
        command.env("ZENDESK_LAKE_FAILPOINT", failpoint);
    }
    command.output().await.expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_at_any_point_creates_each_ticket_once_after_the_next_run() {
    use std::os::unix::process::ExitStatusExt as _;
    let mut cases: Vec<String> = zendesk_lake::failpoint::IMPORT_POINTS
        .iter()
        .map(|p| format!("{p}:1"))
        .collect();
    cases.extend([
        "import_submitted:2".to_owned(),
        "import_job_done:2".to_owned(),
    ]);
    for case in cases {
        let scene = Scene::small().await;
        let sim = &scene.sim;
        let source = rows("kill", 150, requester(sim), "open");
        write_source(&scene, &source).await;

        let killed = import_binary(&scene, Some(&case)).await;
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGKILL),
            "{case}: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        let out = import_binary(&scene, None).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{case}: {stderr}");
        assert_once(sim, &keys(&source));
        assert_all_imported(&scene, &keys(&source)).await;

        // And once more: nothing left to send.
        let before = create_manys(sim);
        let out = import_binary(&scene, None).await;
        assert_eq!(out.status.code(), Some(0), "{case}");
        assert_eq!(
            create_manys(sim),
            before,
            "{case}: a third run sends nothing"
        );
    }
}

/// Two imports of the same source on the same lake at once, as two processes: each external id
/// is created once, neither run loses a row (a run that finds the other holding the lease sends
/// nothing and exits 1 saying so), and a third run has nothing left to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_imports_at_once_create_each_ticket_once() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let source = rows("twice", 250, requester(sim), "open");
    write_source(&scene, &source).await;

    let (first, second) = tokio::join!(import_binary(&scene, None), import_binary(&scene, None));
    for out in [&first, &second] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(1) => assert!(stderr.contains("holds its write lease"), "{stderr}"),
            other => panic!("{other:?}: {stderr}"),
        }
    }
    assert_once(sim, &keys(&source));

    let before = create_manys(sim);
    let out = import_binary(&scene, None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(create_manys(sim), before, "a third run sends nothing");
    assert_once(sim, &keys(&source));
    assert_all_imported(&scene, &keys(&source)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_exits_1_listing_the_rows_zendesk_refused() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let mut source = rows("cli", 5, requester(sim), "open");
    source[2]["requester_id"] = json!(999_999_999);
    write_source(&scene, &source).await;
    let out = import_binary(&scene, None).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("imported 4"), "{stdout}");
    assert!(stderr.contains("cli-2"), "{stderr}");
}
