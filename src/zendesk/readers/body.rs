//! A page's body as a reader needs it (docs/ARCHITECTURE.md, "Readers"): the record arrays
//! kept as each record's JSON text, everything else (cursors, flags, `end_time`) parsed.
//!
//! A parsed record is about ten times its text in memory, and pages wait in the stages'
//! queues: kept as text, a page costs its size until the decode stage parses it
//! ([`Page::parse`](crate::page::Page::parse)). Reading the body this way validates all of it
//! (a page that is not JSON is refused) but builds no tree of the records, and copies
//! no record's text either: each record is a range of the body it came in, which it shares with
//! the page's other records (one allocation, the body as read, however many records).

use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::page::RawRecord;

/// A page's body: the arrays asked for as records' text, the other members parsed.
#[derive(Debug, Default)]
pub struct Body {
    /// The arrays asked for that the body has: `None` when the member is not an array.
    arrays: Vec<(String, Option<Vec<RawRecord>>)>,
    rest: Map<String, Value>,
}

impl Body {
    /// Parse `text`, keeping the members named in `arrays` as records' text (ranges of
    /// `text`, which they keep alive).
    pub fn parse(text: &Bytes, arrays: &[&str]) -> serde_json::Result<Body> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let body = BodySeed { arrays, text }.deserialize(&mut de)?;
        de.end()?;
        Ok(body)
    }

    /// Take the array `key` out: `None` when the body has no such member or it is no array.
    pub fn take_array(&mut self, key: &str) -> Option<Vec<RawRecord>> {
        self.arrays
            .iter_mut()
            .find(|(k, _)| k == key)
            .and_then(|(_, items)| items.take())
    }

    /// A member that is not one of the arrays asked for.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.rest.get(key)
    }

    /// A JSON pointer (`/meta/has_more`) into the members that are not arrays asked for.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let member = self.rest.get(first)?;
        if tail.is_empty() {
            Some(member)
        } else {
            member.pointer(&format!("/{tail}"))
        }
    }
}

struct BodySeed<'a> {
    arrays: &'a [&'a str],
    /// The body being read, whose ranges the records become.
    text: &'a Bytes,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Body;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Body, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut body = Body::default();
        while let Some(key) = map.next_key::<String>()? {
            if self.arrays.contains(&key.as_str()) {
                let items = map.next_value_seed(MaybeArray { text: self.text })?;
                // A repeated member counts once, the last one, as in a parsed object.
                body.arrays.retain(|(k, _)| *k != key);
                body.arrays.push((key, items));
            } else {
                let value = map.next_value::<Value>()?;
                body.rest.insert(key, value);
            }
        }
        Ok(body)
    }
}

/// An array's items as ranges of the body, or `None` for any other value (which is read and
/// dropped).
struct MaybeArray<'a> {
    text: &'a Bytes,
}

