//! Satisfaction ratings (`GET /api/v2/satisfaction_ratings.json`), in the shape of Zendesk's
//! recorded answer (tests/data/list_satisfaction_ratings.json) plus the reference's `reason` and
//! `reason_code`.
//!
//! A rating is offered on a ticket (`score: "offered"`, no comment), and the requester answers
//! it later (`good` or `bad`, often with a comment, a bad one with a reason) or changes an
//! answer; each change moves `updated_at`, never `created_at`. Requesters answer within 28 days
//! of the offer. The list filters by creation (`start_time`, `end_time`: unix seconds, on
//! `created_at`) and pages by cursor in id order, which is creation order. Ratings are never
//! deleted. Their own random stream, so nothing else changed when they were added.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::api::{Export, Request, Response};
use super::content::{Catalog, Family};
use super::data::{
    pick, rfc3339, stream_rng, DAY_SECS, FIRST_TICKET_ID, FIRST_USER_ID, GROUP_IDS,
    RECORD_BASE_URL, YEAR_SECS,
};
use super::endpoints::{cursor_page, Listed};

const FIRST_RATING_ID: i64 = 360_000_900_001;
/// Random stream number of this module (see `data::stream_rng`).
const STREAM: u64 = 61;
/// How long after the offer a requester answers or changes a rating.
const ANSWER_DAYS: i64 = 28;
const GOOD_COMMENTS: [&str; 4] = [
    "Satisfaction!",
    "Quick and friendly, thanks 👍",
    "Merci beaucoup, très efficace.",
    "Problem solved on the first reply.",
];
const BAD_COMMENTS: [&str; 3] = [
    "Took three days to get an answer.",
    "Still not fixed — \"please restart\" is not a fix.",
    "Niemand hat geantwortet.",
];
/// Zendesk's default reasons for a bad rating (code, text).
const REASONS: [(i64, &str); 4] = [
    (5, "The issue took too long to resolve"),
    (6, "The issue was not resolved"),
    (7, "The agent's knowledge is unsatisfactory"),
    (8, "The agent's attitude is unsatisfactory"),
];

struct Rating {
    created: i64,
    record: Value,
}

/// Every rating by id (creation order).
#[derive(Default)]
pub(crate) struct Ratings {
    items: BTreeMap<i64, Rating>,
}

impl Ratings {
    /// The ratings of a new account: one per four tickets, offered over the last year, most of
    /// them answered.
    pub(crate) fn new(seed: u64, tickets: usize, users: usize, origin: i64, hi: i64) -> Self {
        let mut rng = stream_rng(seed, 0, STREAM);
        let mut ratings = Ratings::default();
        let mut times: Vec<i64> = (0..tickets / 4)
            .map(|_| rng.gen_range(origin - YEAR_SECS..=hi))
            .collect();
        times.sort_unstable();
        for created in times {
            let id = ratings.offer(&mut rng, tickets, users, created);
            if rng.gen_bool(0.7) {
                let answered = (created + rng.gen_range(60..ANSWER_DAYS * DAY_SECS)).min(hi);
                ratings.answer(&mut rng, id, answered.max(created));
            }
        }
        ratings
    }

    fn offer(&mut self, rng: &mut StdRng, tickets: usize, users: usize, created: i64) -> i64 {
        let id = FIRST_RATING_ID + self.items.len() as i64;
        let record = json!({
            "url": format!("{RECORD_BASE_URL}/api/v2/satisfaction_ratings/{id}.json"),
            "id": id,
            "assignee_id": FIRST_USER_ID + rng.gen_range(0..users.clamp(1, 20) as i64),
            "group_id": *pick(rng, &GROUP_IDS),
            "requester_id": FIRST_USER_ID + rng.gen_range(0..users.max(1) as i64),
            "ticket_id": FIRST_TICKET_ID + rng.gen_range(0..tickets.max(1) as i64),
            "score": "offered",
            "created_at": rfc3339(created),
            "updated_at": rfc3339(created),
            "comment": null,
            "reason": null,
            "reason_code": null,
        });
        self.items.insert(id, Rating { created, record });
        id
    }

