//! The pages the readers produce and the decode stage reads (docs/ARCHITECTURE.md, "How a sync
//! runs" and "Readers"): a page's records as their JSON text ([`RawPage`]), and the same records
//! parsed a slice at a time ([`Page`]).
//!
//! Both sides of the seam need these types, and neither may import the other (readers know
//! HTTP and Zendesk's paging rules, the decoder knows schemas), so they live here, below both.
//! A page waits in the stages' queues as text, at its size in bytes; the decode stage parses it
//! into trees that borrow that text ([`Json`]), a slice of records at a time.

use std::fmt;

use bytes::Bytes;
use serde_json::Value;
use tracing::warn;

use crate::json::{repair_text, Json};
use crate::spec::Stream;

/// One record's JSON text: a range of the page's body (valid UTF-8 and valid JSON, as the
/// body's reading checked).
#[derive(Clone)]
pub struct RawRecord(Bytes);

impl RawRecord {
    /// A record from text its reader checked is one valid JSON value (`readers::body` reads a
    /// page's body that way); no copy, the bytes stay shared with the body.
    pub(crate) fn from_checked(text: Bytes) -> RawRecord {
        RawRecord(text)
    }

    /// The record's JSON text.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A record of its own, for tests.
    #[cfg(test)]
    pub fn from_text(text: &str) -> serde_json::Result<RawRecord> {
        let _: &serde_json::value::RawValue = serde_json::from_str(text)?;
        Ok(RawRecord(Bytes::copy_from_slice(text.trim().as_bytes())))
    }
}

impl fmt::Debug for RawRecord {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RawRecord({})", String::from_utf8_lossy(&self.0))
    }
}

/// A record parsed, and whether its text had to be repaired first: the body's reading lets
/// unpaired UTF-16 surrogate escapes through (text cut in the middle of an emoji), which a
/// value cannot hold, so they become U+FFFD as the client's repair of a body has it.
pub fn parse_record(record: &RawRecord) -> serde_json::Result<(Value, bool)> {
    parse_json(record).map(|(tree, repaired)| (tree.to_value(), repaired))
}

/// A record read into a tree that borrows its text ([`Json`]), and whether its text had to be
/// repaired first (as [`parse_record`] says; a repaired record owns its strings).
pub fn parse_json(record: &RawRecord) -> serde_json::Result<(Json<'_>, bool)> {
    match Json::from_slice(record.bytes()) {
        Ok(value) => Ok((value, false)),
        Err(e) => match repair_text(record.bytes())
            .and_then(|text| Json::from_slice(text.as_bytes()).ok().map(Json::into_owned))
        {
            Some(value) => Ok((value, true)),
            None => Err(e),
        },
    }
}

/// One page as a reader returns it: its records as their JSON text, parsed by the decode stage
/// a slice at a time ([`Page::parse`]).
#[derive(Debug)]
pub struct RawPage {
    pub records: Vec<RawRecord>,
    pub sideloads: Vec<(String, Vec<RawRecord>)>,
    pub position: Value,
    pub end_of_stream: bool,
    pub parent: Option<ParentPage>,
    /// Where the stream stands in time after this page (unix seconds), for readers whose
    /// position is one: a time export's `end_time`, the cursor of a children stream's parent
    /// (a cursor export's, its newest record, is read by the decode stage with the page's
    /// watermark). Progress display only; never stored.
    pub until: Option<i64>,
}

impl RawPage {
    /// Bytes of JSON text the page's records and sideloads hold.
    pub fn text_bytes(&self) -> usize {
        let records = |items: &[RawRecord]| items.iter().map(|r| r.bytes().len()).sum::<usize>();
        records(&self.records)
            + self
                .sideloads
                .iter()
                .map(|(_, items)| records(items))
                .sum::<usize>()
    }
}

/// The parent a page of children belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentPage {
    pub id: i64,
    /// The parent is deleted or gone (404): every child of it is deleted.
    pub gone: bool,
}

/// The field each child gets with its parent's id (the children of a ticket carry none).
pub const PARENT_FIELD: &str = "ticket_id";

/// Records of a page parsed, borrowing their strings from the records' text ([`Json`]).
#[derive(Debug, Clone, Default)]
pub struct Page<'a> {
    /// The records of the stream's `records_key` array.
    pub records: Vec<Json<'a>>,
    /// Arrays sideloaded beside the records (`metric_sets`), by key.
    pub sideloads: Vec<(String, Vec<Json<'a>>)>,
}

impl<'a> Page<'a> {
    /// `records` and `sideloads` (of a page of `stream`, whose children have `parent`) parsed.
    /// A children stream's records get their parent's id ([`PARENT_FIELD`]). Text the body's
    /// reading let through but a value cannot hold, unpaired UTF-16 surrogate escapes (text cut
    /// in the middle of an emoji), is repaired as the client repairs a body; fails only on what
    /// no repair helps (nesting past serde_json's recursion limit), with the record's position.
    pub fn parse(
        stream: &Stream,
        records: &'a [RawRecord],
        sideloads: &'a [(String, Vec<RawRecord>)],
        parent: Option<&ParentPage>,
    ) -> std::result::Result<Page<'a>, (usize, String)> {
        let parse =
            |items: &'a [RawRecord]| -> std::result::Result<Vec<Json<'a>>, (usize, String)> {
                items
                .iter()
                .enumerate()
                .map(|(i, item)| match parse_json(item) {
                    Ok((value, repaired)) => {
                        if repaired {
                            warn!(stream = %stream.name, index = i, "a record held lone surrogate escapes; they were replaced by U+FFFD");
                        }
                        Ok(value)
                    }
                    Err(e) => Err((i, e.to_string())),
                })
                .collect()
            };
        let mut records = parse(records)?;
        if let Some(parent) = parent {
            for child in &mut records {
                if let Some(child) = child.as_object_mut() {
                    child.insert(PARENT_FIELD, Json::from(parent.id));
                }
            }
        }
        let sideloads = sideloads
            .iter()
            .map(|(key, items)| Ok((key.clone(), parse(items)?)))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Page { records, sideloads })
    }

    /// The sideloaded array `key`, empty when the page has none.
    pub fn sideload(&self, key: &str) -> &[Json<'a>] {
        self.sideloads
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_with_a_lone_surrogate_is_repaired() {
        let cut = RawRecord::from_text(r#"{"id":1,"subject":"cut \ud83d here"}"#).unwrap();
        let whole = RawRecord::from_text(r#"{"id":2}"#).unwrap();
        let (value, repaired) = parse_record(&cut).unwrap();
        assert!(repaired);
        assert_eq!(value, json!({"id": 1, "subject": "cut \u{fffd} here"}));
        assert_eq!(parse_record(&whole).unwrap(), (json!({"id": 2}), false));
        let (tree, repaired) = parse_json(&cut).unwrap();
        assert!(repaired);
        assert_eq!(
            tree.to_value(),
            json!({"id": 1, "subject": "cut \u{fffd} here"})
        );
        let (tree, repaired) = parse_json(&whole).unwrap();
        assert!(!repaired);
        assert_eq!(tree.to_value(), json!({"id": 2}));
    }
}
