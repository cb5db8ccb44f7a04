//! Tests of the write side: bulk jobs, the Webhooks and Triggers APIs, signed deliveries and
//! their faults, and the clock that ends at the present.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::tests::{client, get, send, small, Reply};
use super::*;

fn auth(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.basic_auth("demo@example.com/token", Some("demo-token"))
}

async fn post(url: &str, body: &Value) -> Reply {
    send(auth(client().post(url).json(body))).await
}

async fn put(url: &str, body: &Value) -> Reply {
    send(auth(client().put(url).json(body))).await
}

/// Status of a request whose answer has no body (204).
async fn put_status(url: &str, body: &Value) -> u16 {
    auth(client().put(url).json(body))
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

async fn serve(config: SimConfig) -> (Simulator, SimServer) {
    let sim = Simulator::new(config);
    let server = sim.serve(0).await.expect("serve");
    (sim, server)
}

/// Polls a job until it completes; the statuses seen, and the last job status.
async fn poll(base: &str, job: &Value) -> (Vec<String>, Value) {
    let id = job["id"].as_str().expect("job id");
    let mut seen = Vec::new();
    for _ in 0..20 {
        let reply = get(&format!("{base}/api/v2/job_statuses/{id}.json")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let status = reply.body["job_status"]["status"]
            .as_str()
            .expect("status")
            .to_string();
        seen.push(status.clone());
        if status == "completed" {
            return (seen, reply.body["job_status"].clone());
        }
    }
    panic!("job {id} never completed: {seen:?}");
}

fn ticket_ids(sim: &Simulator) -> Vec<i64> {
    sim.records("tickets")
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .collect()
}

/// Tickets of the cursor export from the start.
async fn exported_tickets(base: &str) -> Vec<Value> {
    let mut url = format!("{base}/api/v2/incremental/tickets/cursor.json?start_time=0");
    let mut tickets = Vec::new();
    loop {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        tickets.extend(reply.body["tickets"].as_array().expect("tickets").clone());
        if reply.body["end_of_stream"] == true {
            return tickets;
        }
        url = reply.body["after_url"]
            .as_str()
            .expect("after_url")
            .to_string();
    }
}

/// Comment child events of the ticket-event export from the start.
async fn exported_comments(base: &str) -> Vec<Value> {
    let mut url =
        format!("{base}/api/v2/incremental/ticket_events.json?start_time=0&include=comment_events");
    let mut comments = Vec::new();
    let mut last_end = -1;
    loop {
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        for event in reply.body["ticket_events"].as_array().expect("events") {
            for child in event["child_events"].as_array().expect("children") {
                if child["event_type"] == "Comment" {
                    let mut child = child.clone();
                    child["ticket_id"] = event["ticket_id"].clone();
                    comments.push(child);
                }
            }
        }
        let end = reply.body["end_time"].as_i64().expect("end_time");
        if reply.body["end_of_stream"] == true || end == last_end {
            return comments;
        }
        last_end = end;
        url = reply.body["next_page"]
            .as_str()
            .expect("next_page")
            .to_string();
    }
}

#[tokio::test]
async fn an_import_job_goes_queued_working_completed_and_its_tickets_appear_only_then() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let before = ticket_ids(&sim).len();
    let tickets = json!({"tickets": [
        {
            "external_id": "legacy-1",
            "subject": "Imported one",
            "requester_id": 10_000_000_003_i64,
            "status": "solved",
            "tags": ["b", "a", "b"],
            "created_at": "2020-05-01T10:00:00Z",
            "comments": [
                {"author_id": 10_000_000_003_i64, "value": "First words", "created_at": "2020-05-01T10:00:00Z"},
                {"author_id": 10_000_000_001_i64, "html_body": "<p>Answer</p>", "public": false, "created_at": "2020-05-02T10:00:00Z"},
            ],
        },
        {"external_id": "legacy-2", "subject": "Bad requester", "requester_id": 999, "description": "x"},
        {"external_id": "legacy-3", "subject": "New person", "requester": {"name": "Nova Person", "email": "nova@example.net"}, "description": "Hello"},
    ]});
    let reply = post(
        &format!("{base}/api/v2/imports/tickets/create_many.json"),
        &tickets,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let job = &reply.body["job_status"];
    assert_eq!(job["status"], "queued");
    assert_eq!(job["total"], 3);
    assert!(job["results"].is_null());
    assert!(job["id"].as_str().expect("id").starts_with("V3-"));
    // Not created before the job completes.
    assert_eq!(ticket_ids(&sim).len(), before);
    assert!(sim.tickets_created_per_external_id().is_empty());

    let (seen, done) = poll(base, job).await;
    assert_eq!(seen, ["queued", "working", "completed"]);
    let results = done["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["index"], 0);
    let first = results[0]["id"].as_i64().expect("created id");
    assert!(results[0].get("external_id").is_none());
    assert_eq!(results[1]["index"], 1);
    assert!(results[1]["error"].is_string() && results[1]["details"].is_string());
    assert!(results[1].get("id").is_none());
    let third = results[2]["id"].as_i64().expect("created id");
    assert_eq!(ticket_ids(&sim).len(), before + 2);
    assert_eq!(
        sim.tickets_created_per_external_id(),
        [("legacy-1".to_string(), 1), ("legacy-3".to_string(), 1)].into()
    );
    // A requester by e-mail became a user.
    let nova = sim
        .records("users")
        .into_iter()
        .find(|u| u["email"] == "nova@example.net")
        .expect("the requester was created");
    assert_eq!(nova["name"], "Nova Person");

    // In the exports: the ticket with its given created_at and generated_timestamp = now.
    let exported = exported_tickets(base).await;
    let imported = exported
        .iter()
        .find(|t| t["id"] == first)
        .expect("imported ticket exported");
    assert_eq!(imported["created_at"], "2020-05-01T10:00:00Z");
    assert_eq!(imported["tags"], json!(["a", "b"]));
    assert_eq!(imported["status"], "solved");
    assert!(imported["generated_timestamp"].as_i64().expect("generated") <= sim.now());
    assert!(imported["generated_timestamp"].as_i64().expect("generated") >= sim.now() - 1);
    let third_ticket = exported.iter().find(|t| t["id"] == third).expect("third");
    assert_eq!(third_ticket["requester_id"], nova["id"]);
    // Its comments in the ticket-event export, with their own times.
    let comments: Vec<Value> = exported_comments(base)
        .await
        .into_iter()
        .filter(|c| c["ticket_id"] == first)
        .collect();
    assert_eq!(comments.len(), 2, "{comments:?}");
    assert_eq!(comments[0]["body"], "First words");
    assert_eq!(comments[0]["created_at"], "2020-05-01T10:00:00Z");
    assert_eq!(comments[1]["public"], false);
    assert_eq!(comments[1]["created_at"], "2020-05-02T10:00:00Z");

    // Listed by external id.
    let listed = get(&format!("{base}/api/v2/tickets.json?external_id=legacy-1")).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["count"], 1);
    assert_eq!(listed.body["tickets"][0]["id"], first);
    let none = get(&format!("{base}/api/v2/tickets.json?external_id=legacy-2")).await;
    assert_eq!(none.body["count"], 0);

    // The job list shows it; writes were logged.
    let jobs = get(&format!("{base}/api/v2/job_statuses.json")).await;
    assert_eq!(jobs.body["job_statuses"][0]["id"], job["id"]);
    assert_eq!(sim.write_log().len(), 1);
    assert_eq!(sim.write_log()[0].method, "POST");
    assert_eq!(sim.write_log()[0].body, tickets);
}

#[tokio::test]
async fn bulk_requests_are_refused_like_zendesk() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let many: Vec<Value> = (0..101).map(|n| json!({"subject": n})).collect();
    let url = format!("{base}/api/v2/imports/tickets/create_many.json");
    assert_eq!(post(&url, &json!({ "tickets": many })).await.status, 400);
    assert_eq!(post(&url, &json!({"ticket": {}})).await.status, 400);
    let update = format!("{base}/api/v2/tickets/update_many.json");
    assert_eq!(put(&update, &json!({ "tickets": many })).await.status, 400);
    let reply = get(&format!("{base}/api/v2/job_statuses/V3-nope.json")).await;
    assert_eq!(reply.status, 404);
    // A body over the cap is refused unread.
    let huge = vec![b' '; 16 * 1024 * 1024 + 1];
    let response = auth(client().post(&url).body(huge))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 413);
    assert!(sim.update_requests().is_empty());
}

