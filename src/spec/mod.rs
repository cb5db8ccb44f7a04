//! The registry: the streams that read Zendesk and the tables they feed (docs/ARCHITECTURE.md,
//! "Streams and tables").
//!
//! A **stream** is one way of reading Zendesk with one position (`schemas/streams.json`): its
//! endpoint, its kind (cursor export, time export, ...) and the rate budget it draws from. A
//! **table** is one Delta table (`schemas/<table>.json`): its columns and their Arrow types, where
//! each column comes from in Zendesk's JSON, the primary key, the cursor that decides which of two
//! versions of a row is newer, the rule that marks a row deleted, how it is written, and how its
//! rows come out of its stream's pages. Behaviour that differs between tables is a variant of one
//! of these enums, never code per table. The files are compiled into the binary so that it runs
//! from any directory.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

/// Soft-delete flag present in every table.
pub const DELETED_COLUMN: &str = "_deleted";
/// When the row was last written by a sync, present in every table.
pub const SYNCED_AT_COLUMN: &str = "_synced_at";

const STREAMS_FILE: &str = include_str!("../../schemas/streams.json");

/// Every table's schema file, in sync order.
const SCHEMA_FILES: &[(&str, &str)] = &[
    ("tickets", include_str!("../../schemas/tickets.json")),
    ("users", include_str!("../../schemas/users.json")),
    (
        "organizations",
        include_str!("../../schemas/organizations.json"),
    ),
    (
        "ticket_metrics",
        include_str!("../../schemas/ticket_metrics.json"),
    ),
    (
        "ticket_comments",
        include_str!("../../schemas/ticket_comments.json"),
    ),
    (
        "ticket_field_history",
        include_str!("../../schemas/ticket_field_history.json"),
    ),
    (
        "ticket_metric_events",
        include_str!("../../schemas/ticket_metric_events.json"),
    ),
    ("groups", include_str!("../../schemas/groups.json")),
    ("brands", include_str!("../../schemas/brands.json")),
    ("sections", include_str!("../../schemas/sections.json")),
    ("categories", include_str!("../../schemas/categories.json")),
    ("topics", include_str!("../../schemas/topics.json")),
    ("posts", include_str!("../../schemas/posts.json")),
    ("articles", include_str!("../../schemas/articles.json")),
    (
        "ticket_fields",
        include_str!("../../schemas/ticket_fields.json"),
    ),
    (
        "user_fields",
        include_str!("../../schemas/user_fields.json"),
    ),
    (
        "organization_fields",
        include_str!("../../schemas/organization_fields.json"),
    ),
    (
        "ticket_forms",
        include_str!("../../schemas/ticket_forms.json"),
    ),
    (
        "custom_statuses",
        include_str!("../../schemas/custom_statuses.json"),
    ),
    ("macros", include_str!("../../schemas/macros.json")),
    ("triggers", include_str!("../../schemas/triggers.json")),
    (
        "automations",
        include_str!("../../schemas/automations.json"),
    ),
    ("views", include_str!("../../schemas/views.json")),
    (
        "sla_policies",
        include_str!("../../schemas/sla_policies.json"),
    ),
    (
        "group_memberships",
        include_str!("../../schemas/group_memberships.json"),
    ),
    (
        "organization_memberships",
        include_str!("../../schemas/organization_memberships.json"),
    ),
    ("schedules", include_str!("../../schemas/schedules.json")),
    (
        "custom_roles",
        include_str!("../../schemas/custom_roles.json"),
    ),
    ("tags", include_str!("../../schemas/tags.json")),
    (
        "satisfaction_ratings",
        include_str!("../../schemas/satisfaction_ratings.json"),
    ),
    (
        "side_conversations",
        include_str!("../../schemas/side_conversations.json"),
    ),
];

/// How a stream reads Zendesk: each kind is one reader in `zendesk::readers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// `/api/v2/incremental/<object>/cursor.json`: `start_time` once, then `cursor=after_cursor`
    /// until `end_of_stream`.
    CursorExport,
    /// `/api/v2/incremental/<object>.json?start_time=`: the next `start_time` is `end_time`, and the
    /// boundary second is repeated by the next page.
    TimeExport,
    /// A list read whole on every run: cursor-paginated (`page[size]`, `links.next`,
    /// `meta.has_more`), or in one request where Zendesk documents no pagination (`paging`).
    List,
    /// The children of every parent that changed since the stream's position (`{parent}` in
    /// the path), the parents read from a table of the lake (`parents`).
    Children,
}

