//! The endpoints added after the three exports: the ticket events and Help Center article time
//! exports, the lists and the per-ticket side conversations.
//!
//! Paging rules (docs/ARCHITECTURE.md, "Zendesk facts"):
//! - time exports never split a second (`api::time_page`); the ticket events export carries
//!   `end_of_stream`, the article export does not and ends with `next_page: null`;
//! - lists order by id and page by cursor: `page[size]` 1..=100 (default 100; anything else is a
//!   400 `InvalidPaginationParameter`), `page[after]` / `page[before]` cursors; Support lists
//!   (groups, brands, the account's configuration) carry `links.next` even on the last page,
//!   Help Center and community lists carry it only while `meta.has_more`; the lists Zendesk
//!   documents without pagination (ticket forms, custom statuses, SLA policies, schedules,
//!   custom roles) answer whole whatever the request asks, and ticket fields answer whole
//!   unless a page is asked for;
//! - side conversations page by offset (`page`, `per_page` ≤ 100) with `next_page` /
//!   `previous_page` / `count`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::api::{includes, time_page, time_params, Export, Request, Response};
use super::content::{Catalog, Family, Kind, Paging};
use super::data::State;

/// Zendesk's largest (and default) page of a cursor-paginated list.
const LIST_MAX_PAGE: usize = 100;
/// Zendesk's largest (and default) page of side conversations.
const SIDE_MAX_PAGE: usize = 100;
/// The `page[before]` cursor of `links.last` (base64 of "last_page", as Zendesk writes it).
const LAST_PAGE: &str = "bGFzdF9wYWdl";

/// `GET /api/v2/incremental/ticket_events.json?start_time=S[&include=comment_events][&per_page=N]`
pub(crate) fn ticket_events(state: &State, request: &Request, export: &Export<'_>) -> Response {
    let (start, per_page) = match time_params(state, request, export) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let with_comments = includes(request, "comment_events");
    let page = time_page(
        || state.activity.events_from(start),
        start,
        per_page,
        export.stall_over,
    );
    let texts: Vec<String> = page
        .records
        .iter()
        .map(|event| event.render(with_comments))
        .collect();
    let mut records: Vec<&str> = texts.iter().map(String::as_str).collect();
    export.duplicate(&mut records);
    let mut next_page = format!(
        "{}/api/v2/incremental/ticket_events.json?",
        export.link_base
    );
    if with_comments {
        next_page.push_str("include=comment_events&");
    }
    next_page.push_str(&format!("start_time={}", page.end_time));
    if request.param("per_page").is_some() {
        next_page.push_str(&format!("&per_page={per_page}"));
    }
    Response::page(
        "ticket_events",
        &records,
        &json!({
            "count": records.len(),
            "end_of_stream": page.end_of_stream,
            "end_time": page.end_time,
            "next_page": next_page,
        }),
    )
}

/// `GET /api/v2/help_center/incremental/articles.json?start_time=S[&per_page=N]`: live articles
/// by `updated_at`; no `end_of_stream`, `next_page` null on the last page.
pub(crate) fn articles_export(state: &State, request: &Request, export: &Export<'_>) -> Response {
    let (start, per_page) = match time_params(state, request, export) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let articles = state.content.catalog(Kind::Articles);
    let page = time_page(
        || articles.since_second(start),
        start,
        per_page,
        export.stall_over,
    );
    let mut records = page.records;
    export.duplicate(&mut records);
    let next_page = if page.end_of_stream {
        Value::Null
    } else {
        let mut url = format!(
            "{}/api/v2/help_center/incremental/articles.json?start_time={}",
            export.link_base, page.end_time
        );
        if request.param("per_page").is_some() {
            url.push_str(&format!("&per_page={per_page}"));
        }
        json!(url)
    };
    Response::page(
        "articles",
        &records,
        &json!({
            "count": records.len(),
            "end_time": page.end_time,
            "next_page": next_page,
        }),
    )
}

fn invalid_pagination(description: &str) -> Response {
    Response::json(
        400,
        &json!({"error": "InvalidPaginationParameter", "description": description}),
    )
}

