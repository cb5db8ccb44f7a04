//! The command line: clap's definitions of every command and its flags, and how they become
//! settings (a pipeline file, overrides, the environment). Rendering lives in [`render`].

pub mod render;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use zendesk_lake::commands::bench::BenchConfig;
use zendesk_lake::commands::import::ImportOptions;
use zendesk_lake::commands::push::PushOptions;
use zendesk_lake::commands::webhook::RegisterOptions;
use zendesk_lake::config::{Overrides, PipelineFile, Settings};
use zendesk_lake::lake::maintenance::{Layout, OptimizeOptions, VacuumOptions};
use zendesk_lake::lake::Lake;
use zendesk_lake::listen::schedule::Cadence;
use zendesk_lake::listen::ListenOptions;
use zendesk_lake::sim::{SimClock, SimConfig, WebhookFaults};

#[derive(Parser)]
#[command(
    name = "zendesk-lake",
    version,
    about = "Copy a Zendesk Support account into Delta Lake tables, incrementally and exactly"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// When `sync` draws its progress block on stderr.
#[derive(Clone, Copy, Default, ValueEnum)]
pub enum ProgressMode {
    /// Only when stderr is a terminal.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(clap::Args, Clone, Default)]
pub struct Target {
    /// Pipeline file (TOML); see pipelines/.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Lake URI (local path, file://, s3://...); overrides the pipeline file.
    #[arg(long)]
    pub lake: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Sync every configured table into the lake (the main job).
    Sync {
        #[command(flatten)]
        target: Target,
        /// Only these tables, comma-separated (`--objects` is the older name).
        #[arg(long = "tables", visible_alias = "objects", value_delimiter = ',')]
        tables: Option<Vec<String>>,
        /// Sync the built-in simulated account (started on loopback) into ./lake or --lake.
        #[arg(long)]
        demo: bool,
        /// Draw a progress line per stream on stderr (auto: when stderr is a terminal); logs
        /// print above it.
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
    },
    /// Check credentials and which tables are readable.
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// Per stream and table: watermark, lag, rows, last run.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Run SQL over the lake's tables (registered by table name, plus _sync_state).
    Query {
        #[command(flatten)]
        target: Target,
        /// The SQL statement.
        sql: String,
    },
    /// Benchmark a backfill and incremental runs against a large pre-rendered simulated account
    /// (release build), and write the figures into BENCHMARKS.md.
    Bench(BenchArgs),
    /// Run a command and write its wall time, CPU time and peak RSS as JSON (the bench's
    /// launcher of measured runs; see src/commands/bench/mod.rs).
    #[command(name = "__measure", hide = true)]
    Measure {
        #[arg(long)]
        usage: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Rewrite tables into few large files sorted by their key (rows and versions' contents
    /// unchanged); writes a checkpoint.
    Optimize(OptimizeArgs),
    /// Delete files that no version within the retention reads (replaced files, and orphans of
    /// killed runs); versions older than the retention can no longer be read.
    Vacuum(VacuumArgs),
    /// Serve Zendesk's webhook deliveries and sync the streams they name within seconds (and
    /// every stream every --max-interval-secs) until SIGTERM or SIGINT. The signing secret
    /// comes from ZENDESK_WEBHOOK_SECRET or ZENDESK_WEBHOOK_SECRET_FILE.
    Listen(ListenArgs),
    /// Zendesk webhooks that deliver the configured tables' changes to `listen`.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Import tickets from a lake table or a SQL query into Zendesk, exactly once per
    /// external_id (recorded in <lake>/_import_state).
    Import(ImportArgs),
    /// Push changes to existing tickets from a SQL query over the lake (columns `id` and any of
    /// status, priority, type, assignee_id, group_id, organization_id, external_id, tags,
    /// additional_tags, remove_tags, custom_fields, comment): only what differs from the lake's
    /// copy is sent; comments once (recorded in <lake>/_push_state).
    Push(PushArgs),
    /// Serve the simulated Zendesk account until interrupted.
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["table", "sql"])))]
pub struct ImportArgs {
    #[command(flatten)]
    pub target: Target,
    /// A Delta table under the lake's root (any folder holding a Delta log), by its name.
    #[arg(long)]
    pub table: Option<String>,
    /// A SQL query over the lake's tables, as `query` runs it.
    #[arg(long)]
    pub sql: Option<String>,
    /// Archive the imported tickets at once (closed tickets of a migration).
    #[arg(long)]
    pub archive_immediately: bool,
    /// Validate every row and tell the tickets, requests and time it would take; send and
    /// write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import jobs in flight at once (Zendesk queues at most 30 per account).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub jobs: u64,
}

impl ImportArgs {
    pub fn options(&self) -> ImportOptions {
        let options = match (&self.table, &self.sql) {
            (Some(table), _) => ImportOptions::table(table),
            (None, sql) => ImportOptions::sql(sql.as_deref().unwrap_or_default()),
        };
        options
            .with_archive_immediately(self.archive_immediately)
            .with_dry_run(self.dry_run)
            .with_jobs(self.jobs as usize)
    }
}