    /// The requester answers (or changes the answer of) rating `id` at `ts`.
    fn answer(&mut self, rng: &mut StdRng, id: i64, ts: i64) {
        let Some(rating) = self.items.get_mut(&id) else {
            return;
        };
        let record = &mut rating.record;
        let good = rng.gen_bool(0.75);
        record["score"] = json!(if good { "good" } else { "bad" });
        record["comment"] = if rng.gen_bool(0.6) {
            json!(if good {
                *pick(rng, &GOOD_COMMENTS)
            } else {
                *pick(rng, &BAD_COMMENTS)
            })
        } else {
            Value::Null
        };
        let (code, reason) = if good {
            (Value::Null, Value::Null)
        } else {
            let (code, text) = *pick(rng, &REASONS);
            (json!(code), json!(text))
        };
        record["reason_code"] = code;
        record["reason"] = reason;
        record["updated_at"] = json!(rfc3339(ts));
    }

    /// A round: new offers in the round's window, and answers or changes of ratings offered in
    /// the last 28 days.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn round(
        &mut self,
        seed: u64,
        round: u64,
        creates: usize,
        updates: usize,
        (tickets, users): (usize, usize),
        (lo, hi): (i64, i64),
    ) {
        let mut rng = stream_rng(seed, round, STREAM);
        let mut times: Vec<i64> = (0..creates.div_ceil(4))
            .map(|_| rng.gen_range(lo..=hi.max(lo)))
            .collect();
        times.sort_unstable();
        // Ids follow creation: a new offer is never older than the newest one.
        let newest = self.items.values().map(|r| r.created).max().unwrap_or(lo);
        for created in times {
            self.offer(&mut rng, tickets, users, created.max(newest));
        }
        let recent: Vec<i64> = self
            .items
            .iter()
            .filter(|(_, r)| r.created >= hi - ANSWER_DAYS * DAY_SECS)
            .map(|(id, _)| *id)
            .collect();
        let offered: Vec<i64> = recent
            .iter()
            .copied()
            .filter(|id| self.items[id].record["score"] == "offered")
            .collect();
        for _ in 0..updates.div_ceil(10).min(recent.len()) {
            // Mostly first answers, sometimes a changed answer.
            let id = if !offered.is_empty() && rng.gen_bool(0.7) {
                offered[rng.gen_range(0..offered.len())]
            } else {
                recent[rng.gen_range(0..recent.len())]
            };
            let created = self.items[&id].created;
            let ts = rng.gen_range(lo.max(created)..=hi.max(lo.max(created)));
            self.answer(&mut rng, id, ts);
        }
    }

    /// Every rating, by id.
    pub(crate) fn values(&self) -> Vec<Value> {
        self.items.values().map(|r| r.record.clone()).collect()
    }
}

/// `GET /api/v2/satisfaction_ratings.json[?start_time=S][&end_time=E][&page[size]=N]
/// [&page[after]=C]`: the ratings created from `start_time` to `end_time`, by cursor.
pub(crate) fn endpoint(ratings: &Ratings, request: &Request, export: &Export<'_>) -> Response {
    let bound = |name: &str| match request.param(name) {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Response::invalid(&format!("{name} must be an integer"))),
    };
    let (start, end) = match (bound("start_time"), bound("end_time")) {
        (Ok(start), Ok(end)) => (start, end),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let catalog = Catalog::of(
        ratings
            .items
            .iter()
            .filter(|(_, r)| {
                start.is_none_or(|s| r.created >= s) && end.is_none_or(|e| r.created <= e)
            })
            .map(|(id, r)| (*id, &r.record)),
    );
    let listed = Listed {
        name: "satisfaction_ratings",
        path: "/api/v2/satisfaction_ratings",
        family: Family::Support,
    };
    cursor_page(&catalog, &listed, false, request, export)
}
