//! Tests of the ticket metric event export, the tag listing and the satisfaction ratings as
//! the simulator serves them, and of the ground truth (`records`, `deleted_keys`) behind them.

use std::collections::BTreeSet;

use serde_json::Value;

use super::tests::{get, id, small, unix};
use super::*;

fn round() -> Round {
    Round {
        creates: 10,
        updates: 40,
        silent_updates: 2,
        deletes: 2,
    }
}

/// Pages of a time export from `start_time=0` to `end_of_stream`.
async fn walk(base: &str, path: &str, per_page: usize) -> Vec<Value> {
    let mut start = 0;
    let mut pages = Vec::new();
    loop {
        let page = get(&format!(
            "{base}{path}?start_time={start}&per_page={per_page}"
        ))
        .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let body = page.body;
        let end = body["end_time"].as_i64().expect("end_time");
        assert!(end >= start);
        assert_eq!(
            body["count"].as_u64(),
            body["ticket_metric_events"]
                .as_array()
                .map(|a| a.len() as u64)
        );
        let done = body["end_of_stream"] == true;
        pages.push(body);
        if done {
            return pages;
        }
        start = end;
    }
}

#[tokio::test]
async fn metric_events_are_served_by_end_time_with_deleted_breaches_again_at_their_old_time() {
    let sim = Simulator::new(small());
    for _ in 0..4 {
        sim.apply_round(&round());
    }
    let server = sim.serve(0).await.expect("serve");
    let base = server.base_url().to_owned();
    let path = "/api/v2/incremental/ticket_metric_events.json";
    let pages = walk(&base, path, 50).await;
    assert!(pages.len() > 3);
    let mut served = BTreeSet::new();
    let mut resent_old = 0;
    let mut start = 0;
    for page in &pages {
        for event in page["ticket_metric_events"].as_array().expect("events") {
            served.insert(id(event));
            let time = unix(&event["time"]);
            if event["deleted"] == true {
                assert_eq!(event["type"], "breach");
                if time < start {
                    resent_old += 1;
                }
            } else {
                assert!(time >= start, "a live event is served at its own time");
            }
            if event["type"] == "apply_sla" || event["type"] == "breach" {
                assert!(event["sla"]["policy"]["id"].is_i64(), "{event}");
            }
            if event["type"] == "update_status" {
                assert!(event["status"]["calendar"].is_i64(), "{event}");
            }
        }
        start = page["end_time"].as_i64().expect("end_time");
    }
    let truth: BTreeSet<i64> = sim.records("ticket_metric_events").iter().map(id).collect();
    assert_eq!(served, truth);
    let deleted = sim.deleted_keys("ticket_metric_events");
    assert!(!deleted.is_empty(), "a priority change deleted a breach");
    assert!(
        resent_old > 0,
        "a deleted breach comes again with its old time"
    );
}

#[tokio::test]
async fn tags_are_listed_by_decreasing_count_and_paged_by_cursor() {
    let sim = Simulator::new(small());
    let server = sim.serve(0).await.expect("serve");
    let base = server.base_url().to_owned();
    let mut url = format!("{base}/api/v2/tags.json?page[size]=3");
    let mut listed: Vec<(String, i64)> = Vec::new();
    loop {
        let page = get(&url).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for tag in page.body["tags"].as_array().expect("tags") {
            listed.push((
                tag["name"].as_str().expect("name").to_owned(),
                tag["count"].as_i64().expect("count"),
            ));
        }
        if page.body["meta"]["has_more"] != true {
            break;
        }
        url = page.body["links"]["next"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    assert!(listed.len() > 3);
    assert!(listed.windows(2).all(|w| w[0].1 >= w[1].1), "{listed:?}");
    let truth: Vec<String> = sim
        .records("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect();
    let mut names: Vec<String> = listed.into_iter().map(|(name, _)| name).collect();
    names.sort();
    assert_eq!(names, truth);
    assert!(sim.deleted_keys("tags").is_empty());
}

#[tokio::test]
async fn ratings_filter_on_creation_and_change_later() {
    let sim = Simulator::new(SimConfig {
        tickets: 400,
        ..small()
    });
    let before = sim.records("satisfaction_ratings");
    assert!(before.iter().any(|r| r["score"] == "offered"));
    assert!(before
        .iter()
        .any(|r| r["score"] == "bad" && !r["reason"].is_null()));
    for _ in 0..3 {
        sim.apply_round(&round());
    }
    let after = sim.records("satisfaction_ratings");
    let changed = after
        .iter()
        .filter(|r| {
            before
                .iter()
                .any(|b| b["id"] == r["id"] && b["updated_at"] != r["updated_at"])
        })
        .count();
    assert!(changed > 0, "ratings change after their offer");
    for rating in &after {
        assert!(unix(&rating["updated_at"]) >= unix(&rating["created_at"]));
    }
    let server = sim.serve(0).await.expect("serve");
    let base = server.base_url().to_owned();
    let newest = after
        .iter()
        .map(|r| unix(&r["created_at"]))
        .max()
        .expect("ratings");
    let from = newest - 30 * 86_400;
    let page = get(&format!(
        "{base}/api/v2/satisfaction_ratings.json?start_time={from}&page[size]=100"
    ))
    .await;
    let served = page.body["satisfaction_ratings"]
        .as_array()
        .expect("ratings");
    let expected = after
        .iter()
        .filter(|r| unix(&r["created_at"]) >= from)
        .count();
    assert_eq!(served.len(), expected.min(100));
    assert!(served.iter().all(|r| unix(&r["created_at"]) >= from));
}
