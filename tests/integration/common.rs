//! Helpers shared by the integration tests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use zendesk_lake::arrow::array::RecordBatch;
use zendesk_lake::arrow::compute::cast;
use zendesk_lake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use zendesk_lake::arrow::json::{ArrayWriter, ReaderBuilder};
use zendesk_lake::config::{Overrides, PipelineFile, Settings};
use zendesk_lake::lake::Lake;
use zendesk_lake::sim::{SimConfig, SimServer, Simulator};
use zendesk_lake::spec::{self, ColumnType};
use zendesk_lake::sync::{self, Outcome, SyncReport};
use zendesk_lake::zendesk::writers::jobs::Poll;

/// The three tables of the first version, whose tests check their own semantics.
pub const OBJECTS: [&str; 3] = ["tickets", "users", "organizations"];

/// The tables most scenarios sync: every shape of stream (cursor exports, one with a sideload
/// feeding a second table; a time export; the ticket-event export feeding two tables; a list),
/// few enough that the crash, fault and store scenarios stay fast. tables.rs covers the rest.
pub const CORE: [&str; 7] = [
    "tickets",
    "users",
    "organizations",
    "ticket_metrics",
    "ticket_comments",
    "ticket_field_history",
    "groups",
];

/// Every table a pipeline syncs when it names none (side conversations are opt-in).
pub fn all_tables() -> Vec<&'static str> {
    spec::tables()
        .iter()
        .filter(|t| t.by_default)
        .map(|t| t.name.as_str())
        .collect()
}

/// Whether a table is listed whole on every run (its rows are fetched again each time).
pub fn is_snapshot(table: &str) -> bool {
    spec::find(table).unwrap().write == spec::WriteMode::Snapshot
}

pub async fn start(config: SimConfig) -> (Simulator, SimServer) {
    let sim = Simulator::new(config);
    let server = sim.serve(0).await.expect("simulator starts");
    (sim, server)
}

/// The binary, which tests of a command run as a scheduler would.
pub const BIN: &str = env!("CARGO_BIN_EXE_zendesk-lake");

/// Polls of a job as fast as the simulator answers them.
pub const FAST_POLL: Poll = Poll {
    first: Duration::from_millis(5),
    max: Duration::from_millis(20),
};

/// A simulated account on loopback and a lake in a temporary directory (not created until
/// something is written to it): where the tests of the write path and of `listen` start.
pub struct Scene {
    pub sim: Simulator,
    pub server: SimServer,
    config: SimConfig,
    dir: tempfile::TempDir,
}

impl Scene {
    pub async fn new(config: SimConfig) -> Scene {
        let (sim, server) = start(config.clone()).await;
        Scene {
            sim,
            server,
            config,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The [`small`] account.
    pub async fn small() -> Scene {
        Scene::new(small()).await
    }

    /// The temporary directory, which holds the lake and any file a test adds.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn lake(&self) -> PathBuf {
        self.dir().join("lake")
    }

    /// [`settings`] of this account and lake.
    pub fn settings(&self) -> Settings {
        settings(&self.server, &self.lake(), "")
    }

    /// The pipeline file of [`Scene::settings`], written in the directory, for the binary.
    pub fn pipeline(&self) -> PathBuf {
        let path = self.dir().join("pipeline.toml");
        std::fs::write(&path, pipeline_toml(&self.lake(), "")).unwrap();
        path
    }

    /// The binary with the account's credentials, warnings logged and nothing else of this
    /// process's environment.
    pub fn binary(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BIN);
        command
            .env_clear()
            .envs(self.config.env(self.server.base_url()))
            .env("RUST_LOG", "warn");
        command
    }
}

/// JSON rows as one batch of `schema`.
pub fn batch(schema: SchemaRef, rows: &[Value]) -> RecordBatch {
    let mut decoder = ReaderBuilder::new(schema).build_decoder().unwrap();
    decoder.serialize(rows).unwrap();
    decoder.flush().unwrap().unwrap()
}

/// Write `batch` to the Delta table `name` of the lake at `lake`, as a team writes its own
/// tables beside the product's.
pub async fn write_table(lake: &Path, name: &str, batch: RecordBatch) {
    let url = open_lake(lake).table_url(name);
    deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .write(vec![batch])
        .await
        .expect("table written");
}

/// Timestamps as the lake keeps them: µs, UTC.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub fn small() -> SimConfig {
    SimConfig {
        tickets: 240,
        users: 90,
        organizations: 45,
        ..SimConfig::default()
    }
}

