//! The export endpoints as sequences of pages, each carrying the position to resume from.
//!
//! A [`Position`] is what the control table stores. After a page has been committed to the lake,
//! resuming from that page's position fetches exactly what follows it:
//! - cursor exports resume from `after_cursor` (or `start_time` before the first cursor); when
//!   Zendesk sends no cursor because nothing changed, the old one is kept;
//! - time exports resume from `start_time = end_time`. A page never splits a second, so the next
//!   page repeats the boundary second: records already delivered in it are recognised by a
//!   fingerprint kept in the position and dropped. A page that ends in the second it started
//!   from is asked again with a larger page until it holds the whole second (then the export
//!   continues after that second); at Zendesk's 1000 records it cannot advance and fails loudly
//!   instead of looping.
//!
//! A `start_time` younger than a minute (`StartTimeTooRecent`) means there is nothing to fetch yet.

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use url::Url;

use super::client::endpoint_of;
use super::{Client, Error, RequestStats, Result};
use crate::decode::timestamp_micros;
use crate::objects::{EndpointKind, ObjectSpec};

/// Where an object's export continues.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// Cursor exports: the `after_cursor` to resume from; `None` before the first page.
    pub cursor: Option<String>,
    /// Cursor exports before the first cursor, and time exports: the next `start_time`.
    pub start_time: i64,
    /// Time exports: fingerprints of the records of second `start_time` already delivered.
    pub boundary: Vec<String>,
}

impl Position {
    pub fn start(start_time: i64) -> Position {
        Position {
            cursor: None,
            start_time,
            boundary: Vec::new(),
        }
    }
}

/// One page of records and the position after it.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<Value>,
    pub position: Position,
    /// The last page of this run.
    pub end_of_stream: bool,
}

/// Fetch pages from `from` until the end of the stream, sending each down `pages`. Stops early,
/// without error, when the receiver has gone away.
pub async fn fetch(
    client: &Client,
    spec: &ObjectSpec,
    from: Position,
    page_size: u32,
    stats: &RequestStats,
    pages: mpsc::Sender<Page>,
) -> Result<()> {
    match spec.endpoint.kind {
        EndpointKind::CursorExport => {
            cursor_export(client, spec, from, page_size, stats, pages).await
        }
        EndpointKind::TimeExport => time_export(client, spec, from, page_size, stats, pages).await,
    }
}

async fn cursor_export(
    client: &Client,
    spec: &ObjectSpec,
    mut position: Position,
    mut page_size: u32,
    stats: &RequestStats,
    pages: mpsc::Sender<Page>,
) -> Result<()> {
    let object = spec.name.as_str();
    let mut idle = 0;
    let mut url = export_url(client, spec, &position);
    loop {
        let Some(mut body) = get_page(client, spec, &mut url, &mut page_size, stats).await? else {
            return Ok(());
        };
        crate::failpoint::hit("page_fetched");
        let records = records(spec, &url, &mut body)?;
        let end_of_stream = flag(spec, &url, &body, "end_of_stream")?;
        let before = position.cursor.clone();
        if let Some(cursor) = body.get("after_cursor").and_then(Value::as_str) {
            position.cursor = Some(cursor.to_owned());
        }
        if records.is_empty() && !end_of_stream && position.cursor == before {
            idle += 1;
            if idle >= MAX_IDLE_PAGES {
                return Err(shape(
                    spec,
                    &url,
                    &format!("{idle} empty pages in a row with end_of_stream false and the same cursor: the export does not advance"),
                ));
            }
        } else {
            idle = 0;
        }
        let next = match body.get("after_url").and_then(Value::as_str) {
            Some(after) if !end_of_stream => Some(client.pinned(object, after)?),
            _ => None,
        };
        debug!(%object, records = records.len(), end_of_stream, "cursor page");
        let page = Page {
            records,
            position: position.clone(),
            end_of_stream,
        };
        if pages.send(page).await.is_err() || end_of_stream {
            return Ok(());
        }
        url = match (next, &position.cursor) {
            (Some(next), _) => next,
            (None, Some(_)) => export_url(client, spec, &position),
            (None, None) => {
                return Err(shape(
                    spec,
                    &url,
                    "end_of_stream is false but there is no after_cursor",
                ))
            }
        };
    }
}

