//! The registry of Zendesk objects: one entry per table, each defined by `schemas/<object>.json`.
//!
//! A schema file is the one place that defines a table: its columns and their Arrow types, where a
//! column comes from in Zendesk's JSON, the primary key, the cursor (watermark) field, the rule that
//! marks a record deleted and the endpoint that exports it. Behaviour that differs between objects
//! is a variant of [`EndpointKind`], never code per object. The files are compiled into the binary
//! so that it runs from any directory.

use std::sync::{Arc, OnceLock};

use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

/// Soft-delete flag present in every table.
pub const DELETED_COLUMN: &str = "_deleted";
/// When the row was last written by a sync, present in every table.
pub const SYNCED_AT_COLUMN: &str = "_synced_at";

const SCHEMA_FILES: &[(&str, &str)] = &[
    ("tickets", include_str!("../schemas/tickets.json")),
    ("users", include_str!("../schemas/users.json")),
    (
        "organizations",
        include_str!("../schemas/organizations.json"),
    ),
];

/// How an object is read from Zendesk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// `/api/v2/incremental/<object>/cursor.json`: `start_time` once, then `cursor=after_cursor`
    /// until `end_of_stream`.
    CursorExport,
    /// `/api/v2/incremental/<object>.json?start_time=`: the next `start_time` is `end_time`, and the
    /// boundary second is repeated by the next page.
    TimeExport,
}

/// Which of Zendesk's rate budgets a request draws from (DESIGN.md §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitClass {
    /// The account-wide budget only.
    Account,
    /// The incremental-export budget (and the account budget).
    Incremental,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub path: String,
    /// Key of the array of records in a response page.
    pub records_key: String,
    pub limit_class: LimitClass,
}

/// The rule that marks a record soft-deleted, evaluated on the decoded column value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRule {
    pub column: String,
    /// Deleted when the column equals this JSON value.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// Deleted when the column is set (not null).
    #[serde(default)]
    pub not_null: bool,
}

impl DeleteRule {
    pub fn is_deleted(&self, value: &serde_json::Value) -> bool {
        if self.not_null && !value.is_null() {
            return true;
        }
        matches!(&self.equals, Some(expected) if expected == value)
    }
}

/// The type of a column, as written in the schema file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ColumnType {
    #[serde(rename = "int64")]
    Int64,
    #[serde(rename = "float64")]
    Float64,
    #[serde(rename = "boolean")]
    Boolean,
    #[serde(rename = "string")]
    String,
    /// `timestamp[us, UTC]`, from an RFC 3339 string or unix seconds.
    #[serde(rename = "timestamp")]
    Timestamp,
    /// Any JSON value kept as its JSON text.
    #[serde(rename = "json")]
    Json,
    #[serde(rename = "list<string>")]
    ListString,
    #[serde(rename = "list<int64>")]
    ListInt64,
    /// Zendesk's `[{"id": .., "value": ..}]`: `list<struct<id: int64, value: string>>`, each value
    /// kept as JSON text because its type differs from field to field.
    #[serde(rename = "custom_fields")]
    CustomFields,
}

/// Arrow's name for list items as Delta writes them back, so that what we write is what we read.
const LIST_ITEM: &str = "element";

impl ColumnType {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Timestamp => timestamp_type(),
            ColumnType::ListString => {
                DataType::List(Arc::new(Field::new(LIST_ITEM, DataType::Utf8, true)))
            }
            ColumnType::ListInt64 => {
                DataType::List(Arc::new(Field::new(LIST_ITEM, DataType::Int64, true)))
            }
            ColumnType::CustomFields => DataType::List(Arc::new(Field::new(
                LIST_ITEM,
                DataType::Struct(Fields::from(vec![
                    Field::new("id", DataType::Int64, true),
                    Field::new("value", DataType::Utf8, true),
                ])),
                true,
            ))),
        }
    }
}

/// `timestamp[us, UTC]`, the type of every timestamp column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Dotted path in the record when it differs from `name` (`via.channel`).
    #[serde(default)]
    pub path: Option<String>,
}

impl Column {
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.name)
    }
}

