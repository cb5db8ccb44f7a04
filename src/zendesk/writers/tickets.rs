//! Ticket writes: the bulk import (`POST /api/v2/imports/tickets/create_many`), the bulk update
//! (`PUT /api/v2/tickets/update_many`) and the look-ups
//! that find the tickets an interrupted import made, by `external_id`, and a ticket's comments
//! (which say whether an interrupted push's comment was applied).
//!
//! Zendesk's ticket listing by external id leaves archived tickets out, so tickets imported with
//! `archive_immediately` are found in the ticket export instead ([`exported_since`]), which
//! keeps them.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::jobs::JobStatus;
use crate::spec::LimitClass;
use crate::zendesk::{Client, Error, Request, RequestStats, Result};

/// The label of ticket writes in errors and logs.
pub const STREAM: &str = "import";

/// The label of ticket updates in errors and logs.
pub const PUSH_STREAM: &str = "push";

/// Zendesk's limit of tickets per bulk request.
pub const MAX_BULK: usize = 100;

/// Tickets per page of the export a look-up reads.
const EXPORT_PAGE: u32 = 1000;

/// Submit `tickets` (at most [`MAX_BULK`]) to the import; the job that applies them. Sent once:
/// an error that [`Error::may_have_applied`] leaves the caller to find the tickets.
pub async fn import_many(
    client: &Client,
    stats: &RequestStats,
    tickets: &[Value],
    archive_immediately: bool,
) -> Result<JobStatus> {
    let path = "/api/v2/imports/tickets/create_many.json";
    let mut url = client.endpoint(path);
    if archive_immediately {
        url.set_query(Some("archive_immediately=true"));
    }
    let request = Request::post(url, &json!({ "tickets": tickets })).map_err(|e| Error::Shape {
        stream: STREAM.to_owned(),
        method: crate::zendesk::Method::Post,
        endpoint: path.to_owned(),
        detail: format!("the tickets do not serialise: {e}"),
    })?;
    let answer = client.send(STREAM, &request, stats).await?;
    JobStatus::from_answer(STREAM, request.method(), path, answer).map_err(|e| Error::Ambiguous {
        stream: STREAM.to_owned(),
        method: request.method(),
        endpoint: path.to_owned(),
        detail: format!("accepted, but the answer is not a job status ({e})"),
    })
}

/// Submit updates of `tickets` (at most [`MAX_BULK`], each `{id, ...}`) to
/// `PUT /api/v2/tickets/update_many`; the job that applies them. Sent once, like
/// [`import_many`]: an update carrying a comment is not idempotent.
pub async fn update_many(
    client: &Client,
    stats: &RequestStats,
    tickets: &[Value],
) -> Result<JobStatus> {
    let path = "/api/v2/tickets/update_many.json";
    let request =
        Request::put(client.endpoint(path), &json!({ "tickets": tickets })).map_err(|e| {
            Error::Shape {
                stream: PUSH_STREAM.to_owned(),
                method: crate::zendesk::Method::Put,
                endpoint: path.to_owned(),
                detail: format!("the tickets do not serialise: {e}"),
            }
        })?;
    let answer = client.send(PUSH_STREAM, &request, stats).await?;
    JobStatus::from_answer(PUSH_STREAM, request.method(), path, answer).map_err(|e| {
        Error::Ambiguous {
            stream: PUSH_STREAM.to_owned(),
            method: request.method(),
            endpoint: path.to_owned(),
            detail: format!("accepted, but the answer is not a job status ({e})"),
        }
    })
}

/// Comments per page of a ticket's comments (Zendesk's maximum).
const COMMENTS_PAGE: u32 = 100;

/// Every comment of ticket `id` (`GET /api/v2/tickets/{id}/comments`, oldest first), each
/// `{id, body, html_body, public, author_id, created_at, ...}`.
pub async fn comments(client: &Client, stats: &RequestStats, id: i64) -> Result<Vec<Value>> {
    let mut url = client.endpoint(&format!("/api/v2/tickets/{id}/comments.json"));
    url.query_pairs_mut()
        .append_pair("per_page", &COMMENTS_PAGE.to_string());
    let mut comments = Vec::new();
    loop {
        let answer = client
            .send(PUSH_STREAM, &Request::get(url.clone()), stats)
            .await?;
        if let Some(page) = answer.get("comments").and_then(Value::as_array) {
            comments.extend(page.iter().cloned());
        }
        match answer.get("next_page").and_then(Value::as_str) {
            Some(next) => url = client.pinned(PUSH_STREAM, next)?,
            None => return Ok(comments),
        }
    }
}

/// The ids of the live, unarchived tickets with this external id.
pub async fn by_external_id(
    client: &Client,
    stats: &RequestStats,
    external_id: &str,
) -> Result<Vec<i64>> {
    let mut url = client.endpoint("/api/v2/tickets.json");
    url.query_pairs_mut()
        .append_pair("external_id", external_id);
    let answer = client.send(STREAM, &Request::get(url), stats).await?;
    Ok(ticket_ids(&answer, None).into_values().flatten().collect())
}

/// The tickets of the export from `start_time` (Unix seconds, at least a minute ago) whose
/// external id is one of `wanted`, by external id. Reads until the end of the export or until
/// every wanted one is found.
pub async fn exported_since(
    client: &Client,
    stats: &RequestStats,
    start_time: i64,
    wanted: &HashSet<String>,
) -> Result<HashMap<String, i64>> {
    let mut url = client.endpoint("/api/v2/incremental/tickets/cursor.json");
    url.query_pairs_mut()
        .append_pair("start_time", &start_time.max(0).to_string())
        .append_pair("per_page", &EXPORT_PAGE.to_string());
    let mut found = HashMap::new();
    loop {
        let request = Request::get(url.clone()).with_class(LimitClass::Incremental);
        let answer = client.send(STREAM, &request, stats).await?;
        for (external, ids) in ticket_ids(&answer, Some(wanted)) {
            if let Some(id) = ids.into_iter().next() {
                found.insert(external, id);
            }
        }
        let end = answer.get("end_of_stream").and_then(Value::as_bool) != Some(false);
        if end || found.len() == wanted.len() {
            return Ok(found);
        }
        match answer.get("after_url").and_then(Value::as_str) {
            Some(next) => url = client.pinned(STREAM, next)?,
            None => return Ok(found),
        }
    }
}

/// The ids of a page's `tickets` by external id (only those in `wanted`, when given); deleted
/// tickets left out.
fn ticket_ids(page: &Value, wanted: Option<&HashSet<String>>) -> HashMap<String, Vec<i64>> {
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for ticket in page
        .get("tickets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(external), Some(id)) = (
            ticket.get("external_id").and_then(Value::as_str),
            ticket.get("id").and_then(Value::as_i64),
        ) else {
            continue;
        };
        if ticket.get("status").and_then(Value::as_str) == Some("deleted") {
            continue;
        }
        if wanted.is_some_and(|w| !w.contains(external)) {
            continue;
        }
        out.entry(external.to_owned()).or_default().push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_give_ids_by_external_id_without_deleted_tickets() {
        let page = json!({"tickets": [
            {"id": 1, "external_id": "a", "status": "open"},
            {"id": 2, "external_id": "b", "status": "deleted"},
            {"id": 3, "external_id": null},
            {"id": 4, "external_id": "c", "status": "closed"},
        ]});
        let wanted = HashSet::from(["a".to_owned(), "b".to_owned()]);
        let ids = ticket_ids(&page, Some(&wanted));
        assert_eq!(ids, HashMap::from([("a".to_owned(), vec![1])]));
        assert_eq!(ticket_ids(&page, None).len(), 2);
    }
}
