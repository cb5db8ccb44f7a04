//! Tests of the simulator through its HTTP interface, with a real reqwest client.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::*;

pub(super) const ROUND: Round = Round {
    creates: 3,
    updates: 4,
    silent_updates: 2,
    deletes: 1,
};

pub(super) fn small() -> SimConfig {
    SimConfig {
        tickets: 60,
        users: 30,
        organizations: 40,
        ..SimConfig::default()
    }
}

/// A simulator of [`small`] size, served on an ephemeral port.
async fn serve_small() -> (Simulator, SimServer) {
    let sim = Simulator::new(small());
    let server = sim.serve(0).await.expect("serve");
    (sim, server)
}

/// A [`small`] simulator after a round of 20 updates, which crowds some seconds, served.
async fn serve_updated() -> (Simulator, SimServer) {
    let sim = Simulator::new(small());
    sim.apply_round(&Round {
        updates: 20,
        ..Round::default()
    });
    let server = sim.serve(0).await.expect("serve");
    (sim, server)
}

/// The ids of the simulator's organizations by second of `updated_at`.
fn organizations_per_second(sim: &Simulator) -> BTreeMap<i64, BTreeSet<i64>> {
    let mut per_second: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for org in sim.records("organizations") {
        per_second
            .entry(unix(&org["updated_at"]))
            .or_default()
            .insert(id(&org));
    }
    per_second
}

/// The most crowded second and its ids, which the data makes several.
fn most_crowded(per_second: &BTreeMap<i64, BTreeSet<i64>>) -> (i64, BTreeSet<i64>) {
    let (&crowded, crowd) = per_second
        .iter()
        .max_by_key(|(_, ids)| ids.len())
        .expect("some organizations");
    assert!(
        crowd.len() >= 3,
        "the data should put several records in one second"
    );
    (crowded, crowd.clone())
}

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: Value,
}

pub(super) async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.expect("JSON body");
    Reply {
        status,
        headers,
        body,
    }
}

/// GET with the default API-token credentials; `url` is absolute.
pub(super) async fn get(url: &str) -> Reply {
    send(
        client()
            .get(url)
            .basic_auth("demo@example.com/token", Some("demo-token")),
    )
    .await
}

pub(super) fn unix(timestamp: &Value) -> i64 {
    let text = timestamp.as_str().expect("timestamp string");
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .timestamp()
}

pub(super) fn id(record: &Value) -> i64 {
    record["id"].as_i64().expect("integer id")
}

/// The export order key of a record.
fn key(object: &str, record: &Value) -> i64 {
    if object == "tickets" {
        record["generated_timestamp"]
            .as_i64()
            .expect("generated_timestamp")
    } else {
        unix(&record["updated_at"])
    }
}

/// Follows a cursor export from `first_url` to end_of_stream; returns the records and the last
/// after_cursor.
async fn read_cursor_export(base: &str, object: &str, first_url: String) -> (Vec<Value>, String) {
    let mut url = first_url;
    let mut records = Vec::new();
    for _ in 0..10_000 {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        records.extend(
            reply.body[object]
                .as_array()
                .expect("records")
                .iter()
                .cloned(),
        );
        let after_url = reply.body["after_url"].as_str().expect("after_url");
        assert!(after_url.starts_with(base), "{after_url} not on {base}");
        if reply.body["end_of_stream"] == Value::Bool(true) {
            let cursor = reply.body["after_cursor"].as_str().expect("after_cursor");
            return (records, cursor.to_string());
        }
        url = after_url.to_string();
    }
    panic!("cursor export of {object} never ended");
}

#[test]
fn same_config_gives_identical_records() {
    let a = Simulator::new(small());
    let b = Simulator::new(small());
    for sim in [&a, &b] {
        sim.apply_round(&ROUND);
        sim.apply_round(&ROUND);
    }
    for object in ["tickets", "users", "organizations"] {
        let a = serde_json::to_string(&a.records(object)).expect("serialize");
        let b = serde_json::to_string(&b.records(object)).expect("serialize");
        assert_eq!(a, b, "{object}");
    }
    let other = Simulator::new(SimConfig { seed: 7, ..small() });
    assert_ne!(other.records("tickets"), a.records("tickets"));
    assert!(a.records("nope").is_empty());
}

