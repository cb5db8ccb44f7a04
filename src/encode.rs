//! Arrow record batches → Zendesk JSON objects, by a declared column shape: the write path's
//! mirror of [`crate::decode`] (docs/ARCHITECTURE.md, "The write path").
//!
//! Why a shape and not "every column as a JSON field": the rows come from a table or a query
//! a team wrote, and Zendesk's bulk endpoints apply what they are sent. A column the shape does
//! not know, a wrong type or a missing or duplicate key is refused here, naming the column or
//! the key, before any request, instead of being silently dropped or half-imported. The lake's
//! own types are the contract (timestamps, `list<string>` tags, `custom_fields` as
//! `list<struct<id, value>>` with each value as JSON text), and the shape says where each
//! column goes in the JSON object ([`Target`]).
//!
//! Values are normalised by Arrow casts before they are read (any integer width to int64, any
//! string layout to UTF-8, any timestamp unit to µs UTC), so a query's `Utf8View` or `Int32`
//! columns import like a table's.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Fields, Int64Type, Schema, TimeUnit};
use serde_json::{Map, Value};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why rows cannot be encoded: each names the column, or the key of the row.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("column `{column}` is not a column of {shape} (known: {known})")]
    UnknownColumn {
        shape: &'static str,
        column: String,
        known: String,
    },
    #[error("column `{column}` is {found}, but {shape} expects {expected}")]
    WrongType {
        shape: &'static str,
        column: String,
        found: String,
        expected: &'static str,
    },
    #[error("the source has no column `{column}`, which {shape} requires")]
    MissingColumn { shape: &'static str, column: String },
    #[error("row #{row} has no `{column}` (it is required and must be unique)")]
    MissingKey { row: usize, column: String },
    #[error("{column} {key:?} appears more than once in the source")]
    Duplicate { column: String, key: String },
    #[error("{key_column} {key:?}: column `{column}`: {detail}")]
    Value {
        key_column: &'static str,
        key: String,
        column: String,
        detail: String,
    },
}

/// What a column holds, in the lake's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any string layout; a JSON string.
    Text,
    /// Text holding JSON (a custom field's value): parsed, sent as the JSON value it holds.
    JsonText,
    /// Any integer of at most 64 bits; a JSON number.
    Int,
    Bool,
    /// Any timestamp; RFC 3339 UTC text (a timestamp without a zone is taken as UTC).
    Timestamp,
    /// `list<string>`; a JSON array of strings.
    TextList,
    /// `list<struct<..>>` of the given fields (a subset of them, in any order); a JSON array
    /// of objects.
    Structs(&'static [Column]),
    /// `struct<..>` of the given fields (a subset of them, in any order); a JSON object.
    Struct(&'static [Column]),
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::JsonText => "a string holding JSON",
            Kind::Int => "an integer (int64)",
            Kind::Bool => "a boolean",
            Kind::Timestamp => "a timestamp",
            Kind::TextList => "list<string>",
            Kind::Structs(_) => "a list of structs",
            Kind::Struct(_) => "a struct",
        }
    }

    /// Whether a column of `ty` can be read as this kind (a column of nulls always can).
    fn accepts(self, ty: &DataType) -> bool {
        if ty == &DataType::Null {
            return true;
        }
        match self {
            Kind::Text | Kind::JsonText => {
                matches!(
                    ty,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            }
            Kind::Int => matches!(
                ty,
                DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
            ),
            Kind::Bool => ty == &DataType::Boolean,
            Kind::Timestamp => matches!(ty, DataType::Timestamp(_, _)),
            Kind::TextList => list_item(ty).is_some_and(|item| Kind::Text.accepts(item)),
            Kind::Structs(_) => list_item(ty)
                .is_some_and(|item| matches!(item, DataType::Struct(_)) || item == &DataType::Null),
            Kind::Struct(_) => matches!(ty, DataType::Struct(_)),
        }
    }

    /// The type its values are cast to before they are read.
    fn normal(self) -> DataType {
        match self {
            Kind::Text | Kind::JsonText => DataType::Utf8,
            Kind::Int => DataType::Int64,
            Kind::Bool => DataType::Boolean,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::TextList => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            // Lists of structs are read field by field (see `Reader::structs`).
            Kind::Structs(_) | Kind::Struct(_) => DataType::Null,
        }
    }
}

