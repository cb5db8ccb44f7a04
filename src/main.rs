//! The `zendesk-lake` command: parse, set up logging, call the command's library function
//! (`zendesk_lake::commands`), render its report (`cli::render`) and map the outcome to an exit
//! code: 0 ok, 1 some tables failed, 2 fatal or configuration error.

mod alloc;
mod cli;
mod terminal;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use zendesk_lake::arrow::util::pretty::pretty_format_batches;
use zendesk_lake::commands::listen::{self, Listening};
use zendesk_lake::commands::{self, simulate::Simulation, sync::Demo};
use zendesk_lake::config;
use zendesk_lake::listen as listen_server;
use zendesk_lake::sync::progress::Tracker;
use zendesk_lake::sync::SyncReport;

use cli::{render, Cli, Command, LogFormat, WebhookCommand};

/// How often the account of `listen --demo` changes.
const DEMO_ROUND_EVERY: Duration = Duration::from_secs(5);
use terminal::{Logs, Screen};

fn main() -> ExitCode {
    alloc::configure();
    let cli = Cli::parse();
    let terminal = std::io::stderr().is_terminal();
    let drawing = match &cli.command {
        Command::Sync { progress, .. } => progress.drawn(terminal),
        _ => false,
    };
    let screen = Screen::new(Box::new(std::io::stderr()), drawing, terminal);
    init_logging(cli.log_format, &screen);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command, screen)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", render::error(&e));
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat, screen: &Arc<Screen>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,zendesk_lake=info"));
    // Through the screen, so that log lines print above the progress block.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Logs(screen.clone()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command, screen: Arc<Screen>) -> Result<ExitCode> {
    Ok(match command {
        Command::Sync {
            target,
            tables,
            demo: false,
            ..
        } => {
            let file = target.pipeline_file()?.unwrap_or_default();
            let settings = target.settings(file, tables, &config::process_env)?;
            exit(&sync(settings, &screen).await?)
        }
        Command::Sync {
            target,
            tables,
            demo: true,
            ..
        } => {
            let demo = Demo::start()
                .await
                .context("starting the simulated account")?;
            let file = target.pipeline_file()?.map_or_else(Demo::pipeline, Ok)?;
            let env = demo.env();
            let settings = target.settings(file, tables, &|name| env.get(name).cloned())?;
            let lake = settings.lake.clone();
            eprintln!(
                "demo: simulated Zendesk account at {}",
                demo.server.base_url()
            );
            let report = sync(settings, &screen).await?;
            println!("\nTry: zendesk-lake query --lake {lake} \"SELECT status, count(*) FROM tickets GROUP BY status\"");
            exit(&report)
        }
        Command::Check { target } => {
            let file = target.pipeline_file()?.unwrap_or_default();
            let settings = target.settings(file, None, &config::process_env)?;
            let report = commands::check::check(&settings).await?;
            render::check(&report);
            code(report.ok())
        }
        Command::Status { target } => {
            let lake = target.lake()?;
            render::status(
                lake.root().as_str(),
                &commands::status::status(&lake).await?,
            );
            ExitCode::SUCCESS
        }
        Command::Query { target, sql } => {
            let batches = commands::query::query(&target.lake()?, &sql).await?;
            println!("{}", pretty_format_batches(&batches)?);
            ExitCode::SUCCESS
        }
        Command::Measure { usage, command } => {
            let exit = commands::bench::launch(&command, &usage)
                .with_context(|| format!("measuring {command:?}"))?;
            ExitCode::from(u8::try_from(exit).unwrap_or(1))
        }
        Command::Bench(args) => {
            let config = args.config()?;
            let report = commands::bench::run(&config).await?;
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let section = commands::bench::section(&config, &report, &command);
            println!("{section}");
            commands::bench::write_section(&args.out, &section)
                .with_context(|| format!("writing {}", args.out.display()))?;
            ExitCode::SUCCESS
        }
        Command::Optimize(args) => {
            let (lake, tables) = (args.target.lake()?, args.tables.as_deref());
            let report = commands::maintenance::optimize(&lake, tables, &args.options()?).await?;
            render::optimize(&report);
            code(report.ok())
        }
        Command::Vacuum(args) => {
            let options = args.options();
            render::vacuum_warning(options.retention_hours());
            let (lake, tables) = (args.target.lake()?, args.tables.as_deref());
            let report = commands::maintenance::vacuum(&lake, tables, &options).await?;
            render::vacuum(&report, options.retention_hours(), options.dry_run);
            code(report.ok())
        }
        Command::Listen(args) if args.demo => {
            let demo = listen::Demo::start()
                .await
                .context("starting the simulated account")?;
            let file = args
                .target
                .pipeline_file()?
                .map_or_else(Demo::pipeline, Ok)?;
            let env = demo.account.env();
            let settings = args
                .target
                .settings(file, args.tables.clone(), &|name| env.get(name).cloned())?;
            let listening = Listening::start(settings.clone(), args.options()).await?;
            let url = format!(
                "http://{}{}",
                listening.local_addr(),
                listen_server::DELIVERY_PATH
            );
            let secret = demo.connect(&settings, &url).await?;
            render::listen_demo(demo.account.server.base_url(), &url, &settings.lake);
            let stop = tokio_util::sync::CancellationToken::new();
            let changes = demo.keep_changing(DEMO_ROUND_EVERY, stop.clone());
            render::listened(&listening.serve(&secret, terminated()).await);
            stop.cancel();
            _ = changes.await;
            ExitCode::SUCCESS
        }
        Command::Listen(args) => {
            let file = args.target.pipeline_file()?.unwrap_or_default();
            let settings = args
                .target
                .settings(file, args.tables.clone(), &config::process_env)?;
            let secret = config::webhook_secret(&config::process_env)?;
            let listening = Listening::start(settings, args.options()).await?;
            render::listening(listening.local_addr());
            render::listened(&listening.serve(&secret, terminated()).await);
            ExitCode::SUCCESS
        }
        Command::Import(args) => {
            let file = args.target.pipeline_file()?.unwrap_or_default();
            let settings = args.target.settings(file, None, &config::process_env)?;
            let report = match commands::import::import(settings, args.options()).await {
                Err(error) if error.is_leased() => return Ok(leased(&error)),
                report => report?,
            };
            render::imported(&report);
            code(report.is_ok())
        }
        Command::Push(args) => {
            let file = args.target.pipeline_file()?.unwrap_or_default();
            let settings = args.target.settings(file, None, &config::process_env)?;
            let report = match commands::push::push(settings, args.options()).await {
                Err(error) if error.is_leased() => return Ok(leased(&error)),
                report => report?,
            };
            render::pushed(&report);
            code(report.is_ok())
        }
        Command::Webhook(WebhookCommand::Register(args)) => {
            let file = args.target.pipeline_file()?.unwrap_or_default();
            let settings = args.target.settings(file, None, &config::process_env)?;
            render::registered(&commands::webhook::register(&settings, &args.options()).await?);
            ExitCode::SUCCESS
        }
        Command::Simulate(args) => {
            let simulation = Simulation::start(args.config(), args.port)
                .await
                .context("starting the simulated account")?;
            simulation
                .simulator
                .set_webhook_faults(args.webhook_faults());
            render::simulation(&simulation);
            let stop = async { _ = tokio::signal::ctrl_c().await };
            let every = args.round_every_secs.map(Duration::from_secs);
            let applied = |now: i64| {
                let now = render::time(now * 1_000_000);
                eprintln!("applied a round of changes; account time is now {now}");
            };
            simulation.run_until(stop, every, applied).await;
            ExitCode::SUCCESS
        }
    })
}

/// Run a sync with its progress block, and print its summary.
async fn sync(settings: config::Settings, screen: &Arc<Screen>) -> Result<SyncReport> {
    let tracker = Tracker::default();
    let progress = render::Progress::start(screen, &tracker);
    let report = commands::sync::sync(settings, tracker).await;
    progress.finish();
    let report = report?;
    render::sync(&report);
    Ok(report)
}

fn exit(report: &SyncReport) -> ExitCode {
    code(!report.failed())
}

/// A write command that found another run holding its state table's lease (or lost its own)
/// sent nothing more: it exits 1, as a sync that lost to a concurrent one does.
fn leased(error: &commands::write::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(1)
}

fn code(ok: bool) -> ExitCode {
    match ok {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    }
}

/// SIGTERM or SIGINT, whichever comes first.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => _ = term.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
