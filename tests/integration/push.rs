//! `push` against the simulated account: only the fields that differ from the lake's copy are
//! sent, rows that change nothing are not, a re-run sends nothing (a comment is added once),
//! closed tickets are reported and not sent, `--max-tickets` refuses before any write, a dry
//! run sends nothing, the lake shows the pushed values, and a push killed at any point of its
//! first or second batch adds each comment once after the next run. Expectations come from the
//! simulator's ground truth (`update_requests`, `comments_added`, `write_log`).

use std::sync::Arc;

use serde_json::{json, Value};
use zendesk_lake::arrow::datatypes::{DataType, Field, Schema};
use zendesk_lake::commands::push::{push, PushOptions, PushReport};
use zendesk_lake::sim::Simulator;

use crate::common::{batch, lake_rows, open_lake, timestamp, write_table, Scene, FAST_POLL};

/// The team's own table of a triage model's output.
const SOURCE: &str = "triage";

fn source_schema() -> Arc<Schema> {
    let comment = DataType::Struct(
        vec![
            Field::new("body", DataType::Utf8, true),
            Field::new("public", DataType::Boolean, true),
        ]
        .into(),
    );
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("priority", DataType::Utf8, true),
        Field::new(
            "additional_tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
        Field::new("comment", comment, true),
    ]))
}

/// Write `rows` as the team's own table [`SOURCE`] beside the product's tables.
async fn write_source(scene: &Scene, rows: &[Value]) {
    write_table(&scene.lake(), SOURCE, batch(source_schema(), rows)).await;
}

fn fast(options: PushOptions) -> PushOptions {
    options.with_poll(FAST_POLL)
}

/// The first `n` tickets of the account with `status` among `statuses`.
fn tickets(sim: &Simulator, statuses: &[&str], n: usize) -> Vec<Value> {
    sim.records("tickets")
        .into_iter()
        .filter(|t| statuses.contains(&t["status"].as_str().unwrap_or_default()))
        .take(n)
        .collect()
}

fn other_priority(ticket: &Value) -> &'static str {
    match ticket["priority"].as_str() {
        Some("urgent") => "low",
        _ => "urgent",
    }
}