fn list_item(ty: &DataType) -> Option<&DataType> {
    match ty {
        DataType::List(item) | DataType::LargeList(item) => Some(item.data_type()),
        _ => None,
    }
}

/// Where a column's value goes in the JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A field of the object.
    Field(&'static str),
    /// A field of a nested object (`requester_email` → `requester.email`).
    Nested(&'static str, &'static str),
    /// When the object's array `list` is missing or empty after every other column, a
    /// one-element array `[{field: value}]` (`description` → the first comment).
    First {
        list: &'static str,
        field: &'static str,
    },
}

/// One column of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub target: Target,
}

const fn field(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        target: Target::Field(name),
    }
}

/// The columns of a write, the one that keys its rows (required, non-null, unique) and a name
/// for errors.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub key: &'static str,
    pub columns: &'static [Column],
}

/// A comment of a ticket import.
const COMMENT: &[Column] = &[
    field("author_id", Kind::Int),
    field("value", Kind::Text),
    field("html_body", Kind::Text),
    field("public", Kind::Bool),
    field("created_at", Kind::Timestamp),
];

/// The lake's `custom_fields` column: `list<struct<id, value>>`, values as JSON text.
const CUSTOM_FIELD: &[Column] = &[field("id", Kind::Int), field("value", Kind::JsonText)];

/// Zendesk's ticket import (`POST /api/v2/imports/tickets/create_many`), in the lake's types.
pub const TICKET_IMPORT: Shape = Shape {
    name: "the ticket import",
    key: "external_id",
    columns: &[
        field("external_id", Kind::Text),
        field("subject", Kind::Text),
        field("comments", Kind::Structs(COMMENT)),
        Column {
            name: "description",
            kind: Kind::Text,
            target: Target::First {
                list: "comments",
                field: "value",
            },
        },
        field("requester_id", Kind::Int),
        Column {
            name: "requester_email",
            kind: Kind::Text,
            target: Target::Nested("requester", "email"),
        },
        Column {
            name: "requester_name",
            kind: Kind::Text,
            target: Target::Nested("requester", "name"),
        },
        field("submitter_id", Kind::Int),
        field("assignee_id", Kind::Int),
        field("group_id", Kind::Int),
        field("organization_id", Kind::Int),
        field("brand_id", Kind::Int),
        field("ticket_form_id", Kind::Int),
        field("status", Kind::Text),
        field("priority", Kind::Text),
        field("type", Kind::Text),
        field("tags", Kind::TextList),
        field("created_at", Kind::Timestamp),
        field("updated_at", Kind::Timestamp),
        field("solved_at", Kind::Timestamp),
        field("custom_fields", Kind::Structs(CUSTOM_FIELD)),
    ],
};

/// A comment of a ticket update: an internal note unless `public`.
const UPDATE_COMMENT: &[Column] = &[field("body", Kind::Text), field("public", Kind::Bool)];

/// Zendesk's ticket update (`PUT /api/v2/tickets/update_many`), in the lake's types, keyed by
/// the ticket's `id`. The lake's `tickets` table reads with it too (its columns of the same
/// names are a subset), so that `push` compares like with like.
pub const TICKET_UPDATE: Shape = Shape {
    name: "the ticket update",
    key: "id",
    columns: &[
        field("id", Kind::Int),
        field("status", Kind::Text),
        field("priority", Kind::Text),
        field("type", Kind::Text),
        field("assignee_id", Kind::Int),
        field("group_id", Kind::Int),
        field("organization_id", Kind::Int),
        field("external_id", Kind::Text),
        field("tags", Kind::TextList),
        field("additional_tags", Kind::TextList),
        field("remove_tags", Kind::TextList),
        field("custom_fields", Kind::Structs(CUSTOM_FIELD)),
        field("comment", Kind::Struct(UPDATE_COMMENT)),
    ],
};