#[derive(clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub target: Target,
    /// A SQL query over the lake's tables, one row per ticket to change (a null leaves its
    /// field unchanged).
    #[arg(long)]
    pub sql: String,
    /// Print the diff (ticket, field, lake value -> new value) and the requests; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse the push, before any write, when more tickets than this would change.
    #[arg(long, default_value_t = 10_000)]
    pub max_tickets: usize,
}

impl PushArgs {
    pub fn options(&self) -> PushOptions {
        PushOptions::sql(&self.sql)
            .with_dry_run(self.dry_run)
            .with_max_tickets(self.max_tickets)
    }
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Create (or update) the webhook, and where the account needs one a trigger, that
    /// delivers the configured tables' changes to --url; write its signing secret to
    /// --secret-file (mode 0600) and print the `listen` command to run.
    Register(RegisterArgs),
}

#[derive(clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub target: Target,
    /// Where Zendesk delivers: https://your-host/webhooks/zendesk (http only to loopback).
    #[arg(long)]
    pub url: String,
    /// The webhook's name in Zendesk.
    #[arg(long, default_value = zendesk_lake::commands::webhook::DEFAULT_NAME)]
    pub name: String,
    /// Where the signing secret is written (mode 0600); never printed.
    #[arg(long)]
    pub secret_file: PathBuf,
}

impl RegisterArgs {
    pub fn options(&self) -> RegisterOptions {
        let options = RegisterOptions::new(&self.url, &self.secret_file).with_name(&self.name);
        match &self.target.pipeline {
            Some(pipeline) => options.with_pipeline(pipeline),
            None => options,
        }
    }
}

#[derive(clap::Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only these tables, comma-separated (`--objects` is the older name).
    #[arg(long = "tables", visible_alias = "objects", value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Address to serve on; loopback by default (TLS is the ingress's job).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: std::net::SocketAddr,
    /// Seconds from a stream's first delivery to the run that syncs it.
    #[arg(long, default_value_t = 2)]
    pub debounce_secs: u64,
    /// The simulated account in-process, changing every few seconds and delivering signed
    /// webhooks to this listener, into ./lake or --lake.
    #[arg(long)]
    pub demo: bool,
    /// Every stream runs at least this often, deliveries or not.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_interval_secs: u64,
}

impl ListenArgs {
    pub fn options(&self) -> ListenOptions {
        ListenOptions::new(
            self.bind,
            Cadence {
                debounce: Duration::from_secs(self.debounce_secs),
                max_interval: Duration::from_secs(self.max_interval_secs),
            },
        )
    }
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub tickets: usize,
    /// Earlier incremental runs before the last scenario.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Working directory for the lake and the runs' logs (emptied first).
    #[arg(long, default_value = "bench-lake")]
    pub dir: PathBuf,
    /// The Markdown file whose generated section receives the figures.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Tickets of the account back-filled at Zendesk's budgets (10, then 30 export
    /// requests a minute; minutes of wall time); 0 skips these runs.
    #[arg(long, default_value_t = 10_000)]
    pub budget_tickets: usize,
    /// Whether the runs write deletion vectors (`maintenance.deletion_vectors`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub deletion_vectors: bool,
    /// Run each measured sync under this command, split at spaces (a profiler, e.g.
    /// `heaptrack -o prof/sync`); the figures then include the profiler's own cost.
    #[arg(long)]
    pub wrap: Option<String>,
    /// Tickets changed one at a time while a listener keeps the lake fresh (the freshness
    /// scenario); 0 skips it.
    #[arg(long, default_value_t = 50)]
    pub listen_changes: usize,
    /// Signed webhook deliveries posted to a listener as fast as it answers (the intake
    /// scenario); 0 skips it.
    #[arg(long, default_value_t = 50_000)]
    pub intake_deliveries: usize,
    /// Client tasks, each with a keep-alive connection, posting the intake's deliveries.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub intake_clients: u64,
    /// The listener's `--debounce-secs` in the listen scenarios.
    #[arg(long, default_value_t = 2)]
    pub debounce_secs: u64,
    /// Tickets imported at the Support budget (the import scenario, minutes of wall time); 0
    /// skips it.
    #[arg(long, default_value_t = 100_000)]
    pub import_tickets: usize,
}

#[derive(clap::Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only these tables (and `_sync_state`), comma-separated; default every table.
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// File size to aim for, in MiB (default: maintenance.target_file_size_mb, 128).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub target_size_mb: Option<u64>,
    /// Only bin-pack small files together, without sorting every file by key.
    #[arg(long)]
    pub compact_only: bool,
}

