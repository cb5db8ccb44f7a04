//! The account tables of issue 20 that are neither configuration lists nor children: `tags`
//! (a snapshot keyed by a string, the listing derived from the tickets' tags), against the
//! simulator over change rounds. Expected rows come from the simulator's state
//! (`Simulator::records`, `Simulator::deleted_keys`).

use std::path::Path;

use zendesk_lake::config::Settings;
use zendesk_lake::lake::maintenance::{Layout, OptimizeOptions};
use zendesk_lake::sim::{Round, SimConfig, SimServer};
use zendesk_lake::spec;

use crate::common::*;

fn round(n: usize) -> Round {
    Round {
        creates: 20 + n,
        updates: 60,
        silent_updates: 5,
        deletes: 10,
    }
}

/// An account whose tag listing is capped low, so that tags leave it as others overtake them.
fn capped() -> SimConfig {
    SimConfig {
        tags_listed: 8,
        ..small()
    }
}

/// Settings syncing `tables` only.
fn only(server: &SimServer, lake: &Path, tables: &[&str]) -> Settings {
    let mut settings = settings_all(server, lake, "");
    settings
        .tables
        .retain(|t| tables.contains(&t.name.as_str()));
    assert_eq!(settings.tables.len(), tables.len(), "all by default");
    settings
}

async fn version(lake: &Path, table: &str) -> Option<u64> {
    open_lake(lake)
        .open(table)
        .await
        .unwrap()
        .and_then(|t| t.version())
}

/// The tags table, keyed by the tag's name, equals the listing after every round; a tag that
/// left the listing is `_deleted` and one that came back is live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_equal_the_listing_after_each_round() {
    let (sim, server) = start(capped()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = only(&server, dir.path(), &["tags"]);
    // Pages of 3: the listing's cursor pages are followed.
    settings.page_size = 3;
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &["tags"]).await;
    assert_eq!(lake_rows(dir.path(), "tags").await.len(), 8);
    let mut ever_deleted = 0;
    for n in 1..=4 {
        sim.apply_round(&round(n));
        sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &["tags"]).await;
        ever_deleted = ever_deleted.max(deleted_count(dir.path(), "tags").await);
    }
    assert!(ever_deleted > 0, "a tag overtaken under the cap is deleted");
    let live = lake_rows(dir.path(), "tags")
        .await
        .into_values()
        .filter(|row| row["_deleted"] == false)
        .count();
    assert_eq!(live, 8, "the listing's cap");
}

/// A string key everywhere a key works: an idle run commits nothing (the snapshot's
/// fingerprints by name), `optimize` sorts the files by name and changes no row, the next idle
/// run still commits nothing, and `status` counts the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_key_works_in_snapshots_optimize_and_status() {
    let (sim, server) = start(capped()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = only(&server, dir.path(), &["tags"]);
    sync_ok(&settings).await;
    sim.apply_round(&round(1));
    sync_ok(&settings).await;
    let before = version(dir.path(), "tags").await;
    let report = sync_ok(&settings).await;
    assert_eq!(report.tables[0].commits, 0, "an idle run");
    assert_eq!(version(dir.path(), "tags").await, before);

    let rows = lake_rows(dir.path(), "tags").await;
    let lake = open_lake(dir.path());
    let options = OptimizeOptions {
        layout: Layout::Cluster,
        target_file_size: 1,
    };
    let optimized = lake.optimize("tags", &options).await.unwrap().unwrap();
    assert_eq!(optimized.clustered_by.as_deref(), Some("name"));
    assert_eq!(lake_rows(dir.path(), "tags").await, rows);
    let after = version(dir.path(), "tags").await;
    let report = sync_ok(&settings).await;
    assert_eq!(report.tables[0].commits, 0, "idle after optimize");
    assert_eq!(version(dir.path(), "tags").await, after);

    sim.apply_round(&round(2));
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &["tags"]).await;

    let status = zendesk_lake::commands::status::status(&lake).await.unwrap();
    let stream = status.iter().find(|s| s.stream == "tags").unwrap();
    let expected = lake_rows(dir.path(), "tags").await;
    let deleted = expected.values().filter(|r| r["_deleted"] == true).count();
    assert_eq!(stream.tables[0].rows, expected.len() as i64);
    assert_eq!(stream.tables[0].deleted, deleted as i64);
}