#[test]
fn records_have_the_real_samples_keys_and_invariants() {
    let sim = Simulator::new(small());
    sim.apply_round(&ROUND);
    let keys = |record: &Value| -> BTreeSet<String> {
        record
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect()
    };
    let expect =
        |list: &str| -> BTreeSet<String> { list.split_whitespace().map(String::from).collect() };
    let ticket_keys = expect(
        "url id external_id via created_at updated_at type subject raw_subject description priority \
         status recipient requester_id submitter_id assignee_id organization_id group_id \
         collaborator_ids follower_ids email_cc_ids forum_topic_id problem_id has_incidents \
         is_public due_at tags custom_fields satisfaction_rating sharing_agreement_ids \
         custom_status_id fields followup_ids ticket_form_id brand_id allow_channelback \
         allow_attachments from_messaging_channel generated_timestamp",
    );
    let user_keys = expect(
        "id url name email created_at updated_at time_zone iana_time_zone phone \
         shared_phone_number photo locale_id locale organization_id role verified external_id tags \
         alias active shared shared_agent last_login_at two_factor_auth_enabled signature details \
         notes role_type custom_role_id moderator ticket_restriction only_private_comments \
         restricted_agent suspended chat_only default_group_id report_csv user_fields",
    );
    let org_keys = expect(
        "url id name shared_tickets shared_comments external_id created_at updated_at deleted_at \
         domain_names details notes group_id tags organization_fields",
    );

    let tickets = sim.records("tickets");
    assert_eq!(tickets.len(), 63);
    for (i, ticket) in tickets.iter().enumerate() {
        assert_eq!(keys(ticket), ticket_keys);
        assert_eq!(id(ticket), i as i64 + 1);
        assert!(ticket["generated_timestamp"].as_i64() >= Some(unix(&ticket["updated_at"])));
        assert!(unix(&ticket["created_at"]) <= unix(&ticket["updated_at"]));
        assert!(key("tickets", ticket) <= sim.now() - 120);
        assert_eq!(ticket["custom_fields"], ticket["fields"]);
        assert_eq!(ticket["subject"], ticket["raw_subject"]);
    }
    assert_eq!(
        tickets.iter().filter(|t| t["status"] == "deleted").count(),
        1
    );

    let users = sim.records("users");
    assert_eq!(users.len(), 33);
    assert!(users.iter().all(|u| keys(u) == user_keys));
    assert_eq!(id(&users[0]), 10_000_000_000);
    assert_eq!(users.iter().filter(|u| u["active"] == false).count(), 1);

    let orgs = sim.records("organizations");
    assert_eq!(orgs.len(), 43);
    assert!(orgs.iter().all(|o| keys(o) == org_keys));
    assert_eq!(id(&orgs[0]), 500_000_000_000);
    assert_eq!(
        orgs.iter().filter(|o| !o["deleted_at"].is_null()).count(),
        1
    );

    // Mixed custom field value types, as in real accounts.
    let kinds: BTreeSet<&str> = tickets
        .iter()
        .flat_map(|t| t["custom_fields"].as_array().into_iter().flatten())
        .map(|f| match &f["value"] {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["array", "bool", "null", "number", "string"])
    );
}

