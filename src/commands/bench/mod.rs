//! `zendesk-lake bench`: the benchmark suite (docs/ARCHITECTURE.md, "Benchmarks").
//!
//! The built-in simulator serves a large account on loopback with every answer pre-rendered
//! (each page is rendered once, in an unmeasured pass that reads every stream from the position
//! the measured run will start from; the measured run is then answered from memory, and the
//! report says how many of its requests missed that cache). Each measured run is a child
//! process, `zendesk-lake sync`, with the rate budgets lifted, so that its wall time, CPU time
//! and peak RSS are the program's own, not the simulator's. What it wrote is read off the Delta
//! tables (the files of each table before and after the run), never from the run's own report.
//!
//! Scenarios, in order on one lake:
//! 1. `backfill`: an empty lake, the whole account;
//! 2. `incremental`: one round changing 1% of the tickets (most of them recent, some old) with
//!    their events, plus creates and deletes; the tickets' streams and the ticket-event stream
//!    are measured as two runs, so the second shows the cost of an incremental run into the
//!    largest table (`ticket_field_history`);
//! 3. `after-runs`: the same round after `runs` earlier small incremental runs (small files and
//!    log growth);
//! 4. `budgeted backfill`: a smaller account back-filled at Zendesk's budgets, enforced by the
//!    simulator in minute windows: 10 export requests a minute, then 30 announced in the headers
//!    while the pipeline says 10 (the High Volume add-on). Its wall time is compared with the
//!    export requests divided by the budget, and its 429s are counted;
//! 5. `listen` ([`listen`], on an account and a lake of their own, before the large account is
//!    generated): freshness, the time from a ticket's change to the lake showing it through a
//!    listener's webhook, and intake, how many signed deliveries a listener verifies a second
//!    and how many runs a burst of them makes;
//! 6. `import` ([`import`], on an account and a lake of their own): a team's table of tickets
//!    imported at the Support budget, its requests and wall time against what the budget
//!    allows.

pub mod import;
pub mod listen;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{PipelineFile, Settings};
use crate::lake::Lake;
use crate::sim::{Budget, RecentBias, Round, SimConfig, Simulator};
use crate::sync;
use crate::zendesk::readers::{self, Context};
use crate::zendesk::{Client, RequestStats};

/// Tables of the tickets', users' and organizations' streams.
const ACCOUNT_TABLES: [&str; 4] = ["tickets", "ticket_metrics", "users", "organizations"];
/// Tables of the ticket-event stream.
const EVENT_TABLES: [&str; 2] = ["ticket_comments", "ticket_field_history"];

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub tickets: usize,
    /// Where the lake and the runs' logs go (emptied first).
    pub dir: PathBuf,
    /// Earlier incremental runs before the `after-runs` scenario.
    pub runs: usize,
    /// The `zendesk-lake` binary the measured runs execute.
    pub exe: PathBuf,
    /// Tickets of the account the budgeted backfills read (0: skip them).
    pub budget_tickets: usize,
    /// Whether the runs' merges write deletion vectors (`maintenance.deletion_vectors`).
    pub deletion_vectors: bool,
    /// A command (and its arguments) each measured run executes `exe` under, e.g. a profiler;
    /// empty: `exe` itself. The listener of the `listen` scenarios runs without it.
    pub wrap: Vec<String>,
    /// Tickets changed one at a time in the freshness scenario (0: skip it).
    pub listen_changes: usize,
    /// Deliveries posted in the intake scenario (0: skip it).
    pub intake_deliveries: usize,
    /// Client tasks (keep-alive connections) posting them.
    pub intake_clients: usize,
    /// The listener's `--debounce-secs` (whole seconds).
    pub debounce: Duration,
    /// Tickets the import scenario imports (0: skip it).
    pub import_tickets: usize,
}