#[tokio::test]
async fn archived_imports_are_not_listed_by_external_id_but_stay_in_the_exports() {
    let (sim, server) = serve(SimConfig {
        job_polls: 1,
        ..small()
    })
    .await;
    let base = server.base_url();
    let reply = post(
        &format!("{base}/api/v2/imports/tickets/create_many.json?archive_immediately=true"),
        &json!({"tickets": [
            {"external_id": "old-1", "subject": "Closed", "status": "closed", "description": "done"},
            {"external_id": "old-2", "subject": "Open", "status": "open", "description": "going"},
        ]}),
    )
    .await;
    let (seen, done) = poll(base, &reply.body["job_status"]).await;
    assert_eq!(seen, ["completed"]);
    let closed = done["results"][0]["id"].as_i64().expect("id");
    let open = done["results"][1]["id"].as_i64().expect("id");
    let listed = get(&format!("{base}/api/v2/tickets.json?external_id=old-1")).await;
    assert_eq!(listed.body["count"], 0, "archived: not listed");
    let listed = get(&format!("{base}/api/v2/tickets.json?external_id=old-2")).await;
    assert_eq!(
        listed.body["tickets"][0]["id"], open,
        "only closed ones are archived"
    );
    let exported = exported_tickets(base).await;
    assert!(exported.iter().any(|t| t["id"] == closed));
    assert!(sim.records("tickets").iter().any(|t| t["id"] == closed));
}