/// A full run costs ceil(tags / 100) requests of 100 (at least one), and nothing else but the
/// credentials' check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_cost_a_request_per_100_tags() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = only(&server, dir.path(), &["tags"]);
    settings.page_size = 1000;
    let from = sim.request_log().len();
    let report = sync_ok(&settings).await;
    let log = sim.request_log()[from..].to_vec();
    let path = &spec::find("tags").unwrap().source().path;
    let asked: Vec<&String> = log.iter().filter(|r| r.starts_with(path)).collect();
    let listed = sim.records("tags").len();
    assert!(listed > 0);
    assert_eq!(asked.len(), listed.div_ceil(100).max(1), "{asked:?}");
    assert!(asked
        .iter()
        .all(|r| r.contains("page%5Bsize%5D=100") || r.contains("page[size]=100")));
    assert_eq!(report.tables[0].requests, asked.len() as u64);
    assert_eq!(
        log.len(),
        asked.len() + 1,
        "and the credentials' check: {log:?}"
    );
}

/// Tags synced together with every default table: the tickets the rounds change move the
/// listing, and both equal the account after each round; an idle run commits nothing to tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_with_every_default_table_equal_the_account() {
    let (sim, server) = start(capped()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_all(&server, dir.path(), "");
    assert!(
        settings.tables.iter().any(|t| t.name == "tags"),
        "by default"
    );
    let compared = ["tickets", "tags", "groups", "macros"];
    sync_ok(&settings).await;
    assert_lake_matches_tables(&sim, dir.path(), &compared).await;
    for n in 1..=2 {
        sim.apply_round(&round(n));
        sync_ok(&settings).await;
        assert_lake_matches_tables(&sim, dir.path(), &compared).await;
    }
    let before = version(dir.path(), "tags").await;
    let report = sync_ok(&settings).await;
    let tags = report.tables.iter().find(|t| t.table == "tags").unwrap();
    assert_eq!(tags.commits, 0);
    assert_eq!(version(dir.path(), "tags").await, before);
}

/// Ticket metric events equal the account after every round, alone and with the tickets'
/// streams; a breach Zendesk deleted (sent again with its old `time`) is `_deleted`; an idle
/// run commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_metric_events_equal_the_account_after_each_round() {
    let (sim, server) = start(small()).await;
    let alone = tempfile::tempdir().unwrap();
    let together = tempfile::tempdir().unwrap();
    let tables = ["ticket_metric_events"];
    let with = ["tickets", "ticket_comments", "ticket_metric_events", "tags"];
    let settings = only(&server, alone.path(), &tables);
    let all = only(&server, together.path(), &with);
    for n in 0..=3 {
        if n > 0 {
            sim.apply_round(&round(n));
        }
        sync_ok(&settings).await;
        sync_ok(&all).await;
        assert_lake_matches_tables(&sim, alone.path(), &tables).await;
        assert_lake_matches_tables(&sim, together.path(), &with).await;
    }
    let deleted = sim.deleted_keys("ticket_metric_events").len();
    assert!(deleted > 0, "some breach was deleted");
    assert_eq!(
        deleted_count(alone.path(), "ticket_metric_events").await,
        deleted
    );
    let rows = lake_rows(alone.path(), "ticket_metric_events").await;
    for kind in [
        "apply_sla",
        "breach",
        "update_status",
        "measure",
        "pause",
        "fulfill",
    ] {
        assert!(
            rows.values().any(|r| r["type"] == kind),
            "no {kind} event in the lake"
        );
    }
    let before = version(alone.path(), "ticket_metric_events").await;
    let state = version(alone.path(), "_sync_state").await;
    let report = sync_ok(&settings).await;
    assert_eq!(report.tables[0].commits, 0, "an idle run");
    assert_eq!(version(alone.path(), "ticket_metric_events").await, before);
    assert_eq!(
        version(alone.path(), "_sync_state").await,
        state,
        "a breach sent again at its old time is not delivered twice"
    );
}