/// One encoded row: its key and its JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub key: String,
    pub object: Map<String, Value>,
}

impl Shape {
    fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn known(columns: &[Column]) -> String {
        columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Check a source's columns against the shape: every column known and of its kind, the key
    /// present.
    pub fn validate(&self, schema: &Schema) -> Result<()> {
        for field in schema.fields() {
            let column = self
                .column(field.name())
                .ok_or_else(|| Error::UnknownColumn {
                    shape: self.name,
                    column: field.name().clone(),
                    known: Shape::known(self.columns),
                })?;
            self.check(field.name(), column.kind, field.data_type())?;
        }
        if schema.field_with_name(self.key).is_err() {
            return Err(Error::MissingColumn {
                shape: self.name,
                column: self.key.to_owned(),
            });
        }
        Ok(())
    }

    fn check(&self, path: &str, kind: Kind, ty: &DataType) -> Result<()> {
        if !kind.accepts(ty) {
            return Err(Error::WrongType {
                shape: self.name,
                column: path.to_owned(),
                found: ty.to_string(),
                expected: kind.expected(),
            });
        }
        let inner_fields = match (kind, ty) {
            (Kind::Structs(columns), _) => match list_item(ty) {
                Some(DataType::Struct(fields)) => Some((columns, fields)),
                _ => None,
            },
            (Kind::Struct(columns), DataType::Struct(fields)) => Some((columns, fields)),
            _ => None,
        };
        if let Some((columns, fields)) = inner_fields {
            for inner in fields {
                let path = format!("{path}.{}", inner.name());
                let column = columns
                    .iter()
                    .find(|c| c.name == inner.name())
                    .ok_or_else(|| Error::UnknownColumn {
                        shape: self.name,
                        column: path.clone(),
                        known: Shape::known(columns),
                    })?;
                self.check(&path, column.kind, inner.data_type())?;
            }
        }
        Ok(())
    }

    /// Encode every row of `batches` (validated first), refusing a missing or duplicate key.
    pub fn encode(&self, batches: &[RecordBatch]) -> Result<Vec<Encoded>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for batch in batches {
            self.validate(batch.schema().as_ref())?;
            for encoded in self.encode_batch(batch, out.len())? {
                if !seen.insert(encoded.key.clone()) {
                    return Err(Error::Duplicate {
                        column: self.key.to_owned(),
                        key: encoded.key,
                    });
                }
                out.push(encoded);
            }
        }
        Ok(out)
    }

    /// The rows of one validated batch; `first` is the number of rows before it (for errors).
    fn encode_batch(&self, batch: &RecordBatch, first: usize) -> Result<Vec<Encoded>> {
        let schema = batch.schema();
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            // Validated: every column is one of the shape's.
            let Some(column) = self.column(field.name()) else {
                continue;
            };
            columns.push((
                column,
                Values::read(self, field.name(), column.kind, array)?,
            ));
        }
        let key_values = columns
            .iter()
            .find(|(c, _)| c.name == self.key)
            .map(|(_, v)| v);
        let mut rows = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let key = match key_values.map(|v| v.get(row)) {
                Some(Ok(Some(Value::String(key)))) if !key.is_empty() => key,
                Some(Ok(Some(Value::Number(key)))) => key.to_string(),
                _ => {
                    return Err(Error::MissingKey {
                        row: first + row + 1,
                        column: self.key.to_owned(),
                    })
                }
            };
            let mut object = Map::new();
            let mut deferred = Vec::new();
            for (column, values) in &columns {
                let value = values.get(row).map_err(|detail| Error::Value {
                    key_column: self.key,
                    key: key.clone(),
                    column: column.name.to_owned(),
                    detail,
                })?;
                let Some(value) = value else {
                    continue;
                };
                match column.target {
                    Target::Field(name) => {
                        object.insert(name.to_owned(), value);
                    }
                    Target::Nested(parent, name) => {
                        let parent = object
                            .entry(parent)
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(parent) = parent {
                            parent.insert(name.to_owned(), value);
                        }
                    }
                    Target::First { list, field } => deferred.push((list, field, value)),
                }
            }
            for (list, field, value) in deferred {
                let empty = object
                    .get(list)
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
                if empty {
                    let mut item = Map::new();
                    item.insert(field.to_owned(), value);
                    object.insert(list.to_owned(), Value::Array(vec![Value::Object(item)]));
                }
            }
            rows.push(Encoded { key, object });
        }
        Ok(rows)
    }
}

