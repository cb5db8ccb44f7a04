//! The account's tag listing (`GET /api/v2/tags.json`), derived from the tickets' tags.
//!
//! Zendesk lists up to the 20,000 most used tags of the last 60 days, `{name, count}` in
//! decreasing popularity, by cursor (100 a page) or offset. The simulator counts the tags of the
//! live tickets updated in the last 60 days and keeps the first `SimConfig::tags_listed` of them
//! (by count, then name), so a tag leaves the listing when no recent ticket carries it, or when
//! others overtake it under a small cap, and comes back when used again. Every tag it ever
//! served is remembered with the last JSON it was served with: the ground truth of a gone tag
//! (`Simulator::records("tags")`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{Export, Request, Response};
use super::data::{State, DAY_SECS};

/// How far back Zendesk counts a tag's uses.
const WINDOW_SECS: i64 = 60 * DAY_SECS;
/// Zendesk's largest (and default) page of the listing.
const MAX_PAGE: usize = 100;

/// The listing's cap and what it served.
pub(crate) struct Tags {
    /// How many tags the listing shows at most (Zendesk: 20,000).
    cap: usize,
    /// Every tag served, with the JSON it was last served with.
    served: Mutex<BTreeMap<String, String>>,
}

impl Tags {
    pub(crate) fn new(cap: usize) -> Self {
        Tags {
            cap,
            served: Mutex::new(BTreeMap::new()),
        }
    }

    fn remember(&self, served: &[String]) {
        let mut map = self.served.lock().unwrap_or_else(|e| e.into_inner());
        for text in served {
            if let Ok(tag) = serde_json::from_str::<Tag>(text) {
                map.insert(tag.name, text.clone());
            }
        }
    }
}

#[derive(Deserialize)]
struct Tag {
    name: String,
}

/// What the listing needs of a ticket.
#[derive(Deserialize)]
struct Ticket {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The listing as Zendesk would answer it now: `(name, count)` by decreasing count, then name.
pub(crate) fn listing(state: &State) -> Vec<(String, i64)> {
    let since = state.now - WINDOW_SECS;
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for text in state.tickets.values() {
        let Ok(ticket) = serde_json::from_str::<Ticket>(text) else {
            continue;
        };
        let recent = ticket
            .updated_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t.timestamp() >= since);
        if ticket.status.as_deref() == Some("deleted") || !recent {
            continue;
        }
        for tag in ticket.tags {
            *counts.entry(tag).or_default() += 1;
        }
    }
    let mut listed: Vec<(String, i64)> = counts.into_iter().collect();
    listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    listed.truncate(state.tags.cap);
    listed
}

fn render(name: &str, count: i64) -> String {
    json!({"name": name, "count": count}).to_string()
}

/// Ground truth: every tag ever served, as listed now, or with the JSON it was last served
/// with; and the names of those no longer listed.
pub(crate) fn records(state: &State) -> (Vec<Value>, BTreeSet<String>) {
    let now: BTreeMap<String, i64> = listing(state).into_iter().collect();
    let served = state.tags.served.lock().unwrap_or_else(|e| e.into_inner());
    let mut records = Vec::new();
    let mut gone = BTreeSet::new();
    for (name, text) in served.iter() {
        match now.get(name) {
            Some(count) => records.push(json!({"name": name, "count": count})),
            None => {
                gone.insert(name.clone());
                records.extend(serde_json::from_str::<Value>(text).ok());
            }
        }
    }
    (records, gone)
}

fn cursor(offset: usize) -> String {
    STANDARD.encode(format!("sim-tags:{offset}"))
}

fn offset_of(raw: &str) -> Option<usize> {
    let bytes = STANDARD.decode(raw.trim()).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("sim-tags:")?
        .parse()
        .ok()
}

/// `GET /api/v2/tags.json[?page[size]=N][&page[after]=C]`: cursor pages of the listing, with
/// `links.next` on every page (a Support list's) and `meta.has_more`.
pub(crate) fn endpoint(state: &State, request: &Request, export: &Export<'_>) -> Response {
    let invalid = |description: &str| {
        Response::json(
            400,
            &json!({"error": "InvalidPaginationParameter", "description": description}),
        )
    };
    let size = match request.param("page[size]") {
        None => MAX_PAGE,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return invalid("page[size] is limited to 100"),
        },
    };
    let start = match request.param("page[after]") {
        None => 0,
        Some(raw) => match offset_of(raw) {
            Some(offset) => offset,
            None => return invalid("page[after] is not a valid cursor"),
        },
    };
    let listed = listing(state);
    let texts: Vec<String> = listed
        .iter()
        .skip(start)
        .take(size)
        .map(|(name, count)| render(name, *count))
        .collect();
    state.tags.remember(&texts);
    let end = start + texts.len();
    let has_more = end < listed.len();
    let after = (!texts.is_empty()).then(|| cursor(end));
    let before = (!texts.is_empty()).then(|| cursor(start));
    let next = format!(
        "{}/api/v2/tags.json?page%5Bsize%5D={size}&page%5Bafter%5D={}",
        export.link_base,
        after.clone().unwrap_or_else(|| cursor(start))
    );
    let records: Vec<&str> = texts.iter().map(String::as_str).collect();
    Response::page(
        "tags",
        &records,
        &json!({
            "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": before},
            "links": {"next": next, "prev": null},
        }),
    )
}