#[tokio::test]
async fn cursor_export_pages_cover_every_record_exactly_once() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    for object in ["tickets", "users"] {
        let first =
            format!("{base}/api/v2/incremental/{object}/cursor.json?start_time=0&per_page=7");
        let (records, _) = read_cursor_export(base, object, first).await;
        let ids: Vec<i64> = records.iter().map(id).collect();
        let unique: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "{object}: duplicates");
        let expected: BTreeSet<i64> = sim.records(object).iter().map(id).collect();
        assert_eq!(unique, expected, "{object}");
        let order: Vec<(i64, i64)> = records.iter().map(|r| (key(object, r), id(r))).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{object}: not in export order"
        );
    }
    // 60 tickets at 7 per page: 9 pages; 30 users + admin: 5 pages.
    assert_eq!(sim.request_count(), 9 + 5);
}

#[tokio::test]
async fn resuming_after_a_round_returns_exactly_the_changed_records() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    for object in ["tickets", "users"] {
        let first = format!("{base}/api/v2/incremental/{object}/cursor.json?start_time=0");
        let (_, cursor) = read_cursor_export(base, object, first).await;
        let before: BTreeMap<i64, Value> = sim
            .records(object)
            .into_iter()
            .map(|r| (id(&r), r))
            .collect();
        sim.apply_round(&ROUND);
        let after = sim.records(object);
        let changed: BTreeSet<i64> = after
            .iter()
            .filter(|r| {
                before
                    .get(&id(r))
                    .is_none_or(|old| key(object, old) != key(object, r))
            })
            .map(id)
            .collect();
        // Distinct records per round: 3 creates + 4 updates + 2 silent + 1 delete.
        assert_eq!(changed.len(), 10, "{object}");

        let resume = format!(
            "{base}/api/v2/incremental/{object}/cursor.json?cursor={}",
            url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
        );
        let (records, last) = read_cursor_export(base, object, resume).await;
        let returned: BTreeSet<i64> = records.iter().map(id).collect();
        assert_eq!(returned, changed, "{object}");
        assert_eq!(records.len(), changed.len(), "{object}: duplicates");
        let current: BTreeMap<i64, &Value> = after.iter().map(|r| (id(r), r)).collect();
        for record in &records {
            assert_eq!(Some(&record), current.get(&id(record)), "{object}");
        }

        if object == "tickets" {
            let silent = records
                .iter()
                .filter(|r| {
                    before
                        .get(&id(r))
                        .is_some_and(|old| old["updated_at"] == r["updated_at"])
                })
                .count();
            assert_eq!(silent, 2, "system updates move only generated_timestamp");
        }

        // Nothing new: an empty page that hands back the cursor it was given.
        let again = format!(
            "{base}/api/v2/incremental/{object}/cursor.json?cursor={}",
            url::form_urlencoded::byte_serialize(last.as_bytes()).collect::<String>()
        );
        let reply = get(&again).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body[object], serde_json::json!([]));
        assert_eq!(reply.body["after_cursor"], Value::String(last.clone()));
        assert_eq!(reply.body["end_of_stream"], true);
    }
}

#[tokio::test]
async fn rereading_from_an_old_cursor_returns_updated_records_again() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    let reply = get(&format!(
        "{base}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=5"
    ))
    .await;
    let cursor = reply.body["after_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let first_page: BTreeSet<i64> = reply.body["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(id)
        .collect();
    sim.apply_round(&Round {
        updates: 60,
        ..Round::default()
    });
    let url = format!(
        "{base}/api/v2/incremental/tickets/cursor.json?cursor={}",
        url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
    );
    let (records, _) = read_cursor_export(base, "tickets", url).await;
    let ids: BTreeSet<i64> = records.iter().map(id).collect();
    assert_eq!(records.len(), 60);
    assert!(
        first_page.is_subset(&ids),
        "updated records move to the end"
    );
}

