//! What the commands print: their reports as aligned text on stdout, errors and warnings on
//! stderr, and the progress block of `sync` (drawn through [`crate::terminal`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use zendesk_lake::commands::check::{CheckReport, Readable};
use zendesk_lake::commands::import::ImportReport;
use zendesk_lake::commands::maintenance::TablesReport;
use zendesk_lake::commands::push::PushReport;
use zendesk_lake::commands::simulate::Simulation;
use zendesk_lake::commands::status::StreamStatus;
use zendesk_lake::commands::webhook::RegisterReport;
use zendesk_lake::lake::maintenance::{OptimizeReport, VacuumReport};
use zendesk_lake::listen::ListenReport;
use zendesk_lake::sync::progress::{self, Tracker};
use zendesk_lake::sync::{Outcome, SyncReport};

use crate::terminal::Screen;

/// How often the progress block is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(300);

/// The progress block of a run, redrawn on `screen` while the run goes (when the screen is
/// active); [`Progress::finish`] leaves each stream's final state above the summary.
pub struct Progress {
    screen: Arc<Screen>,
    frame: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    drawing: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(screen: &Arc<Screen>, tracker: &Tracker) -> Progress {
        let started = Instant::now();
        let frame = {
            let tracker = tracker.clone();
            Arc::new(move || {
                let now = Utc::now().timestamp();
                progress::render(&tracker.views(), started.elapsed(), now)
            })
        };
        let drawing = screen.is_active().then(|| {
            let (screen, frame) = (screen.clone(), frame.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                loop {
                    tick.tick().await;
                    screen.draw(frame());
                }
            })
        });
        Progress {
            screen: screen.clone(),
            frame: Box::new(move || frame()),
            drawing,
        }
    }

    pub fn finish(self) {
        if let Some(drawing) = self.drawing {
            drawing.abort();
            self.screen.finish((self.frame)());
        }
    }
}

/// A sync's summary, one line per table, then each failure on stderr.
pub fn sync(report: &SyncReport) {
    let w = name_width();
    println!("sync {}", report.run_id);
    println!(
        "{:<w$} {:<9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>10} {:>6} {:>10}  watermark",
        "table",
        "result",
        "fetched",
        "upserted",
        "deleted",
        "commits",
        "requests",
        "retries",
        "seconds",
        "waited",
        "files+",
        "bytes+",
        "files-",
        "bytes-"
    );
    for t in &report.tables {
        let result = match &t.outcome {
            Outcome::Ok => "ok",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "FAILED",
            Outcome::Cancelled => "cancelled",
        };
        println!(
            "{:<w$} {:<9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8.2} {:>8.2} {:>6} {:>10} {:>6} {:>10}  {}",
            t.table,
            result,
            t.fetched,
            t.upserted,
            t.deleted,
            t.commits,
            t.requests,
            t.retries,
            t.seconds,
            t.budget_wait_seconds,
            t.files_written,
            t.bytes_written,
            t.files_removed,
            t.bytes_removed,
            t.watermark.map(time).unwrap_or_else(|| "-".into())
        );
    }
    for t in &report.tables {
        if let Outcome::Failed(error) = &t.outcome {
            eprintln!("error: {error}");
        }
    }
}

/// What `check` found, one line per table.
pub fn check(report: &CheckReport) {
    let w = name_width();
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
                row.watermark.map(time).unwrap_or_default()
            ),
            None => format!("first sync from start_time {}", report.start_time),
        };
        println!(
            "{:<w$} {:<45} {readable}; {resume}",
            table.table, table.endpoint
        );
    }
}

/// Where every stream of the lake stands, one line per table.
pub fn status(lake: &str, streams: &[StreamStatus]) {
    if streams.is_empty() {
        println!("no sync has committed to {lake} yet");
        return;
    }
    let now = Utc::now().timestamp_micros();
    let w = name_width();
    println!(
        "{:<w$} {:<w$} {:>6} {:>10} {:>9}  {:<20}  {:>10}  last commit",
        "stream", "table", "seq", "rows", "deleted", "watermark", "lag"
    );
    for stream in streams {
        let lag = stream
            .watermark
            .map(|w| lag((now - w) / 1_000_000))
            .unwrap_or_else(|| "-".into());
        for table in &stream.tables {
            println!(
                "{:<w$} {:<w$} {:>6} {:>10} {:>9}  {:<20}  {:>10}  {} (run {}, {} commits in all)",
                stream.stream,
                table.table,
                stream.seq,
                table.rows,
                table.deleted,
                stream.watermark.map(time).unwrap_or_else(|| "-".into()),
                lag,
                time(stream.committed_at),
                stream.run_id,
                stream.commits,
            );
        }
    }
}

