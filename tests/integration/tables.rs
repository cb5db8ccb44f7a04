//! The tables beyond tickets, users and organizations, against the simulator: comments and field
//! history from one pass over the ticket-event export, ticket metrics from the ticket export's
//! sideload, and the lists read whole (groups, brands, Help Center, community). Expected rows come
//! from the simulator's state (`Simulator::records`, `Simulator::deleted_keys`).

use serde_json::Value;
use zendesk_lake::sim::{Faults, Round, Simulator};
use zendesk_lake::sync::{self, Outcome};

use crate::common::*;

fn round(n: usize) -> Round {
    Round {
        creates: 6 + n,
        updates: 12,
        silent_updates: 3,
        deletes: 3,
    }
}

/// Requests whose path starts with `prefix` in the log since entry `from`.
fn requests_to(sim: &Simulator, from: usize, prefix: &str) -> Vec<String> {
    sim.request_log()[from..]
        .iter()
        .filter(|r| r.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_equals_the_account_after_each_round() {
    every_table_follows_the_rounds("").await;
}

/// The same with deletion vectors: changed rows are hidden in their files instead of the files
/// being rewritten, and every table still equals the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_equals_the_account_after_each_round_with_deletion_vectors() {
    every_table_follows_the_rounds("[maintenance]\ndeletion_vectors = true").await;
}

async fn every_table_follows_the_rounds(extra_toml: &str) {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_all(&server, dir.path(), extra_toml);
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &all_tables()).await;
    for n in 1..=3 {
        sim.apply_round(&round(n));
        sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &all_tables()).await;
    }
    // The rounds made every kind of change these tables have to show, so the equality above
    // covered them: a comment made private, field changes of both shapes, a deleted group, a
    // brand gone from its list, a deleted ticket's metrics.
    let events = sim.records("ticket_events");
    let children: Vec<&Value> = events
        .iter()
        .flat_map(|e| e["child_events"].as_array().unwrap())
        .collect();
    assert!(children
        .iter()
        .any(|c| c["event_type"] == "CommentPrivacyChange"));
    assert!(children
        .iter()
        .any(|c| c["event_type"] == "Change" && c.get("field_name").is_none()));
    assert!(children
        .iter()
        .any(|c| c["event_type"] == "Change" && c.get("field_name").is_some()));
    for table in [
        "groups",
        "brands",
        "ticket_metrics",
        "sections",
        "posts",
        "articles",
    ] {
        assert!(
            !sim.deleted_keys(table).is_empty(),
            "{table}: the rounds deleted none"
        );
        assert!(deleted_count(dir.path(), table).await > 0, "{table}");
    }
    let private = lake_rows(dir.path(), "ticket_comments")
        .await
        .values()
        .filter(|r| r["public"] == false)
        .count();
    assert!(private > 0);
    if extra_toml.contains("deletion_vectors = true") {
        for table in ["tickets", "ticket_metrics", "ticket_comments"] {
            let logged = std::fs::read_dir(dir.path().join(table).join("_delta_log"))
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
                .any(|text| text.contains("\"deletionVector\":{"));
            assert!(logged, "{table}: the rounds' merges wrote deletion vectors");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_table_enabled_alone_equals_the_account() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dirs: Vec<_> = all_tables()
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    for n in 1..=2 {
        for (table, dir) in all_tables().into_iter().zip(&dirs) {
            let mut settings = settings_all(&server, dir.path(), "");
            settings.tables.retain(|t| t.name == table);
            sync_ok(&settings).await;
            assert_lake_matches_tables(&sim, dir.path(), &[table]).await;
        }
        sim.apply_round(&round(n));
    }
}

/// One pass over the ticket-event export feeds both of its tables, and the ticket export's
/// sideload feeds `ticket_metrics`: adding those tables adds no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_sharing_a_stream_cost_no_extra_request() {
    for (stream, path, alone, together) in [
        (
            "ticket_events",
            "/api/v2/incremental/ticket_events",
            &["ticket_comments"][..],
            &["ticket_comments", "ticket_field_history"][..],
        ),
        (
            "tickets",
            "/api/v2/incremental/tickets/cursor",
            &["tickets"][..],
            &["tickets", "ticket_metrics"][..],
        ),
    ] {
        let mut counts = Vec::new();
        for tables in [alone, together] {
            let (sim, server) = start(small()).await;
            sim.apply_round(&round(0));
            let dir = tempfile::tempdir().unwrap();
            let mut settings = settings_all(&server, dir.path(), "");
            settings
                .tables
                .retain(|t| tables.contains(&t.name.as_str()));
            let from = sim.request_log().len();
            sync_ok(&settings).await;
            let requests = requests_to(&sim, from, path);
            // Never the same page twice.
            let mut unique = requests.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), requests.len(), "{stream}: {requests:?}");
            counts.push(requests.len());
            assert_lake_matches_tables(&sim, dir.path(), tables).await;
        }
        assert_eq!(counts[0], counts[1], "{stream}");
        assert!(counts[0] > 1, "{stream}: several pages");
    }
}