async fn time_export(
    client: &Client,
    spec: &ObjectSpec,
    mut position: Position,
    mut page_size: u32,
    stats: &RequestStats,
    pages: mpsc::Sender<Page>,
) -> Result<()> {
    let object = spec.name.as_str();
    let cursor_path = spec
        .column(&spec.cursor_field)
        .map_or(spec.cursor_field.as_str(), |c| c.path())
        .to_owned();
    loop {
        let mut url = export_url(client, spec, &position);
        let Some(mut body) = get_page(client, spec, &mut url, &mut page_size, stats).await? else {
            return Ok(());
        };
        crate::failpoint::hit("page_fetched");
        let all = records(spec, &url, &mut body)?;
        let end_of_stream = flag(spec, &url, &body, "end_of_stream")?;
        let mut whole_second = false;
        let end_time = body
            .get("end_time")
            .and_then(Value::as_i64)
            .ok_or_else(|| shape(spec, &url, "no integer end_time"))?;
        if end_time < position.start_time {
            return Err(shape(spec, &url, "end_time is before start_time"));
        }
        if !end_of_stream && end_time == position.start_time && !all.is_empty() {
            if all.len() as u32 <= page_size {
                // The page may have cut the second: ask again with room for all of it.
                if page_size < MAX_PAGE_SIZE {
                    page_size = (page_size * 2).min(MAX_PAGE_SIZE);
                    debug!(%object, page_size, "a page held only its start second: asking for larger pages");
                    continue;
                }
                return Err(Error::Stalled {
                    object: object.to_owned(),
                    endpoint: endpoint_of(&url),
                    start_time: position.start_time,
                });
            }
            // More than a page: Zendesk stretched the page to hold the whole second.
            whole_second = true;
        }
        let mut records = Vec::with_capacity(all.len());
        let mut boundary = Vec::new();
        for record in all {
            let second = record
                .get(&cursor_path)
                .and_then(timestamp_micros)
                .map(|us| us.div_euclid(1_000_000));
            let print = (second == Some(position.start_time) || second == Some(end_time))
                .then(|| fingerprint(&record));
            if second == Some(end_time) {
                boundary.extend(print.clone());
            }
            let seen = second == Some(position.start_time)
                && print
                    .as_ref()
                    .is_some_and(|p| position.boundary.contains(p));
            if !seen {
                records.push(record);
            }
        }
        if end_time == position.start_time {
            // The same second again: what was delivered from it before still counts as delivered.
            for print in &position.boundary {
                if !boundary.contains(print) {
                    boundary.push(print.clone());
                }
            }
        }
        boundary.sort_unstable();
        position = if whole_second {
            // Every record of that second is in hand: continue after it.
            Position::start(end_time + 1)
        } else {
            Position {
                cursor: None,
                start_time: end_time,
                boundary,
            }
        };
        // The next request is built from `position`, but a `next_page` on another host means
        // the answer did not come from the account: refuse it before its page is used, as the
        // cursor export does with `after_url`.
        if let Some(next) = body.get("next_page").and_then(Value::as_str) {
            if !end_of_stream {
                client.pinned(object, next)?;
            }
        }
        debug!(%object, records = records.len(), end_time, end_of_stream, "time page");
        let page = Page {
            records,
            position: position.clone(),
            end_of_stream,
        };
        if pages.send(page).await.is_err() || end_of_stream {
            return Ok(());
        }
    }
}

/// A stable fingerprint of a record (64-bit FNV-1a of its JSON text, in hex): stable across
/// builds and Rust versions, unlike std's hasher, because it is persisted.
pub fn fingerprint(record: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in record.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The export URL that continues from `position`: by cursor when there is one, else by
/// start time (`per_page` is added by [`get_page`]).
fn export_url(client: &Client, spec: &ObjectSpec, position: &Position) -> Url {
    let mut url = client.endpoint(&spec.endpoint.path);
    match &position.cursor {
        Some(cursor) => url.query_pairs_mut().append_pair("cursor", cursor),
        None => url
            .query_pairs_mut()
            .append_pair("start_time", &position.start_time.to_string()),
    };
    url
}

/// Zendesk's largest export page.
const MAX_PAGE_SIZE: u32 = 1000;

/// The smallest page asked for when Zendesk answers 504 to bigger ones.
const MIN_PAGE_SIZE: u32 = 10;

/// Empty pages in a row that do not move the cursor before an export counts as stuck.
const MAX_IDLE_PAGES: u32 = 10;

/// GET one export page. A 504 (Zendesk's answer to a page too heavy to build in time) halves
/// the page size for the rest of the run, down to [`MIN_PAGE_SIZE`], where 504 is retried like
/// any server error. `None` when the start time is less than a minute old: nothing to fetch yet.
async fn get_page(
    client: &Client,
    spec: &ObjectSpec,
    url: &mut Url,
    page_size: &mut u32,
    stats: &RequestStats,
) -> Result<Option<Value>> {
    let object = spec.name.as_str();
    let class = spec.endpoint.limit_class;
    loop {
        set_page_size(url, *page_size);
        let handled: &[u16] = if *page_size > MIN_PAGE_SIZE {
            &[504]
        } else {
            &[]
        };
        match client
            .get_json_except(object, url, class, stats, handled)
            .await
        {
            Err(err) if is_start_time_too_recent(&err) => {
                info!(%object, "start_time is less than a minute old: nothing to fetch yet");
                return Ok(None);
            }
            Err(err) if err.status() == Some(504) && *page_size > MIN_PAGE_SIZE => {
                *page_size = (*page_size / 2).max(MIN_PAGE_SIZE);
                warn!(%object, page_size = *page_size, "504 on a large page: asking for smaller pages");
                stats
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            other => return other.map(Some),
        }
    }
}

fn set_page_size(url: &mut Url, page_size: u32) {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "per_page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("per_page", &page_size.to_string());
}

fn is_start_time_too_recent(err: &Error) -> bool {
    matches!(err, Error::Status { status: 400, snippet, .. }
        if snippet.contains("StartTimeTooRecent") || snippet.contains("Too recent start_time"))
}

/// Take the page's records out of its body.
fn records(spec: &ObjectSpec, url: &Url, body: &mut Value) -> Result<Vec<Value>> {
    match body.get_mut(&spec.endpoint.records_key) {
        Some(Value::Array(items)) => Ok(std::mem::take(items)),
        _ => Err(shape(
            spec,
            url,
            &format!("no `{}` array in the page", spec.endpoint.records_key),
        )),
    }
}

fn flag(spec: &ObjectSpec, url: &Url, body: &Value, name: &str) -> Result<bool> {
    body.get(name)
        .and_then(Value::as_bool)
        .ok_or_else(|| shape(spec, url, &format!("no boolean `{name}`")))
}

fn shape(spec: &ObjectSpec, url: &Url, detail: &str) -> Error {
    Error::Shape {
        object: spec.name.clone(),
        endpoint: endpoint_of(url),
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprint_is_stable() {
        // Persisted in the control table: must never change between builds.
        assert_eq!(fingerprint(&json!({"id": 1})), "d51b1db3d1dff09b");
        assert_ne!(
            fingerprint(&json!({"id": 1})),
            fingerprint(&json!({"id": 2}))
        );
    }
}