#[tokio::test]
async fn update_many_applies_at_completion_and_shows_in_the_exports() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let tickets = sim.records("tickets");
    let open = tickets
        .iter()
        .find(|t| t["status"] == "open")
        .expect("an open ticket");
    let closed = tickets
        .iter()
        .find(|t| t["status"] == "closed")
        .expect("a closed ticket");
    let open_id = open["id"].as_i64().expect("id");
    let body = json!({"tickets": [
        {
            "id": open_id,
            "status": "pending",
            "priority": "urgent",
            "additional_tags": ["pushed"],
            "custom_fields": [{"id": 360_000_500_005_i64, "value": 7}],
            "comment": {"body": "Pushed from the lake", "public": false},
        },
        {"id": closed["id"], "status": "open"},
        {"id": 123_456_789, "status": "open"},
    ]});
    let reply = put(&format!("{base}/api/v2/tickets/update_many.json"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(sim.update_requests(), vec![body.clone()]);
    // Nothing applied yet.
    let unchanged = sim.records("tickets");
    assert_eq!(unchanged.iter().find(|t| t["id"] == open_id), Some(open));
    let now = sim.now();

    let (_, done) = poll(base, &reply.body["job_status"]).await;
    let results = done["results"].as_array().expect("results");
    assert_eq!(results[0]["status"], "Updated");
    assert_eq!(results[0]["success"], true);
    assert_eq!(
        results[1]["details"],
        "Status: closed prevents ticket update"
    );
    assert_eq!(results[1]["id"], closed["id"]);
    assert!(results[2]["error"].is_string());

    let exported = exported_tickets(base).await;
    let updated = exported
        .iter()
        .find(|t| t["id"] == open_id)
        .expect("exported");
    assert_eq!(updated["status"], "pending");
    assert_eq!(updated["priority"], "urgent");
    assert!(updated["tags"]
        .as_array()
        .expect("tags")
        .contains(&json!("pushed")));
    let field = updated["custom_fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["id"] == 360_000_500_005_i64)
        .expect("field");
    assert_eq!(field["value"], 7);
    assert_eq!(updated["generated_timestamp"], now);
    assert_eq!(updated["updated_at"], data::rfc3339(now));
    // The comment in the event export and the ground truth; the field changes in the history.
    let added = sim.comments_added();
    assert_eq!(added[&open_id].len(), 1);
    let comment_id = &added[&open_id][0]["id"];
    let comments = exported_comments(base).await;
    let comment = comments
        .iter()
        .find(|c| &c["id"] == comment_id)
        .expect("comment exported");
    assert_eq!(comment["body"], "Pushed from the lake");
    assert_eq!(comment["public"], false);
    let history: Vec<Value> = sim
        .records("ticket_field_history")
        .into_iter()
        .filter(|row| row["ticket_id"] == open_id && row["created_at"] == data::rfc3339(now))
        .collect();
    let fields: Vec<&str> = history
        .iter()
        .filter_map(|row| row["field_name"].as_str())
        .collect();
    assert!(
        fields.contains(&"status") && fields.contains(&"priority"),
        "{fields:?}"
    );
    // A later round's changes sort after the update.
    sim.apply_round(&tests::ROUND);
    assert!(sim.now() > now);
}

#[tokio::test]
async fn too_many_running_jobs_are_refused_with_retry_after() {
    let (_sim, server) = serve(small()).await;
    let base = server.base_url();
    let url = format!("{base}/api/v2/imports/tickets/create_many.json");
    let body = json!({"tickets": [{"subject": "x", "description": "y"}]});
    for _ in 0..30 {
        assert_eq!(post(&url, &body).await.status, 200);
    }
    let refused = post(&url, &body).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"], "TooManyJobs");
    assert!(refused.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_lost_answer_is_of_a_write_the_account_applied() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    sim.set_faults(Faults {
        lose_write_answer_every: Some(2),
        ..Faults::default()
    });
    let url = format!("{base}/api/v2/imports/tickets/create_many.json");
    let ticket =
        |n: u32| json!({"tickets": [{"external_id": format!("lost-{n}"), "description": "y"}]});
    // Reads are not counted: only the second write loses its answer.
    assert_eq!(
        get(&format!("{base}/api/v2/users/me.json")).await.status,
        200
    );
    assert_eq!(post(&url, &ticket(1)).await.status, 200);
    let error = auth(client().post(&url).json(&ticket(2)))
        .send()
        .await
        .expect_err("the answer is lost");
    assert!(error.is_request() && !error.is_connect(), "{error:?}");
    assert_eq!(post(&url, &ticket(3)).await.status, 200);
    let jobs = sim.jobs();
    assert_eq!(
        jobs.len(),
        3,
        "the write whose answer was lost made its job"
    );
    sim.complete_jobs();
    let created = sim.tickets_created_per_external_id();
    for n in 1..=3 {
        assert_eq!(created.get(&format!("lost-{n}")), Some(&1), "{created:?}");
    }
}

fn webhook(name: &str, endpoint: &str, subscriptions: &[&str]) -> Value {
    json!({"webhook": {
        "name": name,
        "status": "active",
        "endpoint": endpoint,
        "http_method": "POST",
        "request_format": "json",
        "subscriptions": subscriptions,
    }})
}

#[tokio::test]
async fn webhooks_are_created_listed_shown_updated_and_deleted() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let url = format!("{base}/api/v2/webhooks");
    let mut ids = Vec::new();
    for n in 0..3 {
        let reply = post(
            &url,
            &webhook(
                &format!("lake {n}"),
                "https://example.com/hook",
                &["zen:event-type:user.created"],
            ),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let id = reply.body["webhook"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        assert_eq!(id.len(), 26);
        assert!(reply.body["webhook"].get("signing_secret").is_none());
        ids.push(id);
    }
    // Paged by cursor.
    let first = get(&format!("{url}?page[size]=2")).await;
    assert_eq!(first.body["webhooks"].as_array().expect("list").len(), 2);
    assert_eq!(first.body["meta"]["has_more"], true);
    let next = first.body["links"]["next"].as_str().expect("next");
    let second = get(next).await;
    assert_eq!(second.body["webhooks"][0]["id"], json!(ids[2]));
    assert_eq!(second.body["meta"]["has_more"], false);
    let filtered = get(&format!("{url}?filter[name_contains]=LAKE 1")).await;
    assert_eq!(filtered.body["webhooks"].as_array().expect("list").len(), 1);
    // Shown, updated (204), its secret.
    let shown = get(&format!("{url}/{}", ids[0])).await;
    assert_eq!(shown.body["webhook"]["name"], "lake 0");
    let status = put_status(
        &format!("{url}/{}", ids[0]),
        &json!({"webhook": {"name": "renamed", "status": "inactive"}}),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(sim.webhooks()[0]["name"], "renamed");
    assert_eq!(sim.webhooks()[0]["status"], "inactive");
    let secret = get(&format!("{url}/{}/signing_secret", ids[0])).await;
    assert_eq!(secret.body["signing_secret"]["algorithm"], "SHA256");
    assert!(
        secret.body["signing_secret"]["secret"]
            .as_str()
            .expect("secret")
            .len()
            >= 32
    );
    // The connection method cannot change.
    let status = put_status(
        &format!("{url}/{}", ids[0]),
        &json!({"webhook": {"subscriptions": ["conditional_ticket_events"]}}),
    )
    .await;
    assert_eq!(status, 400);
    let deleted = auth(client().delete(format!("{url}/{}", ids[1])))
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(get(&format!("{url}/{}", ids[1])).await.status, 404);
    assert_eq!(sim.webhooks().len(), 2);
}

#[tokio::test]
async fn webhook_validation_refuses_what_zendesk_refuses() {
    let (_sim, server) = serve(SimConfig {
        webhook_ticket_events: false,
        ..small()
    })
    .await;
    let url = format!("{}/api/v2/webhooks", server.base_url());
    for subscriptions in [
        vec!["*"],
        vec!["zen:event-type:*"],
        vec!["zen:event-type:ticket.*"],
        vec!["not-an-event"],
        vec![],
        vec!["conditional_ticket_events", "zen:event-type:user.created"],
        // This account cannot subscribe to ticket events.
        vec!["zen:event-type:ticket.status_changed"],
    ] {
        let reply = post(&url, &webhook("w", "https://example.com/h", &subscriptions)).await;
        assert_eq!(reply.status, 400, "{subscriptions:?}: {}", reply.body);
        assert!(reply.body["errors"][0]["code"].is_string());
    }
    let mut missing = webhook(
        "w",
        "https://example.com/h",
        &["zen:event-type:user.created"],
    );
    missing["webhook"]
        .as_object_mut()
        .expect("object")
        .remove("endpoint");
    assert_eq!(post(&url, &missing).await.status, 400);
    // Trigger-connected webhooks are accepted.
    let reply = post(
        &url,
        &webhook("t", "https://example.com/h", &["conditional_ticket_events"]),
    )
    .await;
    assert_eq!(reply.status, 201);
}

/// A hand-rolled endpoint: answers every request with `status`, hands each request on.
struct Endpoint {
    url: String,
    received: mpsc::UnboundedReceiver<(Vec<(String, String)>, String)>,
}

async fn endpoint(status: u16) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let headers: Vec<(String, String)> = head
                        .split("\r\n")
                        .skip(1)
                        .filter_map(|line| line.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let length = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                    let _ = tx.send((headers, body));
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    return;
                }
            });
        }
    });
    Endpoint { url, received }
}

