//! Hostile payloads served by the simulator: odd types, huge and broken text, nulls, unknown
//! fields. Each is decoded exactly or rejected with an error naming object, id and field, with
//! nothing half-written; none panics.

use serde_json::{json, Value};
use zendesk_lake::sim::Simulator;
use zendesk_lake::sync::{self, Outcome};

use crate::common::*;

/// A ticket of the simulator with some fields replaced.
fn ticket_with(sim: &Simulator, id: i64, fields: Value) -> Value {
    let mut ticket = sim
        .records("tickets")
        .into_iter()
        .find(|t| t["id"] == id)
        .expect("ticket exists");
    for (k, v) in fields.as_object().unwrap() {
        ticket[k] = v.clone();
    }
    ticket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_lossless_values_are_decoded() {
    let (sim, server) = start(small()).await;
    let huge = "ü".repeat(1 << 20);
    let cases = [
        (3, json!({"requester_id": "10000000001", "brand_id": 17.0})), // numbers as strings / floats
        (
            4,
            json!({"subject": {"text": "an object where a string was"}}),
        ),
        (5, json!({"via": "web"})),        // via as a string
        (6, json!({"description": huge})), // 2 MB of text
        (
            7,
            json!({"tags": ["a", 1, true], "unknown_new_field": {"x": [1, 2]}, "another": 5}),
        ),
        (
            8,
            json!({"url": null, "type": null, "subject": null, "description": null, "priority": null,
                   "status": null, "via": null, "tags": null, "custom_fields": null, "collaborator_ids": null,
                   "created_at": null, "updated_at": null, "has_incidents": null, "satisfaction_rating": null}),
        ),
        (
            9,
            json!({"custom_fields": [{"id": 1, "value": {"nested": [1, "x"]}}, {"id": 2}], "fields": []}),
        ),
    ];
    for (id, fields) in &cases {
        sim.override_record(
            "tickets",
            *id,
            ticket_with(&sim, *id, fields.clone()).to_string(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    sync_ok(&settings(&server, dir.path(), "")).await;
    assert_lake_matches(&sim, dir.path()).await;
    let rows = lake_rows(dir.path(), "tickets").await;
    assert_eq!(rows["3"]["requester_id"], json!(10000000001i64));
    assert_eq!(rows["3"]["brand_id"], json!(17));
    assert_eq!(
        rows["4"]["subject"],
        json!(r#"{"text":"an object where a string was"}"#)
    );
    assert_eq!(rows["5"]["via"], json!(r#""web""#));
    assert_eq!(
        rows["6"]["description"].as_str().map(str::len),
        Some(huge.len())
    );
    assert_eq!(rows["7"]["tags"], json!(["a", "1", "true"]));
    assert!(rows["8"].get("subject").is_none_or(Value::is_null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_unicode_is_repaired_not_fatal() {
    let (sim, server) = start(small()).await;
    let ticket = ticket_with(&sim, 11, json!({"subject": "PLACEHOLDER"})).to_string();
    // Text cut in the middle of an emoji: a lone high surrogate, as Zendesk has sent.
    sim.override_record(
        "tickets",
        11,
        ticket.replace("PLACEHOLDER", r"cut \ud83d here"),
    );
    let dir = tempfile::tempdir().unwrap();
    sync_ok(&settings(&server, dir.path(), "")).await;
    let rows = lake_rows(dir.path(), "tickets").await;
    assert_eq!(rows["11"]["subject"], json!("cut \u{fffd} here"));
    // The simulator cannot parse that record back, so it is the one row beyond its records.
    assert_eq!(rows.len(), expected_rows(&sim, "tickets").len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_cannot_convert_are_rejected_naming_object_id_and_field() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "");
    sync_ok(&settings).await;
    let cases = [
        (json!({"requester_id": {"id": 5}}), "requester_id"),
        (
            json!({"generated_timestamp": "yesterday"}),
            "generated_timestamp",
        ),
        (json!({"is_public": "perhaps"}), "is_public"),
        (json!({"id": null}), "id"),
    ];
    for (fields, field) in cases {
        // A round of changes; the ticket it changed last (due in the next sync) turns hostile.
        sim.apply_round(&zendesk_lake::sim::Round {
            updates: 3,
            ..Default::default()
        });
        let id = sim
            .records("tickets")
            .iter()
            .max_by_key(|t| t["generated_timestamp"].as_i64())
            .and_then(|t| t["id"].as_i64())
            .unwrap();
        let original = ticket_with(&sim, id, json!({}));
        let hostile = ticket_with(&sim, id, fields.clone());
        sim.override_record("tickets", id, hostile.to_string());
        let before = versions(dir.path()).await;
        let report = sync::run(&settings).await.unwrap();
        let message = failure(&report, "tickets");
        assert!(message.starts_with("tickets: record "), "{message}");
        assert!(message.contains(&format!("`{field}`")), "{message}");
        if field != "id" {
            assert!(message.contains(&format!("record {id}")), "{message}");
        }
        // The tickets table did not move; the other streams synced as usual.
        assert_eq!(versions(dir.path()).await[0], before[0], "{fields}");
        for other in report.tables.iter().filter(|o| o.stream != "tickets") {
            assert_eq!(other.outcome, Outcome::Ok);
        }
        // Put the ticket back for the next case.
        sim.override_record("tickets", id, original.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_is_not_json_at_all_fails_clearly() {
    let (sim, server) = start(small()).await;
    sim.override_record("tickets", 2, "{\"id\": 2, \"subject\": ".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path(), "max_attempts = 2");
    let report = sync::run(&settings).await.unwrap();
    let message = failure(&report, "tickets");
    assert!(
        message.contains("/api/v2/incremental/tickets/cursor.json"),
        "{message}"
    );
    assert!(message.contains("not JSON"), "{message}");
    nothing_half_written(dir.path()).await;
}