impl<'de> DeserializeSeed<'de> for MaybeArray<'_> {
    type Value = Option<Vec<RawRecord>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MaybeArray<'_> {
    type Value = Option<Vec<RawRecord>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        // A borrowed `&RawValue` is a part of the deserializer's input, which is `self.text`
        // (`Body::parse`), so `slice_ref` finds it there (it would panic on text from elsewhere).
        while let Some(item) = seq.next_element::<&RawValue>()? {
            items.push(RawRecord::from_checked(
                self.text.slice_ref(item.get().as_bytes()),
            ));
        }
        Ok(Some(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The member `name` of a record (the last one, when repeated), without parsing the others;
/// `None` when the record is not an object or has no such member.
pub fn field(record: &RawRecord, name: &str) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(record.bytes());
    FieldSeed { name }.deserialize(&mut de).ok().flatten()
}

struct FieldSeed<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<Value>;

    /// A record that is not an object fails here, which [`field`] reads as `None`.
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Value>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let mut found = None;
        while let Some(matched) = map.next_key_seed(KeyIs(self.name))? {
            if matched {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a key is this name, compared without copying the key.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(items: &[RawRecord]) -> Vec<&str> {
        items
            .iter()
            .map(|r| std::str::from_utf8(r.bytes()).unwrap())
            .collect()
    }

    fn parse(text: &'static [u8], arrays: &[&str]) -> serde_json::Result<Body> {
        Body::parse(&Bytes::from_static(text), arrays)
    }

    #[test]
    fn arrays_asked_for_stay_text_and_the_rest_is_parsed() {
        let text = br#"{"tickets":[{"id":1,"s":"a\u00e9"}, {"id":2}],"after_cursor":"c",
            "metric_sets":[{"id":3}],"meta":{"has_more":true},"end_of_stream":false}"#;
        let mut body = parse(text, &["tickets", "metric_sets", "users"]).unwrap();
        assert_eq!(
            texts(&body.take_array("tickets").unwrap()),
            [r#"{"id":1,"s":"a\u00e9"}"#, r#"{"id":2}"#]
        );
        assert_eq!(
            texts(&body.take_array("metric_sets").unwrap()),
            [r#"{"id":3}"#]
        );
        assert!(body.take_array("users").is_none());
        assert!(body.take_array("tickets").is_none(), "taken once");
        assert_eq!(body.get("after_cursor"), Some(&json!("c")));
        assert_eq!(body.pointer("/meta/has_more"), Some(&json!(true)));
        assert_eq!(body.get("end_of_stream"), Some(&json!(false)));
        assert_eq!(body.get("tickets"), None);
    }

    #[test]
    fn a_member_that_is_no_array_is_none_and_bad_json_is_refused() {
        for value in ["null", "{\"a\":[1]}", "3", "\"x\"", "true"] {
            let text = format!(r#"{{"tickets":{value},"end_of_stream":true}}"#);
            let mut body = Body::parse(&Bytes::from(text), &["tickets"]).unwrap();
            assert!(body.take_array("tickets").is_none(), "{value}");
            assert_eq!(body.get("end_of_stream"), Some(&json!(true)));
        }
        assert!(parse(br#"{"tickets":[{"id":1]}"#, &["tickets"]).is_err());
        assert!(parse(br#"{"tickets":[]} x"#, &["tickets"]).is_err());
        assert!(parse(br#"[1]"#, &["tickets"]).is_err());
        // The last of a repeated member counts, as serde_json's objects have it.
        let mut body = parse(br#"{"tickets":[1],"tickets":[2,3]}"#, &["tickets"]).unwrap();
        assert_eq!(texts(&body.take_array("tickets").unwrap()), ["2", "3"]);
    }

    #[test]
    fn records_are_ranges_of_the_body_they_came_in() {
        let text = Bytes::from_static(br#"{"tickets":[ {"id":1} ,{"id":22}],"x":1}"#);
        let mut body = Body::parse(&text, &["tickets"]).unwrap();
        let records = body.take_array("tickets").unwrap();
        assert_eq!(texts(&records), [r#"{"id":1}"#, r#"{"id":22}"#]);
        let body_range = text.as_ptr_range();
        for record in &records {
            assert!(body_range.contains(&record.bytes().as_ptr()), "no copy");
        }
    }

    #[test]
    fn a_field_is_read_without_the_rest_and_agrees_with_a_parsed_record() {
        let record = RawRecord::from_text(
            r#"{"a":{"x":[1,{"y":"z"}]},"updated_at":"2024-01-01T00:00:00Z","b\u0041":7,"n":null}"#,
        )
        .unwrap();
        let parsed: Value = serde_json::from_slice(record.bytes()).unwrap();
        for name in ["a", "updated_at", "bA", "n", "missing"] {
            assert_eq!(field(&record, name).as_ref(), parsed.get(name), "{name}");
        }
        let list = RawRecord::from_text("[1,2]").unwrap();
        assert_eq!(field(&list, "a"), None);
    }
}
