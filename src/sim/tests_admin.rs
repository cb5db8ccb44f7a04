//! Tests of the account's configuration lists: their shapes against Zendesk's recorded answers,
//! the ids the rest of the account points at, paging (whole lists and cursor pages), triggers
//! beside the Triggers API, and what rounds do to them.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::tests::{client, get, id, send};
use super::*;

/// Every configuration list: its record key, path, and whether Zendesk documents no pagination
/// for it.
const CONFIGURATION: [(&str, &str, bool); 14] = [
    ("ticket_fields", "/api/v2/ticket_fields.json", true),
    ("user_fields", "/api/v2/user_fields.json", false),
    (
        "organization_fields",
        "/api/v2/organization_fields.json",
        false,
    ),
    ("ticket_forms", "/api/v2/ticket_forms.json", true),
    ("custom_statuses", "/api/v2/custom_statuses.json", true),
    ("macros", "/api/v2/macros.json", false),
    ("triggers", "/api/v2/triggers.json", false),
    ("automations", "/api/v2/automations.json", false),
    ("views", "/api/v2/views.json", false),
    ("sla_policies", "/api/v2/slas/policies.json", true),
    ("group_memberships", "/api/v2/group_memberships.json", false),
    (
        "organization_memberships",
        "/api/v2/organization_memberships.json",
        false,
    ),
    ("schedules", "/api/v2/business_hours/schedules.json", true),
    ("custom_roles", "/api/v2/custom_roles.json", true),
];

fn config() -> SimConfig {
    SimConfig {
        tickets: 150,
        users: 40,
        organizations: 10,
        ..SimConfig::default()
    }
}

/// An account after two rounds with changes of every kind.
fn changed() -> Simulator {
    let sim = Simulator::new(config());
    sim.apply_round(&tests::ROUND);
    sim.apply_round(&Round {
        creates: 25,
        updates: 30,
        silent_updates: 5,
        deletes: 25,
    });
    sim
}