#[tokio::test]
async fn time_export_never_splits_a_second() {
    let (sim, server) = serve_updated().await;
    let base = server.base_url();
    let all = sim.records("organizations");
    let per_second = organizations_per_second(&sim);
    let (crowded, crowd) = most_crowded(&per_second);

    // A page of 1 starting at a crowded second holds the whole second and does not advance.
    let reply = get(&format!(
        "{base}/api/v2/incremental/organizations.json?start_time={crowded}&per_page=1"
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page: BTreeSet<i64> = ids(&reply.body, "organizations").into_iter().collect();
    assert_eq!(page, crowd);
    assert_eq!(reply.body["count"], crowd.len());
    assert_eq!(reply.body["end_time"], crowded);
    assert_eq!(reply.body["end_of_stream"], false);

    // Walk the export with pages just larger than the most crowded second.
    let per_page = crowd.len() + 1;
    let mut url =
        format!("{base}/api/v2/incremental/organizations.json?start_time=0&per_page={per_page}");
    let mut seen = BTreeSet::new();
    let mut extended = false;
    let mut previous_end: Option<i64> = None;
    for _ in 0..1000 {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let page = reply.body["organizations"]
            .as_array()
            .expect("page")
            .clone();
        let end_time = reply.body["end_time"].as_i64().expect("end_time");
        assert_eq!(reply.body["count"], page.len());
        extended |= page.len() > per_page;
        // The boundary second is complete in this page...
        let in_page: BTreeSet<i64> = page
            .iter()
            .filter(|o| unix(&o["updated_at"]) == end_time)
            .map(id)
            .collect();
        assert_eq!(Some(&in_page), per_second.get(&end_time));
        // ...and repeated at the start of the next one.
        if let Some(previous) = previous_end {
            assert_eq!(unix(&page[0]["updated_at"]), previous);
        }
        seen.extend(page.iter().map(id));
        let next = reply.body["next_page"].as_str().expect("next_page");
        assert_eq!(next, format!("{base}/api/v2/incremental/organizations.json?start_time={end_time}&per_page={per_page}"));
        if reply.body["end_of_stream"] == true {
            break;
        }
        previous_end = Some(end_time);
        url = next.to_string();
    }
    assert_eq!(seen, all.iter().map(id).collect());
    assert!(
        extended,
        "some page should have been extended past per_page"
    );
}

#[tokio::test]
async fn start_time_must_be_a_minute_old() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    for _ in 0..2 {
        let now = sim.now();
        for path in [
            "incremental/tickets/cursor.json",
            "incremental/users/cursor.json",
            "incremental/organizations.json",
        ] {
            let too_recent = get(&format!("{base}/api/v2/{path}?start_time={}", now - 59)).await;
            assert_eq!(too_recent.status, 400, "{path}");
            assert!(too_recent.body.to_string().contains("StartTimeTooRecent"));
            let ok = get(&format!("{base}/api/v2/{path}?start_time={}", now - 60)).await;
            assert_eq!(ok.status, 200, "{path}: {}", ok.body);
        }
        sim.apply_round(&Round::default());
        assert_eq!(sim.now(), now + 3600);
    }
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let (_sim, server) = serve_small().await;
    let base = server.base_url();
    for (path, status) in [
        ("/api/v2/incremental/tickets/cursor.json", 400),
        (
            "/api/v2/incremental/tickets/cursor.json?cursor=bm9wZQ%3D%3D",
            400,
        ),
        ("/api/v2/incremental/users/cursor.json?cursor=%%%", 400),
        ("/api/v2/incremental/organizations.json", 400),
        ("/api/v2/incremental/organizations.json?start_time=abc", 400),
        (
            "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=0",
            400,
        ),
        ("/api/v2/tickets.json", 404),
    ] {
        let reply = get(&format!("{base}{path}")).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
    }
    let reply = get(&format!("{base}/api/v2/nothing")).await;
    assert_eq!(reply.body, serde_json::json!({"error": "InvalidEndpoint"}));
    // per_page above Zendesk's maximum is clamped.
    let sim = Simulator::new(SimConfig {
        tickets: 1100,
        ..small()
    });
    let server = sim.serve(0).await.expect("serve");
    let reply = get(&format!(
        "{}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=5000",
        server.base_url()
    ))
    .await;
    assert_eq!(reply.body["tickets"].as_array().map(Vec::len), Some(1000));
    assert_eq!(reply.body["end_of_stream"], false);
}

#[tokio::test]
async fn credentials_are_checked() {
    let (_sim, server) = serve_small().await;
    let me = format!("{}/api/v2/users/me.json", server.base_url());

    let anonymous = send(client().get(&me)).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.body,
        serde_json::json!({"error": "Couldn't authenticate you"})
    );
    let wrong = send(
        client()
            .get(&me)
            .basic_auth("demo@example.com/token", Some("nope")),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let wrong_bearer = send(client().get(&me).bearer_auth("demo-token")).await;
    assert_eq!(wrong_bearer.status, 401);

    let basic = get(&me).await;
    assert_eq!(basic.status, 200);
    assert_eq!(basic.body["user"]["email"], "demo@example.com");
    assert_eq!(basic.body["user"]["role"], "admin");
    assert_eq!(
        basic
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        basic
            .headers
            .get("x-rate-limit")
            .and_then(|v| v.to_str().ok()),
        Some(Budget::default().account.to_string().as_str())
    );
    assert!(basic.headers.contains_key("x-rate-limit-remaining"));
    assert!(basic.headers.contains_key("ratelimit-remaining"));
    let bearer = send(client().get(&me).bearer_auth("demo-oauth-token")).await;
    assert_eq!(bearer.status, 200);
    assert_eq!(bearer.body, basic.body);
}

#[tokio::test]
async fn faults_follow_the_request_numbers() {
    let (sim, server) = serve_small().await;
    let me = format!("{}/api/v2/users/me.json", server.base_url());
    sim.set_faults(Faults {
        rate_limit_every: Some(3),
        retry_after: Some(String::from("0.05")),
        server_error_every: Some(4),
        fail_from_request: Some(10),
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..13 {
        let reply = get(&me).await;
        match reply.status {
            429 => {
                assert_eq!(reply.body, serde_json::json!({"error": "TooManyRequests"}));
                assert_eq!(
                    reply
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("0.05")
                );
            }
            500 => assert_eq!(
                reply.body,
                serde_json::json!({"error": "InternalServerError"})
            ),
            _ => {}
        }
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 500, 200, 429, 200, 500, 429, 500, 500, 429, 500]
    );
    assert_eq!(sim.request_count(), 13);
    assert_eq!(
        sim.request_log(),
        vec![String::from("/api/v2/users/me.json"); 13]
    );

    sim.set_faults(Faults {
        rate_limit_every: Some(1),
        ..Faults::default()
    });
    let reply = get(&me).await;
    assert_eq!(reply.status, 429);
    assert!(reply.headers.get("retry-after").is_none());
    sim.set_faults(Faults::default());
    assert_eq!(get(&me).await.status, 200);
    assert_eq!(sim.request_count(), 15);
}

#[tokio::test]
async fn request_log_keeps_path_and_query() {
    let (sim, server) = serve_small().await;
    let url = format!(
        "{}/api/v2/incremental/users/cursor.json?start_time=0&per_page=2",
        server.base_url()
    );
    get(&url).await;
    assert_eq!(
        sim.request_log(),
        ["/api/v2/incremental/users/cursor.json?start_time=0&per_page=2"]
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let (sim, server) = serve_small().await;
    let me = format!("{}/api/v2/users/me.json", server.base_url());
    assert_eq!(get(&me).await.status, 200);
    server.shutdown().await;
    let result = client()
        .get(&me)
        .basic_auth("demo@example.com/token", Some("demo-token"))
        .send()
        .await;
    assert!(result.is_err(), "server still answering after shutdown");

    let server = sim.serve(0).await.expect("serve");
    let me = format!("{}/api/v2/users/me.json", server.base_url());
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let result = client()
        .get(&me)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await;
    assert!(result.is_err(), "server still answering after drop");
}

/// The status, headers and body text of an authenticated GET; `url` is absolute.
async fn get_text(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client()
        .get(url)
        .basic_auth("demo@example.com/token", Some("demo-token"))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("text body"))
}

fn ids(page: &Value, object: &str) -> Vec<i64> {
    page[object]
        .as_array()
        .expect("records")
        .iter()
        .map(id)
        .collect()
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn reset_closes_the_connection_without_an_answer() {
    let (sim, server) = serve_small().await;
    let me = format!("{}/api/v2/users/me.json", server.base_url());
    // Reset outranks every other rule, the delay included.
    sim.set_faults(Faults {
        reset_every: Some(2),
        delay_every: Some(2),
        delay_ms: 5_000,
        rate_limit_every: Some(2),
        truncate_every: Some(2),
        ..Faults::default()
    });
    assert_eq!(get(&me).await.status, 200);
    let error = client()
        .get(&me)
        .basic_auth("demo@example.com/token", Some("demo-token"))
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .expect_err("the connection is reset");
    assert!(error.is_request() && !error.is_timeout(), "{error:?}");
    let mut source = std::error::Error::source(&error);
    let mut reset = false;
    while let Some(cause) = source {
        reset |= cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        source = cause.source();
    }
    assert!(reset, "not a connection reset: {error:?}");
    assert_eq!(get(&me).await.status, 200);
    assert_eq!(sim.request_count(), 3, "reqwest must not retry by itself");
}

#[tokio::test]
async fn truncate_announces_the_whole_body_and_sends_half() {
    let (sim, server) = serve_small().await;
    let url = format!(
        "{}/api/v2/incremental/tickets/cursor.json?start_time=0",
        server.base_url()
    );
    let whole = get_text(&url).await.2;
    sim.set_faults(Faults {
        truncate_every: Some(1),
        html_every: Some(1),
        ..Faults::default()
    });
    let response = client()
        .get(&url)
        .basic_auth("demo@example.com/token", Some("demo-token"))
        .send()
        .await
        .expect("head arrives");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), "content-length"),
        Some(whole.len().to_string().as_str())
    );
    assert_eq!(
        header(response.headers(), "content-type"),
        Some("application/json; charset=utf-8"),
        "truncation outranks the HTML page"
    );
    let error = response.bytes().await.expect_err("short body");
    assert!(error.is_body() || error.is_decode(), "{error:?}");

    // Errors injected by the rules above truncation are sent whole.
    sim.set_faults(Faults {
        truncate_every: Some(1),
        server_error_every: Some(1),
        ..Faults::default()
    });
    let reply = get(&url).await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.body,
        serde_json::json!({"error": "InternalServerError"})
    );
}