/// A table enabled on a lake whose stream is already synced is filled completely, and its
/// siblings stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_enabled_later_is_filled_completely() {
    for (first, later) in [
        ("ticket_comments", "ticket_field_history"),
        ("ticket_field_history", "ticket_comments"),
        ("tickets", "ticket_metrics"),
    ] {
        let (sim, server) = start(small()).await;
        sim.apply_round(&round(0));
        let dir = tempfile::tempdir().unwrap();
        let mut alone = settings_all(&server, dir.path(), "");
        alone.tables.retain(|t| t.name == first);
        sync_ok(&alone).await;
        sim.apply_round(&round(1));
        sync_ok(&alone).await;
        let mut both = settings_all(&server, dir.path(), "");
        both.tables.retain(|t| t.name == first || t.name == later);
        sync_ok(&both).await;
        assert_lake_matches_tables(&sim, dir.path(), &[first, later]).await;
        // And both continue incrementally from there.
        sim.apply_round(&round(2));
        let report = sync_ok(&both).await;
        assert_lake_matches_tables(&sim, dir.path(), &[first, later]).await;
        let fetched: u64 = report
            .tables
            .iter()
            .find(|o| o.table == first)
            .unwrap()
            .fetched;
        assert!(
            fetched < expected_rows(&sim, first).len() as u64,
            "{first}: the run after the fill is incremental"
        );
    }
}

/// A run in which nothing changed commits nothing, lists included (a listed row equal to the
/// stored one is not rewritten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_commits_nothing_to_any_table() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_all(&server, dir.path(), "");
    sync_ok(&settings).await;
    let before = versions(dir.path()).await;
    let report = sync_ok(&settings).await;
    assert_eq!(versions(dir.path()).await, before);
    for table in &report.tables {
        assert_eq!(table.commits, 0, "{}", table.table);
    }
    // A list run reads each list once, a page per 100 rows.
    for (table, path) in [
        ("groups", "/api/v2/groups"),
        ("posts", "/api/v2/community/posts"),
    ] {
        let from = sim.request_log().len();
        let mut one = settings.clone();
        one.tables.retain(|t| t.name == table);
        sync_ok(&one).await;
        let rows = sim.records(table).len() - sim.deleted_keys(table).len();
        let pages = requests_to(&sim, from, path).len();
        assert!(pages <= rows.div_ceil(100).max(1) + 1, "{table}: {pages}");
    }
}

/// The tables of Help Center and the community.
const GATED: [&str; 5] = ["sections", "categories", "topics", "posts", "articles"];

/// A plan without Help Center or community (403/404), or a ticket-event export the
/// credentials may not read: those tables are skipped with a warning, the others succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_gated_endpoints_skip_their_tables_and_the_rest_succeeds() {
    let (sim, server) = start(small()).await;
    sim.set_faults(Faults {
        deny: vec![
            ("/api/v2/help_center".into(), 404),
            ("/api/v2/community".into(), 403),
        ],
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_all(&server, dir.path(), "");
    let report = sync::run(&settings).await.unwrap();
    assert!(!report.failed());
    for table in &report.tables {
        let gated = GATED.contains(&table.table.as_str());
        match &table.outcome {
            Outcome::Skipped(why) => assert!(gated, "{}: {why}", table.table),
            Outcome::Ok => assert!(!gated, "{} was not skipped", table.table),
            other => panic!("{}: {other:?}", table.table),
        }
    }
    let open: Vec<&str> = all_tables()
        .into_iter()
        .filter(|t| !GATED.contains(t))
        .collect();
    assert_lake_matches_tables(&sim, dir.path(), &open).await;
}

/// Side conversations are read for every ticket that changed since the last run, from the
/// lake's tickets (no second ticket export): one request per changed live ticket. Those of a
/// deleted ticket, or gone from their ticket, are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_conversations_follow_the_changed_tickets() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_all(&server, dir.path(), "");
    // Opt-in: not among the default tables.
    assert!(!settings
        .tables
        .iter()
        .any(|t| t.name == "side_conversations"));
    settings.tables = vec![
        zendesk_lake::spec::find("tickets").unwrap(),
        zendesk_lake::spec::find("side_conversations").unwrap(),
    ];
    let tables = ["tickets", "side_conversations"];
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &tables).await;
    for n in 1..=3 {
        sim.apply_round(&round(n));
        let from = sim.request_log().len();
        let report = sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &tables).await;
        // One request per changed ticket that is not deleted, none for the others.
        let live_changed = lake_rows(dir.path(), "tickets")
            .await
            .values()
            .filter(|t| t["_deleted"] == false)
            .count();
        let asked = requests_to(&sim, from, "/api/v2/tickets/").len();
        let tickets = report.tables.iter().find(|o| o.table == "tickets").unwrap();
        assert!(
            asked as u64 <= tickets.fetched,
            "{asked} > {}",
            tickets.fetched
        );
        assert!(asked > 0 && asked < live_changed, "{asked}");
    }
    assert!(!sim.deleted_keys("side_conversations").is_empty());
    assert!(deleted_count(dir.path(), "side_conversations").await > 0);
    // Nothing changed: no request, no commit.
    let from = sim.request_log().len();
    let report = sync_ok(&settings).await;
    assert!(requests_to(&sim, from, "/api/v2/tickets/").is_empty());
    assert!(report.tables.iter().all(|o| o.commits == 0));
}

