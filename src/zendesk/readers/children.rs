//! Children per parent (`/api/v2/tickets/{parent}/side_conversations.json`): for every parent
//! that changed since the stream's position, one page holding all of its children (offset
//! pagination, `next_page`), each child carrying its parent's id. The parents come from the
//! lake (the tickets table's `generated_timestamp`), so no second export of them is made; the
//! position is the last parent read, by (cursor, id).
//!
//! A parent that is deleted, or that Zendesk answers 404 for, yields a page marked gone: its
//! children are deleted. The parent's cost is one request per 100 children: side
//! conversations have no bulk endpoint.

use std::collections::VecDeque;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;

use super::{parse_position, set_param, to_json, Context, Reader};
use crate::page::{ParentPage, RawPage};
use crate::zendesk::Result;

/// A parent whose children are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub id: i64,
    /// Its cursor (µs), the order parents are read in.
    pub cursor: i64,
    /// Deleted in the lake: its children are deleted, no request needed.
    pub gone: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// The last parent read: its cursor (µs) and id.
    cursor: i64,
    id: i64,
}

/// Where reading parents resumes: those after `(cursor µs, id)`, from a stored position.
pub fn parents_after(position: Option<&Value>) -> (i64, i64) {
    position
        .and_then(|p| serde_json::from_value::<Position>(p.clone()).ok())
        .map_or((i64::MIN, i64::MIN), |p| (p.cursor, p.id))
}

/// The largest page of children Zendesk serves.
const MAX_CHILDREN_PAGE: u32 = 100;

pub(super) struct Children {
    context: Context,
    parents: VecDeque<Parent>,
    position: Position,
}

impl Children {
    pub(super) fn open(context: Context, position: Option<&Value>) -> Result<Self> {
        let position = match position {
            Some(value) => parse_position(context.stream, value)?,
            None => Position {
                cursor: i64::MIN,
                id: i64::MIN,
            },
        };
        let parents = context.parents.iter().cloned().collect();
        Ok(Children {
            context,
            parents,
            position,
        })
    }
}

#[async_trait]
impl Reader for Children {
    async fn next_page(&mut self) -> Result<Option<RawPage>> {
        let Some(parent) = self.parents.pop_front() else {
            return Ok(None);
        };
        let context = &self.context;
        let mut records = Vec::new();
        let mut gone = parent.gone;
        if !gone {
            let path = context
                .stream
                .path
                .replace("{parent}", &parent.id.to_string());
            let mut url = context.client.endpoint(&path);
            let size = context.page_size.min(MAX_CHILDREN_PAGE);
            set_param(&mut url, "per_page", &size.to_string());
            loop {
                let answer = context.get(&url).await;
                let mut body = match answer {
                    Ok(body) => body,
                    // This parent is gone; the others go on.
                    Err(e) if e.status() == Some(404) => {
                        gone = true;
                        records.clear();
                        break;
                    }
                    Err(e) => return Err(e),
                };
                // Each child gets its parent's id when the page is parsed.
                records.extend(context.records(&url, &mut body)?);
                match body.get("next_page").and_then(Value::as_str) {
                    Some(next) => {
                        let next = context.client.pinned(context.name(), next)?;
                        if next == url {
                            return Err(context.shape(&url, "next_page is this page again"));
                        }
                        url = next;
                    }
                    None => break,
                }
            }
        }
        self.position = Position {
            cursor: parent.cursor,
            id: parent.id,
        };
        debug!(stream = %context.name(), parent = parent.id, records = records.len(), gone, "children");
        Ok(Some(RawPage {
            records,
            sideloads: Vec::new(),
            position: self.position(),
            end_of_stream: self.parents.is_empty(),
            parent: Some(ParentPage {
                id: parent.id,
                gone,
            }),
            until: Some(parent.cursor.div_euclid(1_000_000)),
        }))
    }

    fn position(&self) -> Value {
        to_json(&self.position)
    }
}