#[tokio::test]
async fn html_every_answers_200_with_a_proxy_page() {
    let (sim, server) = serve_small().await;
    let url = format!(
        "{}/api/v2/incremental/users/cursor.json?start_time=0",
        server.base_url()
    );
    sim.set_faults(Faults {
        html_every: Some(2),
        ..Faults::default()
    });
    let (status, headers, _) = get_text(&url).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/json; charset=utf-8")
    );
    let (status, headers, body) = get_text(&url).await;
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type").is_some_and(|t| t.starts_with("text/html")),
        "{headers:?}"
    );
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_err());
}

#[tokio::test]
async fn delay_exceeds_a_client_timeout_without_blocking_others() {
    let (sim, server) = serve_small().await;
    let me = format!("{}/api/v2/users/me.json", server.base_url());
    // Long enough that a server serialising its answers could not answer the next request
    // within the bound below, however loaded the machine.
    sim.set_faults(Faults {
        delay_every: Some(2),
        delay_ms: 120_000,
        ..Faults::default()
    });
    assert_eq!(get(&me).await.status, 200);
    let error = client()
        .get(&me)
        .basic_auth("demo@example.com/token", Some("demo-token"))
        .timeout(std::time::Duration::from_millis(100))
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout(), "{error:?}");
    // Request 2 is still waiting on the server; request 3 is answered meanwhile.
    let third = tokio::time::timeout(std::time::Duration::from_secs(30), get(&me))
        .await
        .expect("a delayed answer holds up no other connection");
    assert_eq!(third.status, 200);

    // After the wait, the answer is the normal one.
    sim.set_faults(Faults {
        delay_every: Some(1),
        delay_ms: 30,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let reply = get(&me).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(30));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["user"]["role"], "admin");
}