/// How a list stream pages through its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Paging {
    /// `page[size]` (at most 100) and the next page's cursor until `meta.has_more` is false.
    #[default]
    Cursor,
    /// One request answers the whole list (ticket forms, custom statuses, SLA policies, ...):
    /// no paging parameter is sent, and an answer that offers a next page fails the stream
    /// rather than list part of it.
    #[serde(rename = "none")]
    Unpaginated,
}

/// Which of Zendesk's rate budgets a request draws from (docs/ARCHITECTURE.md, "Zendesk facts" 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitClass {
    /// The account-wide budget only.
    Account,
    /// The incremental-export budget (and the account budget).
    Incremental,
}

/// One way of reading Zendesk, with one position, feeding one or more tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    #[serde(rename = "stream")]
    pub name: String,
    pub description: String,
    pub kind: StreamKind,
    pub path: String,
    /// Fixed query parameters of every request (`exclude_deleted=false`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Key of the array of records in a response page.
    pub records_key: String,
    pub limit_class: LimitClass,
    /// Lists: how the endpoint pages (`cursor` unless it says `none`).
    #[serde(default)]
    pub paging: Paging,
    /// Field of a record whose largest value is the stream's watermark (a timestamp or unix
    /// seconds); for time exports also the second that pages never split.
    pub watermark_field: String,
    /// Children streams: the lake table whose changed rows are the parents.
    #[serde(default)]
    pub parents: Option<Parents>,
    /// Lists filtered by time: the parameter that asks for records from a time on, and the
    /// window read again on each run (`since`).
    #[serde(default)]
    pub since: Option<Since>,
    /// The webhook event types that mean the stream has news, as prefixes of Zendesk's types
    /// (`zen:event-type:ticket.`): `listen` runs the stream soon after one is delivered.
    #[serde(default)]
    pub webhook_events: Vec<String>,
    /// The exact event types `webhook register` subscribes to for this stream: Zendesk takes no
    /// wildcards, so the prefixes above are spelled out, from Zendesk's reference ("Webhook
    /// event types"), keeping those that change a column of the stream's tables. Each starts
    /// with one of `webhook_events`, so a delivery of it runs this stream.
    #[serde(default)]
    pub webhook_subscriptions: Vec<String>,
    /// Whether Zendesk's triggers act on this stream's records: an account that cannot
    /// subscribe a webhook to its event types reaches it through a trigger instead (triggers
    /// act on tickets only).
    #[serde(default)]
    pub webhook_via_trigger: bool,
}

impl Stream {
    /// Whether a webhook event of `event_type` means this stream has news.
    pub fn follows(&self, event_type: &str) -> bool {
        self.webhook_events
            .iter()
            .any(|p| event_type.starts_with(p.as_str()))
    }
}

/// A list read from a time on rather than whole (`/api/v2/satisfaction_ratings.json?start_time=`):
/// `param` is sent with the newest `field` (a timestamp) the stream has seen, less
/// `overlap_days`, since Zendesk filters on the records' creation and a record changes after it
/// (a rating answered days after it was offered). The first run sends the pipeline's
/// `start_time`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub param: String,
    pub field: String,
    pub overlap_days: i64,
}

/// Where a children stream finds its parents: the rows of a lake table, in the order of a
/// timestamp column, with their `_deleted` flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parents {
    pub table: String,
    pub cursor: String,
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
    /// A comment's attachments: `list<struct<id: int64, file_name, content_url, content_type:
    /// string, size: int64>>`.
    #[serde(rename = "attachments")]
    Attachments,
    /// A schedule's business hours: `list<struct<start_time: int64, end_time: int64>>`
    /// (minutes since Sunday midnight).
    #[serde(rename = "intervals")]
    Intervals,
}