/// One measured child run.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub label: String,
    pub wall: f64,
    pub cpu: f64,
    pub max_rss_mb: f64,
    pub requests: u64,
    pub minimum_requests: u64,
    pub cache_misses: u64,
    pub json_bytes: u64,
    /// Records the pages held, by stream.
    pub records: BTreeMap<String, u64>,
    /// Per table: files added, bytes added, files removed, bytes removed, files, bytes and live
    /// rows after.
    pub tables: BTreeMap<String, TableDelta>,
}

#[derive(Debug, Clone, Default)]
pub struct TableDelta {
    pub files_added: u64,
    pub bytes_added: u64,
    pub files_removed: u64,
    pub bytes_removed: u64,
    pub files_before: u64,
    pub bytes_before: u64,
    pub files_after: u64,
    pub bytes_after: u64,
    pub rows_after: u64,
    pub versions: i64,
}

/// Every scenario's runs.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub setup_seconds: f64,
    pub runs: Vec<Measured>,
    pub earlier_runs_seconds: f64,
    pub budgeted: Vec<Budgeted>,
    /// The `listen` scenarios; None when both were skipped.
    pub listen: Option<listen::ListenBench>,
    /// The `import` scenario; None when skipped.
    pub import: Option<import::ImportBench>,
}

/// A backfill at Zendesk's budgets.
#[derive(Debug, Clone, Default)]
pub struct Budgeted {
    /// Export requests a minute the pipeline is configured with, and the simulator announces
    /// and enforces.
    pub configured: u64,
    pub announced: u64,
    pub wall: f64,
    /// Requests the simulator answered from the export budget, and from the account budget
    /// only.
    pub export_requests: u64,
    pub other_requests: u64,
    /// 429s the simulator answered because a budget was spent.
    pub refused: u64,
}

impl Budgeted {
    /// The floor the budget sets: export requests ÷ export requests per second.
    pub fn floor(&self) -> f64 {
        self.export_requests as f64 * 60.0 / self.announced as f64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bench: {0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Setup(format!("{what}: {e}"))
}

/// The account: `tickets` tickets, a user per four tickets, an organization per forty.
pub fn account(tickets: usize) -> SimConfig {
    SimConfig {
        tickets,
        users: (tickets / 4).max(1),
        organizations: (tickets / 40).max(1),
        ..SimConfig::default()
    }
}

/// The round of the incremental scenarios: 1% of the tickets updated (90% of them among the
/// newest 5%, the rest among older tickets; a fifth of them system updates), 0.1% created and
/// 0.02% deleted; users and organizations alike.
pub fn one_percent(tickets: usize) -> Round {
    let changed = (tickets / 100).max(1);
    Round {
        creates: (tickets / 1000).max(1),
        updates: changed * 4 / 5,
        silent_updates: changed / 5,
        deletes: (tickets / 5000).max(1),
    }
}

const BIAS: RecentBias = RecentBias {
    share: 0.9,
    newest: 0.05,
};

pub async fn run(config: &BenchConfig) -> Result<BenchReport, Error> {
    let mut report = BenchReport::default();
    if config.dir.exists() {
        std::fs::remove_dir_all(&config.dir).map_err(setup("emptying the bench directory"))?;
    }
    std::fs::create_dir_all(&config.dir).map_err(setup("creating the bench directory"))?;
    if config.budget_tickets > 0 {
        for announced in [10, 30] {
            report.budgeted.push(budgeted(config, 10, announced).await?);
        }
    }
    report.listen = listen::run(config).await?;
    report.import = import::run(config).await?;
    let started = Instant::now();
    let account = account(config.tickets);
    let sim = Simulator::new(account.clone());
    sim.set_recent_bias(Some(BIAS));
    let server = sim.serve(0).await.map_err(setup("serving the simulator"))?;
    report.setup_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        seconds = report.setup_seconds,
        "bench: simulated account generated"
    );
    let lake_dir = config.dir.join("lake");
    let bench = Bench {
        config,
        account: &account,
        sim: &sim,
        base_url: server.base_url().to_owned(),
        lake_dir: &lake_dir,
    };
    let all: Vec<&str> = ACCOUNT_TABLES
        .iter()
        .chain(&EVENT_TABLES)
        .copied()
        .collect();

    report.runs.push(bench.measured("backfill", &all).await?);

    sim.apply_round(&one_percent(config.tickets));
    report.runs.push(
        bench
            .measured(
                "incremental 1%: tickets, users, organizations",
                &ACCOUNT_TABLES,
            )
            .await?,
    );
    report.runs.push(
        bench
            .measured("incremental 1%: ticket events", &EVENT_TABLES)
            .await?,
    );

    let earlier = Instant::now();
    let small = Round {
        creates: (config.tickets / 10_000).max(1),
        updates: (config.tickets / 2_000).max(1),
        silent_updates: (config.tickets / 10_000).max(1),
        deletes: 1,
    };
    for n in 0..config.runs {
        sim.apply_round(&small);
        let settings = bench.settings(&all)?;
        let result = sync::run(&settings)
            .await
            .map_err(setup("an earlier incremental run"))?;
        if result.failed() {
            return Err(Error::Setup(format!("earlier incremental run {n} failed")));
        }
    }
    report.earlier_runs_seconds = earlier.elapsed().as_secs_f64();

    sim.apply_round(&one_percent(config.tickets));
    let label = format!(
        "after {} runs, incremental 1%: tickets, users, organizations",
        config.runs
    );
    report
        .runs
        .push(bench.measured(&label, &ACCOUNT_TABLES).await?);
    let label = format!("after {} runs, incremental 1%: ticket events", config.runs);
    report
        .runs
        .push(bench.measured(&label, &EVENT_TABLES).await?);
    server.shutdown().await;
    Ok(report)
}

struct Bench<'a> {
    config: &'a BenchConfig,
    account: &'a SimConfig,
    sim: &'a Simulator,
    base_url: String,
    lake_dir: &'a Path,
}