#[tokio::test]
async fn server_error_status_replaces_500() {
    let (sim, server) = serve_small().await;
    let me = format!("{}/api/v2/users/me.json", server.base_url());
    sim.set_faults(Faults {
        server_error_every: Some(2),
        fail_from_request: Some(4),
        server_error_status: Some(503),
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = get(&me).await;
        if reply.status != 200 {
            assert_eq!(
                reply.body,
                serde_json::json!({"error": "ServiceUnavailable"})
            );
        }
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 503, 200, 503, 503]);
}

#[tokio::test]
async fn max_page_size_answers_504_to_heavy_pages() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    sim.set_faults(Faults {
        max_page_size: Some(100),
        ..Faults::default()
    });
    for path in [
        "incremental/tickets/cursor.json",
        "incremental/users/cursor.json",
        "incremental/organizations.json",
    ] {
        for (per_page, status) in [("", 504), ("&per_page=1000", 504), ("&per_page=101", 504)] {
            let reply = get(&format!("{base}/api/v2/{path}?start_time=0{per_page}")).await;
            assert_eq!(reply.status, status, "{path}{per_page}");
            assert_eq!(reply.body, serde_json::json!({"error": "GatewayTimeout"}));
        }
        for per_page in ["&per_page=100", "&per_page=7"] {
            let reply = get(&format!("{base}/api/v2/{path}?start_time=0{per_page}")).await;
            assert_eq!(reply.status, 200, "{path}{per_page}: {}", reply.body);
        }
    }
}