fn encode_list_cursor(id: i64) -> String {
    STANDARD.encode(format!("sim:{id}"))
}

fn decode_list_cursor(cursor: &str) -> Option<i64> {
    let bytes = STANDARD.decode(cursor.trim()).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("sim:")?
        .parse()
        .ok()
}

/// Where a list page starts.
enum Position {
    First,
    After(i64),
    /// Before this id; None: the last page.
    Before(Option<i64>),
}

/// `GET <list>.json[?page[size]=N][&page[after]=C | &page[before]=C]` (and
/// `exclude_deleted=false` for groups); the lists Zendesk documents without pagination answer
/// whole, and ticket fields answer whole unless a page is asked for.
pub(crate) fn list(state: &State, kind: Kind, request: &Request, export: &Export<'_>) -> Response {
    let catalog = state.content.catalog(kind);
    let paged = ["page[size]", "page[after]", "page[before]"]
        .iter()
        .any(|name| request.param(name).is_some());
    let whole = match kind.paging() {
        Paging::Whole => true,
        Paging::WholeOrCursor => !paged,
        Paging::Cursor => false,
    };
    if whole {
        let mut records: Vec<&str> = catalog
            .list_after(None, false)
            .map(|(_, text)| text)
            .collect();
        let count = records.len();
        let tail = match export.whole_page {
            Some(size) if size < count => {
                records.truncate(size);
                let next = format!("{}{}.json?page=2", export.link_base, kind.path());
                json!({"next_page": next, "previous_page": null, "count": count})
            }
            _ if kind.whole_has_offset_keys() => {
                json!({"next_page": null, "previous_page": null, "count": count})
            }
            _ => json!({}),
        };
        return Response::page(kind.name(), &records, &tail);
    }
    let with_deleted = kind == Kind::Groups && request.param("exclude_deleted") == Some("false");
    let listed = Listed {
        name: kind.name(),
        path: kind.path(),
        family: kind.family(),
    };
    cursor_page(catalog, &listed, with_deleted, request, export)
}

/// What a cursor-paginated list's answers are made of besides its records.
pub(crate) struct Listed<'a> {
    /// The key of the records' array.
    pub(crate) name: &'a str,
    /// The list's path, without ".json".
    pub(crate) path: &'a str,
    pub(crate) family: Family,
}