/// A column's values, normalised to the kind's Arrow type.
enum Values {
    Null,
    Plain(Kind, ArrayRef),
    /// A list of structs: the list, and each known field's values over the flattened structs.
    Structs(ArrayRef, Vec<(&'static str, Values)>),
    /// A struct: the struct, and each known field's values.
    Struct(ArrayRef, Vec<(&'static str, Values)>),
}

impl Values {
    fn read(shape: &Shape, path: &str, kind: Kind, array: &ArrayRef) -> Result<Values> {
        let wrong = |detail: String| Error::WrongType {
            shape: shape.name,
            column: path.to_owned(),
            found: format!("{} ({detail})", array.data_type()),
            expected: kind.expected(),
        };
        if array.data_type() == &DataType::Null {
            return Ok(Values::Null);
        }
        match kind {
            Kind::Structs(columns) => {
                let item = list_item(array.data_type())
                    .cloned()
                    .ok_or_else(|| wrong("not a list".into()))?;
                let list = cast(
                    array,
                    &DataType::List(Arc::new(Field::new_list_field(item, true))),
                )
                .map_err(|e| wrong(e.to_string()))?;
                let items = list.as_list::<i32>().values();
                let mut fields = Vec::new();
                if let Some(structs) = items.as_struct_opt() {
                    let names: Fields = structs.fields().clone();
                    for (inner, values) in names.iter().zip(structs.columns()) {
                        // Validated: every field is one of the shape's.
                        let Some(column) = columns.iter().find(|c| c.name == inner.name()) else {
                            continue;
                        };
                        let path = format!("{path}.{}", inner.name());
                        fields.push((
                            column.name,
                            Values::read(shape, &path, column.kind, values)?,
                        ));
                    }
                }
                Ok(Values::Structs(list, fields))
            }
            Kind::Struct(columns) => {
                let structs = array
                    .as_struct_opt()
                    .ok_or_else(|| wrong("not a struct".into()))?;
                let mut fields = Vec::new();
                for (inner, values) in structs.fields().iter().zip(structs.columns()) {
                    // Validated: every field is one of the shape's.
                    let Some(column) = columns.iter().find(|c| c.name == inner.name()) else {
                        continue;
                    };
                    let path = format!("{path}.{}", inner.name());
                    fields.push((
                        column.name,
                        Values::read(shape, &path, column.kind, values)?,
                    ));
                }
                Ok(Values::Struct(array.clone(), fields))
            }
            _ => {
                let normal = cast(array, &kind.normal()).map_err(|e| wrong(e.to_string()))?;
                Ok(Values::Plain(kind, normal))
            }
        }
    }

    /// The JSON value of row `i` (`None` for a null; JSON text may hold a JSON `null`, which is
    /// a value), or why it has none.
    fn get(&self, i: usize) -> std::result::Result<Option<Value>, String> {
        match self {
            Values::Null => Ok(None),
            Values::Plain(_, array) if array.is_null(i) => Ok(None),
            Values::Plain(kind, array) => self.plain(*kind, array, i).map(Some),
            Values::Structs(list, _) if list.is_null(i) => Ok(None),
            Values::Structs(list, fields) => {
                let list = list.as_list::<i32>();
                let offsets = list.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                let items = list.values();
                let mut out = Vec::with_capacity(end - start);
                for j in start..end {
                    if items.is_null(j) {
                        continue;
                    }
                    let mut object = Map::new();
                    for (name, values) in fields {
                        if let Some(value) = values.get(j).map_err(|e| format!("{name}: {e}"))? {
                            object.insert((*name).to_owned(), value);
                        }
                    }
                    out.push(Value::Object(object));
                }
                Ok(Some(Value::Array(out)))
            }
            Values::Struct(array, _) if array.is_null(i) => Ok(None),
            Values::Struct(_, fields) => {
                let mut object = Map::new();
                for (name, values) in fields {
                    if let Some(value) = values.get(i).map_err(|e| format!("{name}: {e}"))? {
                        object.insert((*name).to_owned(), value);
                    }
                }
                Ok(Some(Value::Object(object)))
            }
        }
    }

    fn plain(&self, kind: Kind, array: &ArrayRef, i: usize) -> std::result::Result<Value, String> {
        match kind {
            Kind::Text => Ok(Value::from(array.as_string::<i32>().value(i))),
            Kind::JsonText => {
                let text = array.as_string::<i32>().value(i);
                serde_json::from_str(text).map_err(|e| format!("{text:?} is not JSON text ({e})"))
            }
            Kind::Int => Ok(Value::from(array.as_primitive::<Int64Type>().value(i))),
            Kind::Bool => Ok(Value::from(array.as_boolean().value(i))),
            Kind::Timestamp => {
                let micros = array
                    .as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>()
                    .value(i);
                rfc3339(micros)
                    .map(Value::from)
                    .ok_or_else(|| format!("{micros} µs is out of range"))
            }
            Kind::TextList => {
                let items = array.as_list::<i32>().value(i);
                let items = items.as_string::<i32>();
                Ok(Value::Array(
                    (0..items.len())
                        .filter(|&j| !items.is_null(j))
                        .map(|j| Value::from(items.value(j)))
                        .collect(),
                ))
            }
            // Read by `get`.
            Kind::Structs(_) | Kind::Struct(_) => Ok(Value::Null),
        }
    }
}

/// µs since the epoch as RFC 3339 UTC (`2024-01-01T00:00:00Z`, fractions only when present).
pub fn rfc3339(micros: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::json::ReaderBuilder;
    use serde_json::json;

    use crate::spec::timestamp_type;

    fn comments_type() -> DataType {
        DataType::List(Arc::new(Field::new_list_field(
            DataType::Struct(
                vec![
                    Field::new("author_id", DataType::Int64, true),
                    Field::new("value", DataType::Utf8, true),
                    Field::new("html_body", DataType::Utf8, true),
                    Field::new("public", DataType::Boolean, true),
                    Field::new("created_at", timestamp_type(), true),
                ]
                .into(),
            ),
            true,
        )))
    }

    fn custom_fields_type() -> DataType {
        DataType::List(Arc::new(Field::new_list_field(
            DataType::Struct(
                vec![
                    Field::new("id", DataType::Int64, true),
                    Field::new("value", DataType::Utf8, true),
                ]
                .into(),
            ),
            true,
        )))
    }

    fn tags_type() -> DataType {
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
    }

    /// A batch of `rows` (JSON, timestamps as µs) with the given columns.
    fn batch(columns: Vec<Field>, rows: &[Value]) -> RecordBatch {
        let schema = Arc::new(Schema::new(columns));
        let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder().unwrap();
        decoder.serialize(rows).unwrap();
        decoder
            .flush()
            .unwrap()
            .unwrap_or_else(|| RecordBatch::new_empty(schema))
    }

    fn text(name: &str) -> Field {
        Field::new(name, DataType::Utf8, true)
    }

    #[test]
    fn a_full_row_becomes_the_import_object() {
        let rows = [json!({
            "external_id": "ext-1", "subject": "Hello", "requester_email": "a@example.com",
            "requester_name": "Ann", "status": "solved", "tags": ["b", "a"],
            "created_at": 1_704_067_200_000_000i64, "assignee_id": 7,
            "comments": [{"author_id": 5, "value": "first", "public": true,
                          "created_at": 1_704_067_200_500_000i64}],
            "custom_fields": [{"id": 1, "value": "\"x\""}, {"id": 2, "value": "[1,2]"}],
        })];
        let batch = batch(
            vec![
                text("external_id"),
                text("subject"),
                text("requester_email"),
                text("requester_name"),
                text("status"),
                Field::new("tags", tags_type(), true),
                Field::new("created_at", timestamp_type(), true),
                Field::new("assignee_id", DataType::Int32, true),
                Field::new("comments", comments_type(), true),
                Field::new("custom_fields", custom_fields_type(), true),
            ],
            &rows,
        );
        let encoded = TICKET_IMPORT.encode(&[batch]).unwrap();
        assert_eq!(encoded.len(), 1);
        assert_eq!(encoded[0].key, "ext-1");
        assert_eq!(
            Value::Object(encoded[0].object.clone()),
            json!({
                "external_id": "ext-1", "subject": "Hello",
                "requester": {"email": "a@example.com", "name": "Ann"},
                "status": "solved", "tags": ["b", "a"],
                "created_at": "2024-01-01T00:00:00Z", "assignee_id": 7,
                "comments": [{"author_id": 5, "value": "first", "public": true,
                              "created_at": "2024-01-01T00:00:00.500Z"}],
                "custom_fields": [{"id": 1, "value": "x"}, {"id": 2, "value": [1, 2]}],
            })
        );
    }

    #[test]
    fn a_description_is_the_first_comment_only_without_comments() {
        let rows = [
            json!({"external_id": "a", "description": "only"}),
            json!({"external_id": "b", "description": "ignored", "comments": [{"value": "c"}]}),
        ];
        let batch = batch(
            vec![
                text("external_id"),
                text("description"),
                Field::new("comments", comments_type(), true),
            ],
            &rows,
        );
        let encoded = TICKET_IMPORT.encode(&[batch]).unwrap();
        assert_eq!(encoded[0].object["comments"], json!([{"value": "only"}]));
        assert_eq!(encoded[1].object["comments"], json!([{"value": "c"}]));
        assert!(!encoded[0].object.contains_key("description"));
    }

    #[test]
    fn validation_names_the_column_or_the_key() {
        let unknown = batch(vec![text("external_id"), text("colour")], &[]);
        let err = TICKET_IMPORT.encode(&[unknown]).unwrap_err();
        assert!(err.to_string().contains("`colour`"), "{err}");

        let missing = batch(vec![text("subject")], &[]);
        let err = TICKET_IMPORT.encode(&[missing]).unwrap_err();
        assert!(matches!(err, Error::MissingColumn { .. }), "{err}");

        let wrong = batch(
            vec![
                text("external_id"),
                Field::new("requester_id", DataType::Utf8, true),
            ],
            &[],
        );
        let err = TICKET_IMPORT.encode(&[wrong]).unwrap_err();
        assert!(err.to_string().contains("`requester_id`"), "{err}");

        let nested = batch(
            vec![
                text("external_id"),
                Field::new(
                    "custom_fields",
                    DataType::List(Arc::new(Field::new_list_field(
                        DataType::Struct(vec![Field::new("colour", DataType::Utf8, true)].into()),
                        true,
                    ))),
                    true,
                ),
            ],
            &[],
        );
        let err = TICKET_IMPORT.encode(&[nested]).unwrap_err();
        assert!(err.to_string().contains("custom_fields.colour"), "{err}");

        let rows = [json!({"external_id": "x"}), json!({"external_id": "x"})];
        let err = TICKET_IMPORT
            .encode(&[batch(vec![text("external_id")], &rows)])
            .unwrap_err();
        assert_eq!(
            err,
            Error::Duplicate {
                column: "external_id".into(),
                key: "x".into()
            }
        );

        let rows = [json!({"external_id": "x"}), json!({"subject": "no key"})];
        let err = TICKET_IMPORT
            .encode(&[batch(vec![text("external_id"), text("subject")], &rows)])
            .unwrap_err();
        assert_eq!(
            err,
            Error::MissingKey {
                row: 2,
                column: "external_id".into()
            }
        );

        let rows = [json!({"external_id": "bad", "custom_fields": [{"id": 1, "value": "{"}]})];
        let err = TICKET_IMPORT
            .encode(&[batch(
                vec![
                    text("external_id"),
                    Field::new("custom_fields", custom_fields_type(), true),
                ],
                &rows,
            )])
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"bad\"") && text.contains("custom_fields"),
            "{text}"
        );
    }

    proptest::proptest! {
        /// Every encoded field equals its source value: strings and ids as given, tags in
        /// order, timestamps as the same instant, custom field values as the JSON they hold.
        #[test]
        fn an_encoded_row_holds_its_source_values(
            rows in proptest::collection::vec(
                (
                    proptest::option::of("[a-zA-Z0-9 éü]{0,12}"),
                    proptest::option::of(proptest::num::i64::ANY),
                    proptest::option::of(proptest::collection::vec("[a-z]{1,6}", 0..4)),
                    proptest::option::of(-62_000_000_000_000_000i64..250_000_000_000_000_000i64),
                    proptest::collection::vec((0i64..1000, proptest::option::of(-1000i64..1000)), 0..3),
                ),
                1..20,
            )
        ) {
            let json_rows: Vec<Value> = rows
                .iter()
                .enumerate()
                .map(|(i, (subject, requester, tags, created, fields))| {
                    json!({
                        "external_id": format!("ext-{i}"),
                        "subject": subject,
                        "requester_id": requester,
                        "tags": tags,
                        "created_at": created,
                        "custom_fields": fields.iter()
                            .map(|(id, v)| json!({"id": id, "value": json!(v).to_string()}))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            let batch = batch(
                vec![
                    text("external_id"),
                    text("subject"),
                    Field::new("requester_id", DataType::Int64, true),
                    Field::new("tags", tags_type(), true),
                    Field::new("created_at", timestamp_type(), true),
                    Field::new("custom_fields", custom_fields_type(), true),
                ],
                &json_rows,
            );
            let encoded = TICKET_IMPORT.encode(&[batch]).unwrap();
            proptest::prop_assert_eq!(encoded.len(), rows.len());
            for (i, ((subject, requester, tags, created, fields), row)) in
                rows.iter().zip(&encoded).enumerate()
            {
                let o = &row.object;
                proptest::prop_assert_eq!(&row.key, &format!("ext-{i}"));
                let (subject, requester, tags) = (
                    subject.as_ref().map(|s| json!(s)),
                    requester.map(|r| json!(r)),
                    tags.as_ref().map(|t| json!(t)),
                );
                proptest::prop_assert_eq!(o.get("subject"), subject.as_ref());
                proptest::prop_assert_eq!(o.get("requester_id"), requester.as_ref());
                proptest::prop_assert_eq!(o.get("tags"), tags.as_ref());
                let instant = o
                    .get("created_at")
                    .and_then(Value::as_str)
                    .map(|t| DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros());
                proptest::prop_assert_eq!(instant, *created);
                let expected: Vec<Value> = fields
                    .iter()
                    .map(|(id, v)| json!({"id": id, "value": v}))
                    .collect();
                proptest::prop_assert_eq!(o.get("custom_fields"), Some(&Value::Array(expected)));
            }
        }
    }

    #[test]
    fn a_ticket_update_is_keyed_by_its_id_with_its_comment_as_an_object() {
        let comment = DataType::Struct(
            vec![
                Field::new("body", DataType::Utf8, true),
                Field::new("public", DataType::Boolean, true),
            ]
            .into(),
        );
        let rows = batch(
            vec![
                Field::new("id", DataType::Int64, false),
                text("priority"),
                Field::new("comment", comment, true),
            ],
            &[
                json!({"id": 7, "priority": "high", "comment": {"body": "hi", "public": null}}),
                json!({"id": 8, "comment": null}),
            ],
        );
        let encoded = TICKET_UPDATE.encode(&[rows]).unwrap();
        assert_eq!(encoded[0].key, "7");
        assert_eq!(
            Value::Object(encoded[0].object.clone()),
            json!({"id": 7, "priority": "high", "comment": {"body": "hi"}})
        );
        assert_eq!(Value::Object(encoded[1].object.clone()), json!({"id": 8}));
        let wrong = batch(
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("comment", DataType::Utf8, true),
            ],
            &[],
        );
        assert!(matches!(
            TICKET_UPDATE.validate(wrong.schema().as_ref()),
            Err(Error::WrongType { .. })
        ));
    }
}
