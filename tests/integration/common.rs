//! Helpers shared by the integration tests.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::Utc;
use serde_json::{Map, Value};
use zendesk_lake::arrow::array::RecordBatch;
use zendesk_lake::arrow::json::ArrayWriter;
use zendesk_lake::config::{Overrides, PipelineFile, Settings};
use zendesk_lake::decode;
use zendesk_lake::lake::Lake;
use zendesk_lake::objects;
use zendesk_lake::sim::{SimConfig, SimServer, Simulator};
use zendesk_lake::sync::{self, Outcome, SyncReport};

pub const OBJECTS: [&str; 3] = ["tickets", "users", "organizations"];

pub async fn start(config: SimConfig) -> (Simulator, SimServer) {
    let sim = Simulator::new(config);
    let server = sim.serve(0).await.expect("simulator starts");
    (sim, server)
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
    // Faults hit requests by their global number, and objects interleave: allow enough
    // attempts that one request meeting fault after fault stays vanishingly unlikely.
    let attempts = if extra_toml.contains("max_attempts") {
        ""
    } else {
        "max_attempts = 12"
    };
    let toml = format!(
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
    );
    let file = PipelineFile::parse(&toml, "test").expect("test pipeline parses");
    let config = SimConfig::default();
    let env: HashMap<String, String> = HashMap::from([
        ("ZENDESK_BASE_URL".into(), server.base_url().to_owned()),
        ("ZENDESK_EMAIL".into(), config.email),
        ("ZENDESK_API_TOKEN".into(), config.api_token),
    ]);
    let mut settings =
        Settings::resolve(file, Overrides::default(), &|name| env.get(name).cloned())
            .expect("test settings resolve");
    settings.storage = open_lake(lake).storage().clone();
    settings
}

pub async fn sync_ok(settings: &Settings) -> SyncReport {
    let report = sync::run(settings).await.expect("sync runs");
    for object in &report.objects {
        assert_eq!(
            object.outcome,
            Outcome::Ok,
            "{}: {:?}",
            object.object,
            object.outcome
        );
    }
    report
}

/// Rows of batches as JSON objects keyed by id, without `_synced_at` (the only column that
/// legitimately differs between two copies of the same data).
pub fn rows_by_id(batches: &[RecordBatch]) -> BTreeMap<i64, Map<String, Value>> {
    let mut writer = ArrayWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch).expect("batch serialises");
    }
    writer.finish().expect("json array finishes");
    let bytes = writer.into_inner();
    let rows: Vec<Map<String, Value>> = if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&bytes).expect("arrow json parses")
    };
    let total = rows.len();
    let by_id: BTreeMap<i64, Map<String, Value>> = rows
        .into_iter()
        .map(|mut row| {
            row.remove(objects::SYNCED_AT_COLUMN);
            (row["id"].as_i64().expect("int id"), row)
        })
        .collect();
    assert_eq!(by_id.len(), total, "more than one row for some id");
    by_id
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

pub async fn lake_rows(lake: &Path, object: &str) -> BTreeMap<i64, Map<String, Value>> {
    let lake = open_lake(lake);
    let batches = lake
        .query(&format!("SELECT * FROM {object}"))
        .await
        .expect("table queries");
    rows_by_id(&batches)
}

/// Every object table the lake has holds one row per id, whatever it holds (after a failed or
/// concurrent run, when it need not equal the account yet).
pub async fn assert_one_row_per_id(lake: &Path) {
    for (object, version) in OBJECTS.iter().zip(versions(lake).await) {
        if version.is_some() {
            lake_rows(lake, object).await;
        }
    }
}

/// What the lake must hold for an object: the simulator's records through the decoder.
pub fn expected_rows(sim: &Simulator, object: &str) -> BTreeMap<i64, Map<String, Value>> {
    let spec = objects::find(object).unwrap();
    let decoded =
        decode::decode(spec, &sim.records(object), Utc::now()).expect("sim records decode");
    rows_by_id(&[decoded.batch])
}

/// The lake equals the simulator, object by object: same ids, same values, one row per id.
pub async fn assert_lake_matches(sim: &Simulator, lake: &Path) {
    assert_lake_matches_objects(sim, lake, &OBJECTS).await
}

/// [`assert_lake_matches`] for some objects.
pub async fn assert_lake_matches_objects(sim: &Simulator, lake: &Path, objects: &[&str]) {
    for &object in objects {
        let expected = expected_rows(sim, object);
        let actual = lake_rows(lake, object).await;
        assert_eq!(
            actual.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{object}: ids differ"
        );
        for (id, row) in &expected {
            assert_eq!(&actual[id], row, "{object} {id} differs");
        }
    }
    // One control row per data commit: seqs 1, 2, ... each exactly once.
    let history = open_lake(lake).history().await.unwrap();
    for &object in objects {
        let mut seqs: Vec<i64> = history
            .iter()
            .filter(|r| r.object == object)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(
            seqs, expected,
            "{object}: control rows are not one per data commit"
        );
    }
}

/// Count of the lake's rows marked deleted.
pub async fn deleted_count(lake: &Path, object: &str) -> usize {
    lake_rows(lake, object)
        .await
        .values()
        .filter(|r| r[objects::DELETED_COLUMN] == Value::Bool(true))
        .count()
}

/// Delta versions of every object table and of the control table.
pub async fn versions(lake: &Path) -> Vec<Option<u64>> {
    let lake = open_lake(lake);
    let mut out = Vec::new();
    for name in OBJECTS.iter().chain(std::iter::once(&"_sync_state")) {
        out.push(lake.open(name).await.unwrap().and_then(|t| t.version()));
    }
    out
}

/// After a failed run every table is at the version its newest control row names.
pub async fn nothing_half_written(lake: &std::path::Path) {
    let lake = open_lake(lake);
    let state = lake.latest_state().await.unwrap();
    for object in OBJECTS {
        let version = lake.open(object).await.unwrap().and_then(|t| t.version());
        let recorded = state.get(object).map(|row| row.data_version as u64);
        assert_eq!(version, recorded, "{object}");
    }
}

/// The error message of `object`'s failure in `report`; panics when it did not fail.
pub fn failure<'a>(report: &'a SyncReport, object: &str) -> &'a str {
    let found = report.objects.iter().find(|o| o.object == object);
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