/// Settings for a test run: the simulator's URL and credentials, small pages (many pages and
/// several commits per object), fast retries and no rate budget to wait for. `extra_toml` adds
/// keys of the `[zendesk]` section.
pub fn settings(server: &SimServer, lake: &Path, extra_toml: &str) -> Settings {
    let mut settings = settings_all(server, lake, extra_toml);
    settings.tables.retain(|t| CORE.contains(&t.name.as_str()));
    settings
}

/// The pipeline file of [`settings`]: small pages and commits, fast retries, no rate budget.
pub fn pipeline_toml(lake: &Path, extra_toml: &str) -> String {
    // Faults hit requests by their global number, and objects interleave: allow enough
    // attempts that one request meeting fault after fault stays vanishingly unlikely.
    let attempts = if extra_toml.contains("max_attempts") {
        ""
    } else {
        "max_attempts = 12"
    };
    format!(
        r#"
lake = "{}"
[sync]
page_size = 25
commit_rows = 30
[zendesk]
account_requests_per_minute = 1000000
incremental_requests_per_minute = 1000000
retry_base_ms = 5
retry_max_secs = 1
{attempts}
{extra_toml}
"#,
        lake.display()
    )
}

/// [`settings`] with every default table.
pub fn settings_all(server: &SimServer, lake: &Path, extra_toml: &str) -> Settings {
    let toml = pipeline_toml(lake, extra_toml);
    let file = PipelineFile::parse(&toml, "test").expect("test pipeline parses");
    let env = SimConfig::default().env(server.base_url());
    let mut settings =
        Settings::resolve(file, Overrides::default(), &|name| env.get(name).cloned())
            .expect("test settings resolve");
    settings.storage = open_lake(lake).storage().clone();
    settings
}

pub async fn sync_ok(settings: &Settings) -> SyncReport {
    let report = sync::run(settings).await.expect("sync runs");
    for object in &report.tables {
        assert_eq!(
            object.outcome,
            Outcome::Ok,
            "{}: {:?}",
            object.table,
            object.outcome
        );
    }
    report
}

/// A batch with its timestamp columns as µs since the epoch, so that rows compare with
/// expectations computed from the simulator without formatting timestamps.
fn timestamps_as_micros(batch: &RecordBatch) -> RecordBatch {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if let DataType::Timestamp(..) = field.data_type() {
            fields.push(Field::new(field.name(), DataType::Int64, true));
            columns.push(cast(column, &DataType::Int64).expect("timestamp casts to int64"));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).expect("same rows")
}

/// Rows of batches as JSON objects keyed by id, without `_synced_at` (the only column that
/// legitimately differs between two copies of the same data). Timestamps are µs since the
/// epoch; null values are absent.
pub fn rows_by_id(batches: &[RecordBatch]) -> BTreeMap<String, Map<String, Value>> {
    rows_by_key(batches, "id")
}

/// [`rows_by_id`] for a table keyed by `key` (`tags.name`).
pub fn rows_by_key(batches: &[RecordBatch], key: &str) -> BTreeMap<String, Map<String, Value>> {
    let mut writer = ArrayWriter::new(Vec::new());
    for batch in batches {
        writer
            .write(&timestamps_as_micros(batch))
            .expect("batch serialises");
    }
    writer.finish().expect("json array finishes");
    let bytes = writer.into_inner();
    let rows: Vec<Map<String, Value>> = if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&bytes).expect("arrow json parses")
    };
    let total = rows.len();
    let by_id: BTreeMap<String, Map<String, Value>> = rows
        .into_iter()
        .map(|mut row| {
            row.remove(spec::SYNCED_AT_COLUMN);
            (key_text(&row[key]), row)
        })
        .collect();
    assert_eq!(by_id.len(), total, "more than one row for some {key}");
    by_id
}

/// A key as text: a string key as itself, a number as its decimal digits.
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("a key is {other}"),
    }
}

/// Storage options of object-store lakes used by the tests (s3:// lakes on a local S3 server),
/// by URI prefix; local lakes need none.
pub static STORAGE: std::sync::Mutex<Vec<(String, HashMap<String, String>)>> =
    std::sync::Mutex::new(Vec::new());

/// Open the lake at `lake`: a local path, or an object-store URI registered in [`STORAGE`].
pub fn open_lake(lake: &Path) -> Lake {
    let uri = lake.to_str().unwrap();
    let storage = STORAGE
        .lock()
        .unwrap()
        .iter()
        .find(|(prefix, _)| uri.starts_with(prefix.as_str()))
        .map(|(_, options)| options.clone())
        .unwrap_or_default();
    Lake::try_new(uri, storage).unwrap()
}