/// An independent HMAC-SHA256 (RFC 2104 over the sha2 digest), base64.
fn expected_signature(secret: &str, timestamp: &str, body: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut key = secret.as_bytes().to_vec();
    if key.len() > 64 {
        key = Sha256::digest(&key).to_vec();
    }
    key.resize(64, 0);
    let inner_key: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let outer_key: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_key)
        .chain_update(timestamp.as_bytes())
        .chain_update(body.as_bytes())
        .finalize();
    let outer = Sha256::new()
        .chain_update(&outer_key)
        .chain_update(inner)
        .finalize();
    STANDARD.encode(outer)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

async fn register(base: &str, endpoint: &str, subscriptions: &[&str]) -> (String, String) {
    let reply = post(
        &format!("{base}/api/v2/webhooks"),
        &webhook("lake", endpoint, subscriptions),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.body["webhook"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let secret = get(&format!("{base}/api/v2/webhooks/{id}/signing_secret")).await;
    let secret = secret.body["signing_secret"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    (id, secret)
}

const SUBSCRIBED: [&str; 5] = [
    "zen:event-type:ticket.created",
    "zen:event-type:ticket.status_changed",
    "zen:event-type:ticket.comment_added",
    "zen:event-type:user.created",
    "zen:event-type:organization.created",
];

#[tokio::test]
async fn a_round_delivers_signed_envelopes_to_subscribed_webhooks() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let mut hook = endpoint(200).await;
    let (id, secret) = register(base, &hook.url, &SUBSCRIBED).await;
    sim.apply_round(&tests::ROUND);
    tokio::time::timeout(Duration::from_secs(30), sim.deliveries_settled())
        .await
        .expect("deliveries settle");
    let deliveries = sim.deliveries();
    // Three creates of each object, each a `created` event.
    let created = |kind: &str| {
        deliveries
            .iter()
            .filter(|d| d.event_type.as_deref() == Some(kind))
            .count()
    };
    assert_eq!(created("zen:event-type:ticket.created"), ROUND_CREATES);
    assert_eq!(created("zen:event-type:user.created"), ROUND_CREATES);
    assert_eq!(
        created("zen:event-type:organization.created"),
        ROUND_CREATES
    );
    assert!(deliveries
        .iter()
        .all(|d| d.status == Some(200) && d.fault.is_none()));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..deliveries.len() {
        let (headers, body) = hook.received.recv().await.expect("a request");
        let timestamp = header(&headers, "x-zendesk-webhook-signature-timestamp");
        assert_eq!(
            header(&headers, "x-zendesk-webhook-signature"),
            expected_signature(&secret, timestamp, &body),
            "signature of {body}"
        );
        let stamp = chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339 timestamp");
        assert!((chrono::Utc::now().timestamp() - stamp.timestamp()).abs() < 60);
        assert_eq!(header(&headers, "x-zendesk-webhook-id"), id);
        let envelope: Value = serde_json::from_str(&body).expect("JSON envelope");
        for key in [
            "account_id",
            "detail",
            "event",
            "id",
            "subject",
            "time",
            "type",
            "zendesk_event_version",
        ] {
            assert!(envelope.get(key).is_some(), "{key} in {envelope}");
        }
        assert!(
            seen.insert(envelope["id"].as_str().expect("id").to_string()),
            "ids are unique"
        );
        let subject = envelope["subject"].as_str().expect("subject");
        assert!(subject.starts_with("zen:"), "{subject}");
        if envelope["type"] == "zen:event-type:ticket.status_changed" {
            let ticket: i64 = subject["zen:ticket:".len()..].parse().expect("ticket id");
            let now = sim
                .records("tickets")
                .into_iter()
                .find(|t| t["id"] == ticket)
                .expect("ticket");
            assert_eq!(
                envelope["event"]["current"],
                json!(now["status"].as_str().expect("status").to_ascii_uppercase())
            );
        }
    }
}

const ROUND_CREATES: usize = tests::ROUND.creates;

#[tokio::test]
async fn webhook_faults_duplicate_stale_and_bad_signatures() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let mut hook = endpoint(200).await;
    let (_, secret) = register(base, &hook.url, &["zen:event-type:user.created"]).await;
    sim.set_webhook_faults(WebhookFaults {
        duplicate_every: Some(2),
        stale_every: Some(3),
        bad_signature_every: Some(5),
    });
    sim.apply_round(&Round {
        creates: 6,
        ..Round::default()
    });
    sim.deliveries_settled().await;
    let deliveries = sim.deliveries();
    // Six deliveries, numbers 2, 4 and 6 twice.
    assert_eq!(deliveries.len(), 9);
    let duplicates: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.fault == Some(WebhookFault::Duplicate))
        .collect();
    assert_eq!(duplicates.len(), 3);
    for duplicate in &duplicates {
        let originals = deliveries
            .iter()
            .filter(|d| d.event_id == duplicate.event_id)
            .count();
        assert_eq!(originals, 2, "the same envelope id twice");
    }
    let now = chrono::Utc::now().timestamp();
    for _ in 0..deliveries.len() {
        let (headers, body) = hook.received.recv().await.expect("a request");
        let timestamp = header(&headers, "x-zendesk-webhook-signature-timestamp");
        let age = now
            - chrono::DateTime::parse_from_rfc3339(timestamp)
                .expect("timestamp")
                .timestamp();
        let delivery = deliveries
            .iter()
            .find(|d| {
                d.timestamp == timestamp
                    && d.body == body
                    && d.signature == header(&headers, "x-zendesk-webhook-signature")
            })
            .expect("recorded");
        let valid = header(&headers, "x-zendesk-webhook-signature")
            == expected_signature(&secret, timestamp, &body);
        match delivery.fault {
            Some(WebhookFault::BadSignature) => assert!(!valid),
            Some(WebhookFault::Stale) => assert!(valid && age > 300, "age {age}"),
            _ => assert!(valid && age < 60),
        }
    }
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d.fault == Some(WebhookFault::Stale))
            .count(),
        2
    );
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d.fault == Some(WebhookFault::BadSignature))
            .count(),
        1
    );
}

