//! Every real Zendesk sample for the synced objects decodes, row for row.

use std::path::Path;

use chrono::Utc;
use serde_json::Value;
use zendesk_lake::decode;
use zendesk_lake::spec as objects;

use crate::common::{key_text, rows_by_id, rows_by_key};

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
    let decoded = decode::decode_values(spec, records, Utc::now())
        .unwrap_or_else(|e| panic!("{object} sample does not decode: {e}"));
    assert_eq!(decoded.batch.num_rows(), records.len());
    let key = spec.primary_key.as_str();
    let rows = rows_by_key(&[decoded.batch], key);
    for record in records {
        let id = key_text(&record[key]);
        let row = &rows[&id];
        for column in &spec.columns {
            let mut source = record;
            for part in column.path().split('.') {
                source = source.get(part).unwrap_or(&Value::Null);
            }
            if source.is_null() && column.name == spec.cursor_field {
                // Records from list endpoints have no generated_timestamp: the fallback stands
                // in. A listing (a snapshot table) needs none: its row stays without a cursor.
                match spec.cursor_fallback.as_deref() {
                    Some(fallback) => source = &record[fallback],
                    None => assert_eq!(spec.write, objects::WriteMode::Snapshot, "{object}"),
                }
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
                Attachments | Intervals if source.is_null() => {
                    assert!(got.is_null(), "{object} {id} {}", column.name)
                }
                Attachments | Intervals => {
                    let items = source.as_array().unwrap();
                    let got = got.as_array().map(Vec::as_slice).unwrap_or_default();
                    assert_eq!(got.len(), items.len(), "{object} {id} {}", column.name);
                    for (g, a) in got.iter().zip(items) {
                        for &(field, _) in column.kind.struct_fields().unwrap() {
                            assert_eq!(g[field], a[field], "{object} {id} {} {field}", column.name);
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

/// A page of a stream holding `records`.
fn page(
    records: Vec<Value>,
    sideloads: Vec<(String, Vec<Value>)>,
) -> zendesk_lake::page::Page<'static> {
    use zendesk_lake::json::Json;
    let owned = |values: Vec<Value>| -> Vec<Json<'static>> {
        values.iter().map(|v| Json::from(v).into_owned()).collect()
    };
    zendesk_lake::page::Page {
        records: owned(records),
        sideloads: sideloads
            .into_iter()
            .map(|(key, values)| (key, owned(values)))
            .collect(),
    }
}

/// The rows of `table` that a page of its stream holding `records` yields, by key.
fn table_rows(
    table: &str,
    page: &zendesk_lake::page::Page,
) -> std::collections::BTreeMap<String, serde_json::Map<String, Value>> {
    let spec = objects::find(table).unwrap();
    let rows = decode::extract(spec, page).unwrap_or_else(|e| panic!("{table}: {e}"));
    let decoded =
        decode::decode(spec, &rows, Utc::now()).unwrap_or_else(|e| panic!("{table}: {e}"));
    rows_by_id(&[decoded.batch])
}

#[test]
fn ticket_event_sample_yields_its_comments_and_field_changes() {
    let events = body("incremental_ticket_events_comment_events.json")["ticket_events"]
        .as_array()
        .unwrap()
        .clone();
    let page = page(events.clone(), Vec::new());
    let comments = table_rows("ticket_comments", &page);
    let history = table_rows("ticket_field_history", &page);
    let micros = |text: &Value| {
        chrono::DateTime::parse_from_rfc3339(text.as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    let mut expected_comments = 0;
    let mut expected_changes = 0;
    for event in &events {
        for child in event["child_events"].as_array().unwrap() {
            let id = child["id"].as_i64().unwrap().to_string();
            match child["event_type"].as_str().unwrap() {
                "Comment" | "VoiceComment" => {
                    expected_comments += 1;
                    let row = &comments[&id];
                    assert_eq!(row["ticket_id"], event["ticket_id"]);
                    assert_eq!(row["audit_id"], event["id"]);
                    for field in ["author_id", "body", "html_body", "public", "type"] {
                        assert_eq!(row[field], child[field], "comment {id} {field}");
                    }
                    assert_eq!(row["via_channel"], child["via"]["channel"]);
                    assert_eq!(row["created_at"], micros(&child["created_at"]));
                    let attachments = child["attachments"].as_array().unwrap();
                    let got = row["attachments"].as_array().unwrap();
                    assert_eq!(got.len(), attachments.len());
                    for (g, a) in got.iter().zip(attachments) {
                        for field in ["id", "file_name", "content_url", "content_type", "size"] {
                            assert_eq!(g[field], a[field], "comment {id} attachment {field}");
                        }
                    }
                }
                "Change" | "Create" => {
                    expected_changes += 1;
                    let row = &history[&id];
                    assert_eq!(row["ticket_id"], event["ticket_id"]);
                    assert_eq!(row["audit_id"], event["id"]);
                    assert_eq!(row["updater_id"], event["updater_id"]);
                    assert_eq!(row["created_at"], micros(&event["created_at"]));
                    assert_eq!(row["field_name"], child["field_name"]);
                    assert_eq!(row["value"], child["value"]);
                    assert_eq!(row["previous_value"], child["previous_value"]);
                    assert_eq!(row["event_type"], child["event_type"]);
                    assert_eq!(row["via_channel"], child["via"]["channel"]);
                }
                _ => {}
            }
        }
    }
    assert_eq!(comments.len(), expected_comments);
    assert_eq!(history.len(), expected_changes);
    assert!(expected_comments >= 2 && expected_changes >= 1);
}

/// Zendesk documents a second shape of change events, the field as the key: both read alike.
#[test]
fn keyed_change_events_read_like_audit_ones() {
    let event = |children: Value| {
        serde_json::json!({"id": 50, "ticket_id": 7, "timestamp": 1719792000,
            "created_at": "2024-07-01T00:00:00Z", "updater_id": 3, "via": "Web form",
            "event_type": "Audit", "child_events": children})
    };
    let keyed = page(
        vec![event(serde_json::json!([
            {"id": 1, "event_type": "Change", "status": "solved", "previous_value": "open"},
            {"id": 2, "event_type": "Change", "added_tags": ["b"], "removed_tags": ["a"], "previous_value": ["a", "c"]},
            {"id": 3, "event_type": "Create", "360000500001": 12.5},
            {"id": 4, "event_type": "Change", "tags": ["x"], "added_tags": ["x"], "removed_tags": [], "previous_value": []},
        ]))],
        Vec::new(),
    );
    let rows = table_rows("ticket_field_history", &keyed);
    let pick = |id: &str| {
        let row = &rows[id];
        (
            row["field_name"].as_str().unwrap().to_owned(),
            row["value"].as_str().unwrap().to_owned(),
            row.get("previous_value")
                .and_then(Value::as_str)
                .map(str::to_owned),
        )
    };
    assert_eq!(
        pick("1"),
        ("status".into(), "solved".into(), Some("open".into()))
    );
    assert_eq!(
        pick("2"),
        (
            "tags".into(),
            r#"["c","b"]"#.into(),
            Some(r#"["a","c"]"#.into())
        )
    );
    assert_eq!(pick("3"), ("360000500001".into(), "12.5".into(), None));
    assert_eq!(
        pick("4"),
        ("tags".into(), r#"["x"]"#.into(), Some("[]".into()))
    );

    // A change whose field cannot be told fails, naming the event.
    let unclear = page(
        vec![event(serde_json::json!([
            {"id": 9, "event_type": "Change", "status": "solved", "priority": "low"},
        ]))],
        Vec::new(),
    );
    let spec = objects::find("ticket_field_history").unwrap();
    let err = decode::extract(spec, &unclear).unwrap_err().to_string();
    assert!(
        err.contains("ticket_field_history") && err.contains("9") && err.contains("50"),
        "{err}"
    );
}

#[test]
fn ticket_metrics_sample_decodes() {
    let metrics = body("list_ticket_metrics.json")["ticket_metrics"]
        .as_array()
        .unwrap()
        .clone();
    decodes_exactly("ticket_metrics", &metrics);
    // The same records as the ticket export's sideload.
    let page = page(Vec::new(), vec![("metric_sets".into(), metrics.clone())]);
    assert_eq!(table_rows("ticket_metrics", &page).len(), metrics.len());
}

#[test]
fn list_samples_decode() {
    for (table, file) in [
        ("groups", "list_groups.json"),
        ("brands", "list_brands.json"),
        ("sections", "list_sections.json"),
        ("categories", "list_categories.json"),
        ("topics", "list_topics.json"),
        ("articles", "incremental_articles_time.json"),
        ("articles", "list_articles.json"),
    ] {
        let records = body(file)[table].as_array().unwrap().clone();
        decodes_exactly(table, &records);
        // Every field of the sample is kept.
        let spec = objects::find(table).unwrap();
        for record in &records {
            for field in record.as_object().unwrap().keys() {
                let kept = spec
                    .columns
                    .iter()
                    .any(|c| c.path().split('.').next() == Some(field.as_str()));
                assert!(kept, "{table}: field {field} of {file} has no column");
            }
        }
    }
}

#[test]
fn side_conversation_sample_decodes() {
    let records = body("list_side_conversations.json")["side_conversations"]
        .as_array()
        .unwrap()
        .clone();
    let rows = table_rows("side_conversations", &page(records.clone(), Vec::new()));
    assert_eq!(rows.len(), records.len());
    let spec = objects::find("side_conversations").unwrap();
    for record in &records {
        let id = record["id"].as_str().unwrap();
        let row = &rows[id];
        for field in ["subject", "preview_text", "state", "url"] {
            assert_eq!(
                row.get(field),
                record.get(field).filter(|v| !v.is_null()),
                "{field}"
            );
        }
        for field in ["participants", "external_ids"] {
            let text = row[field].as_str().unwrap();
            assert_eq!(
                &serde_json::from_str::<Value>(text).unwrap(),
                &record[field]
            );
        }
        // Timestamps with milliseconds keep them.
        let micros = chrono::DateTime::parse_from_rfc3339(record["created_at"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        assert_eq!(row["created_at"], micros);
        for key in record.as_object().unwrap().keys() {
            assert!(spec.column(key).is_some(), "field {key} has no column");
        }
    }
}

/// The account's configuration, each table from its real recorded list (schedules and custom
/// roles from the shapes of Zendesk's reference): every column equals the sample, and every
/// field of the sample is kept.
#[test]
fn account_configuration_samples_decode() {
    for (table, file) in [
        ("ticket_fields", "list_ticket_fields.json"),
        ("user_fields", "list_user_fields.json"),
        ("organization_fields", "list_organization_fields.json"),
        ("ticket_forms", "list_ticket_forms.json"),
        ("custom_statuses", "list_custom_statuses.json"),
        ("macros", "list_macros.json"),
        ("triggers", "list_triggers.json"),
        ("automations", "list_automations.json"),
        ("views", "list_views.json"),
        ("sla_policies", "list_sla_policies.json"),
        ("group_memberships", "list_group_memberships.json"),
        (
            "organization_memberships",
            "list_organization_memberships.json",
        ),
        ("schedules", "list_schedules.json"),
        ("custom_roles", "list_custom_roles.json"),
    ] {
        let spec = objects::find(table).unwrap();
        let records = body(file)[&spec.source().records_key]
            .as_array()
            .unwrap_or_else(|| panic!("{file} holds no {table}"))
            .clone();
        decodes_exactly(table, &records);
        for record in &records {
            for field in record.as_object().unwrap().keys() {
                let kept = spec
                    .columns
                    .iter()
                    .any(|c| c.path().split('.').next() == Some(field.as_str()));
                assert!(kept, "{table}: field {field} of {file} has no column");
            }
        }
    }
}

/// Fields people filter on are columns of their own beside the JSON text they come from.
#[test]
fn configuration_values_people_filter_on_are_flattened() {
    let roles = body("list_custom_roles.json")["custom_roles"].clone();
    let spec = objects::find("custom_roles").unwrap();
    let decoded = decode::decode_values(spec, roles.as_array().unwrap(), Utc::now()).unwrap();
    let rows = rows_by_id(&[decoded.batch]);
    let role = &roles[0];
    let row = &rows[&role["id"].to_string()];
    assert_eq!(row["ticket_access"], role["configuration"]["ticket_access"]);
    let configuration: Value =
        serde_json::from_str(row["configuration"].as_str().unwrap()).unwrap();
    assert_eq!(configuration, role["configuration"]);

    // A schedule's intervals: a list of structs of minutes since Sunday midnight.
    let schedules = body("list_schedules.json")["schedules"].clone();
    let spec = objects::find("schedules").unwrap();
    let decoded = decode::decode_values(spec, schedules.as_array().unwrap(), Utc::now()).unwrap();
    let rows = rows_by_id(&[decoded.batch]);
    for schedule in schedules.as_array().unwrap() {
        let row = &rows[&schedule["id"].to_string()];
        assert_eq!(row["intervals"], schedule["intervals"], "{schedule}");
        assert_eq!(row["time_zone"], schedule["time_zone"]);
    }

    // Macros and SLA policies of the recordings carry no `updated_at`: a listing needs no
    // cursor, so their rows are kept without one.
    for (table, file) in [
        ("macros", "list_macros.json"),
        ("sla_policies", "list_sla_policies.json"),
    ] {
        let records = body(file)[table].as_array().unwrap().clone();
        assert!(records.iter().all(|r| r.get("updated_at").is_none()));
        let spec = objects::find(table).unwrap();
        let decoded = decode::decode_values(spec, &records, Utc::now()).unwrap();
        assert_eq!(decoded.max_cursor, None, "{table}");
        for row in rows_by_id(&[decoded.batch]).values() {
            assert!(row.get("updated_at").is_none(), "{table}");
        }
    }
    // An export still refuses a record without its cursor.
    let users = objects::find("users").unwrap();
    let err = decode::decode_values(users, &[serde_json::json!({"id": 1})], Utc::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cursor"), "{err}");
}

/// The account's tag listing (a documented shape: the recorded `list_tags.json` of the shared
/// samples is one ticket's tags, a list of strings): one row per tag keyed by its name, with
/// its count; the listing carries no timestamp, so the table's cursor is `_synced_at`.
#[test]
fn tag_listing_sample_decodes_by_name() {
    let tags = body("list_tags.json")["tags"].as_array().unwrap().clone();
    decodes_exactly("tags", &tags);
    let spec = objects::find("tags").unwrap();
    assert_eq!(spec.primary_key, "name");
    assert_eq!(spec.cursor_field, objects::SYNCED_AT_COLUMN);
    let decoded = decode::decode_values(spec, &tags, Utc::now()).unwrap();
    let rows = rows_by_key(&[decoded.batch], "name");
    for tag in &tags {
        let row = &rows[tag["name"].as_str().unwrap()];
        assert_eq!(row["count"], tag["count"]);
        assert_eq!(row["_deleted"], false);
        for field in tag.as_object().unwrap().keys() {
            assert!(spec.column(field).is_some(), "field {field} has no column");
        }
    }
    // A ticket's tags (strings, not objects) are not taken for the account's listing.
    let strings = [Value::from("exchange"), Value::from("important")];
    assert!(decode::decode_values(spec, &strings, Utc::now()).is_err());
}

/// Ticket metric events: the reference's example page, and the documented shapes of
/// `apply_sla`, `breach` (deleted) and `update_status` events: every column equals the sample,
/// the SLA is flattened beside its JSON text, and a deleted breach is `_deleted`.
#[test]
fn ticket_metric_event_samples_decode() {
    let spec = objects::find("ticket_metric_events").unwrap();
    for file in [
        "incremental_ticket_metric_events.json",
        "incremental_ticket_metric_events_sla.json",
    ] {
        let records = body(file)["ticket_metric_events"]
            .as_array()
            .unwrap()
            .clone();
        decodes_exactly("ticket_metric_events", &records);
        let decoded = decode::decode_values(spec, &records, Utc::now()).unwrap();
        let rows = rows_by_id(&[decoded.batch]);
        for record in &records {
            let row = &rows[&record["id"].to_string()];
            for field in record.as_object().unwrap().keys() {
                assert!(spec.column(field).is_some(), "field {field} has no column");
            }
            assert_eq!(row["_deleted"], record["deleted"] == true, "{record}");
            if let Some(sla) = record.get("sla") {
                assert_eq!(row["sla_target"], sla["target"]);
                assert_eq!(row["sla_business_hours"], sla["business_hours"]);
                assert_eq!(row["sla_policy_id"], sla["policy"]["id"]);
                assert_eq!(row["sla_policy_title"], sla["policy"]["title"]);
            }
        }
    }
}

/// Satisfaction ratings, from a real recording (65 ratings, `comment` null on `offered`): every
/// column equals the sample and every field is kept.
#[test]
fn satisfaction_rating_sample_decodes() {
    let spec = objects::find("satisfaction_ratings").unwrap();
    let records = body("list_satisfaction_ratings.json")["satisfaction_ratings"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(records.len(), 65);
    decodes_exactly("satisfaction_ratings", &records);
    for record in &records {
        for field in record.as_object().unwrap().keys() {
            assert!(spec.column(field).is_some(), "field {field} has no column");
        }
    }
    let decoded = decode::decode_values(spec, &records, Utc::now()).unwrap();
    let rows = rows_by_id(&[decoded.batch]);
    let offered = records.iter().filter(|r| r["score"] == "offered").count();
    assert_eq!(
        rows.values().filter(|r| r["score"] == "offered").count(),
        offered
    );
    assert!(rows.values().all(|r| r["_deleted"] == false));
}
