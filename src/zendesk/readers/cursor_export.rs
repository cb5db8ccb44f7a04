//! Cursor exports (`/api/v2/incremental/{tickets,users}/cursor.json`): `start_time` once, then
//! `cursor=after_cursor` until `end_of_stream`. The position is the last `after_cursor`; when
//! Zendesk sends no cursor because nothing changed, the old one is kept.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;
use url::Url;

use super::{parse_position, set_includes, to_json, Context, Reader, MAX_IDLE_PAGES};
use crate::page::RawPage;
use crate::zendesk::Result;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// The `after_cursor` to resume from; `None` before the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// Where the first request starts, before there is a cursor.
    #[serde(default)]
    start_time: i64,
}

pub(super) struct CursorExport {
    context: Context,
    position: Position,
    /// The next request: `after_url` of the last page, or built from the position.
    next: Option<Url>,
    idle: u32,
}

impl CursorExport {
    pub(super) fn open(
        context: Context,
        position: Option<&Value>,
        start_time: i64,
    ) -> Result<Self> {
        let position = match position {
            Some(value) => parse_position(context.stream, value)?,
            None => Position {
                cursor: None,
                start_time,
            },
        };
        Ok(CursorExport {
            context,
            position,
            next: None,
            idle: 0,
        })
    }

    /// The export URL that continues from the position: by cursor when there is one, else by
    /// start time.
    fn url(&self) -> Url {
        let mut url = self.context.endpoint();
        match &self.position.cursor {
            Some(cursor) => url.query_pairs_mut().append_pair("cursor", cursor),
            None => url
                .query_pairs_mut()
                .append_pair("start_time", &self.position.start_time.to_string()),
        };
        url
    }
}

#[async_trait]
impl Reader for CursorExport {
    async fn next_page(&mut self) -> Result<Option<RawPage>> {
        let mut url = self.next.take().unwrap_or_else(|| self.url());
        let Some(mut body) = self.context.get_page(&mut url).await? else {
            return Ok(None);
        };
        let context = &self.context;
        let records = context.records(&url, &mut body)?;
        let sideloads = context.sideloads(&mut body);
        let end_of_stream = context.flag(&url, &body, "end_of_stream")?;
        let before = self.position.cursor.clone();
        if let Some(cursor) = body.get("after_cursor").and_then(Value::as_str) {
            self.position.cursor = Some(cursor.to_owned());
        }
        if records.is_empty() && !end_of_stream && self.position.cursor == before {
            self.idle += 1;
            if self.idle >= MAX_IDLE_PAGES {
                return Err(context.shape(
                    &url,
                    &format!("{} empty pages in a row with end_of_stream false and the same cursor: the export does not advance", self.idle),
                ));
            }
        } else {
            self.idle = 0;
        }
        if !end_of_stream {
            self.next = match body.get("after_url").and_then(Value::as_str) {
                Some(after) => {
                    let mut next = context.client.pinned(context.name(), after)?;
                    set_includes(&mut next, &context.includes);
                    Some(next)
                }
                None if self.position.cursor.is_some() => None,
                None => {
                    return Err(
                        context.shape(&url, "end_of_stream is false but there is no after_cursor")
                    )
                }
            };
        }
        debug!(stream = %context.name(), records = records.len(), end_of_stream, "cursor page");
        Ok(Some(RawPage {
            records,
            sideloads,
            position: self.position(),
            end_of_stream,
            parent: None,
            // The export is ordered by its watermark field: the newest record is where it
            // stands, which the decode stage reads (`Page::until` of a cursor export).
            until: None,
        }))
    }

    fn position(&self) -> Value {
        to_json(&self.position)
    }
}