/// What `optimize` did, one line per table, then each failure on stderr.
pub fn optimize(report: &TablesReport<OptimizeReport>) {
    let w = name_width();
    println!(
        "{:<w$} {:<10} {:>7} {:>7} {:>8} {:>7} {:>12} {:>12}  version",
        "table", "layout", "files", "after", "removed", "added", "bytes before", "bytes after"
    );
    for r in report.tables.iter().flatten() {
        println!(
            "{:<w$} {:<10} {:>7} {:>7} {:>8} {:>7} {:>12} {:>12}  {}",
            r.table,
            r.clustered_by
                .as_ref()
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
    errors(report);
}

/// The warning of a retention shorter than the default, before `vacuum` runs.
pub fn vacuum_warning(hours: u64) {
    if hours < zendesk_lake::lake::maintenance::DEFAULT_RETENTION_HOURS {
        eprintln!(
            "warning: a retention of {hours} hours: versions older than that can no longer be \
             read, and a sync running now may have to fetch its batch again"
        );
    }
}

/// What `vacuum` deleted (or would), one line per table, then each failure on stderr.
pub fn vacuum(report: &TablesReport<VacuumReport>, hours: u64, dry_run: bool) {
    let w = name_width();
    let verb = if dry_run { "would delete" } else { "deleted" };
    for r in report.tables.iter().flatten() {
        println!(
            "{:<w$} {verb} {} files (retention {hours} h)  version {}",
            r.table,
            r.files.len(),
            versions(r.version_before, r.version)
        );
        if dry_run {
            for file in &r.files {
                println!("  {file}");
            }
        }
    }
    errors(report);
}

fn errors<R>(report: &TablesReport<R>) {
    for error in report.tables.iter().filter_map(|r| r.as_ref().err()) {
        eprintln!("error: {error}");
    }
}

/// Where the simulated account is served, and the environment that syncs it.
pub fn simulation(simulation: &Simulation) {
    let base_url = simulation.server.base_url();
    println!("Simulated Zendesk account at {base_url}");
    for (name, value) in simulation.config.env(base_url) {
        println!("export {name}={value}");
    }
}

/// Where `listen` serves.
pub fn listening(addr: std::net::SocketAddr) {
    eprintln!(
        "listening on http://{addr}{}",
        zendesk_lake::listen::DELIVERY_PATH
    );
}

/// Where `listen --demo` serves, and what to try meanwhile.
pub fn listen_demo(account: &str, url: &str, lake: &str) {
    eprintln!("demo: simulated Zendesk account at {account}, changing every few seconds");
    eprintln!("demo: its webhooks deliver to {url}");
    eprintln!(
        "Try, in another terminal: zendesk-lake status --lake {lake}   (Ctrl-C here to stop)"
    );
}

/// What `webhook register` did; the signing secret is in the file, never shown.
pub fn registered(report: &RegisterReport) {
    for webhook in report.webhooks() {
        println!(
            "webhook {} ({}): {:?}, {} subscriptions",
            webhook.id,
            webhook.name,
            webhook.applied,
            webhook.subscriptions.len()
        );
    }
    if let Some(trigger) = &report.trigger {
        println!(
            "trigger {} ({:?}): ticket created or updated → notify webhook {}",
            trigger.id, trigger.applied, trigger.webhook_id
        );
    }
    if !report.refused.is_empty() {
        println!(
            "this account cannot subscribe webhooks to ticket events: ticket activity reaches \
             the listener through the trigger above"
        );
    }
    println!("signing secret written to {}", report.secret_file.display());
    println!("run: {}", report.listen_command);
}

/// What `import` did: its summary, then the rows refused (the first 20, and a count) and those
/// left pending, on stderr.
pub fn imported(report: &ImportReport) {
    println!("{}", report.summary());
    if report.failed > 0 {
        eprintln!(
            "error: {} rows refused by Zendesk (a re-run retries them), the first {}:",
            report.failed,
            report.failed_rows.len()
        );
        for (external_id, message) in &report.failed_rows {
            eprintln!("  {external_id}: {message}");
        }
    }
    if !report.pending.is_empty() {
        eprintln!(
            "error: {} rows sent whose outcome is unknown; the next run looks them up before \
             sending anything",
            report.pending.len()
        );
    }
}

/// What `push` did (or, dry, would do): the diff of a dry run, its summary, then the tickets
/// not sent and those Zendesk refused, on stderr.
pub fn pushed(report: &PushReport) {
    if report.dry_run {
        for change in &report.changes {
            println!(
                "{}\t{}\t{} -> {}",
                change.ticket_id, change.field, change.before, change.after
            );
        }
    }
    println!("{}", report.summary());
    for (id, status) in &report.frozen {
        eprintln!("warning: ticket {id} is {status} in the lake: not sent (Zendesk refuses updates to it)");
    }
    for id in &report.refused_before {
        eprintln!(
            "warning: ticket {id}: the same update was refused by an earlier run: not sent again"
        );
    }
    if !report.refused.is_empty() {
        eprintln!(
            "error: {} tickets refused by Zendesk:",
            report.refused.len()
        );
        for (id, message) in &report.refused {
            eprintln!("  {id}: {message}");
        }
    }
    if !report.pending.is_empty() {
        eprintln!(
            "error: {} tickets sent whose outcome is unknown (their comments are not sent again): {:?}",
            report.pending.len(),
            report.pending
        );
    }
}

/// What `listen` did, once stopped.
pub fn listened(report: &ListenReport) {
    println!(
        "listen stopped: {} deliveries, {} accepted",
        report.deliveries, report.accepted
    );
}

/// The width of a column of table (or stream) names: the longest table's name, as a stream is
/// named after its first table or more briefly.
fn name_width() -> usize {
    zendesk_lake::spec::names()
        .iter()
        .map(|name| name.len())
        .max()
        .unwrap_or_default()
}

/// A time in µs since the epoch, to the second in UTC.
pub fn time(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| micros.to_string())
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
fn lag(seconds: i64) -> String {
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
pub fn error(error: &anyhow::Error) -> String {
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
            assert_eq!(lag(seconds), shown, "{seconds}");
        }
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::other("501 Not Implemented");
        let wrapped = anyhow::Error::new(Repeats(io)).context("table users");
        assert_eq!(
            error(&wrapped),
            "table users: list failed: 501 Not Implemented"
        );
        let plain = anyhow::anyhow!("root cause").context("outer");
        assert_eq!(error(&plain), "outer: root cause");
    }
}