#[derive(clap::Args)]
pub struct VacuumArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only these tables (and `_sync_state`), comma-separated; default every table.
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Keep files needed by the versions of the last N hours [default: 168]. Below 168,
    /// a sync running at the same time can lose its files (its commit then fails and the
    /// next run fetches the batch again); 0 keeps only the current version.
    #[arg(long)]
    pub retention_hours: Option<u64>,
    /// List the files that would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    #[arg(long, default_value_t = 2000)]
    pub tickets: usize,
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    #[arg(long, default_value_t = 100)]
    pub organizations: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Apply a round of creates/updates/deletes every this many seconds.
    #[arg(long)]
    pub round_every_secs: Option<u64>,
    /// Mix faulty webhook deliveries in: every 7th sent twice, every 11th with a stale
    /// signature timestamp, every 13th signed with a wrong secret.
    #[arg(long)]
    pub webhook_faults: bool,
}

impl BenchArgs {
    /// The bench's configuration, this binary running the measured syncs.
    pub fn config(&self) -> Result<BenchConfig> {
        Ok(BenchConfig {
            tickets: self.tickets,
            dir: self.dir.clone(),
            runs: self.runs,
            budget_tickets: self.budget_tickets,
            deletion_vectors: self.deletion_vectors,
            exe: std::env::current_exe().context("locating this binary")?,
            wrap: (self.wrap.iter())
                .flat_map(|w| w.split_whitespace().map(str::to_owned))
                .collect(),
            listen_changes: self.listen_changes,
            intake_deliveries: self.intake_deliveries,
            // At most 1024 by the flag's range.
            intake_clients: self.intake_clients as usize,
            debounce: Duration::from_secs(self.debounce_secs),
            import_tickets: self.import_tickets,
        })
    }
}

impl OptimizeArgs {
    /// The options of `optimize`, the file size from the pipeline file unless given.
    pub fn options(&self) -> Result<OptimizeOptions> {
        let file = self.target.pipeline_file()?.unwrap_or_default();
        Ok(OptimizeOptions {
            layout: match self.compact_only {
                true => Layout::Compact,
                false => Layout::Cluster,
            },
            target_file_size: match self.target_size_mb {
                Some(mb) => mb << 20,
                None => file.maintenance.policy()?.target_file_size,
            },
        })
    }
}

impl VacuumArgs {
    pub fn options(&self) -> VacuumOptions {
        VacuumOptions {
            retention_hours: self.retention_hours,
            dry_run: self.dry_run,
        }
    }
}

impl SimulateArgs {
    /// The webhook faults asked for.
    pub fn webhook_faults(&self) -> WebhookFaults {
        match self.webhook_faults {
            true => WebhookFaults {
                duplicate_every: Some(7),
                stale_every: Some(11),
                bad_signature_every: Some(13),
            },
            false => WebhookFaults::default(),
        }
    }

    pub fn config(&self) -> SimConfig {
        SimConfig {
            tickets: self.tickets,
            users: self.users,
            organizations: self.organizations,
            seed: self.seed,
            // The account's history ends now and rounds keep it moving in real time.
            clock: SimClock::Now,
            ..SimConfig::default()
        }
    }
}

impl ProgressMode {
    /// Whether the progress block is drawn, given whether stderr is a terminal.
    pub fn drawn(self, terminal: bool) -> bool {
        match self {
            ProgressMode::Auto => terminal,
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        }
    }
}

impl Target {
    /// The pipeline file named by --pipeline, if one is.
    pub fn pipeline_file(&self) -> Result<Option<PipelineFile>> {
        Ok(match &self.pipeline {
            Some(path) => Some(PipelineFile::load(path)?),
            None => None,
        })
    }

    /// `file` with the command line's overrides, and credentials from `env`.
    pub fn settings(
        &self,
        file: PipelineFile,
        tables: Option<Vec<String>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings> {
        let overrides = Overrides {
            lake: self.lake.clone(),
            tables,
        };
        Ok(Settings::resolve(file, overrides, env)?)
    }

    /// The lake named by --lake or the pipeline file, without needing Zendesk credentials.
    pub fn lake(&self) -> Result<Lake> {
        let file = self.pipeline_file()?.unwrap_or_default();
        let uri = self
            .lake
            .clone()
            .or(file.lake)
            .unwrap_or_else(|| "./lake".to_owned());
        Ok(Lake::try_new(&uri, file.storage)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vacuum_keeps_a_week_unless_a_retention_is_given() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Vacuum(args) => args.options(),
            _ => panic!("not vacuum"),
        };
        let default = parse(&["zendesk-lake", "vacuum"]);
        assert_eq!(
            (default.retention_hours, default.retention_hours()),
            (None, 168)
        );
        assert!(!default.dry_run);
        let zero = parse(&[
            "zendesk-lake",
            "vacuum",
            "--retention-hours",
            "0",
            "--dry-run",
        ]);
        assert_eq!((zero.retention_hours, zero.dry_run), (Some(0), true));
        assert!(
            Cli::try_parse_from(["zendesk-lake", "vacuum", "--retention-hours", "-1"]).is_err()
        );
    }
}