/// One Zendesk object and its table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    #[serde(rename = "object")]
    pub name: String,
    pub description: String,
    pub endpoint: Endpoint,
    pub primary_key: String,
    pub cursor_field: String,
    /// Field whose value stands in for a missing cursor field (tickets from list and show
    /// endpoints carry no `generated_timestamp`; `updated_at` is its lower bound).
    #[serde(default)]
    pub cursor_fallback: Option<String>,
    pub deleted: DeleteRule,
    pub columns: Vec<Column>,
    #[serde(skip)]
    schema: Option<SchemaRef>,
}

impl ObjectSpec {
    /// Parse and validate a schema file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut spec: ObjectSpec = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let find = |name: &str| spec.column(name);
        match find(&spec.primary_key) {
            Some(c) if c.kind == ColumnType::Int64 || c.kind == ColumnType::String => {}
            _ => {
                return Err(format!(
                    "primary key {} must be an int64 or string column",
                    spec.primary_key
                ))
            }
        }
        match find(&spec.cursor_field) {
            Some(c) if c.kind == ColumnType::Timestamp => {}
            _ => {
                return Err(format!(
                    "cursor field {} must be a timestamp column",
                    spec.cursor_field
                ))
            }
        }
        if let Some(fallback) = &spec.cursor_fallback {
            if !matches!(find(fallback), Some(c) if c.kind == ColumnType::Timestamp) {
                return Err(format!(
                    "cursor fallback {fallback} must be a timestamp column"
                ));
            }
        }
        if find(&spec.deleted.column).is_none() {
            return Err(format!(
                "delete rule names unknown column {}",
                spec.deleted.column
            ));
        }
        let mut fields: Vec<Field> = spec
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.kind.data_type(), c.name != spec.primary_key))
            .collect();
        fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
        fields.push(Field::new(SYNCED_AT_COLUMN, timestamp_type(), false));
        spec.schema = Some(Arc::new(Schema::new(fields)));
        Ok(spec)
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The Arrow schema of the table: the columns, then `_deleted` and `_synced_at`.
    pub fn schema(&self) -> SchemaRef {
        // Set by `from_json`, the only constructor.
        self.schema
            .clone()
            .unwrap_or_else(|| Arc::new(Schema::empty()))
    }
}

/// Every object this build knows, in sync order.
pub fn registry() -> &'static [ObjectSpec] {
    static REGISTRY: OnceLock<Vec<ObjectSpec>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        SCHEMA_FILES
            .iter()
            .map(|(name, text)| {
                // The files are compiled in and validated by the `registry_is_valid` test.
                ObjectSpec::from_json(text)
                    .unwrap_or_else(|e| panic!("schemas/{name}.json is invalid: {e}"))
            })
            .collect()
    })
}

/// Look an object up by its table name.
pub fn find(name: &str) -> Option<&'static ObjectSpec> {
    registry().iter().find(|o| o.name == name)
}

/// Names of every known object.
pub fn names() -> Vec<&'static str> {
    registry().iter().map(|o| o.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_valid() {
        for (name, text) in SCHEMA_FILES {
            let spec = ObjectSpec::from_json(text).unwrap();
            assert_eq!(&spec.name, name, "object name must match the file name");
            let schema = spec.schema();
            assert_eq!(schema.fields().len(), spec.columns.len() + 2);
            let mut names: Vec<_> = spec.columns.iter().map(|c| &c.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), spec.columns.len(), "{name}: duplicate column");
        }
    }

    #[test]
    fn rejects_cursor_that_is_not_a_timestamp() {
        let text = SCHEMA_FILES[0].1.replace(
            "\"cursor_field\": \"generated_timestamp\"",
            "\"cursor_field\": \"subject\"",
        );
        assert!(ObjectSpec::from_json(&text)
            .unwrap_err()
            .contains("cursor field"));
    }

    #[test]
    fn delete_rules() {
        let rule = find("organizations").unwrap().deleted.clone();
        assert!(rule.is_deleted(&serde_json::json!("2024-01-01T00:00:00Z")));
        assert!(!rule.is_deleted(&serde_json::Value::Null));
        let rule = find("users").unwrap().deleted.clone();
        assert!(rule.is_deleted(&serde_json::json!(false)));
        assert!(!rule.is_deleted(&serde_json::json!(true)));
    }
}
