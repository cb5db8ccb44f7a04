//! Lists read whole on every run (`/api/v2/groups.json`, Help Center and community lists, the
//! account's fields, forms, rules and memberships). Cursor-paginated ones: `page[size]` up to
//! 100, then `links.next` (or `page[after]=meta.after_cursor`) until `meta.has_more` is false.
//! Support pages carry `links.next` even on the last page and Help Center pages omit it, so
//! `has_more` alone decides the end. Where Zendesk documents no pagination (`paging: none` in
//! schemas/streams.json: ticket forms, custom statuses, SLA policies, ...) one request without
//! paging parameters answers the whole list; an answer that offers more pages fails the
//! stream, since a snapshot of part of a list would mark the rest deleted. A list has no
//! position to resume from: a run that stops halfway lists from the start again next time.
//!
//! A list read from a time on (`since` in schemas/streams.json: satisfaction ratings, which
//! Zendesk filters by creation) sends its time parameter with the newest creation time seen,
//! less the overlap window, so a record changed within the window after it was created is read
//! again; its position is that newest creation time (unix seconds).

use async_trait::async_trait;
use serde_json::Value;
use tracing::debug;
use url::Url;

use super::body::field;
use super::{parse_position, set_param, to_json, Context, Reader};
use crate::json::timestamp_micros;
use crate::page::RawPage;
use crate::spec::Paging;
use crate::zendesk::Result;

/// Zendesk's largest list page (`page[size]=101` is a 400).
const MAX_LIST_PAGE: u32 = 100;

pub(super) struct List {
    context: Context,
    next: Option<Url>,
    done: bool,
    /// Lists read from a time on: the newest creation time seen (unix seconds).
    since: Option<Since>,
}

/// The position of a list read from a time on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Since {
    /// The newest value of the stream's `since.field` delivered, unix seconds.
    start_time: i64,
}

const DAY_SECS: i64 = 86_400;

impl List {
    pub(super) fn open(
        context: Context,
        position: Option<&Value>,
        start_time: i64,
    ) -> Result<Self> {
        let mut url = context.endpoint();
        if context.stream.paging == Paging::Cursor {
            let size = context.page_size.min(MAX_LIST_PAGE);
            set_param(&mut url, "page[size]", &size.to_string());
        }
        let since = match &context.stream.since {
            Some(spec) => {
                let (since, from) = match position {
                    Some(value) => {
                        let since: Since = parse_position(context.stream, value)?;
                        let from = since.start_time - spec.overlap_days * DAY_SECS;
                        (since, from.max(start_time))
                    }
                    None => (Since { start_time }, start_time),
                };
                set_param(&mut url, &spec.param, &from.max(0).to_string());
                Some(since)
            }
            None => None,
        };
        Ok(List {
            context,
            next: Some(url),
            done: false,
            since,
        })
    }

    /// Note the creation times of a page's records.
    fn saw(&mut self, records: &[crate::page::RawRecord]) {
        let (Some(since), Some(spec)) = (&mut self.since, &self.context.stream.since) else {
            return;
        };
        for record in records {
            let seconds = field(record, &spec.field)
                .as_ref()
                .and_then(timestamp_micros)
                .map(|us| us.div_euclid(1_000_000));
            if let Some(seconds) = seconds {
                since.start_time = since.start_time.max(seconds);
            }
        }
    }
}

#[async_trait]
impl Reader for List {
    async fn next_page(&mut self) -> Result<Option<RawPage>> {
        let Some(url) = self.next.take().filter(|_| !self.done) else {
            return Ok(None);
        };
        let context = &self.context;
        let mut body = context.get(&url).await?;
        let records = context.records(&url, &mut body)?;
        if context.stream.paging == Paging::Unpaginated {
            let more = body.get("next_page").is_some_and(|next| !next.is_null())
                || body.pointer("/meta/has_more") == Some(&Value::Bool(true));
            if more {
                return Err(context.shape(&url, "a list documented as unpaginated has a next page"));
            }
            self.done = true;
            debug!(stream = %context.name(), records = records.len(), "whole list");
            self.saw(&records);
            return Ok(Some(RawPage {
                records,
                sideloads: Vec::new(),
                position: self.position(),
                end_of_stream: true,
                parent: None,
                until: None,
            }));
        }
        let has_more = body
            .pointer("/meta/has_more")
            .and_then(Value::as_bool)
            .ok_or_else(|| context.shape(&url, "no boolean `meta.has_more`"))?;
        if has_more {
            let next = match body.pointer("/links/next").and_then(Value::as_str) {
                Some(next) => context.client.pinned(context.name(), next)?,
                None => {
                    let cursor = body
                        .pointer("/meta/after_cursor")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            context.shape(&url, "`meta.has_more` is true but there is no cursor")
                        })?;
                    let mut next = url.clone();
                    set_param(&mut next, "page[after]", cursor);
                    next
                }
            };
            if records.is_empty() && next == url {
                return Err(context.shape(&url, "the next page is this page again"));
            }
            self.next = Some(next);
        } else {
            self.done = true;
        }
        debug!(stream = %context.name(), records = records.len(), has_more, "list page");
        self.saw(&records);
        Ok(Some(RawPage {
            records,
            sideloads: Vec::new(),
            position: self.position(),
            end_of_stream: !has_more,
            parent: None,
            until: None,
        }))
    }

    fn position(&self) -> Value {
        self.since.as_ref().map_or(Value::Null, to_json)
    }
}