/// The fields of an attachment kept in an `attachments` column.
pub const ATTACHMENT_FIELDS: [(&str, ColumnType); 5] = [
    ("id", ColumnType::Int64),
    ("file_name", ColumnType::String),
    ("content_url", ColumnType::String),
    ("content_type", ColumnType::String),
    ("size", ColumnType::Int64),
];

/// The fields of an interval kept in an `intervals` column.
pub const INTERVAL_FIELDS: [(&str, ColumnType); 2] = [
    ("start_time", ColumnType::Int64),
    ("end_time", ColumnType::Int64),
];

/// Arrow's name for list items as Delta writes them back, so that what we write is what we read.
const LIST_ITEM: &str = "element";

impl ColumnType {
    /// The fields of the structs of a list-of-structs column kept field by field (not
    /// `custom_fields`, whose values are JSON text of any type).
    pub fn struct_fields(self) -> Option<&'static [(&'static str, ColumnType)]> {
        match self {
            ColumnType::Attachments => Some(&ATTACHMENT_FIELDS),
            ColumnType::Intervals => Some(&INTERVAL_FIELDS),
            _ => None,
        }
    }

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
            ColumnType::Attachments | ColumnType::Intervals => {
                let fields = self.struct_fields().unwrap_or_default();
                DataType::List(Arc::new(Field::new(
                    LIST_ITEM,
                    DataType::Struct(Fields::from(
                        fields
                            .iter()
                            .map(|(name, kind)| Field::new(*name, kind.data_type(), true))
                            .collect::<Vec<_>>(),
                    )),
                    true,
                )))
            }
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

/// How a table's rows come out of its stream's pages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rows {
    /// Each record of the page is a row.
    Records,
    /// Each item of the array `key` sideloaded beside the records (`include=<key>`) is a row.
    Sideload { key: String },
    /// Each child event (`child_events` of a record) whose `event_type` is one of `types` is a
    /// row; `parent` fills columns the child lacks from fields of its parent record (column →
    /// parent field), and `include` is what the stream must ask for to get these children.
    ChildEvents {
        types: Vec<String>,
        #[serde(default)]
        include: Option<String>,
        #[serde(default)]
        parent: BTreeMap<String, String>,
    },
    /// Each `Create` or `Change` child event is one field change (`field_name`, `value`,
    /// `previous_value`, `event_type`), read from either of Zendesk's shapes: the audit shape
    /// (`field_name`, `value`) or the keyed shape (the field as the key, tags as `added_tags`
    /// and `removed_tags`); `parent` as for child events.
    FieldChanges {
        #[serde(default)]
        parent: BTreeMap<String, String>,
    },
}

impl Rows {
    /// The `include` parameter the stream must send for these rows, if any.
    pub fn include(&self) -> Option<&str> {
        match self {
            Rows::Records | Rows::FieldChanges { .. } => None,
            Rows::Sideload { key } => Some(key),
            Rows::ChildEvents { include, .. } => include.as_deref(),
        }
    }
}

/// Changes to rows already in the table that a page carries apart from whole rows: a few
/// columns of the rows whose `column` matches, set by a later event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Patches {
    /// Child events of type `event_type` (`CommentPrivacyChange`) set the columns `set` (from the
    /// child's fields of the same names) of the row whose `column` equals the child's `key`.
    ChildEvents {
        event_type: String,
        key: String,
        column: String,
        set: Vec<String>,
    },
    /// Records of the page that `rule` marks deleted (a deleted ticket) mark deleted the rows
    /// whose `column` equals their `id` (its metric set, which Zendesk stops sending).
    DeletedParents { column: String, rule: DeleteRule },
}

impl Patches {
    /// The column a patch matches rows by.
    pub fn column(&self) -> &str {
        match self {
            Patches::ChildEvents { column, .. } | Patches::DeletedParents { column, .. } => column,
        }
    }

    /// The columns a patch sets (besides `_synced_at`).
    pub fn sets(&self) -> Vec<&str> {
        match self {
            Patches::ChildEvents { set, .. } => set.iter().map(String::as_str).collect(),
            Patches::DeletedParents { .. } => vec![DELETED_COLUMN],
        }
    }
}