fn tags(ticket: &Value) -> Vec<String> {
    ticket["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// A row changing `changed`'s priority, adding a tag and a note; a row that changes nothing of
/// `same` (its priority, one of its tags); a row changing `closed`'s priority.
fn source(changed: &Value, same: &Value, closed: &Value) -> Vec<Value> {
    let same_tags: Vec<String> = tags(same).into_iter().take(1).collect();
    vec![
        json!({
            "id": changed["id"], "priority": other_priority(changed),
            "additional_tags": ["triaged"], "comment": {"body": "triage: urgent billing issue"},
        }),
        json!({"id": same["id"], "priority": same["priority"], "additional_tags": same_tags}),
        json!({"id": closed["id"], "priority": other_priority(closed)}),
    ]
}

async fn run(scene: &Scene, options: PushOptions) -> PushReport {
    push(scene.settings(), fast(options))
        .await
        .expect("push runs")
}

fn sql() -> String {
    format!("SELECT * FROM {SOURCE}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_sends_only_what_differs_once_and_the_lake_shows_it() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let open = tickets(sim, &["open", "pending", "new"], 2);
    let closed = &tickets(sim, &["closed"], 1)[0];
    let (changed, same) = (&open[0], &open[1]);
    write_source(&scene, &source(changed, same, closed)).await;

    let report = run(&scene, PushOptions::sql(&sql())).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.updated, 1);
    assert_eq!(report.unchanged, 1);
    let closed_id = closed["id"].as_i64().unwrap();
    assert_eq!(report.frozen, vec![(closed_id, "closed".to_owned())]);

    // Zendesk's ground truth: one request, the changed ticket only, only its changed fields.
    let requests = sim.update_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let sent = requests[0]["tickets"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let mut expected = json!({
        "id": changed["id"], "priority": other_priority(changed),
        "comment": {"body": "triage: urgent billing issue", "public": false},
    });
    if !tags(changed).contains(&"triaged".to_owned()) {
        expected["additional_tags"] = json!(["triaged"]);
    }
    assert_eq!(sent[0], expected);
    let id = changed["id"].as_i64().unwrap();
    let comments = sim.comments_added();
    assert_eq!(comments.get(&id).map(Vec::len), Some(1), "{comments:?}");
    assert_eq!(comments[&id][0]["public"], json!(false));

    // The lake shows the pushed values.
    let lake = lake_rows(&scene.lake(), "tickets").await;
    let row = &lake[&id.to_string()];
    assert_eq!(row["priority"], json!(other_priority(changed)));
    assert!(
        row["tags"].as_array().unwrap().contains(&json!("triaged")),
        "{row:?}"
    );

    // The same push again sends nothing, and adds no second comment.
    let again = run(&scene, PushOptions::sql(&sql())).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(again.updated, 0);
    assert_eq!(again.unchanged, 2, "{again:?}");
    assert_eq!(sim.update_requests().len(), 1);
    assert_eq!(sim.comments_added()[&id].len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_diff_and_sends_nothing() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let open = tickets(sim, &["open", "pending", "new"], 2);
    let closed = &tickets(sim, &["closed"], 1)[0];
    write_source(&scene, &source(&open[0], &open[1], closed)).await;
    let report = run(&scene, PushOptions::sql(&sql()).with_dry_run(true)).await;
    assert_eq!(report.tickets(), 1, "{report:?}");
    assert_eq!(report.update_requests, 1);
    let priority = report
        .changes
        .iter()
        .find(|c| c.field == "priority")
        .unwrap();
    assert_eq!(priority.ticket_id, open[0]["id"].as_i64().unwrap());
    assert_eq!(priority.before, open[0]["priority"]);
    assert!(sim.update_requests().is_empty());
    assert!(sim.comments_added().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_tickets_than_max_tickets_are_refused_before_any_write() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let open = tickets(sim, &["open", "pending", "new"], 3);
    let rows: Vec<Value> = open
        .iter()
        .map(|t| json!({"id": t["id"], "priority": other_priority(t)}))
        .collect();
    write_source(&scene, &rows).await;
    let out = scene
        .binary()
        .args(["push", "--max-tickets", "2", "--sql", &sql(), "--lake"])
        .arg(scene.lake())
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("max-tickets"), "{stderr}");
    let writes: Vec<_> = sim
        .write_log()
        .into_iter()
        .filter(|w| w.method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(sim.update_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_zendesk_refuses_is_reported_and_not_sent_again() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let open = &tickets(sim, &["open", "pending", "new"], 1)[0];
    let unknown = 999_999_999_i64;
    let rows = [
        json!({"id": open["id"], "priority": other_priority(open)}),
        json!({"id": unknown, "priority": "high", "comment": {"body": "lost"}}),
    ];
    write_source(&scene, &rows).await;
    let report = run(&scene, PushOptions::sql(&sql())).await;
    assert!(!report.is_ok());
    assert_eq!(report.updated, 1, "{report:?}");
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].0, unknown);
    assert!(report.refused[0].1.contains("RecordNotFound"), "{report:?}");
    let again = run(&scene, PushOptions::sql(&sql())).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(again.refused_before, vec![unknown]);
    assert_eq!(sim.update_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_dry_runs_diff() {
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let open = &tickets(sim, &["open", "pending", "new"], 1)[0];
    let rows = [json!({"id": open["id"], "priority": other_priority(open)})];
    write_source(&scene, &rows).await;
    let out = scene
        .binary()
        .args(["push", "--dry-run", "--sql", &sql(), "--lake"])
        .arg(scene.lake())
        .output()
        .await
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = format!(
        "{}\tpriority\t{} -> \"{}\"",
        open["id"],
        open["priority"],
        other_priority(open)
    );
    assert!(stdout.contains(&line), "{stdout}");
    assert!(stdout.contains("1 update requests"), "{stdout}");
    assert!(sim.update_requests().is_empty());
}

/// `zendesk-lake push` of `sql()` into the simulator, killed at `failpoint` if given.
async fn push_binary(scene: &Scene, failpoint: Option<&str>) -> std::process::Output {
    let mut command = scene.binary();
    command
        .args(["push", "--sql", &sql(), "--lake"])
        .arg(scene.lake());
    if let Some(failpoint) = failpoint {
        command.env("ZENDESK_LAKE_FAILPOINT", failpoint);
    }
    command.output().await.expect("the binary runs")
}

/// Statuses of tickets Zendesk updates (all but `closed`).
const UPDATABLE: [&str; 5] = ["new", "open", "pending", "hold", "solved"];

/// Push a priority, a tag and a note to each of `n` tickets with the binary killed at `case`;
/// then the next run must leave each note on its ticket once and each field applied, and a
/// third run must send nothing.
async fn killed_then_run_again(case: &str, n: usize) {
    use std::os::unix::process::ExitStatusExt as _;
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let open = tickets(sim, &UPDATABLE, n);
    assert_eq!(open.len(), n, "the account has {n} tickets to change");
    let rows: Vec<Value> = open
        .iter()
        .map(|t| {
            json!({
                "id": t["id"], "priority": other_priority(t), "additional_tags": ["killed"],
                "comment": {"body": format!("note for {}", t["id"])},
            })
        })
        .collect();
    write_source(&scene, &rows).await;

    let killed = push_binary(&scene, Some(case)).await;
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGKILL),
        "{case}: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let out = push_binary(&scene, None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{case}: {stderr}");

    // Zendesk's ground truth: each note once, each field change applied.
    let comments = sim.comments_added();
    let records = sim.records("tickets");
    for ticket in &open {
        let id = ticket["id"].as_i64().unwrap();
        let added = comments.get(&id).cloned().unwrap_or_default();
        assert_eq!(added.len(), 1, "{case}: ticket {id}: {added:?}");
        assert_eq!(added[0]["body"], json!(format!("note for {id}")), "{case}");
        let now = records.iter().find(|t| t["id"] == json!(id)).unwrap();
        assert_eq!(now["priority"], json!(other_priority(ticket)), "{case}");
        assert!(tags(now).contains(&"killed".to_owned()), "{case}: {now:?}");
    }

    // And once more: nothing left to send.
    let before = sim.update_requests().len();
    let out = push_binary(&scene, None).await;
    assert_eq!(out.status.code(), Some(0), "{case}");
    assert_eq!(
        sim.update_requests().len(),
        before,
        "{case}: a third run sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_at_any_point_adds_each_comment_once_after_the_next_run() {
    for point in zendesk_lake::failpoint::PUSH_POINTS {
        killed_then_run_again(&format!("{point}:1"), 3).await;
    }
}

/// 150 tickets make two `update_many` batches: killed at any point of the second, the first's
/// comments are done and are not sent again, the second's are settled and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_in_its_second_batch_adds_each_comment_once_after_the_next_run() {
    for point in zendesk_lake::failpoint::PUSH_POINTS {
        killed_then_run_again(&format!("{point}:2"), 150).await;
    }
}

/// A run ended after its request was answered and its job recorded, and the job completed
/// meanwhile: the next push settles the comment by the job's result, without sending it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_comment_whose_job_completed_meanwhile_is_done_and_not_sent_again() {
    use zendesk_lake::lake::state::{
        JobRef, PushRow, PushStatus, Recorded, StateWriter, PUSH_STATE,
    };
    use zendesk_lake::zendesk::writers::{jobs, tickets as writers};
    use zendesk_lake::zendesk::{Client, RequestStats};

    let scene = Scene::small().await;
    let sim = &scene.sim;
    let ticket = &tickets(sim, &["open", "pending", "new"], 1)[0];
    let id = ticket["id"].as_i64().unwrap();
    let comment = json!({"body": "sent by a run that died", "public": false});
    write_source(
        &scene,
        &[json!({"id": id, "priority": other_priority(ticket), "comment": comment})],
    )
    .await;

    // What the run that died did: its row recorded pending with its job, its job completed.
    let settings = scene.settings();
    let client = Client::try_new(&settings.zendesk).unwrap();
    let stats = RequestStats::default();
    let update = json!({"id": id, "priority": other_priority(ticket), "comment": comment});
    let job = writers::update_many(&client, &stats, &[update])
        .await
        .unwrap();
    let done = jobs::wait(&client, &stats, &job.id, FAST_POLL)
        .await
        .unwrap();
    assert!(done.is_some_and(|j| j.is_done()));
    let lake = open_lake(&scene.lake());
    let key = zendesk_lake::commands::push::comment_key(id, &comment);
    StateWriter::new(&lake, PUSH_STATE, "dead-run")
        .append(&[PushRow {
            key: key.clone(),
            ticket_id: id,
            status: PushStatus::Pending,
            error: None,
            job: JobRef {
                job_id: Some(job.id.clone()),
                job_index: Some(0),
            },
            recorded: Recorded::default(),
        }])
        .await
        .unwrap();

    let report = run(&scene, PushOptions::sql(&sql())).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.settled_done, 1, "{report:?}");
    assert_eq!(report.updated, 0, "{report:?}");
    assert_eq!(sim.update_requests().len(), 1, "nothing sent again");
    assert_eq!(sim.comments_added()[&id].len(), 1);
    let state: Vec<PushRow> = lake.state_latest(&PUSH_STATE).await.unwrap();
    let row = state.iter().find(|r| r.key == key).unwrap();
    assert_eq!(row.status, PushStatus::Done);
}

/// `_push_state` as the first version of push wrote it: no `job_index` column.
fn old_push_state_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("ticket_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("job_id", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("run_seq", DataType::Int64, false),
        Field::new("recorded_at", timestamp(), false),
    ]))
}