impl Bench<'_> {
    fn pipeline(&self, tables: &[&str]) -> String {
        pipeline(
            self.lake_dir,
            tables,
            LIFTED,
            LIFTED,
            self.config.deletion_vectors,
        )
    }

    fn env(&self) -> BTreeMap<String, String> {
        self.account.env(&self.base_url)
    }

    fn settings(&self, tables: &[&str]) -> Result<Settings, Error> {
        resolve(&self.pipeline(tables), &self.env())
    }

    /// Pre-render the pages a run of `tables` will ask for, then run it as a child process.
    async fn measured(&self, label: &str, tables: &[&str]) -> Result<Measured, Error> {
        let settings = self.settings(tables)?;
        let lake = Lake::try_new(&settings.lake, HashMap::new()).map_err(setup("the lake"))?;
        self.sim
            .set_response_cache(Some(&self.config.dir.join("pages.cache")))
            .map_err(setup("the simulator's page cache"))?;
        let rendering = Instant::now();
        let records = prerender(&settings, &lake).await?;
        tracing::info!(
            label,
            seconds = rendering.elapsed().as_secs_f64(),
            "bench: pages rendered"
        );
        let misses = self.sim.cache_misses();
        let before = files(&lake, tables).await?;
        let requests = self.sim.request_count();
        let bytes = self.sim.replayed_bytes();

        let pipeline = self.config.dir.join("pipeline.toml");
        std::fs::write(&pipeline, self.pipeline(tables)).map_err(setup("writing the pipeline"))?;
        let log = self.config.dir.join(format!(
            "run-{}.log",
            label.replace([' ', ':', ',', '%'], "_")
        ));
        let log = std::fs::File::create(&log).map_err(setup("creating the run's log"))?;
        let usage_file = self.config.dir.join("usage.json");
        let mut command = launcher(&self.config.exe, &usage_file, &self.config.wrap);
        command
            .arg("sync")
            .arg("--pipeline")
            .arg(&pipeline)
            .envs(self.env())
            .stdout(log.try_clone().map_err(setup("the run's log"))?)
            .stderr(log);
        let usage = tokio::task::spawn_blocking(move || measure(command, &usage_file))
            .await
            .map_err(setup("the measured run"))??;
        if usage.exit != 0 {
            return Err(Error::Setup(format!(
                "the measured run {label:?} exited with {}; see its log in {}",
                usage.exit,
                self.config.dir.display()
            )));
        }
        let after = files(&lake, tables).await?;
        let mut measured = Measured {
            label: label.to_owned(),
            wall: usage.wall_seconds,
            cpu: usage.cpu_seconds,
            max_rss_mb: usage.max_rss_kb as f64 / 1024.0,
            requests: self.sim.request_count() - requests,
            // One page per 1000 records of each stream (at least one), and the credentials check.
            minimum_requests: 1 + records
                .values()
                .map(|&n| n.div_ceil(1000).max(1))
                .sum::<u64>(),
            cache_misses: self.sim.cache_misses() - misses,
            json_bytes: self.sim.replayed_bytes() - bytes,
            records,
            tables: BTreeMap::new(),
        };
        for table in tables {
            let (b, a) = (&before[*table], &after[*table]);
            let added: Vec<_> = a
                .files
                .iter()
                .filter(|(p, _)| !b.files.contains_key(*p))
                .collect();
            let removed: Vec<_> = b
                .files
                .iter()
                .filter(|(p, _)| !a.files.contains_key(*p))
                .collect();
            measured.tables.insert(
                (*table).to_owned(),
                TableDelta {
                    files_added: added.len() as u64,
                    bytes_added: added.iter().map(|(_, s)| **s).sum(),
                    files_removed: removed.len() as u64,
                    bytes_removed: removed.iter().map(|(_, s)| **s).sum(),
                    files_before: b.files.len() as u64,
                    bytes_before: b.files.values().sum(),
                    files_after: a.files.len() as u64,
                    bytes_after: a.files.values().sum(),
                    rows_after: a.rows,
                    versions: a.version - b.version,
                },
            );
        }
        self.sim
            .set_response_cache(None)
            .map_err(setup("the simulator's page cache"))?;
        tracing::info!(label, wall = measured.wall, "bench: measured");
        Ok(measured)
    }
}