/// How a table's commits change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Merge by primary key: new keys are inserted, a row is replaced by a newer version of it.
    Upsert,
    /// The stream lists every row on every run: upsert what changed (a listed row equal to the
    /// stored one is not rewritten), and mark rows missing from a complete listing `_deleted`.
    /// A listing is the account's state when it was read, so a listed record may lack the
    /// cursor field (some of Zendesk's answers omit `updated_at`): its row then replaces the
    /// stored one whatever the cursors say.
    Snapshot,
}

fn default_true() -> bool {
    true
}

/// One Delta table and where its rows come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    #[serde(rename = "table")]
    pub name: String,
    pub description: String,
    /// The stream that feeds it (`schemas/streams.json`).
    pub stream: String,
    pub rows: Rows,
    pub write: WriteMode,
    /// Column changes to rows already in the table, carried by later records.
    #[serde(default)]
    pub patches: Option<Patches>,
    /// A list stream (`schemas/streams.json`) of every live row, read whole after the table's
    /// own stream on each run: rows missing from it are marked deleted (Help Center's article
    /// export reports neither deleted nor archived articles).
    #[serde(default)]
    pub live_listing: Option<String>,
    /// Whether the table is synced when the pipeline names no tables (side conversations cost
    /// a request per changed ticket, so they are opt-in).
    #[serde(default = "default_true")]
    pub by_default: bool,
    pub primary_key: String,
    /// The timestamp column that tells which of two versions of a row is newer; a snapshot
    /// table whose listing carries no timestamp (tags) names `_synced_at`: the row listed last
    /// is the newest.
    pub cursor_field: String,
    /// Field whose value stands in for a missing cursor field (tickets from list and show
    /// endpoints carry no `generated_timestamp`; `updated_at` is its lower bound).
    #[serde(default)]
    pub cursor_fallback: Option<String>,
    /// When a row is deleted by its own values; `None` when only patches or the listing say so.
    #[serde(default)]
    pub deleted: Option<DeleteRule>,
    pub columns: Vec<Column>,
    #[serde(skip)]
    schema: Option<SchemaRef>,
}

impl Table {
    /// Parse and validate a schema file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut spec: Table = serde_json::from_str(text).map_err(|e| e.to_string())?;
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
            // A listing without timestamps (tags): the row listed last is the newest.
            None if spec.cursor_field == SYNCED_AT_COLUMN && spec.write == WriteMode::Snapshot => {}
            _ => {
                return Err(format!(
                    "cursor field {} must be a timestamp column (or `{SYNCED_AT_COLUMN}` for a \
                     snapshot table whose listing carries none)",
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
        if let Some(rule) = &spec.deleted {
            if find(&rule.column).is_none() {
                return Err(format!("delete rule names unknown column {}", rule.column));
            }
        }
        if spec.live_listing.is_some() && spec.write == WriteMode::Snapshot {
            return Err("a snapshot table is its own listing: live_listing is for upserts".into());
        }
        if let Some(patches) = &spec.patches {
            let known = |name: &str| find(name).is_some() || name == DELETED_COLUMN;
            if !known(patches.column()) || !patches.sets().iter().all(|c| known(c)) {
                return Err("patches name unknown columns".into());
            }
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

struct Registry {
    streams: Vec<Stream>,
    tables: Vec<Table>,
}

fn load() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // The files are compiled in and validated by the `registry_is_valid` test.
        let streams: Vec<Stream> = serde_json::from_str(STREAMS_FILE)
            .unwrap_or_else(|e| panic!("schemas/streams.json is invalid: {e}"));
        let tables = SCHEMA_FILES
            .iter()
            .map(|(name, text)| {
                Table::from_json(text)
                    .unwrap_or_else(|e| panic!("schemas/{name}.json is invalid: {e}"))
            })
            .collect();
        Registry { streams, tables }
    })
}

/// Every table this build knows, in sync order.
pub fn tables() -> &'static [Table] {
    &load().tables
}

/// Every stream this build knows.
pub fn streams() -> &'static [Stream] {
    &load().streams
}

/// Look a table up by name.
pub fn find(name: &str) -> Option<&'static Table> {
    tables().iter().find(|t| t.name == name)
}

/// Look a stream up by name.
pub fn stream(name: &str) -> Option<&'static Stream> {
    streams().iter().find(|s| s.name == name)
}