fn keys(record: &Value) -> BTreeSet<&str> {
    record
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn live_ids(sim: &Simulator, name: &str) -> Vec<i64> {
    let deleted = sim.deleted_keys(name);
    sim.records(name)
        .iter()
        .map(id)
        .filter(|i| !deleted.contains(&i.to_string()))
        .collect()
}

/// The keys each record of Zendesk's recorded answers carries (tests/data/list_*.json; for
/// schedules and custom roles, its reference's JSON format).
#[test]
fn configuration_records_carry_the_keys_of_the_real_samples() {
    let sim = changed();
    let samples = [
        (
            "ticket_fields",
            "url id type title raw_title description raw_description position active required \
             collapsed_for_agents regexp_for_validation title_in_portal raw_title_in_portal \
             visible_in_portal editable_in_portal required_in_portal tag created_at updated_at \
             removable agent_description",
        ),
        (
            "user_fields",
            "url id type key title raw_title description raw_description position active \
             regexp_for_validation created_at updated_at",
        ),
        (
            "organization_fields",
            "id url title type relationship_target_type relationship_filter active description \
             key raw_description raw_title created_at updated_at position",
        ),
        (
            "ticket_forms",
            "url id name raw_name display_name raw_display_name end_user_visible position \
             ticket_field_ids active default created_at updated_at in_all_brands \
             restricted_brand_ids",
        ),
        (
            "custom_statuses",
            "active agent_label created_at default description end_user_description \
             end_user_label id raw_agent_label raw_description raw_end_user_description \
             raw_end_user_label status_category updated_at",
        ),
        (
            "macros",
            "actions active description id position restriction title",
        ),
        (
            "triggers",
            "url id title active updated_at created_at actions conditions description position \
             raw_title",
        ),
        (
            "automations",
            "url id title active updated_at created_at actions conditions position raw_title",
        ),
        (
            "views",
            "url id title active created_at updated_at position description execution \
             conditions restriction watchable raw_title",
        ),
        (
            "sla_policies",
            "id title description position filter policy_metrics",
        ),
        (
            "group_memberships",
            "url id user_id group_id default created_at updated_at",
        ),
        (
            "organization_memberships",
            "created_at default id organization_id organization_name updated_at user_id \
             view_tickets",
        ),
        (
            "schedules",
            "id name time_zone intervals created_at updated_at",
        ),
        (
            "custom_roles",
            "id name description role_type created_at updated_at team_member_count \
             configuration",
        ),
    ];
    for (name, list) in samples {
        let expected: BTreeSet<&str> = list.split_whitespace().collect();
        let records = sim.records(name);
        assert!(!records.is_empty(), "{name}");
        for record in &records {
            let have = keys(record);
            let missing: Vec<&&str> = expected.difference(&have).collect();
            assert!(missing.is_empty(), "{name} lacks {missing:?}: {record}");
        }
    }
    for schedule in sim.records("schedules") {
        for interval in schedule["intervals"].as_array().expect("intervals") {
            let (start, end) = (&interval["start_time"], &interval["end_time"]);
            assert!(start.as_i64() < end.as_i64(), "{schedule}");
            assert!(end.as_i64() <= Some(7 * 1440), "minutes of the week");
        }
    }
}

/// A ticket's custom status, form and custom fields, a user's custom role and the keys of
/// `user_fields` and `organization_fields` are records of the lists, which rounds never delete.
#[test]
fn what_tickets_and_users_point_at_is_listed_and_never_deleted() {
    let sim = changed();
    let live = |name: &str| -> BTreeSet<i64> { live_ids(&sim, name).into_iter().collect() };
    let (statuses, forms, fields, roles) = (
        live("custom_statuses"),
        live("ticket_forms"),
        live("ticket_fields"),
        live("custom_roles"),
    );
    for ticket in sim.records("tickets") {
        let status = ticket["custom_status_id"].as_i64().expect("custom status");
        assert!(statuses.contains(&status), "custom status {status}");
        let form = ticket["ticket_form_id"].as_i64().expect("form");
        assert!(forms.contains(&form), "form {form}");
        for field in ticket["custom_fields"].as_array().expect("custom fields") {
            assert!(fields.contains(&id(field)), "{field}");
        }
    }
    let user_keys: BTreeSet<String> = sim
        .records("user_fields")
        .iter()
        .map(|f| f["key"].as_str().expect("key").to_owned())
        .collect();
    for user in sim.records("users") {
        if let Some(role) = user["custom_role_id"].as_i64() {
            assert!(roles.contains(&role), "custom role {role}");
        }
        for key in user["user_fields"].as_object().expect("user fields").keys() {
            assert!(user_keys.contains(key), "user field {key}");
        }
    }
    let organization_keys: BTreeSet<String> = sim
        .records("organization_fields")
        .iter()
        .map(|f| f["key"].as_str().expect("key").to_owned())
        .collect();
    for organization in sim.records("organizations") {
        for key in organization["organization_fields"]
            .as_object()
            .expect("organization fields")
            .keys()
        {
            assert!(organization_keys.contains(key), "organization field {key}");
        }
    }
    // A membership's user and organization are the account's.
    let organizations: BTreeSet<i64> = sim.records("organizations").iter().map(id).collect();
    let users: BTreeSet<i64> = sim.records("users").iter().map(id).collect();
    for membership in sim.records("organization_memberships") {
        let organization = membership["organization_id"]
            .as_i64()
            .expect("organization");
        assert!(organizations.contains(&organization), "{membership}");
        assert!(membership["organization_name"].is_string(), "{membership}");
        assert!(users.contains(&membership["user_id"].as_i64().expect("user")));
    }
}

#[test]
fn rounds_create_change_and_delete_in_every_configuration_list() {
    let before = Simulator::new(config());
    let sim = changed();
    for (name, _, _) in CONFIGURATION {
        let old: Vec<Value> = before.records(name);
        let new: Vec<Value> = sim.records(name);
        assert!(new.len() > old.len(), "{name}: rounds create");
        assert!(!sim.deleted_keys(name).is_empty(), "{name}: rounds delete");
        let changed = old.iter().any(|o| {
            new.iter()
                .any(|n| n["id"] == o["id"] && n != o && n["updated_at"] != o["updated_at"])
        });
        assert!(changed, "{name}: rounds change records");
    }
    // Deactivating is a change, never a deletion: an inactive record is still listed.
    let inactive = sim
        .records("macros")
        .into_iter()
        .filter(|m| m["active"] == false)
        .count();
    assert!(inactive > 0);
}

#[tokio::test]
async fn lists_without_pagination_answer_whole_whatever_is_asked() {
    let sim = changed();
    let server = sim.serve(0).await.expect("serve");
    let base = server.base_url();
    for (name, path, whole) in CONFIGURATION {
        if !whole {
            continue;
        }
        let expected = live_ids(&sim, name);
        assert!(!expected.is_empty(), "{name}");
        for query in ["", "?page[size]=2", "?page%5Bsize%5D=2&page%5Bafter%5D=x"] {
            if name == "ticket_fields" && !query.is_empty() {
                continue;
            }
            let reply = get(&format!("{base}{path}{query}")).await;
            assert_eq!(reply.status, 200, "{name}{query}: {}", reply.body);
            let ids: Vec<i64> = reply.body[name]
                .as_array()
                .expect("records")
                .iter()
                .map(id)
                .collect();
            assert_eq!(ids, expected, "{name}{query}: the whole list, by id");
            assert!(reply.body.get("meta").is_none(), "{name}: no cursor");
            assert!(reply.body["next_page"].is_null(), "{name}: no next page");
        }
    }
    // Ticket fields page by cursor when asked to, and answer whole otherwise.
    let expected = live_ids(&sim, "ticket_fields");
    let first = get(&format!("{base}/api/v2/ticket_fields.json?page[size]=5")).await;
    assert_eq!(first.body["meta"]["has_more"], true);
    assert_eq!(
        first.body["ticket_fields"].as_array().map(Vec::len),
        Some(5)
    );
    let whole = get(&format!("{base}/api/v2/ticket_fields.json")).await;
    assert_eq!(
        whole.body["ticket_fields"].as_array().map(Vec::len),
        Some(expected.len())
    );
    assert_eq!(whole.body["count"], expected.len());
}

/// Triggers are listed by cursor when a page is asked for, as other Support lists, and through
/// the Triggers API's one offset page otherwise; rounds never touch a trigger made through the
/// API, and a deleted trigger is gone from both.
#[tokio::test]
async fn triggers_page_by_cursor_and_rounds_spare_the_apis_own() {
    let sim = Simulator::new(config());
    let server = sim.serve(0).await.expect("serve");
    let base = server.base_url();
    let made = send(
        client()
            .post(format!("{base}/api/v2/triggers.json"))
            .basic_auth("demo@example.com/token", Some("demo-token"))
            .json(
                &json!({"trigger": {"title": "Lake: ticket changed", "actions": [
                {"field": "status", "value": "open"}]}}),
            ),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let made = made.body["trigger"].clone();
    for n in 0..4 {
        sim.apply_round(&Round {
            creates: 20 + n,
            updates: 40,
            silent_updates: 0,
            deletes: 20,
        });
    }
    let records = sim.records("triggers");
    let kept = records
        .iter()
        .find(|t| t["id"] == made["id"])
        .expect("kept");
    assert_eq!(kept, &made, "rounds never touch the API's own trigger");
    let gone = sim.deleted_keys("triggers");
    assert!(!gone.is_empty());
    let expected = live_ids(&sim, "triggers");
    let mut url = format!("{base}/api/v2/triggers.json?page%5Bsize%5D=2");
    let mut ids = Vec::new();
    loop {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        ids.extend(
            reply.body["triggers"]
                .as_array()
                .expect("triggers")
                .iter()
                .map(id),
        );
        if reply.body["meta"]["has_more"] != true {
            // A Support list: `links.next` even on the last page.
            assert!(reply.body["links"]["next"].is_string());
            break;
        }
        url = reply.body["links"]["next"]
            .as_str()
            .expect("next")
            .to_owned();
    }
    assert_eq!(ids, expected);
    let offset = get(&format!("{base}/api/v2/triggers.json")).await;
    assert_eq!(offset.body["next_page"], Value::Null);
    assert_eq!(offset.body["count"], expected.len());
    // A trigger deleted through the API is ground truth too.
    let target = expected[expected.len() - 1];
    let deleted = client()
        .delete(format!("{base}/api/v2/triggers/{target}.json"))
        .basic_auth("demo@example.com/token", Some("demo-token"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(deleted.status().as_u16(), 204);
    assert!(sim.deleted_keys("triggers").contains(&target.to_string()));
    assert!(sim.records("triggers").iter().any(|t| id(t) == target));
}

/// Custom roles are an Enterprise feature: a plan without it answers 403 (`Faults::deny`).
#[tokio::test]
async fn custom_roles_are_gated_by_plan() {
    let sim = Simulator::new(config());
    let server = sim.serve(0).await.expect("serve");
    let base = server.base_url();
    assert_eq!(
        get(&format!("{base}/api/v2/custom_roles.json"))
            .await
            .status,
        200
    );
    sim.set_faults(Faults {
        deny: vec![("/api/v2/custom_roles".into(), 403)],
        ..Faults::default()
    });
    let reply = get(&format!("{base}/api/v2/custom_roles.json")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body["error"], "Forbidden");
}