/// The settings of the pipeline file `text` in the environment `env`.
fn resolve(text: &str, env: &BTreeMap<String, String>) -> Result<Settings, Error> {
    let file = PipelineFile::parse(text, "bench pipeline").map_err(setup("the bench pipeline"))?;
    Settings::resolve(file, Default::default(), &|name| env.get(name).cloned())
        .map_err(setup("the bench pipeline"))
}

/// Requests a minute that never limit a run.
const LIFTED: u64 = 100_000_000;

/// The pipeline file of a run of `tables` into `lake` with these budgets a minute.
fn pipeline(lake: &Path, tables: &[&str], account: u64, exports: u64, vectors: bool) -> String {
    let names: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "lake = {lake:?}\ntables = [{names}]\nstart_time = 0\n\n[zendesk]\n\
         account_requests_per_minute = {account}\nincremental_requests_per_minute = {exports}\n\
         retry_base_ms = 50\n\n[sync]\npage_size = 1000\n\n\
         [maintenance]\ndeletion_vectors = {vectors}\n",
        lake = lake.display().to_string(),
        names = names.join(", "),
    )
}

/// Zendesk's Support budget of the largest plan (Enterprise: 700 requests a minute).
const ACCOUNT_BUDGET: u64 = 700;

/// Back-fill an account of `budget_tickets` tickets into a lake of its own, the pipeline
/// configured for `configured` export requests a minute and the simulator announcing and
/// enforcing `announced` in minute windows.
async fn budgeted(
    config: &BenchConfig,
    configured: u64,
    announced: u64,
) -> Result<Budgeted, Error> {
    let account = account(config.budget_tickets);
    let sim = Simulator::new(account.clone());
    let server = sim.serve(0).await.map_err(setup("serving the simulator"))?;
    sim.set_budget(Budget {
        window: Duration::from_secs(60),
        account: ACCOUNT_BUDGET,
        help_center: ACCOUNT_BUDGET,
        incremental_exports: Some(announced),
        ..Budget::default()
    });
    let dir = config.dir.join(format!("budget-{announced}"));
    let tables: Vec<&str> = ACCOUNT_TABLES
        .iter()
        .chain(&EVENT_TABLES)
        .copied()
        .collect();
    let text = pipeline(
        &dir.join("lake"),
        &tables,
        ACCOUNT_BUDGET,
        configured,
        config.deletion_vectors,
    );
    std::fs::create_dir_all(&dir).map_err(setup("creating the budget run's directory"))?;
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, text).map_err(setup("writing the pipeline"))?;
    let log = std::fs::File::create(dir.join("run.log")).map_err(setup("the run's log"))?;
    let usage_file = dir.join("usage.json");
    let mut command = launcher(&config.exe, &usage_file, &config.wrap);
    command
        .arg("sync")
        .arg("--pipeline")
        .arg(&file)
        .envs(account.env(server.base_url()))
        .stdout(log.try_clone().map_err(setup("the run's log"))?)
        .stderr(log);
    tracing::info!(announced, "bench: backfill at Zendesk's budgets");
    let usage = tokio::task::spawn_blocking(move || measure(command, &usage_file))
        .await
        .map_err(setup("the budgeted run"))??;
    server.shutdown().await;
    if usage.exit != 0 {
        return Err(Error::Setup(format!(
            "the budgeted run ({announced} a minute) exited with {}; see {}",
            usage.exit,
            dir.join("run.log").display()
        )));
    }
    let windows = sim.budget_windows();
    let export_requests: u64 = windows.iter().map(|w| w.incremental_exports).sum();
    let account_requests: u64 = windows.iter().map(|w| w.account).sum();
    let run = Budgeted {
        configured,
        announced,
        wall: usage.wall_seconds,
        export_requests,
        other_requests: account_requests.saturating_sub(export_requests),
        refused: windows.iter().map(|w| w.refused).sum(),
    };
    tracing::info!(
        announced,
        wall = run.wall,
        floor = run.floor(),
        "bench: budgeted run measured"
    );
    Ok(run)
}