/// Names of every known table.
pub fn names() -> Vec<&'static str> {
    tables().iter().map(|t| t.name.as_str()).collect()
}

/// The README's list of tables, rendered from the registry (a unit test keeps README.md equal to
/// it): table, endpoint, how it is read, key, watermark, when a row is deleted and what it costs
/// in requests.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| table | endpoint | read as | key | watermark | deleted when | requests per run |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for table in tables() {
        let stream = table.source();
        let read_as = match (&table.rows, stream.kind) {
            (Rows::Records, StreamKind::CursorExport) => "cursor export".to_owned(),
            (Rows::Records, StreamKind::TimeExport) => "time export".to_owned(),
            (Rows::Records, StreamKind::List) => match &stream.since {
                Some(since) => format!(
                    "list from `{}` (newest `{}` seen − {} days)",
                    since.param, since.field, since.overlap_days
                ),
                None => "list, read whole".to_owned(),
            },
            (Rows::Records, StreamKind::Children) => format!(
                "per changed `{}` row",
                stream.parents.as_ref().map_or("?", |p| p.table.as_str())
            ),
            (Rows::Sideload { key }, _) => format!("`{key}` sideload of `{}`", stream.name),
            (Rows::ChildEvents { types, .. }, _) => {
                format!("{} child events of `{}`", types.join("/"), stream.name)
            }
            (Rows::FieldChanges { .. }, _) => {
                format!("Create/Change child events of `{}`", stream.name)
            }
        };
        let vanished = if table.write == WriteMode::Snapshot {
            ", or gone from the listing"
        } else {
            ""
        };
        let missing = table
            .live_listing
            .as_deref()
            .and_then(self::stream)
            .map(|live| format!("missing from `{}`", live.path));
        let deleted = match (&table.deleted, &table.patches) {
            (Some(rule), _) => match &rule.equals {
                Some(value) => format!("`{}` = {value}{vanished}", rule.column),
                None => format!("`{}` set{vanished}", rule.column),
            },
            (None, _) if table.write == WriteMode::Snapshot => "gone from the listing".to_owned(),
            (None, _) if missing.is_some() => missing.clone().unwrap_or_default(),
            (None, _) if stream.kind == StreamKind::Children => {
                "its ticket is deleted, or gone from its ticket's list".to_owned()
            }
            (None, Some(Patches::DeletedParents { .. })) => "its ticket is deleted".to_owned(),
            (None, _) => "never (history)".to_owned(),
        };
        // A stream's requests are counted once, at its first table.
        let siblings: Vec<&str> = tables()
            .iter()
            .filter(|t| t.stream == table.stream)
            .map(|t| t.name.as_str())
            .collect();
        let listing = if missing.is_some() {
            " + 1 per 100 live"
        } else {
            ""
        };
        let requests = if siblings.first() == Some(&table.name.as_str()) {
            match stream.kind {
                StreamKind::List => match (stream.paging, &stream.since) {
                    (Paging::Cursor, Some(since)) => format!(
                        "1 per 100 `{}` created since the last run or in the {} days before",
                        stream.records_key, since.overlap_days
                    ),
                    (Paging::Cursor, None) => format!("1 per 100 `{}`", stream.records_key),
                    (Paging::Unpaginated, _) => "1 (unpaginated)".to_owned(),
                },
                StreamKind::Children => "1 per changed ticket (opt-in)".to_owned(),
                _ => format!("1 per 1000 changed `{}`{listing}", stream.records_key),
            }
        } else {
            format!("none beyond `{}`'s", siblings[0])
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {read_as} | `{}` | `{}` | {deleted} | {requests} |\n",
            table.name, stream.path, table.primary_key, table.cursor_field
        ));
    }
    out
}