/// Without the Collaboration add-on Zendesk answers 403: the table is skipped, the rest synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_conversations_without_the_add_on_are_skipped() {
    let (sim, server) = start(small()).await;
    sim.set_faults(Faults {
        deny: vec![("/api/v2/tickets/".into(), 403)],
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_all(&server, dir.path(), "");
    settings
        .tables
        .push(zendesk_lake::spec::find("side_conversations").unwrap());
    let report = sync::run(&settings).await.unwrap();
    assert!(!report.failed());
    for table in &report.tables {
        match (&table.outcome, table.table.as_str()) {
            (Outcome::Skipped(_), "side_conversations") | (Outcome::Ok, _) => {}
            (other, name) => panic!("{name}: {other:?}"),
        }
    }
    assert_lake_matches_tables(&sim, dir.path(), &all_tables()).await;
}

/// A batch that changes nothing in a table (patches for rows it does not hold: a ticket created
/// and deleted between two runs leaves its metric set nothing to mark) makes no Delta commit,
/// and says so: the run must not count it as the table's batch, or the next one would look
/// like another run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_changes_nothing_makes_no_commit_and_says_so() {
    use std::collections::BTreeMap;
    use zendesk_lake::decode::{self, Key};
    use zendesk_lake::lake::{CommitDraft, ControlRow, PatchSet};
    let dir = tempfile::tempdir().unwrap();
    let lake = open_lake(dir.path());
    let table = zendesk_lake::spec::find("ticket_metrics").unwrap();
    lake.ensure_table(table).await.unwrap();
    let before = lake
        .open("ticket_metrics")
        .await
        .unwrap()
        .unwrap()
        .version();
    let draft = CommitDraft {
        row: ControlRow {
            stream: "tickets".into(),
            seq: 1,
            epoch: "e".into(),
            position: Value::Null,
            watermark: None,
            tables: BTreeMap::new(),
            run_id: "run".into(),
            committed_at: 0,
        },
        writes: vec!["ticket_metrics".into()],
    };
    let empty = zendesk_lake::arrow::array::RecordBatch::new_empty(table.schema());
    let patches = PatchSet {
        column: "ticket_id".into(),
        sets: vec!["_deleted".into()],
        rows: decode::deletions(table, &[Key::Int(999)], chrono::Utc::now()).unwrap(),
    };
    // Deletions are keyed by the primary key; match them by ticket_id as the metric patches do.
    let rows = patches.rows.clone();
    let renamed = zendesk_lake::arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(zendesk_lake::arrow::datatypes::Schema::new(vec![
            zendesk_lake::arrow::datatypes::Field::new(
                "ticket_id",
                zendesk_lake::arrow::datatypes::DataType::Int64,
                true,
            ),
            rows.schema().field(1).clone(),
            rows.schema().field(2).clone(),
        ])),
        rows.columns().to_vec(),
    )
    .unwrap();
    let report = lake
        .upsert(table, empty, &draft)
        .with_patches(PatchSet {
            rows: renamed,
            ..patches
        })
        .await
        .unwrap();
    assert!(!report.committed);
    let after = lake
        .open("ticket_metrics")
        .await
        .unwrap()
        .unwrap()
        .version();
    assert_eq!(before, after);
}