/// One page of a cursor-paginated list of `catalog`'s records (deleted ones too when
/// `with_deleted`), as `request` asks.
pub(crate) fn cursor_page(
    catalog: &Catalog,
    listed: &Listed<'_>,
    with_deleted: bool,
    request: &Request,
    export: &Export<'_>,
) -> Response {
    let size = match request.param("page[size]") {
        None => LIST_MAX_PAGE,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=LIST_MAX_PAGE).contains(&n) => n,
            _ => return invalid_pagination("page[size] is limited to 100"),
        },
    };
    let position = if let Some(raw) = request.param("page[after]") {
        match decode_list_cursor(raw) {
            Some(id) => Position::After(id),
            None => return invalid_pagination("page[after] is not a valid cursor"),
        }
    } else if let Some(raw) = request.param("page[before]") {
        if raw.trim() == LAST_PAGE {
            Position::Before(None)
        } else {
            match decode_list_cursor(raw) {
                Some(id) => Position::Before(Some(id)),
                None => return invalid_pagination("page[before] is not a valid cursor"),
            }
        }
    } else {
        Position::First
    };

    // has_more: more records in the paging direction; later: more records after the page.
    let (rows, has_more, later) = match position {
        Position::First | Position::After(_) => {
            let after = match position {
                Position::After(id) => Some(id),
                _ => None,
            };
            let mut rows: Vec<(i64, &str)> = catalog
                .list_after(after, with_deleted)
                .take(size + 1)
                .collect();
            let more = rows.len() > size;
            rows.truncate(size);
            (rows, more, more)
        }
        Position::Before(before) => {
            let mut rows: Vec<(i64, &str)> = catalog
                .list_before(before, with_deleted)
                .take(size + 1)
                .collect();
            let more = rows.len() > size;
            rows.truncate(size);
            rows.reverse();
            let later = rows.last().is_some_and(|(last, _)| {
                catalog
                    .list_after(Some(*last), with_deleted)
                    .next()
                    .is_some()
            });
            (rows, more, later)
        }
    };
    let after_cursor = rows.last().map(|(id, _)| encode_list_cursor(*id));
    let before_cursor = rows.first().map(|(id, _)| encode_list_cursor(*id));

    // Links keep the request's other parameters (page[size], exclude_deleted, ...).
    let kept: Vec<&(String, String)> = request
        .query
        .iter()
        .filter(|(name, _)| name != "page[after]" && name != "page[before]")
        .collect();
    let link = |cursor: Option<(&str, &str)>| -> Value {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &kept {
            query.append_pair(name, value);
        }
        if let Some((name, value)) = cursor {
            query.append_pair(name, value);
        }
        let query = query.finish();
        let separator = if query.is_empty() { "" } else { "?" };
        json!(format!(
            "{}{}.json{separator}{query}",
            export.link_base, listed.path
        ))
    };
    let mut links = Map::new();
    links.insert("first".into(), link(None));
    links.insert("last".into(), link(Some(("page[before]", LAST_PAGE))));
    let next = |cursor: &str| link(Some(("page[after]", cursor)));
    let prev = before_cursor
        .as_deref()
        .map(|cursor| link(Some(("page[before]", cursor))));
    match listed.family {
        Family::Support => {
            // Present even on the last page (it then leads to an empty page).
            let given = match position {
                Position::After(_) => request.param("page[after]"),
                _ => None,
            };
            let next = match after_cursor.as_deref().or(given) {
                Some(cursor) => next(cursor),
                None => link(None),
            };
            links.insert("next".into(), next);
            links.insert("prev".into(), prev.unwrap_or(Value::Null));
        }
        Family::HelpCenter => {
            if let (true, Some(cursor)) = (later, after_cursor.as_deref()) {
                links.insert("next".into(), next(cursor));
            }
            if let (false, Some(prev)) = (matches!(position, Position::First), prev) {
                links.insert("prev".into(), prev);
            }
        }
    }
    let records: Vec<&str> = rows.iter().map(|(_, text)| *text).collect();
    Response::page(
        listed.name,
        &records,
        &json!({
            "meta": {
                "has_more": has_more,
                "after_cursor": after_cursor,
                "before_cursor": before_cursor,
            },
            "links": links,
        }),
    )
}

/// `GET /api/v2/tickets/{ticket}/side_conversations.json[?page=P][&per_page=N]`; 404
/// `RecordNotFound` for an unknown or deleted ticket.
pub(crate) fn side_conversations(
    state: &State,
    ticket: &str,
    request: &Request,
    export: &Export<'_>,
) -> Response {
    let Some(ticket_id) = ticket
        .parse::<i64>()
        .ok()
        .filter(|id| state.tickets.get(*id).is_some() && !state.tickets.is_deleted(*id))
    else {
        return Response::error(404, "RecordNotFound");
    };
    let number = |name: &str, default: usize| match request.param(name) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Response::invalid(&format!(
                "{name} must be a positive integer"
            ))),
        },
    };
    let (page, per_page) = match (number("page", 1), number("per_page", SIDE_MAX_PAGE)) {
        (Ok(page), Ok(per_page)) => (page, per_page.min(SIDE_MAX_PAGE)),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let all = state.activity.side_conversations(ticket_id);
    let records: Vec<&str> = all
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|conversation| conversation.json())
        .collect();
    let url = |page: usize| {
        let mut url = format!(
            "{}/api/v2/tickets/{ticket_id}/side_conversations.json?page={page}",
            export.link_base
        );
        if request.param("per_page").is_some() {
            url.push_str(&format!("&per_page={per_page}"));
        }
        json!(url)
    };
    let next_page = if page.saturating_mul(per_page) < all.len() {
        url(page + 1)
    } else {
        Value::Null
    };
    let previous_page = if page > 1 { url(page - 1) } else { Value::Null };
    Response::page(
        "side_conversations",
        &records,
        &json!({
            "next_page": next_page,
            "previous_page": previous_page,
            "count": all.len(),
        }),
    )
}