/// Read every stream of the settings' tables from the lake's positions, as the sync will, so
/// that the simulator renders (and caches) every page the sync will ask for. Returns the
/// records per stream.
async fn prerender(settings: &Settings, lake: &Lake) -> Result<BTreeMap<String, u64>, Error> {
    let client = Client::try_new(&settings.zendesk).map_err(setup("the client"))?;
    let stats = Arc::new(RequestStats::default());
    client
        .me(&stats)
        .await
        .map_err(setup("the credentials check"))?;
    let state = lake
        .latest_state()
        .await
        .map_err(setup("the lake's state"))?;
    let mut reads = Vec::new();
    for (stream, tables) in sync::streams_of(&settings.tables) {
        let context = Context {
            client: client.clone(),
            stream,
            page_size: settings.page_size,
            sizing: Default::default(),
            stats: stats.clone(),
            includes: sync::includes(&tables),
            parents: Vec::new(),
        };
        let position = state.get(&stream.name).map(|row| row.position.clone());
        let start_time = settings.start_time;
        reads.push(async move {
            let mut reader = readers::open(context, position.as_ref(), start_time)
                .map_err(setup("opening a reader"))?;
            let mut records = 0u64;
            while let Some(page) = reader.next_page().await.map_err(setup("pre-rendering"))? {
                records += page.records.len() as u64;
                if page.end_of_stream {
                    break;
                }
            }
            Ok::<_, Error>((stream.name.clone(), records))
        });
    }
    futures::future::try_join_all(reads)
        .await
        .map(|counts| counts.into_iter().collect())
}

struct Files {
    version: i64,
    files: HashMap<String, u64>,
    /// Live rows (stored rows less those deletion vectors hide), by the files' statistics.
    rows: u64,
}