/// A full run reads the export 1000 events a page under the incremental-export budget: about
/// one request per 1000 events (a page never splits a second, so a page may hold more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_metric_events_cost_a_request_per_1000_events() {
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(1));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = only(&server, dir.path(), &["ticket_metric_events"]);
    settings.page_size = 1000;
    let from = sim.request_log().len();
    let report = sync_ok(&settings).await;
    let log = sim.request_log()[from..].to_vec();
    let path = &spec::find("ticket_metric_events").unwrap().source().path;
    let asked: Vec<&String> = log.iter().filter(|r| r.starts_with(path)).collect();
    let events = sim.records("ticket_metric_events").len();
    assert!(events > 1000, "{events} events");
    assert!(
        asked.len() <= events / 1000 + 1 && !asked.is_empty(),
        "{} requests for {events} events",
        asked.len()
    );
    assert!(
        asked.iter().all(|r| r.contains("per_page=1000")),
        "{asked:?}"
    );
    assert_eq!(report.tables[0].requests, asked.len() as u64);
}

/// README's query of SLA breaches per policy per week counts every breach not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_breaches_per_policy_per_week_as_the_readme_queries_them() {
    use zendesk_lake::arrow::compute::cast;
    use zendesk_lake::arrow::datatypes::{DataType, Int64Type};
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(1));
    let dir = tempfile::tempdir().unwrap();
    let settings = only(&server, dir.path(), &["ticket_metric_events"]);
    sync_ok(&settings).await;
    let batches = open_lake(dir.path())
        .query(
            "SELECT sla_policy_title AS policy, date_trunc('week', time) AS week, \
             count(*) AS breaches FROM ticket_metric_events \
             WHERE type = 'breach' AND NOT _deleted GROUP BY 1, 2 ORDER BY week, policy",
        )
        .await
        .unwrap();
    let mut total = 0;
    for batch in &batches {
        let counts = cast(batch.column(2), &DataType::Int64).unwrap();
        use zendesk_lake::arrow::array::AsArray;
        total += counts
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .sum::<i64>();
        assert!(
            batch.column(0).null_count() == 0,
            "every breach names its policy"
        );
    }
    let deleted = sim.deleted_keys("ticket_metric_events");
    let expected = sim
        .records("ticket_metric_events")
        .iter()
        .filter(|e| e["type"] == "breach" && !deleted.contains(&e["id"].to_string()))
        .count() as i64;
    assert!(expected > 0);
    assert_eq!(total, expected);
}

/// Satisfaction ratings equal the account after every round, alone and with the tickets: an
/// offered rating answered in a later round (its `created_at` before the run's position) is
/// read again through the overlap window; an idle run commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn satisfaction_ratings_equal_the_account_after_each_round() {
    let (sim, server) = start(small()).await;
    let alone = tempfile::tempdir().unwrap();
    let together = tempfile::tempdir().unwrap();
    let tables = ["satisfaction_ratings"];
    let with = ["tickets", "satisfaction_ratings", "tags"];
    let settings = only(&server, alone.path(), &tables);
    let all = only(&server, together.path(), &with);
    let offered = || -> Vec<String> {
        sim.records("satisfaction_ratings")
            .iter()
            .filter(|r| r["score"] == "offered")
            .map(|r| r["id"].to_string())
            .collect()
    };
    let mut offered_before = Vec::new();
    for n in 0..=4 {
        if n > 0 {
            sim.apply_round(&round(n));
        }
        sync_ok(&settings).await;
        sync_ok(&all).await;
        assert_lake_matches_tables(&sim, alone.path(), &tables).await;
        assert_lake_matches_tables(&sim, together.path(), &with).await;
        if n == 1 {
            // Offered before the lake's position: only the overlap reads them again.
            offered_before = offered();
        }
    }
    let answered_later = sim
        .records("satisfaction_ratings")
        .iter()
        .filter(|r| r["score"] != "offered" && offered_before.contains(&r["id"].to_string()))
        .count();
    assert!(answered_later > 0, "a rating offered before was answered");
    let before = version(alone.path(), "satisfaction_ratings").await;
    let state = version(alone.path(), "_sync_state").await;
    let report = sync_ok(&settings).await;
    assert_eq!(
        version(alone.path(), "_sync_state").await,
        state,
        "no control row"
    );
    assert_eq!(report.tables[0].commits, 0, "an idle run");
    assert_eq!(version(alone.path(), "satisfaction_ratings").await, before);
}