pub async fn lake_rows(lake: &Path, object: &str) -> BTreeMap<String, Map<String, Value>> {
    let lake = open_lake(lake);
    let batches = lake
        .query(&format!("SELECT * FROM {object}"))
        .await
        .expect("table queries");
    let key = spec::find(object).map_or("id", |t| t.primary_key.as_str());
    rows_by_key(&batches, key)
}

/// Every object table the lake has holds one row per id, whatever it holds (after a failed or
/// concurrent run, when it need not equal the account yet).
pub async fn assert_one_row_per_id(lake: &Path) {
    for (object, version) in CORE.iter().zip(versions(lake).await) {
        if version.is_some() {
            lake_rows(lake, object).await;
        }
    }
}

/// A value of the simulator's JSON as the lake must hold it in a column of type `kind`
/// (written here, apart from the product's decoder, so that a decoding bug cannot hide in both).
fn expected_value(kind: ColumnType, value: &Value) -> Value {
    let text = |v: &Value| match v {
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    };
    // Zendesk sends integers as strings or as `12.0` at times: the lake keeps the integer.
    let int = |v: &Value| match v {
        Value::String(s) => Value::from(s.trim().parse::<i64>().unwrap()),
        Value::Number(n) if n.as_i64().is_none() => Value::from(n.as_f64().unwrap() as i64),
        other => other.clone(),
    };
    match (kind, value) {
        (_, Value::Null) => Value::Null,
        (ColumnType::Int64, v) => int(v),
        (ColumnType::ListInt64, Value::Array(items)) => {
            Value::Array(items.iter().map(int).collect())
        }
        (ColumnType::Boolean, Value::String(s)) => Value::Bool(s == "true"),
        (ColumnType::Attachments | ColumnType::Intervals, Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|item| {
                    let mut out = Map::new();
                    for &(name, kind) in kind.struct_fields().unwrap() {
                        let value = expected_value(kind, &item[name]);
                        if !value.is_null() {
                            out.insert(name.into(), value);
                        }
                    }
                    Value::Object(out)
                })
                .collect(),
        ),
        (ColumnType::Timestamp, Value::Number(n)) => Value::from(n.as_i64().unwrap() * 1_000_000),
        (ColumnType::Timestamp, Value::String(s)) => Value::from(
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap_or_else(|e| panic!("{s}: {e}"))
                .timestamp_micros(),
        ),
        (ColumnType::String, v) => text(v),
        (ColumnType::Json, v) => Value::String(v.to_string()),
        (ColumnType::ListString, Value::Array(items)) => {
            Value::Array(items.iter().map(text).collect())
        }
        (ColumnType::CustomFields, Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|field| {
                    let mut out = Map::new();
                    out.insert("id".into(), field["id"].clone());
                    if !field["value"].is_null() {
                        out.insert("value".into(), Value::String(field["value"].to_string()));
                    }
                    Value::Object(out)
                })
                .collect(),
        ),
        (_, v) => v.clone(),
    }
}

/// What the lake must hold for a table: the simulator's records, column by column.
pub fn expected_rows(sim: &Simulator, table: &str) -> BTreeMap<String, Map<String, Value>> {
    let spec = spec::find(table).unwrap();
    let deleted = sim.deleted_keys(table);
    let mut rows = BTreeMap::new();
    for record in sim.records(table) {
        let mut row = Map::new();
        for column in &spec.columns {
            let mut value = &record;
            for part in column.path().split('.') {
                value = value.get(part).unwrap_or(&Value::Null);
            }
            let value = expected_value(column.kind, value);
            if !value.is_null() {
                row.insert(column.name.clone(), value);
            }
        }
        let key = key_text(&record[spec.primary_key.as_str()]);
        row.insert(
            spec::DELETED_COLUMN.into(),
            Value::Bool(deleted.contains(&key)),
        );
        rows.insert(key, row);
    }
    rows
}

/// The lake equals the simulator, table by table (the [`CORE`] tables that [`settings`]
/// syncs): same keys, same values, one row per key.
pub async fn assert_lake_matches(sim: &Simulator, lake: &Path) {
    assert_lake_matches_tables(sim, lake, &CORE).await
}