/// The data files of each table (path → bytes) and its version.
async fn files(lake: &Lake, tables: &[&str]) -> Result<HashMap<String, Files>, Error> {
    let mut all = HashMap::new();
    for table in tables {
        let files = match lake.open(table).await.map_err(setup("opening a table"))? {
            None => Files {
                version: -1,
                files: HashMap::new(),
                rows: 0,
            },
            Some(delta) => {
                let snapshot = delta.snapshot().map_err(setup("a table's snapshot"))?;
                Files {
                    version: delta.version().map_or(-1, |v| v as i64),
                    files: snapshot
                        .log_data()
                        .iter()
                        .map(|f| (f.path().into_owned(), f.size().max(0) as u64))
                        .collect(),
                    rows: {
                        let stats = crate::lake::files::stats(table, &delta, 0)
                            .map_err(setup("a table's statistics"))?;
                        stats.rows.saturating_sub(stats.hidden)
                    },
                }
            }
        };
        all.insert((*table).to_owned(), files);
    }
    Ok(all)
}

/// What a measured run used, as the launcher writes it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub max_rss_kb: i64,
    /// The exit status, -1 when a signal ended the run.
    pub exit: i32,
}

/// The hidden subcommand that starts a measured run (see [`launcher`]).
pub const LAUNCHER: &str = "__measure";

/// `exe __measure --usage FILE -- [wrap…] exe`, to which the caller adds the run's arguments.
///
/// The run is started by a small process of its own, not by the bench: Linux carries the
/// largest resident set of the process that spawns a child into the child's `ru_maxrss` (exec
/// keeps the old memory map's high-water mark), so a run spawned by the bench, which holds the
/// whole simulated account, would report the bench's memory as its own.
fn launcher(exe: &Path, usage: &Path, wrap: &[String]) -> std::process::Command {
    let mut command = std::process::Command::new(exe);
    command
        .arg(LAUNCHER)
        .arg("--usage")
        .arg(usage)
        .arg("--")
        .args(wrap)
        .arg(exe);
    command
}