/// A run asks from the newest creation time seen less 30 days: the first run reads every
/// rating (ceil(n / 100) requests), the next only the window's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn satisfaction_ratings_are_read_from_the_position_less_the_overlap() {
    let (sim, server) = start(SimConfig {
        tickets: 800,
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = only(&server, dir.path(), &["satisfaction_ratings"]);
    settings.page_size = 1000;
    let path = &spec::find("satisfaction_ratings").unwrap().source().path;
    let asked = |from: usize| -> Vec<String> {
        sim.request_log()[from..]
            .iter()
            .filter(|r| r.starts_with(path.as_str()))
            .cloned()
            .collect()
    };
    let from = sim.request_log().len();
    sync_ok(&settings).await;
    let ratings = sim.records("satisfaction_ratings");
    assert!(ratings.len() > 100, "{}", ratings.len());
    let first = asked(from);
    assert_eq!(first.len(), ratings.len().div_ceil(100), "{first:?}");
    assert!(first[0].contains("start_time=0"), "{first:?}");

    let newest = ratings
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().unwrap())
                .unwrap()
                .timestamp()
        })
        .max()
        .unwrap();
    let window = newest - 30 * 86_400;
    let from = sim.request_log().len();
    sync_ok(&settings).await;
    let second = asked(from);
    assert!(
        second[0].contains(&format!("start_time={window}")),
        "{second:?}"
    );
    let in_window = ratings
        .iter()
        .filter(|r| {
            chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().unwrap())
                .unwrap()
                .timestamp()
                >= window
        })
        .count();
    assert_eq!(second.len(), in_window.div_ceil(100).max(1), "{second:?}");
}

/// README's CSAT-by-group query: good and bad answers per group, as the account has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csat_by_group_as_the_readme_queries_it() {
    use zendesk_lake::arrow::array::AsArray;
    use zendesk_lake::arrow::compute::cast;
    use zendesk_lake::arrow::datatypes::{DataType, Int64Type};
    let (sim, server) = start(small()).await;
    sim.apply_round(&round(1));
    let dir = tempfile::tempdir().unwrap();
    let settings = only(&server, dir.path(), &["satisfaction_ratings", "groups"]);
    sync_ok(&settings).await;
    let batches = open_lake(dir.path())
        .query(
            "SELECT g.name AS grp, \
             count(*) FILTER (WHERE r.score = 'good') AS good, \
             count(*) FILTER (WHERE r.score = 'bad') AS bad, \
             round(100.0 * count(*) FILTER (WHERE r.score = 'good') \
             / nullif(count(*) FILTER (WHERE r.score IN ('good', 'bad')), 0), 1) AS csat \
             FROM satisfaction_ratings r JOIN groups g ON g.id = r.group_id \
             GROUP BY g.name ORDER BY csat DESC",
        )
        .await
        .unwrap();
    let (mut good, mut bad, mut groups) = (0, 0, 0);
    for batch in &batches {
        let sum = |i: usize| {
            let column = cast(batch.column(i), &DataType::Int64).unwrap();
            column
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>()
        };
        good += sum(1);
        bad += sum(2);
        groups += batch.num_rows();
    }
    let ratings = sim.records("satisfaction_ratings");
    let count = |score: &str| ratings.iter().filter(|r| r["score"] == score).count() as i64;
    assert_eq!((good, bad), (count("good"), count("bad")));
    assert!(groups > 1 && good > 0 && bad > 0, "{groups} {good} {bad}");
}