#[tokio::test]
async fn trigger_connected_webhooks_get_the_triggers_payload() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let mut hook = endpoint(200).await;
    let (id, secret) = register(base, &hook.url, &["conditional_ticket_events"]).await;
    // A trigger notifying a webhook that is not trigger-connected is refused.
    let (plain, _) = register(base, &hook.url, &["zen:event-type:user.created"]).await;
    let trigger = |webhook: &str| {
        json!({"trigger": {
            "title": "Lake: ticket changed",
            "conditions": {"all": [], "any": [
                {"field": "update_type", "operator": "is", "value": "Create"},
                {"field": "update_type", "operator": "is", "value": "Change"},
            ]},
            "actions": [{"field": "notification_webhook", "value": [webhook, "{\"ticket_id\": {{ticket.id}}, \"title\": \"{{ticket.title}}\"}"]}],
        }})
    };
    let refused = post(&format!("{base}/api/v2/triggers.json"), &trigger(&plain)).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let created = post(&format!("{base}/api/v2/triggers.json"), &trigger(&id)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let trigger_id = created.body["trigger"]["id"].as_i64().expect("id");
    let listed = get(&format!("{base}/api/v2/triggers.json")).await;
    assert!(listed.body["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .any(|t| t["id"] == trigger_id));
    let updated = put(
        &format!("{base}/api/v2/triggers/{trigger_id}.json"),
        &json!({"trigger": {"title": "Lake: any ticket change"}}),
    )
    .await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.body["trigger"]["title"], "Lake: any ticket change");

    sim.apply_round(&tests::ROUND);
    sim.deliveries_settled().await;
    let deliveries: Vec<Delivery> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.webhook_id == id)
        .collect();
    // Creates and visible updates (deletes run no trigger).
    let round = tests::ROUND;
    assert_eq!(deliveries.len(), round.creates + round.updates);
    for _ in 0..sim.deliveries().len() {
        let (headers, body) = hook.received.recv().await.expect("a request");
        if header(&headers, "x-zendesk-webhook-id") != id {
            continue;
        }
        let timestamp = header(&headers, "x-zendesk-webhook-signature-timestamp");
        assert_eq!(
            header(&headers, "x-zendesk-webhook-signature"),
            expected_signature(&secret, timestamp, &body)
        );
        let payload: Value = serde_json::from_str(&body).expect("payload is JSON");
        let ticket = payload["ticket_id"].as_i64().expect("ticket id");
        let record = sim
            .records("tickets")
            .into_iter()
            .find(|t| t["id"] == ticket)
            .expect("ticket");
        assert_eq!(payload["title"], record["subject"]);
    }
}

