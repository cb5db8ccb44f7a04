//! Lists read whole on every run (`/api/v2/groups.json`, Help Center and community lists, the
//! account's fields, forms, rules and memberships). Cursor-paginated ones: `page[size]` up to
//! 100, then `links.next` (or `page[after]=meta.after_cursor`) until `meta.has_more` is false.
//! Support pages carry `links.next` even on the last page and Help Center pages omit it, so
//! `has_more` alone decides the end. Where Zendesk documents no pagination (`paging: none` in
//! schemas/streams.json: ticket forms, custom statuses, SLA policies, ...) one request without
//! paging parameters answers the whole list; an answer that offers more pages fails the
//! stream, since a snapshot of part of a list would mark the rest deleted. A list has no
//! position to resume from: a run that stops halfway lists from the start again next time.

use async_trait::async_trait;
use serde_json::Value;
use tracing::debug;
use url::Url;

use super::{set_param, Context, Reader};
use crate::page::RawPage;
use crate::spec::Paging;
use crate::zendesk::Result;

/// Zendesk's largest list page (`page[size]=101` is a 400).
const MAX_LIST_PAGE: u32 = 100;

pub(super) struct List {
    context: Context,
    next: Option<Url>,
    done: bool,
}

impl List {
    pub(super) fn open(context: Context) -> Self {
        let mut url = context.endpoint();
        if context.stream.paging == Paging::Cursor {
            let size = context.page_size.min(MAX_LIST_PAGE);
            set_param(&mut url, "page[size]", &size.to_string());
        }
        List {
            context,
            next: Some(url),
            done: false,
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
            return Ok(Some(RawPage {
                records,
                sideloads: Vec::new(),
                position: Value::Null,
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
        Ok(Some(RawPage {
            records,
            sideloads: Vec::new(),
            position: Value::Null,
            end_of_stream: !has_more,
            parent: None,
            until: None,
        }))
    }

    fn position(&self) -> Value {
        Value::Null
    }
}
