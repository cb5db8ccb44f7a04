//! The `zendesk-lake` command: parse, set up logging, run the library, map errors to exit codes
//! (0 ok, 1 some objects failed, 2 fatal or configuration error).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use zendesk_lake::arrow::util::pretty::pretty_format_batches;
use zendesk_lake::config::{self, Overrides, PipelineFile, Settings};
use zendesk_lake::lake::maintenance::{self, Layout, OptimizeOptions, VacuumOptions};
use zendesk_lake::lake::Lake;
use zendesk_lake::sim::{Round, SimConfig, Simulator};
use zendesk_lake::sync::check::Readable;
use zendesk_lake::sync::{self, Outcome, SyncReport};

const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");

#[derive(Parser)]
#[command(
    name = "zendesk-lake",
    version,
    about = "Copy a Zendesk Support account into Delta Lake tables, incrementally and exactly"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone, Default)]
struct Target {
    /// Pipeline file (TOML); see pipelines/.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Lake URI (local path, file://, s3://...); overrides the pipeline file.
    #[arg(long)]
    lake: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Sync every configured object into the lake (the main job).
    Sync {
        #[command(flatten)]
        target: Target,
        /// Only these objects, comma-separated.
        #[arg(long, value_delimiter = ',')]
        objects: Option<Vec<String>>,
        /// Sync the built-in simulated account (started on loopback) into ./lake or --lake.
        #[arg(long)]
        demo: bool,
    },
    /// Check credentials and which objects are readable.
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// Per object: watermark, lag, rows, last run.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Run SQL over the lake's tables (registered by object name, plus _sync_state).
    Query {
        #[command(flatten)]
        target: Target,
        /// The SQL statement.
        sql: String,
    },
    /// Rewrite tables into few large files sorted by their key (rows and versions' contents
    /// unchanged); writes a checkpoint.
    Optimize {
        #[command(flatten)]
        target: Target,
        /// Only these tables (and `_sync_state`), comma-separated; default every table.
        #[arg(long, value_delimiter = ',')]
        tables: Option<Vec<String>>,
        /// File size to aim for, in MiB (default: maintenance.target_file_size_mb, 128).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
        target_size_mb: Option<u64>,
        /// Only bin-pack small files together, without sorting every file by key.
        #[arg(long)]
        compact_only: bool,
    },
    /// Delete files that no version within the retention reads (replaced files, and orphans of
    /// killed runs); versions older than the retention can no longer be read.
    Vacuum {
        #[command(flatten)]
        target: Target,
        /// Only these tables (and `_sync_state`), comma-separated; default every table.
        #[arg(long, value_delimiter = ',')]
        tables: Option<Vec<String>>,
        /// Keep files needed by the versions of the last N hours [default: 168]. Below 168,
        /// a sync running at the same time can lose its files (its commit then fails and the
        /// next run fetches the batch again); 0 keeps only the current version.
        #[arg(long)]
        retention_hours: Option<u64>,
        /// List the files that would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Serve the simulated Zendesk account until interrupted.
    Simulate {
        #[arg(long, default_value_t = 8765)]
        port: u16,
        #[arg(long, default_value_t = 2000)]
        tickets: usize,
        #[arg(long, default_value_t = 500)]
        users: usize,
        #[arg(long, default_value_t = 100)]
        organizations: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Apply a round of creates/updates/deletes every this many seconds.
        #[arg(long)]
        round_every_secs: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,zendesk_lake=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Sync {
            target,
            objects,
            demo: false,
        } => {
            let file = pipeline_file(&target)?.unwrap_or_default();
            let settings = settings(&target, file, objects, &config::process_env)?;
            sync_and_report(&settings).await
        }
        Command::Sync {
            target,
            objects,
            demo: true,
        } => {
            let config = demo_config();
            let sim = Simulator::new(config.clone());
            // One round of changes first, so the demo lake has updates and soft deletes too.
            sim.apply_round(&demo_round());
            let server = sim
                .serve(0)
                .await
                .context("starting the simulated account")?;
            let file = match pipeline_file(&target)? {
                Some(file) => file,
                None => PipelineFile::parse(DEMO_PIPELINE, "pipelines/demo.toml")?,
            };
            let env = sim_env(&config, server.base_url());
            let settings = settings(&target, file, objects, &|name| env.get(name).cloned())?;
            eprintln!("demo: simulated Zendesk account at {}", server.base_url());
            let code = sync_and_report(&settings).await?;
            println!(
                "\nTry: zendesk-lake query --lake {} \"SELECT status, count(*) FROM tickets GROUP BY status\"",
                settings.lake
            );
            Ok(code)
        }
        Command::Check { target } => {
            let file = pipeline_file(&target)?.unwrap_or_default();
            check(&settings(&target, file, None, &config::process_env)?).await
        }
        Command::Status { target } => status(&lake_of(&target)?).await,
        Command::Query { target, sql } => {
            let batches = lake_of(&target)?.query(&sql).await?;
            println!("{}", pretty_format_batches(&batches)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Optimize {
            target,
            tables,
            target_size_mb,
            compact_only,
        } => {
            let file = pipeline_file(&target)?.unwrap_or_default();
            let target_file_size = match target_size_mb {
                Some(mb) => mb << 20,
                None => file.maintenance.policy()?.target_file_size,
            };
            let options = OptimizeOptions {
                layout: if compact_only {
                    Layout::Compact
                } else {
                    Layout::Cluster
                },
                target_file_size,
            };
            optimize(&lake_of(&target)?, tables.as_deref(), &options).await
        }
        Command::Vacuum {
            target,
            tables,
            retention_hours,
            dry_run,
        } => {
            let options = VacuumOptions {
                retention_hours,
                dry_run,
            };
            vacuum(&lake_of(&target)?, tables.as_deref(), &options).await
        }
        Command::Simulate {
            port,
            tickets,
            users,
            organizations,
            seed,
            round_every_secs,
        } => {
            let config = SimConfig {
                tickets,
                users,
                organizations,
                seed,
                ..SimConfig::default()
            };
            let sim = Simulator::new(config.clone());
            let server = sim
                .serve(port)
                .await
                .context("starting the simulated account")?;
            println!("Simulated Zendesk account at {}", server.base_url());
            println!("export ZENDESK_BASE_URL={}", server.base_url());
            println!("export ZENDESK_EMAIL={}", config.email);
            println!("export ZENDESK_API_TOKEN={}", config.api_token);
            match round_every_secs {
                Some(secs) => loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => break,
                        _ = tokio::time::sleep(Duration::from_secs(secs.max(1))) => {
                            sim.apply_round(&demo_round());
                            eprintln!("applied a round of changes; account time is now {}", format_time(sim.now() * 1_000_000));
                        }
                    }
                },
                None => {
                    tokio::signal::ctrl_c().await?;
                }
            }
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn demo_config() -> SimConfig {
    SimConfig {
        tickets: 2000,
        users: 500,
        organizations: 100,
        ..SimConfig::default()
    }
}

fn demo_round() -> Round {
    Round {
        creates: 20,
        updates: 40,
        silent_updates: 10,
        deletes: 5,
    }
}

/// The environment a pipeline sees when it syncs the simulator: its URL and credentials.
fn sim_env(config: &SimConfig, base_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("ZENDESK_BASE_URL".to_owned(), base_url.to_owned()),
        ("ZENDESK_EMAIL".to_owned(), config.email.clone()),
        ("ZENDESK_API_TOKEN".to_owned(), config.api_token.clone()),
    ])
}

/// The pipeline file named by --pipeline, if one is.
fn pipeline_file(target: &Target) -> Result<Option<PipelineFile>> {
    Ok(match &target.pipeline {
        Some(path) => Some(PipelineFile::load(path)?),
        None => None,
    })
}

/// `file` with the command line's overrides, and credentials from `env`.
fn settings(
    target: &Target,
    file: PipelineFile,
    objects: Option<Vec<String>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings> {
    let overrides = Overrides {
        lake: target.lake.clone(),
        objects,
    };
    Ok(Settings::resolve(file, overrides, env)?)
}

/// The lake named by --lake or the pipeline file, without needing Zendesk credentials.
fn lake_of(target: &Target) -> Result<Lake> {
    let file = pipeline_file(target)?.unwrap_or_default();
    let uri = target
        .lake
        .clone()
        .or(file.lake)
        .unwrap_or_else(|| "./lake".to_owned());
    Ok(Lake::try_new(&uri, file.storage)?)
}

async fn sync_and_report(settings: &Settings) -> Result<ExitCode> {
    let report = sync::run(settings).await?;
    print_report(&report);
    if report.failed() {
        for object in &report.objects {
            if let Outcome::Failed(error) = &object.outcome {
                eprintln!("error: {error}");
            }
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &SyncReport) {
    println!("sync {}", report.run_id);
    println!(
        "{:<22} {:<8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8}  watermark",
        "table",
        "result",
        "fetched",
        "upserted",
        "deleted",
        "commits",
        "requests",
        "retries",
        "seconds"
    );
    for o in &report.objects {
        let result = match &o.outcome {
            Outcome::Ok => "ok",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "FAILED",
        };
        println!(
            "{:<22} {:<8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8.2}  {}",
            o.object,
            result,
            o.fetched,
            o.upserted,
            o.deleted,
            o.commits,
            o.requests,
            o.retries,
            o.seconds,
            o.watermark.map(format_time).unwrap_or_else(|| "-".into())
        );
    }
}

fn format_time(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

async fn check(settings: &Settings) -> Result<ExitCode> {
    let report = sync::check::check(settings).await?;
    println!(
        "credentials ok at {}: {} ({})",
        report.base_url, report.email, report.role
    );
    for table in &report.tables {
        let readable = match &table.readable {
            Readable::Yes => "readable".to_owned(),
            Readable::Skipped(why) => format!("skipped on this plan: {why}"),
            Readable::Failing(why) => format!("NOT readable: {why}"),
        };
        let resume = match &table.resume {
            Some(row) => format!(
                "resumes at seq {} (watermark {})",
                row.seq,
                row.watermark.map(format_time).unwrap_or_default()
            ),
            None => format!("first sync from start_time {}", report.start_time),
        };
        println!(
            "{:<22} {:<45} {readable}; {resume}",
            table.table, table.endpoint
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status(lake: &Lake) -> Result<ExitCode> {
    let streams = sync::status::status(lake).await?;
    if streams.is_empty() {
        println!("no sync has committed to {} yet", lake.root());
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now().timestamp_micros();
    println!(
        "{:<15} {:<22} {:>6} {:>10} {:>9}  {:<20}  {:>10}  last commit",
        "stream", "table", "seq", "rows", "deleted", "watermark", "lag"
    );
    for stream in &streams {
        let lag = stream
            .watermark
            .map(|w| format_lag((now - w) / 1_000_000))
            .unwrap_or_else(|| "-".into());
        for table in &stream.tables {
            println!(
                "{:<15} {:<22} {:>6} {:>10} {:>9}  {:<20}  {:>10}  {} (run {}, {} commits in all)",
                stream.stream,
                table.table,
                stream.seq,
                table.rows,
                table.deleted,
                stream
                    .watermark
                    .map(format_time)
                    .unwrap_or_else(|| "-".into()),
                lag,
                format_time(stream.committed_at),
                stream.run_id,
                stream.commits,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn optimize(
    lake: &Lake,
    tables: Option<&[String]>,
    options: &OptimizeOptions,
) -> Result<ExitCode> {
    println!(
        "{:<22} {:<10} {:>7} {:>7} {:>8} {:>7} {:>12} {:>12}  version",
        "table", "layout", "files", "after", "removed", "added", "bytes before", "bytes after"
    );
    let mut failed = false;
    for name in maintenance::tables(tables)? {
        let r = match lake.optimize(&name, options).await {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        println!(
            "{:<22} {:<10} {:>7} {:>7} {:>8} {:>7} {:>12} {:>12}  {}",
            r.table,
            r.clustered_by
                .map(|key| format!("by {key}"))
                .unwrap_or_else(|| "compacted".into()),
            r.files_before,
            r.files_after,
            r.files_removed,
            r.files_added,
            r.bytes_removed,
            r.bytes_added,
            versions(r.version_before, r.version),
        );
    }
    Ok(exit_code(failed))
}

/// 1 when some table failed (the others were done), 0 otherwise.
fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn vacuum(
    lake: &Lake,
    tables: Option<&[String]>,
    options: &VacuumOptions,
) -> Result<ExitCode> {
    let hours = options.retention_hours();
    if hours < maintenance::DEFAULT_RETENTION_HOURS {
        eprintln!(
            "warning: a retention of {hours} hours: versions older than that can no longer be \
             read, and a sync running now may have to fetch its batch again"
        );
    }
    let verb = if options.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut failed = false;
    for name in maintenance::tables(tables)? {
        let r = match lake.vacuum(&name, options).await {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        println!(
            "{:<22} {verb} {} files (retention {hours} h)  version {}",
            r.table,
            r.files.len(),
            versions(r.version_before, r.version)
        );
        if options.dry_run {
            for file in &r.files {
                println!("  {file}");
            }
        }
    }
    Ok(exit_code(failed))
}

/// `7` when nothing was committed, `7 -> 9` when something was.
fn versions(before: u64, after: u64) -> String {
    if before == after {
        before.to_string()
    } else {
        format!("{before} -> {after}")
    }
}

/// A lag in seconds as its two largest units, truncated: `45s`, `12m 5s`, `3h 20m`, `1059d 3h`.
fn format_lag(seconds: i64) -> String {
    if seconds < 0 {
        return "0s".into();
    }
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|&(_, size)| seconds >= size) else {
        return "0s".into();
    };
    let (name, size) = units[first];
    match units.get(first + 1) {
        Some(&(next, next_size)) if seconds % size >= next_size => {
            format!(
                "{}{name} {}{next}",
                seconds / size,
                seconds % size / next_size
            )
        }
        _ => format!("{}{name}", seconds / size),
    }
}

/// An error and its causes on one line. Many errors (deltalake's, object_store's) already
/// include their source in their own message: a cause whose text is already shown is skipped
/// rather than printed again.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for layer in error.chain() {
        let layer = layer.to_string();
        if text.contains(&layer) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&layer);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("list failed: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn lags_read_in_their_two_largest_units() {
        for (seconds, shown) in [
            (-3, "0s"),
            (0, "0s"),
            (45, "45s"),
            (60, "1m"),
            (725, "12m 5s"),
            (12_000, "3h 20m"),
            (86_400 + 59, "1d"),
            (91_509_792, "1059d 3h"),
        ] {
            assert_eq!(format_lag(seconds), shown, "{seconds}");
        }
    }

    #[test]
    fn vacuum_keeps_a_week_unless_a_retention_is_given() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Vacuum {
                retention_hours,
                dry_run,
                ..
            } => VacuumOptions {
                retention_hours,
                dry_run,
            },
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

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::other("501 Not Implemented");
        let error = anyhow::Error::new(Repeats(io)).context("table users");
        assert_eq!(
            describe(&error),
            "table users: list failed: 501 Not Implemented"
        );
        let plain = anyhow::anyhow!("root cause").context("outer");
        assert_eq!(describe(&plain), "outer: root cause");
    }
}