#[tokio::test]
async fn an_update_job_delivers_after_it_completes() {
    let (sim, server) = serve(SimConfig {
        job_polls: 2,
        ..small()
    })
    .await;
    let base = server.base_url();
    let hook = endpoint(200).await;
    register(base, &hook.url, &SUBSCRIBED).await;
    let ticket = sim
        .records("tickets")
        .into_iter()
        .find(|t| t["status"] == "open")
        .expect("open ticket");
    let reply = put(
        &format!("{base}/api/v2/tickets/update_many.json"),
        &json!({"tickets": [{"id": ticket["id"], "status": "solved", "comment": {"body": "Done"}}]}),
    )
    .await;
    sim.deliveries_settled().await;
    assert!(sim.deliveries().is_empty(), "nothing before completion");
    let (seen, _) = poll(base, &reply.body["job_status"]).await;
    assert_eq!(seen, ["working", "completed"]);
    sim.deliveries_settled().await;
    let types: Vec<String> = sim
        .deliveries()
        .into_iter()
        .filter_map(|d| d.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "zen:event-type:ticket.status_changed",
            "zen:event-type:ticket.comment_added"
        ]
    );
}

#[tokio::test]
async fn failed_deliveries_are_recorded_and_409s_retried() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let hook = endpoint(409).await;
    register(base, &hook.url, &["zen:event-type:user.created"]).await;
    // Nothing listens here.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    register(base, &dead, &["zen:event-type:user.created"]).await;
    sim.apply_round(&Round {
        creates: 1,
        ..Round::default()
    });
    tokio::time::timeout(Duration::from_secs(30), sim.deliveries_settled())
        .await
        .expect("settles");
    let deliveries = sim.deliveries();
    let conflicts: Vec<u32> = deliveries
        .iter()
        .filter(|d| d.status == Some(409))
        .map(|d| d.attempt)
        .collect();
    assert_eq!(conflicts, [1, 2, 3, 4]);
    assert!(deliveries
        .iter()
        .any(|d| d.status.is_none() && d.attempt == 1));
}

