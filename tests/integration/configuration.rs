//! The account's configuration tables (fields, forms, custom statuses, macros, triggers,
//! automations, views, SLA policies, memberships, schedules, custom roles), read whole from
//! their lists, against the simulator: exact after change rounds, an idle run commits nothing,
//! a full run costs a request per 100 rows of a paginated list and one per unpaginated list,
//! and custom roles are skipped on a plan without them. Expected rows come from the
//! simulator's state (`Simulator::records`, `Simulator::deleted_keys`).

use std::path::Path;

use zendesk_lake::config::Settings;
use zendesk_lake::sim::{Faults, Round, SimConfig, SimServer, Simulator};
use zendesk_lake::spec::{self, Paging};

use crate::common::*;

/// The tables of the account's configuration.
const CONFIGURATION: [&str; 14] = [
    "ticket_fields",
    "user_fields",
    "organization_fields",
    "ticket_forms",
    "custom_statuses",
    "macros",
    "triggers",
    "automations",
    "views",
    "sla_policies",
    "group_memberships",
    "organization_memberships",
    "schedules",
    "custom_roles",
];

fn round(n: usize) -> Round {
    Round {
        creates: 20 + n,
        updates: 40,
        silent_updates: 5,
        deletes: 20,
    }
}

/// Settings syncing the configuration tables only.
fn configuration(server: &SimServer, lake: &Path) -> Settings {
    let mut settings = settings_all(server, lake, "");
    settings
        .tables
        .retain(|t| CONFIGURATION.contains(&t.name.as_str()));
    assert_eq!(settings.tables.len(), CONFIGURATION.len(), "all by default");
    settings
}

