//! JSON as readers and the decoder both read it (docs/ARCHITECTURE.md, "Decoding"): a tree that
//! borrows from the text it was read from ([`Json`]), timestamps ([`micros`]), and the repair
//! of text Zendesk sends broken ([`repair_text`]). Neither side owns these, so they sit below
//! both.
//!
//! A record read into a `serde_json::Value` copies every key and string into an allocation of
//! its own and every object into a B-tree, and frees all of it again once the record's values
//! are in Arrow: at a backfill's rate that was most of the decode stage's time (BENCHMARKS.md,
//! the heaptrack and perf profiles of the 1M backfill). [`Json`] keeps a string that needs no
//! unescaping as a slice of the record's text and an object as one vector of members, sorted by
//! key once it is read.
//!
//! It reads and prints as `Value` does, so nothing a table stores changes: a repeated key
//! counts once, with its last value; an object prints with its keys in byte order (a `Value`'s
//! `BTreeMap`) and its strings and numbers as serde_json prints them.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// A JSON value whose strings may borrow from the text it was read from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Json<'a> {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object: its members sorted by key, each key once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

/// Members up to which [`Object::get`] scans rather than searches.
const SCANNED: usize = 16;

/// The `null` a missing member reads as.
pub static NULL: Json<'static> = Json::Null;

impl<'a> Object<'a> {
    pub fn with_capacity(capacity: usize) -> Self {
        Object(Vec::with_capacity(capacity))
    }

    /// Members in any order, a repeated key counting once with its last value.
    fn from_members(mut members: Vec<(Cow<'a, str>, Json<'a>)>) -> Self {
        // Stable: of a repeated key, the members stay in the order they came.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            let mut unique: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(members.len());
            for member in members {
                match unique.last_mut() {
                    Some(last) if last.0 == member.0 => *last = member,
                    _ => unique.push(member),
                }
            }
            members = unique;
        }
        Object(members)
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        // A small object (a child event, a field change) is scanned: comparing lengths first
        // costs less than the string comparisons of a binary search.
        if self.0.len() <= SCANNED {
            let key = key.as_bytes();
            return self
                .0
                .iter()
                .find(|(k, _)| k.len() == key.len() && k.as_bytes() == key)
                .map(|(_, v)| v);
        }
        self.find(key).ok().map(|at| &self.0[at].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set member `key`, replacing the value it had.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Json<'a>) {
        let key = key.into();
        match self.find(&key) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (key, value)),
        }
    }

    /// The keys, in byte order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// The members, sorted by key, each key once.
    pub fn as_slice(&self) -> &[(Cow<'a, str>, Json<'a>)] {
        &self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The member at a dotted path (`via.channel`).
    pub fn lookup(&self, path: &str) -> Option<&Json<'a>> {
        let mut parts = path.split('.');
        let mut value = self.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    pub fn into_owned(self) -> Object<'static> {
        Object(
            self.0
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                .collect(),
        )
    }
}

impl<'a> Json<'a> {
    /// Read `text` (one JSON value), borrowing its strings that need no unescaping.
    pub fn from_slice(text: &'a [u8]) -> serde_json::Result<Json<'a>> {
        serde_json::from_slice(text)
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Object<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    /// Member `key` of an object; `None` for a missing member or a value that is no object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    /// The value with every string its own, free of the text it was read from.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(n) => Json::Number(n),
            Json::String(s) => Json::String(Cow::Owned(s.into_owned())),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::into_owned).collect()),
            Json::Object(object) => Json::Object(object.into_owned()),
        }
    }

    /// The value as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.as_ref().to_owned()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(object) => Value::Object(
                object
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl<'a> From<&'a Value> for Json<'a> {
    /// The same value, borrowing the `Value`'s strings.
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(Cow::Borrowed(s)),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(map) => Json::Object(Object::from_members(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from(v)))
                    .collect(),
            )),
        }
    }
}

impl From<i64> for Json<'_> {
    fn from(value: i64) -> Self {
        Json::Number(value.into())
    }
}

impl<'a> From<&'a str> for Json<'a> {
    fn from(value: &'a str) -> Self {
        Json::String(Cow::Borrowed(value))
    }
}

impl From<String> for Json<'_> {
    fn from(value: String) -> Self {
        Json::String(Cow::Owned(value))
    }
}

/// Compact JSON text, as `Value`'s `Display` prints the same value.
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.len()))?;
                for (k, v) in object.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(Object::from_members(members)))
    }
}

/// Microseconds since the epoch from an RFC 3339 string or a number of unix seconds.
pub fn timestamp_micros(value: &Value) -> Option<i64> {
    micros(&Json::from(value))
}

/// [`timestamp_micros`] of a value read by the decode stage.
// Called for every timestamp a page holds, from the decoder's builders in another module
// (BENCHMARKS.md: the decoder reads pages at memory speed).
#[inline]
pub fn micros(value: &Json) -> Option<i64> {
    match value {
        Json::Number(n) => n.as_i64()?.checked_mul(1_000_000),
        Json::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc).timestamp_micros()),
        _ => None,
    }
}