#[test]
fn the_now_clock_ends_history_at_the_present_and_moves_with_real_time() {
    let start = chrono::Utc::now().timestamp();
    let sim = Simulator::new(SimConfig {
        clock: SimClock::Now,
        ..small()
    });
    assert!((sim.now() - start).abs() <= 2);
    let newest = sim
        .records("tickets")
        .iter()
        .filter_map(|t| t["generated_timestamp"].as_i64())
        .max()
        .expect("tickets");
    assert!(newest <= sim.now() - 60, "{newest}");
    assert!(newest >= sim.now() - 366 * 86_400, "{newest}");
    let before = sim.now();
    sim.apply_round(&tests::ROUND);
    let after = sim.now();
    assert!(after > before, "at least a second on");
    // The real time, or three seconds on when less time passed.
    assert!(after <= chrono::Utc::now().timestamp().max(before + 3));
    assert!(sim
        .records("tickets")
        .iter()
        .filter_map(|t| t["generated_timestamp"].as_i64())
        .all(|g| g <= after));
    assert_eq!(SimConfig::demo().clock, SimClock::Now);
    assert_eq!(SimConfig::default().clock, SimClock::Fixed);
}

#[tokio::test]
async fn a_tickets_comments_list_what_update_many_added_page_by_page() {
    let (sim, server) = serve(small()).await;
    let base = server.base_url();
    let open = sim
        .records("tickets")
        .into_iter()
        .find(|t| t["status"] == "open")
        .expect("an open ticket");
    let id = open["id"].as_i64().expect("id");
    for body in ["first <note>", "second note"] {
        let update = json!({"tickets": [{"id": id, "comment": {"body": body, "public": false}}]});
        let reply = put(&format!("{base}/api/v2/tickets/update_many.json"), &update).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        poll(base, &reply.body["job_status"]).await;
    }
    let url = format!("{base}/api/v2/tickets/{id}/comments.json?per_page=1");
    let first = get(&url).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["count"], json!(2));
    let comment = &first.body["comments"][0];
    assert_eq!(comment["body"], json!("first <note>"));
    assert_eq!(comment["public"], json!(false));
    assert_eq!(comment["type"], json!("Comment"));
    assert!(comment["html_body"]
        .as_str()
        .unwrap()
        .contains("first &lt;note&gt;"));
    for field in ["id", "author_id", "created_at"] {
        assert!(!comment[field].is_null(), "{field}: {comment}");
    }
    let next = first.body["next_page"].as_str().expect("a next page");
    let second = get(next).await;
    assert_eq!(second.body["comments"][0]["body"], json!("second note"));
    assert!(second.body["next_page"].is_null());
    let unknown = get(&format!("{base}/api/v2/tickets/999999999/comments.json")).await;
    assert_eq!(unknown.status, 404);
}