/// [`assert_lake_matches`] for some objects.
pub async fn assert_lake_matches_tables(sim: &Simulator, lake: &Path, objects: &[&str]) {
    for &object in objects {
        let mut expected = expected_rows(sim, object);
        let actual = lake_rows(lake, object).await;
        let table = spec::find(object).unwrap();
        if matches!(table.patches, Some(spec::Patches::DeletedParents { .. }))
            || table.write == spec::WriteMode::Snapshot
            || table.live_listing.is_some()
            || table.source().kind == spec::StreamKind::Children
        {
            // Zendesk stops sending these rows when they are deleted (a deleted ticket's metric
            // set, a brand gone from its list): one deleted before any run saw it cannot be in
            // the lake. Rows deleted after a run saw them must be there, flagged.
            expected
                .retain(|key, row| row[spec::DELETED_COLUMN] == false || actual.contains_key(key));
        }
        assert_eq!(
            actual.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{object}: ids differ"
        );
        for (id, row) in &expected {
            assert_eq!(&actual[id], row, "{object} {id} differs");
        }
    }
    // One control row per commit of a stream: seqs 1, 2, ... each exactly once.
    let history = open_lake(lake).history().await.unwrap();
    let mut streams: Vec<&str> = objects
        .iter()
        .map(|t| spec::find(t).unwrap().stream.as_str())
        .collect();
    streams.dedup();
    for stream in streams {
        let mut seqs: Vec<i64> = history
            .iter()
            .filter(|r| r.stream == stream)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(
            seqs, expected,
            "{stream}: control rows are not one per commit"
        );
    }
}

/// Count of the lake's rows marked deleted.
pub async fn deleted_count(lake: &Path, object: &str) -> usize {
    lake_rows(lake, object)
        .await
        .values()
        .filter(|r| r[spec::DELETED_COLUMN] == Value::Bool(true))
        .count()
}

/// Delta versions of every object table and of the control table.
pub async fn versions(lake: &Path) -> Vec<Option<u64>> {
    let lake = open_lake(lake);
    let mut out = Vec::new();
    for name in CORE.iter().chain(std::iter::once(&"_sync_state")) {
        out.push(lake.open(name).await.unwrap().and_then(|t| t.version()));
    }
    out
}

/// After a failed run every table holds exactly the batch its newest control row names (its
/// Delta version may be later: maintenance commits, such as a compaction after the run, carry
/// no batch).
pub async fn nothing_half_written(lake: &std::path::Path) {
    let lake = open_lake(lake);
    let state = lake.latest_state().await.unwrap();
    for row in state.values() {
        for (table, commit) in row.tables.iter().filter(|(_, c)| c.seq > 0) {
            let delta = lake.open(table).await.unwrap().unwrap();
            let app = zendesk_lake::lake::commit::app_id(&row.stream);
            let held = delta
                .snapshot()
                .unwrap()
                .transaction_version(delta.log_store().as_ref(), &app)
                .await
                .unwrap();
            assert_eq!(held, Some(commit.seq), "{table}");
            assert!(delta.version() >= Some(commit.version as u64), "{table}");
        }
    }
}

/// The error message of `object`'s failure in `report`; panics when it did not fail.
pub fn failure<'a>(report: &'a SyncReport, object: &str) -> &'a str {
    let found = report.tables.iter().find(|o| o.table == object);
    match found.map(|o| &o.outcome) {
        Some(Outcome::Failed(message)) => message,
        other => panic!("{object} did not fail: {other:?}"),
    }
}

/// An object-store emulator (moto, Azurite) started for one test on a free loopback port, and
/// stopped on drop.
pub struct Emulator {
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
    child: std::process::Child,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// Run `program` with `args` (`{port}` replaced by a free port) and wait until it answers
    /// HTTP. `None` when the program is not installed, unless the environment variable
    /// `require` is set (as CI sets it): then that is a failure.
    pub async fn start(
        program: &str,
        args: &[&str],
        require: &str,
        install: &str,
    ) -> Option<Emulator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
            .to_string();
        let child = std::process::Command::new(program)
            .args(args.iter().map(|a| a.replace("{port}", &port)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if std::env::var_os(require).is_none() => {
                eprintln!("SKIPPED: this test needs {program} on PATH ({install}): {e}");
                return None;
            }
            Err(e) => panic!("{require} is set but {program} cannot start: {e}"),
        };
        let emulator = Emulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(&emulator.endpoint).send().await.is_ok() {
                return Some(emulator);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{program} did not come up on {}", emulator.endpoint);
    }
}