#[tokio::test]
async fn foreign_next_url_points_links_at_another_host() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    let cursor = format!("{base}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=5");
    let time = format!("{base}/api/v2/incremental/organizations.json?start_time=0&per_page=5");
    let own_after = get(&cursor).await.body["after_url"].clone();
    let own_next = get(&time).await.body["next_page"].clone();
    sim.set_faults(Faults {
        foreign_next_url: true,
        ..Faults::default()
    });
    for (url, field, own) in [
        (cursor, "after_url", own_after),
        (time, "next_page", own_next),
    ] {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200);
        let link = reply.body[field].as_str().expect("link");
        let parsed = url::Url::parse(link).expect("absolute URL");
        assert_eq!(parsed.host_str(), Some("evil.example.com"));
        let own = own.as_str().expect("own link");
        assert_eq!(
            link.strip_prefix("https://evil.example.com"),
            own.strip_prefix(base)
        );
    }
}

#[tokio::test]
async fn stall_time_export_over_repeats_a_crowded_second() {
    let (sim, server) = serve_updated().await;
    let base = server.base_url();
    let (crowded, crowd) = most_crowded(&organizations_per_second(&sim));
    let url = format!("{base}/api/v2/incremental/organizations.json?start_time={crowded}");

    sim.set_faults(Faults {
        stall_time_export_over: Some(crowd.len() - 1),
        ..Faults::default()
    });
    let reply = get(&url).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page: BTreeSet<i64> = ids(&reply.body, "organizations").into_iter().collect();
    assert_eq!(page, crowd);
    assert_eq!(reply.body["end_time"], crowded);
    assert_eq!(reply.body["end_of_stream"], false);
    assert_eq!(reply.body["count"], crowd.len());
    assert_eq!(
        reply.body["next_page"],
        format!("{base}/api/v2/incremental/organizations.json?start_time={crowded}")
    );

    // A second that fits under the limit is paged normally, to the end.
    sim.set_faults(Faults {
        stall_time_export_over: Some(crowd.len()),
        ..Faults::default()
    });
    let reply = get(&url).await;
    assert!(reply.body["organizations"].as_array().map(Vec::len) > Some(crowd.len()));
    assert_ne!(reply.body["end_time"], crowded);
    assert_eq!(reply.body["end_of_stream"], true);
}