/// Each table's Delta version.
async fn table_versions(lake: &Path) -> Vec<Option<u64>> {
    let lake = open_lake(lake);
    let mut out = Vec::new();
    for name in CONFIGURATION {
        out.push(lake.open(name).await.unwrap().and_then(|t| t.version()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_equals_the_account_after_each_round() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let settings = configuration(&server, dir.path());
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &CONFIGURATION).await;
    for n in 1..=3 {
        sim.apply_round(&round(n));
        let report = sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &CONFIGURATION).await;
        for table in &report.tables {
            assert!(table.commits > 0, "{}: the round changed it", table.table);
        }
    }
    // The rounds deleted rows of every table after a run had seen them, and deactivated some:
    // an inactive row stays, not deleted.
    for table in CONFIGURATION {
        assert!(
            deleted_count(dir.path(), table).await > 0,
            "{table}: rows gone from the listing are marked deleted"
        );
    }
    let inactive = lake_rows(dir.path(), "macros")
        .await
        .into_values()
        .filter(|row| row["active"] == false && row["_deleted"] == false)
        .count();
    assert!(inactive > 0, "an inactive macro is kept, not deleted");
}

/// Each table enabled alone reads only its own list and equals the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_configuration_table_alone_equals_the_account() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dirs: Vec<_> = CONFIGURATION
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    for n in 1..=2 {
        for (table, dir) in CONFIGURATION.into_iter().zip(&dirs) {
            let mut settings = configuration(&server, dir.path());
            settings.tables.retain(|t| t.name == table);
            sync_ok(&settings).await;
            assert_lake_matches_tables(&sim, dir.path(), &[table]).await;
        }
        sim.apply_round(&round(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_commits_nothing_to_the_configuration() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let settings = configuration(&server, dir.path());
    sync_ok(&settings).await;
    let before = table_versions(dir.path()).await;
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let state = open_lake(dir.path())
        .open("_sync_state")
        .await
        .unwrap()
        .and_then(|t| t.version());
    let report = sync_ok(&settings).await;
    for table in &report.tables {
        assert_eq!(table.commits, 0, "{}", table.table);
        assert_eq!(table.upserted + table.deleted, 0, "{}", table.table);
    }
    assert_eq!(table_versions(dir.path()).await, before);
    let after = open_lake(dir.path())
        .open("_sync_state")
        .await
        .unwrap()
        .and_then(|t| t.version());
    assert_eq!(after, state, "no control row either");
    assert_lake_matches_tables(&sim, dir.path(), &CONFIGURATION).await;
}

/// A full run reads each paginated list 100 rows a page, ceil(rows / 100) requests, and each
/// list Zendesk documents without pagination in one request without paging parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_costs_a_request_per_100_rows_or_one_per_unpaginated_list() {
    let (sim, server) = start(SimConfig {
        tickets: 500,
        users: 240,
        organizations: 50,
        ..SimConfig::default()
    })
    .await;
    sim.apply_round(&round(0));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = configuration(&server, dir.path());
    // The production page size: lists ask for Zendesk's largest list page, 100.
    settings.page_size = 1000;
    let from = sim.request_log().len();
    let report = sync_ok(&settings).await;
    let log = sim.request_log()[from..].to_vec();
    let mut paginated_over_100 = 0;
    let mut expected_total = 0;
    for table in CONFIGURATION {
        let stream = spec::find(table).unwrap().source();
        let asked: Vec<&String> = log.iter().filter(|r| r.starts_with(&stream.path)).collect();
        let rows = sim.records(table).len() - sim.deleted_keys(table).len();
        let expected = match stream.paging {
            Paging::Cursor => rows.div_ceil(100).max(1),
            Paging::Unpaginated => 1,
        };
        assert_eq!(asked.len(), expected, "{table}: {rows} rows, {asked:?}");
        match stream.paging {
            Paging::Cursor => {
                assert!(
                    asked
                        .iter()
                        .all(|r| r.contains("page%5Bsize%5D=100") || r.contains("page[size]=100")),
                    "{asked:?}"
                );
                if rows > 100 {
                    paginated_over_100 += 1;
                }
            }
            Paging::Unpaginated => assert!(!asked[0].contains("page"), "{asked:?}"),
        }
        let reported = report.tables.iter().find(|t| t.table == table).unwrap();
        assert_eq!(reported.requests, expected as u64, "{table}");
        expected_total += expected;
    }
    assert!(paginated_over_100 >= 2, "some lists take several pages");
    // Nothing else but the credentials' check.
    let others: Vec<&String> = log
        .iter()
        .filter(|r| {
            !CONFIGURATION
                .iter()
                .any(|t| r.starts_with(&spec::find(t).unwrap().source().path))
        })
        .collect();
    assert!(
        others.iter().all(|r| r.starts_with("/api/v2/users/me")),
        "{others:?}"
    );
    assert_eq!(log.len(), expected_total + others.len());
    assert_lake_matches_tables(&sim, dir.path(), &CONFIGURATION).await;
}

/// Were Zendesk to paginate a list it documents without pagination, its first page is not taken
/// for the whole list: the stream fails naming its endpoint, the other lists are synced, and no
/// row is marked deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaginated_list_that_offers_a_next_page_fails_and_deletes_nothing() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = configuration(&server, dir.path());
    sync_ok(&settings).await;
    sim.apply_round(&round(1));
    sim.set_faults(Faults {
        paginate_whole_lists: Some(1),
        ..Faults::default()
    });
    let report = zendesk_lake::sync::run(&settings).await.unwrap();
    assert!(report.failed());
    for table in &report.tables {
        let stream = spec::find(&table.table).unwrap().source();
        match stream.paging {
            Paging::Unpaginated => {
                let why = failure(&report, &table.table);
                assert!(
                    why.contains(&stream.path) && why.contains("next page"),
                    "{why}"
                );
                assert_eq!(table.commits, 0, "{}", table.table);
                assert_eq!(deleted_count(dir.path(), &table.table).await, 0);
            }
            Paging::Cursor => assert_eq!(
                table.outcome,
                zendesk_lake::sync::Outcome::Ok,
                "{}",
                table.table
            ),
        }
    }
    // Once Zendesk answers whole again, the next run converges.
    sim.set_faults(Faults::default());
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &CONFIGURATION).await;
}