/// A lake whose `_push_state` an older version wrote (without `job_index`): a comment it
/// pushed is not sent again, one it left pending is settled and sent once, a new one is sent,
/// and the table takes the new column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_state_table_without_job_index_is_appended_to() {
    use zendesk_lake::commands::push::comment_key;
    let scene = Scene::small().await;
    let sim = &scene.sim;
    let three = tickets(sim, &UPDATABLE, 3);
    let ids: Vec<i64> = three.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    let note = |n: usize| json!({"body": format!("note {n}"), "public": false});
    let rows: Vec<Value> = (0..3)
        .map(|n| json!({"id": ids[n], "comment": note(n)}))
        .collect();
    write_source(&scene, &rows).await;
    // The older version pushed note 0 (done) and recorded note 1 pending, then died before
    // sending it.
    let old = [
        json!({"key": comment_key(ids[0], &note(0)), "ticket_id": ids[0], "status": "done",
               "job_id": "V3-old", "run_id": "old-run", "run_seq": 2, "recorded_at": 1_700_000_000_000_000i64}),
        json!({"key": comment_key(ids[1], &note(1)), "ticket_id": ids[1], "status": "pending",
               "run_id": "old-run", "run_seq": 1, "recorded_at": 1_700_000_000_000_000i64}),
    ];
    write_table(
        &scene.lake(),
        "_push_state",
        batch(old_push_state_schema(), &old),
    )
    .await;

    let report = run(&scene, PushOptions::sql(&sql())).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.settled_unapplied, 1, "{report:?}");
    let comments = sim.comments_added();
    assert!(
        !comments.contains_key(&ids[0]),
        "note 0 not sent again: {comments:?}"
    );
    for n in [1, 2] {
        let added = &comments[&ids[n]];
        assert_eq!(added.len(), 1, "{added:?}");
        assert_eq!(added[0]["body"], json!(format!("note {n}")));
    }
    let table = open_lake(&scene.lake())
        .open("_push_state")
        .await
        .unwrap()
        .unwrap();
    let columns: Vec<String> = table
        .snapshot()
        .unwrap()
        .schema()
        .fields()
        .map(|f| f.name().clone())
        .collect();
    assert!(columns.contains(&"job_index".to_owned()), "{columns:?}");

    let again = run(&scene, PushOptions::sql(&sql())).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(sim.update_requests().len(), 1, "a second run sends nothing");
}