/// The body with invalid UTF-8 and unpaired UTF-16 surrogate escapes (`\ud83d` without its
/// low half: text cut in the middle of an emoji) replaced by U+FFFD, or `None` when there was
/// nothing to replace. Zendesk has been seen sending both; JSON parsers that reject them would
/// stop the sync on one bad comment forever.
pub fn repair_text(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let mut changed = matches!(text, std::borrow::Cow::Owned(_));
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    let hex = |at: usize| -> Option<u16> {
        let digits = text.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    while i + 1 < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes[i + 1] != b'u' {
            i += 2; // any other escape, `\\` included
            continue;
        }
        let Some(unit) = hex(i + 2) else {
            i += 2;
            continue;
        };
        let high = (0xD800..0xDC00).contains(&unit);
        let low = (0xDC00..0xE000).contains(&unit);
        let paired = high
            && bytes.get(i + 6) == Some(&b'\\')
            && bytes.get(i + 7) == Some(&b'u')
            && hex(i + 8).is_some_and(|next| (0xDC00..0xE000).contains(&next));
        if paired {
            i += 12;
        } else if high || low {
            out.push_str(&text[last..i]);
            out.push_str("\\ufffd");
            i += 6;
            last = i;
            changed = true;
        } else {
            i += 6;
        }
    }
    out.push_str(&text[last..]);
    changed.then_some(out)
}

/// An object's key, borrowed when it needs no unescaping.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repairs_lone_surrogates_and_invalid_utf8_only() {
        let parse = |body: &[u8]| -> Option<serde_json::Value> {
            serde_json::from_str(&repair_text(body)?).ok()
        };
        assert_eq!(
            repair_text(br#"{"a":"ok \ud83d\ude00 \u00e9 \\ud800"}"#),
            None
        );
        let fixed = parse(br#"{"a":"cut \ud83d", "b":"\udc00x"}"#).unwrap();
        assert_eq!(fixed["a"], "cut \u{fffd}");
        assert_eq!(fixed["b"], "\u{fffd}x");
        let fixed = parse(b"{\"a\":\"bad \xff byte\"}").unwrap();
        assert_eq!(fixed["a"], "bad \u{fffd} byte");
        assert!(parse(b"<html>502</html>").is_none());
    }

    /// Every kind of value, escapes, repeated keys, unsorted keys, nesting and numbers of each
    /// representation.
    const TEXTS: &[&str] = &[
        r#"{"b":1,"a":[true,null,{"z":"\u00e9\n","y":-3}],"c":1.5,"a\u0041":"x","big":18446744073709551615}"#,
        r#"{"k":1,"k":2,"j":{"k":[],"k":{}}}"#,
        r#"[1,"two",3.25e10,{"":""},[[]],-0.0,1e300]"#,
        r#""plain""#,
        r#""esc\"aped\\\/\t""#,
        "null",
        "0",
        "{}",
    ];

    #[test]
    fn reads_and_prints_as_a_value_does() {
        for text in TEXTS {
            let value: Value = serde_json::from_str(text).unwrap();
            let json = Json::from_slice(text.as_bytes()).unwrap();
            assert_eq!(json.to_string(), value.to_string(), "{text}");
            assert_eq!(json.to_value(), value, "{text}");
            assert_eq!(Json::from(&value), json, "{text}");
            assert_eq!(json.clone().into_owned(), json, "{text}");
        }
    }

    #[test]
    fn unescaped_strings_borrow_from_the_text_and_the_last_of_a_repeated_key_counts() {
        let text = br#"{"plain":"abc","escaped":"a\nb","k":1,"k":2}"#;
        let json = Json::from_slice(text).unwrap();
        let object = json.as_object().unwrap();
        assert!(matches!(
            object.get("plain"),
            Some(Json::String(Cow::Borrowed("abc")))
        ));
        assert!(matches!(object.get("escaped"), Some(Json::String(Cow::Owned(s))) if s == "a\nb"));
        assert_eq!(object.get("k").and_then(Json::as_i64), Some(2));
        assert_eq!(object.keys().collect::<Vec<_>>(), ["escaped", "k", "plain"]);
    }

    #[test]
    fn refuses_what_a_value_refuses() {
        for text in [r#"{"a":}"#, "[1,]", r#""\ud83d""#, "nul", "{\"a\":1} x"] {
            assert_eq!(
                Json::from_slice(text.as_bytes()).is_err(),
                serde_json::from_str::<Value>(text).is_err(),
                "{text}"
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            Json::from_slice(deep.as_bytes()).is_err(),
            "recursion limit"
        );
    }

    #[test]
    fn insert_keeps_the_members_sorted() {
        let mut object = Object::default();
        for key in ["m", "a", "z", "a"] {
            object.insert(key, Json::from(key));
        }
        assert_eq!(object.keys().collect::<Vec<_>>(), ["a", "m", "z"]);
        assert_eq!(
            Json::Object(object).to_string(),
            r#"{"a":"a","m":"m","z":"z"}"#
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-c\\\\\"é]{0,3}", inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_reads_back_the_same(value in value()) {
            // Compared with what a `Value` reads from the same text: serde_json's float parsing
            // is not exact in the last digit, for both.
            let text = value.to_string();
            let read: Value = serde_json::from_str(&text).unwrap();
            let json = Json::from_slice(text.as_bytes()).unwrap();
            prop_assert_eq!(json.to_string(), read.to_string());
            prop_assert_eq!(json.to_value(), read);
        }
    }
}
