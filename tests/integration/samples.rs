//! Every real Zendesk sample for the synced objects decodes, row for row.

use std::path::Path;

use chrono::Utc;
use serde_json::Value;
use zendesk_lake::decode;
use zendesk_lake::spec as objects;

use crate::common::rows_by_id;

fn body(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let sample: Value = serde_json::from_str(&text).unwrap();
    sample["body"].clone()
}

/// Decode `records` as `object` and compare every column with the source record.
fn decodes_exactly(object: &str, records: &[Value]) {
    assert!(!records.is_empty());
    let spec = objects::find(object).unwrap();
    let decoded = decode::decode(spec, records, Utc::now())
        .unwrap_or_else(|e| panic!("{object} sample does not decode: {e}"));
    assert_eq!(decoded.batch.num_rows(), records.len());
    let rows = rows_by_id(&[decoded.batch]);
    for record in records {
        let id = record["id"].as_i64().unwrap();
        let row = &rows[&id.to_string()];
        for column in &spec.columns {
            let mut source = record;
            for part in column.path().split('.') {
                source = source.get(part).unwrap_or(&Value::Null);
            }
            if source.is_null() && column.name == spec.cursor_field {
                // Records from list endpoints have no generated_timestamp: the fallback stands in.
                let fallback = spec
                    .cursor_fallback
                    .as_deref()
                    .expect("a missing cursor needs a fallback");
                source = &record[fallback];
            }
            let got = row.get(&column.name).unwrap_or(&Value::Null);
            use objects::ColumnType::*;
            match column.kind {
                Int64 | Boolean | String | ListString | ListInt64 => {
                    assert_eq!(got, source, "{object} {id} {}", column.name)
                }
                Json if source.is_null() => assert!(got.is_null(), "{object} {id} {}", column.name),
                Json => {
                    let parsed: Value = serde_json::from_str(got.as_str().unwrap()).unwrap();
                    assert_eq!(&parsed, source, "{object} {id} {}", column.name);
                }
                Timestamp if source.is_null() => {
                    assert!(got.is_null(), "{object} {id} {}", column.name)
                }
                Timestamp => {
                    // Timestamps of the sample, RFC 3339 or unix seconds, as µs.
                    let expected = match source {
                        Value::Number(n) => n.as_i64().unwrap() * 1_000_000,
                        other => chrono::DateTime::parse_from_rfc3339(other.as_str().unwrap())
                            .unwrap()
                            .timestamp_micros(),
                    };
                    assert_eq!(
                        got.as_i64(),
                        Some(expected),
                        "{object} {id} {}",
                        column.name
                    );
                }
                CustomFields => {
                    let fields = source.as_array().unwrap();
                    let got = got.as_array().map(Vec::as_slice).unwrap_or_default();
                    assert_eq!(got.len(), fields.len(), "{object} {id} {}", column.name);
                    for (g, f) in got.iter().zip(fields) {
                        assert_eq!(g["id"], f["id"]);
                        match &f["value"] {
                            Value::Null => assert!(g.get("value").is_none_or(Value::is_null)),
                            v => assert_eq!(g["value"], Value::String(v.to_string())),
                        }
                    }
                }
                Float64 => assert_eq!(got.as_f64(), source.as_f64()),
                Attachments => {
                    let items = source.as_array().unwrap();
                    let got = got.as_array().map(Vec::as_slice).unwrap_or_default();
                    assert_eq!(got.len(), items.len(), "{object} {id} {}", column.name);
                    for (g, a) in got.iter().zip(items) {
                        for (field, _) in objects::ATTACHMENT_FIELDS {
                            assert_eq!(g[field], a[field], "{object} {id} attachment {field}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn ticket_cursor_export_sample_decodes() {
    let body = body("incremental_tickets_cursor.json");
    decodes_exactly("tickets", body["tickets"].as_array().unwrap());
}

#[test]
fn ticket_time_export_sample_decodes() {
    let body = body("incremental_tickets_time.json");
    decodes_exactly("tickets", body["tickets"].as_array().unwrap());
}

#[test]
fn ticket_list_and_show_samples_decode() {
    decodes_exactly(
        "tickets",
        body("list_tickets.json")["tickets"].as_array().unwrap(),
    );
    decodes_exactly("tickets", &[body("list_ticket.json")["ticket"].clone()]);
}

#[test]
fn user_cursor_export_sample_decodes() {
    let body = body("incremental_users_cursor.json");
    decodes_exactly("users", body["users"].as_array().unwrap());
}

#[test]
fn user_list_and_show_samples_decode() {
    decodes_exactly(
        "users",
        body("list_users.json")["users"].as_array().unwrap(),
    );
    decodes_exactly("users", &[body("list_user.json")["user"].clone()]);
}

#[test]
fn organization_sample_decodes() {
    decodes_exactly(
        "organizations",
        body("list_organizations.json")["organizations"]
            .as_array()
            .unwrap(),
    );
}

#[test]
fn every_sample_field_is_a_column_or_known_dropped() {
    // A field Zendesk sends that no column keeps is data silently lost: fail when one appears.
    for (object, file, key) in [
        ("tickets", "incremental_tickets_cursor.json", "tickets"),
        ("users", "incremental_users_cursor.json", "users"),
        ("users", "list_user.json", "user"),
        ("organizations", "list_organizations.json", "organizations"),
    ] {
        let spec = objects::find(object).unwrap();
        let body = body(file);
        let records = match &body[key] {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        for record in records {
            for field in record.as_object().unwrap().keys() {
                let kept = spec
                    .columns
                    .iter()
                    .any(|c| c.path().split('.').next() == Some(field.as_str()));
                assert!(kept, "{object}: field {field} of {file} has no column");
            }
        }
    }
}