impl Table {
    /// The stream that feeds this table.
    pub fn source(&self) -> &'static Stream {
        // `registry_is_valid` checks that every table names a known stream.
        stream(&self.stream)
            .unwrap_or_else(|| panic!("table {}: unknown stream {}", self.name, self.stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_valid() {
        for (name, text) in SCHEMA_FILES {
            let spec = Table::from_json(text).unwrap();
            assert_eq!(&spec.name, name, "table name must match the file name");
            assert!(
                stream(&spec.stream).is_some(),
                "{name}: unknown stream {}",
                spec.stream
            );
            let schema = spec.schema();
            assert_eq!(schema.fields().len(), spec.columns.len() + 2);
            let mut names: Vec<_> = spec.columns.iter().map(|c| &c.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), spec.columns.len(), "{name}: duplicate column");
        }
    }

    #[test]
    fn only_cursor_paginated_lists_are_read_from_a_time_on() {
        for stream in streams() {
            if let Some(since) = &stream.since {
                assert_eq!(stream.kind, StreamKind::List, "{}", stream.name);
                assert_eq!(stream.paging, Paging::Cursor, "{}", stream.name);
                assert!(since.overlap_days >= 0, "{}", stream.name);
            }
        }
        let ratings = stream("satisfaction_ratings")
            .unwrap()
            .since
            .as_ref()
            .unwrap();
        assert_eq!(
            (ratings.param.as_str(), ratings.field.as_str()),
            ("start_time", "created_at")
        );
    }

    #[test]
    fn a_listing_without_timestamps_is_ordered_by_its_sync_time_only_in_a_snapshot() {
        let tags = find("tags").unwrap();
        assert_eq!(tags.cursor_field, SYNCED_AT_COLUMN);
        assert!(!tags.schema().field_with_name("name").unwrap().is_nullable());
        let text = include_str!("../../schemas/tags.json").replace("\"snapshot\"", "\"upsert\"");
        assert!(Table::from_json(&text)
            .unwrap_err()
            .contains("cursor field"));
    }

    #[test]
    fn only_lists_are_read_unpaginated() {
        for stream in streams() {
            assert!(
                stream.paging == Paging::Cursor || stream.kind == StreamKind::List,
                "{}: `paging` is a list's",
                stream.name
            );
        }
        let single: Vec<&str> = streams()
            .iter()
            .filter(|s| s.paging == Paging::Unpaginated)
            .map(|s| s.name.as_str())
            .collect();
        assert!(single.contains(&"custom_statuses"), "{single:?}");
    }

    #[test]
    fn webhook_subscriptions_are_exact_types_that_run_their_stream() {
        for stream in streams() {
            let mut seen = std::collections::BTreeSet::new();
            for subscription in &stream.webhook_subscriptions {
                assert!(
                    stream.follows(subscription),
                    "{}: {subscription} matches none of webhook_events",
                    stream.name
                );
                let name = subscription.rsplit('.').next().unwrap_or_default();
                assert!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{}: {subscription} is not one exact event type",
                    stream.name
                );
                assert!(
                    seen.insert(subscription),
                    "{}: {subscription} twice",
                    stream.name
                );
            }
            assert_eq!(
                stream.webhook_events.is_empty(),
                stream.webhook_subscriptions.is_empty(),
                "{}: a stream that follows events subscribes to some, and only then",
                stream.name
            );
            assert!(
                !stream.webhook_via_trigger || !stream.webhook_subscriptions.is_empty(),
                "{}: a trigger stands in for subscriptions it does not have",
                stream.name
            );
        }
    }

    #[test]
    fn readme_lists_every_table_as_the_registry_defines_it() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's table list differs from schemas/: replace it with\n{table}"
        );
    }

    #[test]
    fn rejects_cursor_that_is_not_a_timestamp() {
        let text = SCHEMA_FILES[0].1.replace(
            "\"cursor_field\": \"generated_timestamp\"",
            "\"cursor_field\": \"subject\"",
        );
        assert!(Table::from_json(&text)
            .unwrap_err()
            .contains("cursor field"));
    }

    #[test]
    fn delete_rules() {
        let rule = find("organizations").unwrap().deleted.clone().unwrap();
        assert!(rule.is_deleted(&serde_json::json!("2024-01-01T00:00:00Z")));
        assert!(!rule.is_deleted(&serde_json::Value::Null));
        let rule = find("users").unwrap().deleted.clone().unwrap();
        assert!(rule.is_deleted(&serde_json::json!(false)));
        assert!(!rule.is_deleted(&serde_json::json!(true)));
    }
}