/// Custom roles need Enterprise: on another plan Zendesk answers 403, and the binary skips the
/// table with one warning line, syncs the rest and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_roles_on_a_plan_without_them_are_skipped_and_the_run_exits_0() {
    let (sim, server) = start(small()).await;
    sim.set_faults(Faults {
        deny: vec![("/api/v2/custom_roles".into(), 403)],
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config = SimConfig::default();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_zendesk-lake"))
        .args([
            "sync",
            "--lake",
            lake.to_str().unwrap(),
            "--tables",
            "custom_roles,macros,schedules",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ZENDESK_BASE_URL", server.base_url())
        .env("ZENDESK_OAUTH_TOKEN", &config.oauth_token)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("custom_roles") && warnings[0].contains("403"),
        "{}",
        warnings[0]
    );
    assert!(open_lake(&lake)
        .open("custom_roles")
        .await
        .unwrap()
        .is_none());
    assert_lake_matches_tables(&sim, &lake, &["macros", "schedules"]).await;

    // The library reports it as skipped, the others as synced.
    let dir = tempfile::tempdir().unwrap();
    let settings = configuration(&server, dir.path());
    let report = zendesk_lake::sync::run(&settings).await.unwrap();
    assert!(!report.failed());
    for table in &report.tables {
        let skipped = matches!(table.outcome, zendesk_lake::sync::Outcome::Skipped(_));
        assert_eq!(
            skipped,
            table.table == "custom_roles",
            "{}: {:?}",
            table.table,
            table.outcome
        );
    }
}

/// The README's query of tickets per custom status name (README.md, "Querying the tables")
/// counts every live ticket under a listed status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_per_custom_status_name_as_the_readme_queries_it() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_all(&server, dir.path(), "");
    settings
        .tables
        .retain(|t| t.name == "tickets" || t.name == "custom_statuses");
    sync_ok(&settings).await;
    let batches = open_lake(dir.path())
        .query(
            "SELECT s.agent_label AS status, count(*) AS tickets \
             FROM tickets t JOIN custom_statuses s ON s.id = t.custom_status_id \
             WHERE NOT t._deleted \
             GROUP BY s.agent_label ORDER BY tickets DESC",
        )
        .await
        .unwrap();
    let rows = rows_of(&batches);
    let total: i64 = rows.iter().map(|(_, n)| n).sum();
    let live = sim
        .records("tickets")
        .iter()
        .filter(|t| t["status"] != "deleted")
        .count() as i64;
    assert_eq!(
        total, live,
        "every live ticket has a listed custom status: {rows:?}"
    );
    assert!(rows.len() > 1, "{rows:?}");
}

/// (label, count) rows of a two-column query.
fn rows_of(batches: &[zendesk_lake::arrow::array::RecordBatch]) -> Vec<(String, i64)> {
    use zendesk_lake::arrow::array::AsArray;
    use zendesk_lake::arrow::compute::cast;
    use zendesk_lake::arrow::datatypes::{DataType, Int64Type};
    let mut rows = Vec::new();
    for batch in batches {
        let labels = cast(batch.column(0), &DataType::Utf8).unwrap();
        let labels = labels.as_string::<i32>();
        let counts = cast(batch.column(1), &DataType::Int64).unwrap();
        let counts = counts.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            rows.push((labels.value(i).to_owned(), counts.value(i)));
        }
    }
    rows
}

/// The simulator's configuration is what the tables read: a sanity check of the helper lists.
#[test]
fn the_configuration_is_every_list_of_the_default_set_added_with_it() {
    let defaults = all_tables();
    for table in CONFIGURATION {
        assert!(defaults.contains(&table), "{table} is synced by default");
        let spec = spec::find(table).unwrap();
        assert_eq!(spec.write, spec::WriteMode::Snapshot, "{table}");
        assert_eq!(spec.source().kind, spec::StreamKind::List, "{table}");
        assert!(
            !Simulator::new(small()).records(table).is_empty(),
            "{table}"
        );
    }
}