#[tokio::test]
async fn duplicate_in_page_repeats_the_first_record() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    let url = format!("{base}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=5");
    let clean = get(&url).await.body;
    sim.set_faults(Faults {
        duplicate_in_page_every: Some(1),
        ..Faults::default()
    });
    let reply = get(&url).await;
    let page = ids(&reply.body, "tickets");
    assert_eq!(page.len(), 6);
    assert_eq!(page[0], page[1]);
    assert_eq!(reply.body["tickets"][0], reply.body["tickets"][1]);
    let mut expected = ids(&clean, "tickets");
    expected.insert(1, expected[0]);
    assert_eq!(page, expected);
    assert_eq!(reply.body["after_cursor"], clean["after_cursor"]);

    let reply = get(&format!(
        "{base}/api/v2/incremental/organizations.json?start_time=0&per_page=5"
    ))
    .await;
    let page = ids(&reply.body, "organizations");
    assert_eq!(page[0], page[1]);
    assert_eq!(reply.body["count"], page.len());
}

#[tokio::test]
async fn empty_page_keeps_the_cursor_and_the_stream_open() {
    let (sim, server) = serve_small().await;
    let base = server.base_url();
    sim.set_faults(Faults {
        empty_page_every: Some(2),
        ..Faults::default()
    });
    let first = get(&format!(
        "{base}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=5"
    ))
    .await;
    assert_eq!(ids(&first.body, "tickets").len(), 5);
    let cursor = first.body["after_cursor"].as_str().expect("cursor");
    let next = first.body["after_url"].as_str().expect("after_url");

    let empty = get(next).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["tickets"], serde_json::json!([]));
    assert_eq!(empty.body["end_of_stream"], false);
    assert_eq!(empty.body["after_cursor"], cursor);
    assert_eq!(empty.body["after_url"], next);

    let normal = get(next).await;
    assert_eq!(ids(&normal.body, "tickets").len(), 5);
    assert_ne!(normal.body["after_cursor"], cursor);
    // Request 4: the time export is not a cursor export and is not emptied.
    let time = get(&format!(
        "{base}/api/v2/incremental/organizations.json?start_time=0"
    ))
    .await;
    assert_eq!(ids(&time.body, "organizations").len(), 40);
}

#[tokio::test]
async fn override_record_serves_hostile_payloads_in_place() {
    let (sim, server) = serve_small().await;
    let url = format!(
        "{}/api/v2/incremental/tickets/cursor.json?start_time=0",
        server.base_url()
    );
    let clean = ids(&get(&url).await.body, "tickets");
    let position = clean.iter().position(|&i| i == 3).expect("ticket 3");

    let raw = r#"{"id":3,"subject":"unterminated"#;
    sim.override_record("tickets", 3, raw.to_string());
    let (status, _, text) = get_text(&url).await;
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!("{raw},")) || text.contains(&format!("{raw}]")),
        "{text}"
    );
    assert!(serde_json::from_str::<Value>(&text).is_err());
    let records = sim.records("tickets");
    assert_eq!(records.len(), 59);
    assert!(records.iter().all(|r| id(r) != 3));

    let hostile =
        serde_json::json!({"id": 3, "subject": "\u{0}🚀", "custom_fields": {"not": "a list"}});
    sim.override_record("tickets", 3, hostile.to_string());
    let page = get(&url).await.body;
    assert_eq!(page["tickets"][position], hostile);
    assert_eq!(ids(&page, "tickets"), clean);
    assert!(sim.records("tickets").contains(&hostile));

    // Unknown objects and ids change nothing.
    sim.override_record("tickets", 999_999, String::from("{}"));
    sim.override_record("nope", 3, String::from("{}"));
    assert_eq!(sim.records("tickets").len(), 60);
}