/// Run the launcher `command` to its end and read the usage it wrote to `usage`.
fn measure(mut command: std::process::Command, usage: &Path) -> Result<Usage, Error> {
    let _ = std::fs::remove_file(usage);
    let status = command
        .status()
        .map_err(setup("starting the measured run"))?;
    let text = std::fs::read_to_string(usage).map_err(|e| {
        Error::Setup(format!(
            "the measured run's launcher ({status}) left no usage in {}: {e}",
            usage.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(setup("the measured run's usage"))
}

/// The launcher's work: run `argv` to its end, write its [`Usage`] (`wait4`'s resource usage
/// and the wall time) as JSON to `usage`, and return its exit status.
pub fn launch(argv: &[std::ffi::OsString], usage: &Path) -> std::io::Result<i32> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command to measure")
    })?;
    let started = Instant::now();
    let child = std::process::Command::new(program).args(args).spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; zeroed is a valid initial value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; both pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
    let wall = started.elapsed();
    if waited != pid {
        return Err(std::io::Error::last_os_error());
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let measured = Usage {
        wall_seconds: wall.as_secs_f64(),
        cpu_seconds: seconds(rusage.ru_utime) + seconds(rusage.ru_stime),
        max_rss_kb: rusage.ru_maxrss,
        exit,
    };
    std::fs::write(usage, serde_json::to_string(&measured)?)?;
    Ok(exit)
}

/// Where the generated figures begin and end in BENCHMARKS.md.
const SECTION_START: &str = "<!-- generated by zendesk-lake bench -->";
const SECTION_END: &str = "<!-- end of generated figures -->";

/// The report as the generated section of BENCHMARKS.md: the command that made it, the build
/// profile, the date and the machine, then [`markdown`].
pub fn section(config: &BenchConfig, report: &BenchReport, command: &str) -> String {
    format!(
        "{SECTION_START}\nCommand: `{command}` ({profile} build, {date}).\n\nMachine: {machine}.\n\n{body}{SECTION_END}",
        profile = if cfg!(debug_assertions) { "debug" } else { "release" },
        date = chrono::Utc::now().format("%Y-%m-%d"),
        machine = machine(),
        body = markdown(config, report),
    )
}

/// Replace the generated section of the Markdown file at `out` with `section` (appended when
/// the file has none; the file is created when missing).
pub fn write_section(out: &Path, section: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let text = match (text.find(SECTION_START), text.find(SECTION_END)) {
        (Some(start), Some(end)) if start < end => format!(
            "{}{section}{}",
            &text[..start],
            &text[end + SECTION_END.len()..]
        ),
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(out, text)
}

/// The machine, for the report: cores, memory, CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("unknown".to_owned(), |kb| {
            format!("{:.1} GiB", kb / 1048576.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{cores} cores ({cpu}), {memory} memory")
}

/// The report as Markdown tables.
pub fn markdown(config: &BenchConfig, report: &BenchReport) -> String {
    let mut out = String::new();
    let mb = |b: u64| b as f64 / 1_048_576.0;
    let _ = writeln!(
        out,
        "Account: {} tickets, {} users, {} organizations (generated in {:.0} s, not measured). \
         Deletion vectors: {}.\n",
        config.tickets,
        account(config.tickets).users,
        account(config.tickets).organizations,
        report.setup_seconds,
        if config.deletion_vectors { "on" } else { "off" },
    );
    let _ = writeln!(
        out,
        "| run | wall s | records | records/s | tickets/s | JSON MB/s | CPU s | peak RSS MB | requests (one per 1000 records) | cache misses |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for run in &report.runs {
        let records: u64 = run.records.values().sum();
        let tickets = run.records.get("tickets").copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {:.0} | {} | {:.1} | {:.2} | {:.0} | {} ({}) | {} |",
            run.label,
            run.wall,
            records,
            records as f64 / run.wall,
            if tickets > 0 {
                format!("{:.0}", tickets as f64 / run.wall)
            } else {
                "-".to_owned()
            },
            mb(run.json_bytes) / run.wall,
            run.cpu,
            run.max_rss_mb,
            run.requests,
            run.minimum_requests,
            run.cache_misses,
        );
    }
    let _ = writeln!(
        out,
        "\nData files per table and run (files and MB added / removed, i.e. rewritten; the table after):\n"
    );
    let _ = writeln!(
        out,
        "| run | table | commits | files added | MB added | files removed | MB removed (share of table) | files after | MB after | rows after |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for run in &report.runs {
        for (table, t) in &run.tables {
            let share = if t.bytes_before > 0 {
                format!(
                    "{:.1}%",
                    100.0 * t.bytes_removed as f64 / t.bytes_before as f64
                )
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {} | {:.1} ({}) | {} | {:.1} | {} |",
                run.label,
                table,
                t.versions,
                t.files_added,
                mb(t.bytes_added),
                t.files_removed,
                mb(t.bytes_removed),
                share,
                t.files_after,
                mb(t.bytes_after),
                t.rows_after
            );
        }
    }
    if config.runs > 0 {
        let _ = writeln!(
            out,
            "\nThe {} earlier incremental runs took {:.0} s in all (in the bench process, not measured).",
            config.runs, report.earlier_runs_seconds
        );
    }
    if !report.budgeted.is_empty() {
        let _ = writeln!(
            out,
            "\nBackfills of {} tickets ({} users, {} organizations) at Zendesk's budgets, enforced \
             by the simulator in minute windows (Support: {ACCOUNT_BUDGET} a minute):\n",
            config.budget_tickets,
            account(config.budget_tickets).users,
            account(config.budget_tickets).organizations,
        );
        let _ = writeln!(
            out,
            "| export budget a minute: configured, announced | export requests | other requests | 429s | wall s | export requests ÷ budget, s | wall ÷ that |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for run in &report.budgeted {
            let _ = writeln!(
                out,
                "| {}, {} | {} | {} | {} | {:.1} | {:.1} | {:.3} |",
                run.configured,
                run.announced,
                run.export_requests,
                run.other_requests,
                run.refused,
                run.wall,
                run.floor(),
                run.wall / run.floor(),
            );
        }
    }
    if let Some(bench) = &report.listen {
        listen::markdown(&mut out, bench);
    }
    if let Some(bench) = &report.import {
        import::markdown(&mut out, bench);
    }
    out
}
