//! Time exports (`/api/v2/incremental/organizations.json`, ticket events, Help Center articles):
//! the next `start_time` is `end_time` (the response's, not a record's: a re-export may not move
//! a record's own time). A page never splits a second, so the next page repeats the
//! boundary second: records already delivered in it are recognised by a fingerprint kept in the
//! position and dropped. A page that ends in the second it started from is asked again with a
//! larger page until it holds the whole second (then the export continues after that second); at
//! Zendesk's 1000 records it cannot advance and fails loudly instead of looping. A record whose
//! own time is before the page's start was sent again (the metric event export sends a deleted
//! breach again with its old time): it is fingerprinted as a boundary record, so its repetition
//! on the next page is dropped too.

use std::collections::HashSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;
use url::Url;

use super::body::field;
use super::{parse_position, to_json, Context, Reader, MAX_IDLE_PAGES, MAX_PAGE_SIZE};
use crate::json::timestamp_micros;
use crate::page::{parse_record, RawPage};
use crate::zendesk::client::endpoint_of;
use crate::zendesk::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// The next `start_time`.
    start_time: i64,
    /// Fingerprints of the records of second `start_time` already delivered.
    #[serde(default)]
    boundary: Vec<String>,
}

pub(super) struct TimeExport {
    context: Context,
    position: Position,
    /// Empty pages in a row that did not move the position.
    idle: u32,
    /// The record field whose second orders the export.
    time_field: String,
}

impl TimeExport {
    pub(super) fn open(
        context: Context,
        position: Option<&Value>,
        start_time: i64,
    ) -> Result<Self> {
        let position = match position {
            Some(value) => parse_position(context.stream, value)?,
            None => Position {
                start_time,
                boundary: Vec::new(),
            },
        };
        let time_field = context.stream.watermark_field.clone();
        Ok(TimeExport {
            context,
            position,
            idle: 0,
            time_field,
        })
    }

    fn url(&self) -> Url {
        let mut url = self.context.endpoint();
        url.query_pairs_mut()
            .append_pair("start_time", &self.position.start_time.to_string());
        url
    }
}

#[async_trait]
impl Reader for TimeExport {
    async fn next_page(&mut self) -> Result<Option<RawPage>> {
        loop {
            let mut url = self.url();
            let Some(mut body) = self.context.get_page(&mut url).await? else {
                return Ok(None);
            };
            let context = &self.context;
            let start = self.position.start_time;
            let all = context.records(&url, &mut body)?;
            let sideloads = context.sideloads(&mut body);
            // Help Center's article export has no `end_of_stream`: its last page has no
            // `next_page`.
            let end_of_stream = match body.get("end_of_stream") {
                Some(_) => context.flag(&url, &body, "end_of_stream")?,
                None => body.get("next_page").is_none_or(Value::is_null),
            };
            let end_time = body
                .get("end_time")
                .and_then(Value::as_i64)
                .ok_or_else(|| context.shape(&url, "no integer end_time"))?;
            if end_time < start {
                return Err(context.shape(&url, "end_time is before start_time"));
            }
            if all.is_empty() && !end_of_stream && end_time == start {
                self.idle += 1;
                if self.idle >= MAX_IDLE_PAGES {
                    return Err(context.shape(
                        &url,
                        &format!(
                            "{} empty pages in a row that do not move end_time: the export \
                             does not advance",
                            self.idle
                        ),
                    ));
                }
            } else {
                self.idle = 0;
            }
            let mut whole_second = false;
            if !end_of_stream && end_time == start && !all.is_empty() {
                if all.len() as u32 <= context.page_size {
                    // The page may have cut the second: ask again with room for all of it.
                    if context.page_size < MAX_PAGE_SIZE {
                        self.context.page_size = (context.page_size * 2).min(MAX_PAGE_SIZE);
                        debug!(stream = %self.context.name(), page_size = self.context.page_size, "a page held only its start second: asking for larger pages");
                        continue;
                    }
                    return Err(Error::Stalled {
                        stream: context.name().to_owned(),
                        endpoint: endpoint_of(&url),
                        start_time: start,
                    });
                }
                // More than a page: Zendesk stretched the page to hold the whole second.
                whole_second = true;
            }
            // Sets, not lists: a crowded second has tens of thousands of records, each looked
            // up in the other list (quadratic, minutes of CPU at the bench's 1M tickets).
            let delivered: HashSet<&str> =
                self.position.boundary.iter().map(String::as_str).collect();
            let mut records = Vec::with_capacity(all.len());
            let mut boundary = Vec::new();
            for record in all {
                let second = field(&record, &self.time_field)
                    .as_ref()
                    .and_then(timestamp_micros)
                    .map(|us| us.div_euclid(1_000_000));
                // A record older than the page's start was sent again with its old time (a
                // deleted ticket metric event): its place in the export is unknown, so it may be
                // in the boundary second and come again on the next page. It is fingerprinted
                // as the boundary second's records are.
                let resent = second.is_some_and(|s| s < start);
                // The fingerprint is of the parsed record, as stored positions have it.
                let print =
                    (second == Some(start) || second == Some(end_time) || resent).then(|| {
                        fingerprint(&parse_record(&record).map_or(Value::Null, |(value, _)| value))
                    });
                if second == Some(end_time) || resent {
                    boundary.extend(print.clone());
                }
                let seen = (second == Some(start) || resent)
                    && print.as_deref().is_some_and(|p| delivered.contains(p));
                if !seen {
                    records.push(record);
                }
            }
            if end_time == start {
                // The same second again: what was delivered from it before still counts as
                // delivered.
                boundary.extend(self.position.boundary.iter().cloned());
            }
            boundary.sort_unstable();
            boundary.dedup();
            // The next request is built from the position, but a `next_page` on another host
            // means the answer did not come from the account: refuse it before its page is used,
            // as the cursor export does with `after_url`.
            if let Some(next) = body.get("next_page").and_then(Value::as_str) {
                if !end_of_stream {
                    context.client.pinned(context.name(), next)?;
                }
            }
            self.position = if whole_second {
                // Every record of that second is in hand: continue after it.
                Position {
                    start_time: end_time + 1,
                    boundary: Vec::new(),
                }
            } else {
                Position {
                    start_time: end_time,
                    boundary,
                }
            };
            debug!(stream = %self.context.name(), records = records.len(), end_time, end_of_stream, "time page");
            return Ok(Some(RawPage {
                records,
                sideloads,
                position: self.position(),
                end_of_stream,
                parent: None,
                until: Some(end_time),
            }));
        }
    }

    fn position(&self) -> Value {
        to_json(&self.position)
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
