//! Tests of the endpoints added after the three exports: ticket events, metric sets, the
//! cursor-paginated lists, the Help Center article export, side conversations, plan gating, and
//! the ground truth (`records`, `deleted_keys`) behind them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::tests::{client, get, id, send, small, unix, ROUND};
use super::*;

/// Every name `records()` answers besides tickets, users and organizations.
const NEW_NAMES: [&str; 26] = [
    "groups",
    "brands",
    "categories",
    "sections",
    "topics",
    "posts",
    "articles",
    "side_conversations",
    "ticket_metrics",
    "ticket_events",
    "ticket_comments",
    "ticket_field_history",
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

/// Cursor-paginated list endpoints, their record key, and whether they are Support lists.
const LISTS: [(&str, &str, bool); 14] = [
    ("/api/v2/groups.json", "groups", true),
    ("/api/v2/brands.json", "brands", true),
    ("/api/v2/help_center/categories.json", "categories", false),
    ("/api/v2/help_center/sections.json", "sections", false),
    ("/api/v2/help_center/articles.json", "articles", false),
    ("/api/v2/community/topics.json", "topics", false),
    ("/api/v2/community/posts.json", "posts", false),
    ("/api/v2/user_fields.json", "user_fields", true),
    (
        "/api/v2/organization_fields.json",
        "organization_fields",
        true,
    ),
    ("/api/v2/macros.json", "macros", true),
    ("/api/v2/automations.json", "automations", true),
    ("/api/v2/views.json", "views", true),
    ("/api/v2/group_memberships.json", "group_memberships", true),
    (
        "/api/v2/organization_memberships.json",
        "organization_memberships",
        true,
    ),
];

/// An account with enough history for every kind of child event, after two rounds.
fn busy() -> Simulator {
    let sim = Simulator::new(SimConfig {
        tickets: 150,
        users: 40,
        organizations: 10,
        ..SimConfig::default()
    });
    sim.apply_round(&ROUND);
    sim.apply_round(&Round {
        creates: 6,
        updates: 30,
        silent_updates: 5,
        deletes: 12,
    });
    sim
}

async fn serve(sim: &Simulator) -> SimServer {
    sim.serve(0).await.expect("serve")
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Hashes of tickets, users and organizations recorded before any of the new objects existed:
/// adding them must not have changed one byte of those.
#[test]
fn the_original_records_did_not_change() {
    let golden = [
        "04ce9f6d0e2ceced 7a3bf328700aa77e ceb621d0d6e600cc 904c24293d783e33 e859c8f6869f41d4 \
         6b0ac9bf493b96ca a89b4d9f81c67889 115fb3187a89a9bc 60f1f9cd299a3be9 82f23b2eb4d038fe \
         17693eb0870dbc34 5def933787eb8210",
        "8d195ad32baa85f5 a57a3562b0fd7065 bfdcc512d7b6bd71 b504a04aa7050fa4 a9e6886fa4dae72f \
         022d3189a374a7aa 7d48187e806b9793 e98cf9307bb47aa4 d7ba50cf1a563acb f5d6ed4220a5b339 \
         4de2c4dc57173f9a acf7afa71774562e",
    ];
    let configs = [
        small(),
        SimConfig {
            tickets: 700,
            users: 120,
            organizations: 60,
            seed: 9,
            ..SimConfig::default()
        },
    ];
    for (config, golden) in configs.into_iter().zip(golden) {
        let sim = Simulator::new(config);
        let mut hashes = Vec::new();
        for round in 0..4 {
            if round > 0 {
                sim.apply_round(&Round {
                    creates: 5 * round,
                    updates: 9,
                    silent_updates: 3,
                    deletes: 2,
                });
            }
            for object in ["tickets", "users", "organizations"] {
                let text = serde_json::to_string(&sim.records(object)).expect("json");
                hashes.push(format!("{:016x}", fnv(&text)));
            }
        }
        assert_eq!(hashes.join(" "), golden);
    }
}

#[test]
fn same_config_gives_identical_new_records() {
    let a = busy();
    let b = busy();
    for name in NEW_NAMES {
        let left = serde_json::to_string(&a.records(name)).expect("json");
        let right = serde_json::to_string(&b.records(name)).expect("json");
        assert_eq!(left, right, "{name}");
        assert!(!a.records(name).is_empty(), "{name} has records");
        assert_eq!(a.deleted_keys(name), b.deleted_keys(name), "{name}");
    }
    let other = Simulator::new(SimConfig {
        seed: 7,
        ..SimConfig {
            tickets: 150,
            users: 40,
            organizations: 10,
            ..SimConfig::default()
        }
    });
    assert_ne!(other.records("ticket_events"), a.records("ticket_events"));
    assert!(a.records("nope").is_empty());
    assert!(a.deleted_keys("nope").is_empty());
}

fn keys(record: &Value) -> BTreeSet<String> {
    record
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect()
}

fn expect(list: &str) -> BTreeSet<String> {
    list.split_whitespace().map(String::from).collect()
}

/// The keys every record of the real samples in /work/shared/zendesk-samples carries (for the
/// ticket events sample, the keys common to all its events and child events).
#[test]
fn new_records_carry_the_keys_of_the_real_samples() {
    let sim = busy();
    let samples = [
        ("groups", "created_at deleted id name updated_at url"),
        (
            "brands",
            "active brand_url created_at default has_help_center help_center_state host_mapping \
             id is_deleted logo name signature_template subdomain ticket_form_ids updated_at url",
        ),
        (
            "sections",
            "category_id created_at description html_url id locale name outdated \
             parent_section_id position sorting source_locale theme_template updated_at url",
        ),
        (
            "categories",
            "created_at description html_url id locale name outdated position source_locale \
             updated_at url",
        ),
        (
            "topics",
            "community_id created_at description follower_count html_url id manageable_by name \
             position updated_at url user_segment_id",
        ),
        (
            // list_articles.json plus incremental_articles_time.json's user_segment_ids
            "articles",
            "author_id body comments_disabled content_tag_ids created_at draft edited_at \
             html_url id label_names locale name outdated outdated_locales permission_group_id \
             position promoted section_id source_locale title updated_at url user_segment_id \
             user_segment_ids vote_count vote_sum",
        ),
        (
            // Zendesk's documented post shape (no recording available)
            "posts",
            "id url html_url title details author_id vote_sum vote_count comment_count \
             follower_count topic_id pinned featured closed status created_at updated_at",
        ),
        (
            "side_conversations",
            "created_at external_ids id message_added_at participants preview_text state \
             state_updated_at subject updated_at url",
        ),
        (
            "ticket_metrics",
            "agent_wait_time_in_minutes assigned_at assignee_stations assignee_updated_at \
             created_at first_resolution_time_in_minutes full_resolution_time_in_minutes \
             group_stations id initially_assigned_at latest_comment_added_at \
             on_hold_time_in_minutes reopens replies reply_time_in_minutes requester_updated_at \
             requester_wait_time_in_minutes solved_at status_updated_at ticket_id updated_at url",
        ),
        (
            "ticket_events",
            "child_events created_at event_type id metadata system ticket_id timestamp \
             updater_id via via_reference_id",
        ),
    ];
    for (name, list) in samples {
        let expected = expect(list);
        for record in sim.records(name) {
            let have = keys(&record);
            let missing: Vec<&String> = expected.difference(&have).collect();
            assert!(missing.is_empty(), "{name} lacks {missing:?}: {record}");
        }
    }
    let comment = expect(
        "attachments audit_id author_id body created_at event_type html_body id public type via \
         via_reference_id",
    );
    let change = expect("event_type field_name id previous_value type value via via_reference_id");
    let attachment = expect("content_type content_url deleted file_name id inline size thumbnails");
    let participant = expect("email name user_id");
    let mut audit_changes = 0;
    for event in sim.records("ticket_events") {
        for child in event["child_events"].as_array().expect("children") {
            match (child["event_type"].as_str(), child.get("field_name")) {
                (Some("Comment"), _) => {
                    assert!(comment.is_subset(&keys(child)), "{child}");
                    for file in child["attachments"].as_array().expect("attachments") {
                        assert!(attachment.is_subset(&keys(file)), "{file}");
                    }
                }
                (Some("Change"), Some(_)) => {
                    audit_changes += 1;
                    assert!(change.is_subset(&keys(child)), "{child}");
                }
                _ => {}
            }
        }
    }
    assert!(audit_changes > 0);
    for conversation in sim.records("side_conversations") {
        for person in conversation["participants"]
            .as_array()
            .expect("participants")
        {
            assert_eq!(keys(person), participant);
        }
    }
    // The tickets' groups and brands are among the simulated ones.
    let groups: BTreeSet<i64> = sim.records("groups").iter().map(id).collect();
    let brands: BTreeSet<i64> = sim.records("brands").iter().map(id).collect();
    for ticket in sim.records("tickets") {
        if let Some(group) = ticket["group_id"].as_i64() {
            assert!(groups.contains(&group), "group {group}");
        }
        assert!(brands.contains(&ticket["brand_id"].as_i64().expect("brand")));
    }
}

#[test]
fn ticket_history_agrees_with_the_tickets() {
    let sim = busy();
    let tickets = sim.records("tickets");
    let events = sim.records("ticket_events");
    let mut last_event: BTreeMap<i64, i64> = BTreeMap::new();
    let mut creates: BTreeMap<i64, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for event in &events {
        let ticket = event["ticket_id"].as_i64().expect("ticket_id");
        let ts = event["timestamp"].as_i64().expect("timestamp");
        assert_eq!(unix(&event["created_at"]), ts);
        assert_eq!(event["event_type"], "Audit");
        assert!(event["via"].is_string(), "the parent's via is a string");
        let previous = last_event.insert(ticket, ts);
        assert!(
            previous.is_none_or(|p| p <= ts),
            "export order is time order"
        );
        assert!(ids.insert(id(event)), "event ids are unique");
        let children = event["child_events"].as_array().expect("children");
        if children.iter().any(|c| c["event_type"] == "Create") {
            assert!(previous.is_none(), "Create comes first");
            *creates.entry(ticket).or_default() += 1;
        }
        for child in children {
            assert!(ids.insert(id(child)), "child ids are unique: {child}");
            if child["event_type"] == "Comment" {
                assert_eq!(child["audit_id"], event["id"]);
            }
        }
    }
    let history = sim.records("ticket_field_history");
    let mut status: BTreeMap<i64, Value> = BTreeMap::new();
    for row in &history {
        assert_eq!(
            keys(row),
            expect(
                "id ticket_id audit_id updater_id event_type field_name value previous_value \
                 via_channel created_at"
            )
        );
        if row["event_type"] == "Create" {
            assert!(row["previous_value"].is_null());
        }
        if row["field_name"] == "status" {
            status.insert(row["ticket_id"].as_i64().expect("id"), row["value"].clone());
        }
    }
    let metrics: BTreeMap<i64, Value> = sim
        .records("ticket_metrics")
        .into_iter()
        .map(|m| (m["ticket_id"].as_i64().expect("ticket_id"), m))
        .collect();
    for ticket in &tickets {
        let ticket_id = id(ticket);
        assert_eq!(creates.get(&ticket_id), Some(&1), "one Create per ticket");
        // The last event of a ticket is its last visible change.
        assert_eq!(
            last_event.get(&ticket_id),
            Some(&unix(&ticket["updated_at"])),
            "{ticket_id}"
        );
        assert_eq!(
            status.get(&ticket_id),
            Some(&ticket["status"]),
            "{ticket_id}"
        );
        let metric = &metrics[&ticket_id];
        assert_eq!(metric["created_at"], ticket["created_at"]);
        if ticket["status"] != "deleted" {
            assert_eq!(metric["updated_at"], ticket["updated_at"], "{ticket_id}");
        }
    }
    // Comments: each from its event, public as now.
    let comments = sim.records("ticket_comments");
    let private_later: BTreeSet<i64> = events
        .iter()
        .flat_map(|e| e["child_events"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["event_type"] == "CommentPrivacyChange")
        .map(|c| c["comment_id"].as_i64().expect("comment_id"))
        .collect();
    assert!(!private_later.is_empty());
    for comment in &comments {
        assert!(comment["ticket_id"].is_i64());
        if private_later.contains(&id(comment)) {
            assert_eq!(comment["public"], false);
        }
    }
    assert!(
        comments.len() >= tickets.len(),
        "every ticket has its description"
    );
}

#[test]
fn deleted_keys_follow_each_objects_rule() {
    let sim = busy();
    let keys_of = |records: Vec<Value>, deleted: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        records
            .iter()
            .filter(|r| deleted(r))
            .map(|r| id(r).to_string())
            .collect()
    };
    assert_eq!(
        sim.deleted_keys("tickets"),
        keys_of(sim.records("tickets"), &|t| t["status"] == "deleted")
    );
    assert_eq!(
        sim.deleted_keys("users"),
        keys_of(sim.records("users"), &|u| u["active"] == false)
    );
    assert_eq!(
        sim.deleted_keys("organizations"),
        keys_of(sim.records("organizations"), &|o| !o["deleted_at"]
            .is_null())
    );
    let groups = sim.deleted_keys("groups");
    assert!(!groups.is_empty());
    assert_eq!(
        groups,
        keys_of(sim.records("groups"), &|g| g["deleted"] == true)
    );
    for name in [
        "brands",
        "categories",
        "sections",
        "topics",
        "posts",
        "articles",
    ] {
        assert!(!sim.deleted_keys(name).is_empty(), "{name}: rounds delete");
    }
    let deleted_tickets: BTreeSet<i64> = sim
        .deleted_keys("tickets")
        .iter()
        .map(|k| k.parse().expect("id"))
        .collect();
    let metrics = keys_of(sim.records("ticket_metrics"), &|m| {
        deleted_tickets.contains(&m["ticket_id"].as_i64().expect("ticket_id"))
    });
    assert_eq!(sim.deleted_keys("ticket_metrics"), metrics);
    assert_eq!(metrics.len(), deleted_tickets.len());
    let ticket_of_url = |c: &Value| -> i64 {
        let url = c["url"].as_str().expect("url");
        let rest = url.split("/tickets/").nth(1).expect("ticket in url");
        rest.split('/').next().expect("id").parse().expect("number")
    };
    let conversations: BTreeSet<String> = sim
        .records("side_conversations")
        .iter()
        .filter(|c| deleted_tickets.contains(&ticket_of_url(c)))
        .map(|c| c["id"].as_str().expect("uuid").to_string())
        .collect();
    assert_eq!(sim.deleted_keys("side_conversations"), conversations);
    for name in ["ticket_events", "ticket_comments", "ticket_field_history"] {
        assert!(sim.deleted_keys(name).is_empty());
    }
}

/// Follows a time export from `url` until its end; returns every page body.
async fn walk_time_export(url: String, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut url = url;
    let mut pages = Vec::new();
    for _ in 0..10_000 {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        let finished = done(&reply.body);
        let next = reply.body["next_page"].as_str().map(String::from);
        pages.push(reply.body);
        if finished {
            return pages;
        }
        url = next.expect("next_page before the end");
    }
    panic!("time export never ended");
}

/// Checks the time-export rules over `pages` of `key` records timed by `second`: each page
/// holds whole seconds (compared with `per_second`), the next page starts at its end_time, and
/// together they hold every record; returns the ids seen, in order, without the repeats.
fn check_time_pages(
    pages: &[Value],
    key: &str,
    second: impl Fn(&Value) -> i64,
    per_second: &BTreeMap<i64, BTreeSet<i64>>,
) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut unique = BTreeSet::new();
    let mut previous_end: Option<i64> = None;
    for page in pages {
        let records = page[key].as_array().expect("records");
        assert_eq!(page["count"], records.len());
        let end_time = page["end_time"].as_i64().expect("end_time");
        if let (Some(first), Some(previous)) = (records.first(), previous_end) {
            assert_eq!(
                second(first),
                previous,
                "the next page repeats the boundary second"
            );
        }
        let mut order = Vec::new();
        for record in records {
            order.push((second(record), id(record)));
            if unique.insert(id(record)) {
                seen.push(id(record));
            }
        }
        assert!(order.windows(2).all(|w| w[0] < w[1]), "(second, id) order");
        if !records.is_empty() {
            let boundary: BTreeSet<i64> = records
                .iter()
                .filter(|r| second(r) == end_time)
                .map(id)
                .collect();
            assert_eq!(Some(&boundary), per_second.get(&end_time), "whole second");
        }
        previous_end = Some(end_time);
    }
    seen
}

#[tokio::test]
async fn ticket_events_export_pages_cover_every_event_once() {
    let sim = busy();
    let server = serve(&sim).await;
    let base = server.base_url();
    let events = sim.records("ticket_events");
    let mut per_second: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for event in &events {
        per_second
            .entry(event["timestamp"].as_i64().expect("timestamp"))
            .or_default()
            .insert(id(event));
    }
    let crowd = per_second
        .values()
        .map(BTreeSet::len)
        .max()
        .expect("events");
    assert!(crowd >= 3, "some second holds several events");
    let per_page = crowd + 1;
    let url = format!(
        "{base}/api/v2/incremental/ticket_events.json?start_time=0&include=comment_events&per_page={per_page}"
    );
    let pages = walk_time_export(url, |page| page["end_of_stream"] == true).await;
    assert!(pages.len() > 3);
    let timestamp = |e: &Value| e["timestamp"].as_i64().expect("timestamp");
    let seen = check_time_pages(&pages, "ticket_events", timestamp, &per_second);
    assert_eq!(seen, events.iter().map(id).collect::<Vec<_>>());
    let served: BTreeMap<i64, &Value> = pages
        .iter()
        .flat_map(|p| p["ticket_events"].as_array().expect("events"))
        .map(|e| (id(e), e))
        .collect();
    for event in &events {
        assert_eq!(served[&id(event)], event, "served as records() has it");
    }
    for page in &pages {
        let next = page["next_page"].as_str().expect("next_page");
        assert!(next.starts_with(&format!(
            "{base}/api/v2/incremental/ticket_events.json?include=comment_events&start_time="
        )));
        assert!(next.ends_with(&format!("&per_page={per_page}")));
    }

    // Both child shapes, privacy changes and voice comments are in the export.
    let children: Vec<&Value> = events
        .iter()
        .flat_map(|e| e["child_events"].as_array().expect("children"))
        .collect();
    let audit = children
        .iter()
        .any(|c| c["event_type"] == "Change" && c.get("field_name").is_some());
    let keyed = children
        .iter()
        .any(|c| c["event_type"] == "Change" && c.get("field_name").is_none());
    let keyed_tags = children
        .iter()
        .any(|c| c.get("added_tags").is_some() && c.get("tags").is_some());
    let keyed_custom = children
        .iter()
        .any(|c| c.get("field_name").is_none() && c.get("360000500001").is_some());
    let privacy = children
        .iter()
        .any(|c| c["event_type"] == "CommentPrivacyChange" && c["public"] == false);
    let voice = children.iter().any(|c| c["type"] == "VoiceComment");
    let deleted = children
        .iter()
        .any(|c| c["field_name"] == "status" && c["value"] == "deleted")
        || children.iter().any(|c| c["status"] == "deleted");
    let attachments = children
        .iter()
        .any(|c| c["attachments"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(
        audit && keyed && keyed_tags && keyed_custom && privacy && voice && deleted && attachments,
        "audit {audit} keyed {keyed} tags {keyed_tags} custom {keyed_custom} privacy {privacy} \
         voice {voice} deleted {deleted} attachments {attachments}"
    );

    // Without include=comment_events: no comment children, comment_present/comment_public.
    let reply = get(&format!(
        "{base}/api/v2/incremental/ticket_events.json?start_time=0&per_page={per_page}"
    ))
    .await;
    assert_eq!(reply.status, 200);
    let page = reply.body["ticket_events"].as_array().expect("events");
    assert!(!page.is_empty());
    for event in page {
        let full = served[&id(event)];
        let comment = full["child_events"]
            .as_array()
            .expect("children")
            .iter()
            .find(|c| c["event_type"] == "Comment");
        assert_eq!(event["comment_present"], comment.is_some());
        assert_eq!(
            event["comment_public"],
            comment.is_some_and(|c| c["public"] == true)
        );
        for child in event["child_events"].as_array().expect("children") {
            assert_ne!(child["event_type"], "Comment");
        }
    }
    assert!(!reply.body["next_page"]
        .as_str()
        .expect("next_page")
        .contains("include="));
}

#[tokio::test]
async fn ticket_events_export_obeys_the_export_faults() {
    let sim = busy();
    let server = serve(&sim).await;
    let base = server.base_url();
    let path = "/api/v2/incremental/ticket_events.json";
    let now = sim.now();
    let too_recent = get(&format!("{base}{path}?start_time={}", now - 59)).await;
    assert_eq!(too_recent.status, 400);
    assert!(too_recent.body.to_string().contains("StartTimeTooRecent"));
    assert_eq!(get(&format!("{base}{path}")).await.status, 400);

    sim.set_faults(Faults {
        max_page_size: Some(100),
        ..Faults::default()
    });
    assert_eq!(get(&format!("{base}{path}?start_time=0")).await.status, 504);
    assert_eq!(
        get(&format!("{base}{path}?start_time=0&per_page=100"))
            .await
            .status,
        200
    );

    // A crowded second stalls: the page holds that second only and does not advance.
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for event in sim.records("ticket_events") {
        *per_second
            .entry(event["timestamp"].as_i64().expect("timestamp"))
            .or_default() += 1;
    }
    let (&crowded, &crowd) = per_second.iter().max_by_key(|(_, n)| **n).expect("events");
    sim.set_faults(Faults {
        stall_time_export_over: Some(crowd - 1),
        duplicate_in_page_every: Some(1),
        foreign_next_url: true,
        ..Faults::default()
    });
    let reply = get(&format!("{base}{path}?start_time={crowded}")).await;
    assert_eq!(reply.status, 200);
    let page = reply.body["ticket_events"].as_array().expect("events");
    assert_eq!(
        page.len(),
        crowd + 1,
        "the whole second, its first event twice"
    );
    assert_eq!(page[0], page[1]);
    assert_eq!(reply.body["count"], crowd + 1);
    assert_eq!(reply.body["end_time"], crowded);
    assert_eq!(reply.body["end_of_stream"], false);
    assert_eq!(
        reply.body["next_page"],
        format!("https://evil.example.com{path}?start_time={crowded}")
    );
}

#[tokio::test]
async fn metric_sets_come_with_the_non_deleted_tickets_of_each_page() {
    let sim = busy();
    let server = serve(&sim).await;
    let base = server.base_url();
    let metrics: BTreeMap<i64, Value> = sim
        .records("ticket_metrics")
        .into_iter()
        .map(|m| (m["ticket_id"].as_i64().expect("ticket_id"), m))
        .collect();
    let mut url = format!(
        "{base}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=10&include=metric_sets"
    );
    let mut deleted_seen = 0;
    let mut sets_seen = 0;
    for _ in 0..1000 {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let tickets = reply.body["tickets"].as_array().expect("tickets");
        let live: Vec<i64> = tickets
            .iter()
            .filter(|t| t["status"] != "deleted")
            .map(id)
            .collect();
        deleted_seen += tickets.len() - live.len();
        let sets = reply.body["metric_sets"].as_array().expect("metric_sets");
        let for_tickets: Vec<i64> = sets
            .iter()
            .map(|m| m["ticket_id"].as_i64().expect("ticket_id"))
            .collect();
        assert_eq!(for_tickets, live);
        for set in sets {
            assert_eq!(set, &metrics[&set["ticket_id"].as_i64().expect("id")]);
        }
        sets_seen += sets.len();
        let after_url = reply.body["after_url"].as_str().expect("after_url");
        assert!(after_url.ends_with("&include=metric_sets"), "{after_url}");
        if reply.body["end_of_stream"] == true {
            break;
        }
        url = after_url.to_string();
    }
    assert!(deleted_seen > 0, "some deleted tickets were on the pages");
    assert_eq!(sets_seen + deleted_seen, sim.records("tickets").len());

    let plain = get(&format!(
        "{base}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=10"
    ))
    .await;
    assert!(plain.body.get("metric_sets").is_none());
}

/// Walks a list with `page[size]=size` (plus `extra` query) and returns each page's body.
async fn walk_list(base: &str, path: &str, extra: &str, size: usize) -> Vec<Value> {
    let mut url = format!("{base}{path}?page%5Bsize%5D={size}{extra}");
    let mut pages = Vec::new();
    for _ in 0..10_000 {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        let more = reply.body["meta"]["has_more"] == true;
        let next = reply.body["links"]["next"].as_str().map(String::from);
        pages.push(reply.body);
        if !more {
            return pages;
        }
        url = next.expect("links.next while has_more");
    }
    panic!("list {path} never ended");
}

#[tokio::test]
async fn lists_page_by_cursor_over_every_listed_record_once() {
    let sim = busy();
    let server = serve(&sim).await;
    let base = server.base_url();
    for (path, key, support) in LISTS {
        let deleted = sim.deleted_keys(key);
        let expected: Vec<i64> = sim
            .records(key)
            .iter()
            .map(id)
            .filter(|i| !deleted.contains(&i.to_string()))
            .collect();
        assert!(expected.len() > 2, "{key}");
        let pages = walk_list(base, path, "", 2).await;
        let ids: Vec<i64> = pages
            .iter()
            .flat_map(|p| p[key].as_array().expect("records"))
            .map(id)
            .collect();
        assert_eq!(ids, expected, "{key}: every listed record once, by id");
        let current: BTreeMap<i64, Value> =
            sim.records(key).into_iter().map(|r| (id(&r), r)).collect();
        for page in &pages {
            for record in page[key].as_array().expect("records") {
                assert_eq!(record, &current[&id(record)], "{key}");
            }
            let links = &page["links"];
            for link in ["first", "last"] {
                assert!(links[link].as_str().expect(link).starts_with(base), "{key}");
            }
            assert!(page["meta"]["after_cursor"].is_string());
            assert!(page["meta"]["before_cursor"].is_string());
        }
        let last = pages.last().expect("a page");
        assert_eq!(last["meta"]["has_more"], false);
        // Support lists link onwards even from the last page; Help Center lists do not.
        assert_eq!(last["links"].get("next").is_some(), support, "{key}");
        if support {
            let next = last["links"]["next"].as_str().expect("next");
            let reply = get(next).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.body[key], serde_json::json!([]));
            assert_eq!(reply.body["meta"]["has_more"], false);
        }
        // The default page is 100; 101 and 0 are refused.
        let all = get(&format!("{base}{path}")).await;
        assert_eq!(
            all.body[key].as_array().map(Vec::len),
            Some(expected.len().min(100))
        );
        for size in ["101", "0", "x"] {
            let reply = get(&format!("{base}{path}?page[size]={size}")).await;
            assert_eq!(reply.status, 400, "{key} page[size]={size}");
            assert_eq!(reply.body["error"], "InvalidPaginationParameter");
        }
        // Going back from the last page with links.prev / page[before].
        if let (Some(prev), true) = (last["links"]["prev"].as_str(), pages.len() > 1) {
            let reply = get(prev).await;
            assert_eq!(reply.status, 200);
            let back: Vec<i64> = reply.body[key]
                .as_array()
                .expect("records")
                .iter()
                .map(id)
                .collect();
            let before = &pages[pages.len() - 2];
            let expected: Vec<i64> = before[key]
                .as_array()
                .expect("records")
                .iter()
                .map(id)
                .collect();
            assert_eq!(back, expected, "{key}");
        }
    }

    // Deleted groups only with exclude_deleted=false.
    let deleted_groups: BTreeSet<i64> = sim
        .deleted_keys("groups")
        .iter()
        .map(|k| k.parse().expect("id"))
        .collect();
    assert!(!deleted_groups.is_empty());
    let pages = walk_list(base, "/api/v2/groups.json", "&exclude_deleted=false", 3).await;
    let ids: Vec<i64> = pages
        .iter()
        .flat_map(|p| p["groups"].as_array().expect("groups"))
        .map(id)
        .collect();
    assert_eq!(
        ids,
        sim.records("groups").iter().map(id).collect::<Vec<_>>()
    );
    for page in &pages[..pages.len() - 1] {
        assert!(page["links"]["next"]
            .as_str()
            .expect("next")
            .contains("exclude_deleted=false"));
    }

    // Links follow foreign_next_url; the community also answers under /help_center/.
    sim.set_faults(Faults {
        foreign_next_url: true,
        ..Faults::default()
    });
    let reply = get(&format!(
        "{base}/api/v2/help_center/community/posts.json?page[size]=2"
    ))
    .await;
    assert_eq!(reply.status, 200);
    let next = reply.body["links"]["next"].as_str().expect("next");
    assert!(
        next.starts_with("https://evil.example.com/api/v2/community/posts.json?"),
        "{next}"
    );
}

#[tokio::test]
async fn the_article_export_has_no_end_of_stream_and_drops_archived_articles() {
    let sim = busy();
    let server = serve(&sim).await;
    let base = server.base_url();
    let archived = sim.deleted_keys("articles");
    assert!(!archived.is_empty());
    let live: Vec<Value> = sim
        .records("articles")
        .into_iter()
        .filter(|a| !archived.contains(&id(a).to_string()))
        .collect();
    let mut per_second: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for article in &live {
        per_second
            .entry(unix(&article["updated_at"]))
            .or_default()
            .insert(id(article));
    }
    let crowd = per_second
        .values()
        .map(BTreeSet::len)
        .max()
        .expect("articles");
    assert!(crowd >= 2, "some second holds several articles");
    // A page as large as the most crowded second would stall on it (as Zendesk does).
    let per_page = crowd + 1;
    let url = format!(
        "{base}/api/v2/help_center/incremental/articles.json?start_time=0&per_page={per_page}"
    );
    let pages = walk_time_export(url, |page| page["next_page"].is_null()).await;
    for page in &pages {
        assert!(page.get("end_of_stream").is_none());
    }
    let updated = |a: &Value| unix(&a["updated_at"]);
    let seen: BTreeSet<i64> = check_time_pages(&pages, "articles", updated, &per_second)
        .into_iter()
        .collect();
    assert_eq!(seen, live.iter().map(id).collect());
    for key in &archived {
        assert!(
            !seen.contains(&key.parse().expect("id")),
            "archived {key} served"
        );
    }
    // A start time after the last article: an empty last page.
    let reply = get(&format!(
        "{base}/api/v2/help_center/incremental/articles.json?start_time={}",
        sim.now() - 60
    ))
    .await;
    assert_eq!(reply.body["articles"], serde_json::json!([]));
    assert_eq!(reply.body["count"], 0);
    assert!(reply.body["next_page"].is_null());
}

#[tokio::test]
async fn side_conversations_page_by_offset_and_hide_with_their_ticket() {
    let sim = busy();
    let server = serve(&sim).await;
    let base = server.base_url();
    let mut by_ticket: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for mut conversation in sim.records("side_conversations") {
        let url = conversation["url"].as_str().expect("url").to_string();
        let ticket: i64 = url
            .split("/tickets/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|n| n.parse().ok())
            .expect("ticket id in url");
        // The ground truth names the ticket; the endpoint's records do not.
        let named = conversation
            .as_object_mut()
            .and_then(|c| c.remove("ticket_id"));
        assert_eq!(named, Some(Value::from(ticket)));
        by_ticket.entry(ticket).or_default().push(conversation);
    }
    let tickets = sim.records("tickets");
    let share = by_ticket.len() as f64 / tickets.len() as f64;
    assert!((0.08..=0.35).contains(&share), "share of tickets {share}");
    let deleted = sim.deleted_keys("tickets");
    for ticket in &deleted {
        let url = format!("{base}/api/v2/tickets/{ticket}/side_conversations.json");
        let reply = get(&url).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body, serde_json::json!({"error": "RecordNotFound"}));
    }
    for (ticket, conversations) in &by_ticket {
        let url = format!("{base}/api/v2/tickets/{ticket}/side_conversations.json");
        if deleted.contains(&ticket.to_string()) {
            continue;
        }
        let reply = get(&url).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body["side_conversations"].as_array(),
            Some(conversations)
        );
        assert_eq!(reply.body["count"], conversations.len());
        assert!(reply.body["next_page"].is_null() && reply.body["previous_page"].is_null());
        // One per page: follow next_page to the end.
        let mut next = Some(format!("{url}?per_page=1"));
        let mut seen = Vec::new();
        while let Some(url) = next {
            let reply = get(&url).await;
            seen.extend(
                reply.body["side_conversations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            assert_eq!(reply.body["count"], conversations.len());
            next = reply.body["next_page"].as_str().map(String::from);
        }
        assert_eq!(&seen, conversations);
        for conversation in conversations {
            let uuid = conversation["id"].as_str().expect("id");
            assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
            let created = conversation["created_at"].as_str().expect("created_at");
            assert_eq!(created.len(), "2024-01-01T00:00:00.123Z".len(), "{created}");
            assert!(created.ends_with('Z') && created.as_bytes()[19] == b'.');
        }
    }
    // A ticket without side conversations, an unknown one, a malformed one.
    let without = tickets
        .iter()
        .map(id)
        .find(|t| !by_ticket.contains_key(t) && !deleted.contains(&t.to_string()))
        .expect("a ticket without side conversations");
    let reply = get(&format!(
        "{base}/api/v2/tickets/{without}/side_conversations.json"
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["side_conversations"], serde_json::json!([]));
    assert_eq!(reply.body["count"], 0);
    for ticket in ["999999", "abc"] {
        let reply = get(&format!(
            "{base}/api/v2/tickets/{ticket}/side_conversations.json"
        ))
        .await;
        assert_eq!(reply.status, 404, "{ticket}");
        assert_eq!(reply.body, serde_json::json!({"error": "RecordNotFound"}));
    }
}

#[test]
fn rounds_touch_every_object() {
    let sim = Simulator::new(small());
    let snapshot = |sim: &Simulator| -> BTreeMap<&str, BTreeMap<String, Value>> {
        NEW_NAMES[..8]
            .iter()
            .map(|name| {
                let records = sim
                    .records(name)
                    .into_iter()
                    .map(|r| {
                        let key = match &r["id"] {
                            Value::String(uuid) => uuid.clone(),
                            other => other.to_string(),
                        };
                        (key, r)
                    })
                    .collect();
                (*name, records)
            })
            .collect()
    };
    let before = snapshot(&sim);
    let deleted_before: BTreeMap<&str, BTreeSet<String>> = NEW_NAMES[..7]
        .iter()
        .map(|name| (*name, sim.deleted_keys(name)))
        .collect();
    let events_before = sim.records("ticket_events").len();
    sim.apply_round(&ROUND);
    let after = snapshot(&sim);
    for name in &NEW_NAMES[..7] {
        let (old, new) = (&before[name], &after[name]);
        let created = new.keys().filter(|k| !old.contains_key(*k)).count();
        let changed = old
            .iter()
            .filter(|(k, v)| {
                new.get(*k)
                    .is_some_and(|n| n["updated_at"] != v["updated_at"])
            })
            .count();
        let deleted = sim.deleted_keys(name).len() - deleted_before[name].len();
        assert!(
            created >= 1 && changed >= 1 && deleted >= 1,
            "{name}: {created} {changed} {deleted}"
        );
    }
    // One event per visible ticket change: 4 updates, 1 delete, 3 creates.
    assert_eq!(sim.records("ticket_events").len(), events_before + 8);

    // A side conversation that changed in the round moved its ticket in the ticket export.
    let many = Simulator::new(SimConfig {
        tickets: 400,
        ..small()
    });
    let conversations = |sim: &Simulator| -> BTreeMap<String, Value> {
        sim.records("side_conversations")
            .into_iter()
            .map(|c| (c["id"].as_str().expect("id").to_string(), c))
            .collect()
    };
    let old = conversations(&many);
    let tickets_old: BTreeMap<i64, Value> = many
        .records("tickets")
        .into_iter()
        .map(|t| (id(&t), t))
        .collect();
    many.apply_round(&Round {
        updates: 100,
        creates: 20,
        ..Round::default()
    });
    let tickets_new: BTreeMap<i64, Value> = many
        .records("tickets")
        .into_iter()
        .map(|t| (id(&t), t))
        .collect();
    let mut moved = 0;
    for (uuid, conversation) in conversations(&many) {
        if old.get(&uuid) == Some(&conversation) {
            continue;
        }
        let url = conversation["url"].as_str().expect("url");
        let ticket: i64 = url
            .split("/tickets/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|n| n.parse().ok())
            .expect("ticket");
        let second = unix(&conversation["updated_at"]);
        let new = &tickets_new[&ticket];
        assert!(new["generated_timestamp"].as_i64() >= Some(second));
        assert_ne!(
            tickets_old.get(&ticket).map(|t| &t["generated_timestamp"]),
            Some(&new["generated_timestamp"]),
            "ticket {ticket} moved in the export"
        );
        moved += 1;
    }
    assert!(moved > 0, "the round changed some side conversations");
}

#[tokio::test]
async fn deny_answers_plan_gated_paths() {
    let sim = busy();
    let server = serve(&sim).await;
    let base = server.base_url();
    sim.set_budget(Budget {
        account: 700,
        help_center: 400,
        ..Budget::default()
    });
    sim.set_faults(Faults {
        deny: vec![
            (String::from("/api/v2/help_center"), 403),
            (String::from("/api/v2/community"), 404),
        ],
        ..Faults::default()
    });
    let reply = get(&format!("{base}/api/v2/help_center/articles.json")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, serde_json::json!({"error": "Forbidden"}));
    let reply = get(&format!(
        "{base}/api/v2/help_center/incremental/articles.json?start_time=0"
    ))
    .await;
    assert_eq!(reply.status, 403);
    let reply = get(&format!("{base}/api/v2/community/posts.json")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, serde_json::json!({"error": "InvalidEndpoint"}));
    let groups = get(&format!("{base}/api/v2/groups.json")).await;
    assert_eq!(groups.status, 200);
    // Support and Help Center report budgets of their own.
    let limit = |reply: &super::tests::Reply| {
        reply
            .headers
            .get("x-rate-limit")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    assert_eq!(limit(&groups).as_deref(), Some("700"));
    sim.set_faults(Faults::default());
    let sections = get(&format!("{base}/api/v2/help_center/sections.json")).await;
    assert_eq!(limit(&sections).as_deref(), Some("400"));
    // Credentials are checked first.
    let anonymous = send(client().get(format!("{base}/api/v2/help_center/articles.json"))).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn deleting_a_ticket_deletes_its_side_conversations() {
    let sim = Simulator::new(SimConfig {
        tickets: 300,
        ..small()
    });
    let before: BTreeMap<String, Value> = sim
        .records("side_conversations")
        .into_iter()
        .map(|c| (c["id"].as_str().expect("id").to_string(), c))
        .collect();
    assert!(sim.deleted_keys("side_conversations").is_empty());
    sim.apply_round(&Round {
        deletes: 60,
        ..Round::default()
    });
    let gone = sim.deleted_keys("side_conversations");
    assert!(
        !gone.is_empty(),
        "some deleted ticket had side conversations"
    );
    let server = serve(&sim).await;
    for uuid in &gone {
        // Deleted with their ticket, they keep their last values.
        let conversation = &before[uuid];
        assert!(sim.records("side_conversations").contains(conversation));
        let url = conversation["url"].as_str().expect("url");
        let ticket = url
            .split("/tickets/")
            .nth(1)
            .and_then(|r| r.split('/').next());
        let reply = get(&format!(
            "{}/api/v2/tickets/{}/side_conversations.json",
            server.base_url(),
            ticket.expect("ticket")
        ))
        .await;
        assert_eq!(reply.status, 404);
    }
}
