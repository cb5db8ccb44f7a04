//! The `import` scenario of `zendesk-lake bench` (docs/ARCHITECTURE.md, "Benchmarks"): a team's
//! table of `import_tickets` tickets imported into a simulated account that enforces Zendesk's
//! Support budget in minute windows, by `zendesk-lake import` as a child process.
//!
//! Its figures are the account's own counts (the simulator's budget windows), never the run's
//! report: the requests it answered against what the import needs at least (one `create_many`
//! per 100 tickets and the polls each job takes before it ends), the 429s it answered, and the
//! wall time against the time the budget allows for those requests.

use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};

use super::{launcher, measure, setup, BenchConfig, Error, ACCOUNT_BUDGET, LIFTED};
use crate::lake::Lake;
use crate::sim::{Budget, Simulator};
use crate::zendesk::writers::tickets::MAX_BULK;

/// The source table's name under the scenario's lake.
const SOURCE: &str = "their_export";

/// The tickets' external ids begin with this.
const PREFIX: &str = "bench";

/// The account the tickets are imported into: small, since only its writes are measured.
const ACCOUNT_TICKETS: usize = 100;

/// Import jobs in flight. A simulated job ends at its third poll, and the polls back off from
/// half a second: four jobs in flight would leave most of the budget unspent (the import would
/// wait on its polls), and Zendesk queues at most 30 per account.
pub const IMPORT_JOBS: usize = 16;

/// The scenario's figures.
#[derive(Debug, Clone, Default)]
pub struct ImportBench {
    pub tickets: usize,
    /// `create_many` requests the tickets need: one per [`MAX_BULK`].
    pub batches: u64,
    /// Polls of a job until it ends (the simulator's `job_polls`).
    pub job_polls: u64,
    /// Jobs in flight (`--jobs`).
    pub jobs: usize,
    /// Support requests a minute, announced and enforced.
    pub budget: u64,
    /// Requests the account answered, and the 429s it answered because the budget was spent.
    pub requests: u64,
    pub refused: u64,
    pub wall: f64,
    pub cpu: f64,
    pub max_rss_mb: f64,
    /// Tickets with the scenario's external ids the account holds after the run.
    pub created: usize,
}

impl ImportBench {
    /// What the import needs at least: each batch's `create_many` and its job's polls.
    pub fn needed(&self) -> u64 {
        self.batches * (1 + self.job_polls)
    }

    /// The time the budget allows for the requests the account answered.
    pub fn floor(&self) -> f64 {
        self.requests as f64 * 60.0 / self.budget as f64
    }
}

/// Import `config.import_tickets` tickets; None when it is 0.
pub async fn run(config: &BenchConfig) -> Result<Option<ImportBench>, Error> {
    if config.import_tickets == 0 {
        return Ok(None);
    }
    let dir = config.dir.join("import");
    std::fs::create_dir_all(&dir).map_err(setup("creating the import directory"))?;
    let account = super::account(ACCOUNT_TICKETS);
    let sim = Simulator::new(account.clone());
    let requester = (sim.records("users").first())
        .and_then(|u| u["id"].as_i64())
        .ok_or_else(|| Error::Setup("the simulated account has no user".to_owned()))?;
    let lake_dir = dir.join("lake");
    write_source(&lake_dir, config.import_tickets, requester).await?;

    let server = sim.serve(0).await.map_err(setup("serving the simulator"))?;
    sim.set_budget(Budget {
        window: std::time::Duration::from_secs(60),
        account: ACCOUNT_BUDGET,
        help_center: ACCOUNT_BUDGET,
        ..Budget::default()
    });
    let text = super::pipeline(
        &lake_dir,
        &["tickets"],
        ACCOUNT_BUDGET,
        LIFTED,
        config.deletion_vectors,
    );
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, text).map_err(setup("writing the pipeline"))?;
    let log_path = dir.join("import.log");
    let log = std::fs::File::create(&log_path).map_err(setup("the import's log"))?;
    let usage_file = dir.join("usage.json");
    let mut command = launcher(&config.exe, &usage_file, &config.wrap);
    command
        .arg("import")
        .arg("--pipeline")
        .arg(&file)
        .args(["--table", SOURCE, "--jobs", &IMPORT_JOBS.to_string()])
        .envs(account.env(server.base_url()))
        .stdout(log.try_clone().map_err(setup("the import's log"))?)
        .stderr(log);
    tracing::info!(
        tickets = config.import_tickets,
        "bench: import at the budget"
    );
    let usage = tokio::task::spawn_blocking(move || measure(command, &usage_file))
        .await
        .map_err(setup("the import"))??;
    server.shutdown().await;
    if usage.exit != 0 {
        return Err(Error::Setup(format!(
            "the import exited with {}; see {}",
            usage.exit,
            log_path.display()
        )));
    }
    let windows = sim.budget_windows();
    let created = (sim.records("tickets").iter())
        .filter(|t| (t["external_id"].as_str()).is_some_and(|id| id.starts_with(PREFIX)))
        .count();
    let bench = ImportBench {
        tickets: config.import_tickets,
        batches: config.import_tickets.div_ceil(MAX_BULK) as u64,
        job_polls: u64::from(account.job_polls),
        jobs: IMPORT_JOBS,
        budget: ACCOUNT_BUDGET,
        requests: windows.iter().map(|w| w.account).sum(),
        refused: windows.iter().map(|w| w.refused).sum(),
        wall: usage.wall_seconds,
        cpu: usage.cpu_seconds,
        max_rss_mb: usage.max_rss_kb as f64 / 1024.0,
        created,
    };
    tracing::info!(
        requests = bench.requests,
        needed = bench.needed(),
        wall = bench.wall,
        floor = bench.floor(),
        "bench: import measured"
    );
    Ok(Some(bench))
}

/// Write the team's table: `tickets` rows in the import's shape, all by `requester`.
async fn write_source(lake_dir: &Path, tickets: usize, requester: i64) -> Result<(), Error> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("external_id", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("requester_id", DataType::Int64, true),
        Field::new("status", DataType::Utf8, true),
    ]));
    let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values((0..tickets).map(f)))
    };
    let columns = vec![
        text(&|i| format!("{PREFIX}-{i}")),
        text(&|i| format!("Imported ticket {i}")),
        text(&|i| format!("The first comment of imported ticket {i}.")),
        Arc::new(Int64Array::from_value(requester, tickets)) as ArrayRef,
        text(&|i| ["open", "pending", "solved"][i % 3].to_owned()),
    ];
    let batch = RecordBatch::try_new(schema, columns).map_err(setup("the source's rows"))?;
    std::fs::create_dir_all(lake_dir).map_err(setup("creating the lake"))?;
    let url = Lake::try_new(&lake_dir.display().to_string(), Default::default())
        .map_err(setup("the lake"))?
        .table_url(SOURCE);
    deltalake::DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build())
        .map_err(setup("the source table"))?
        .write(vec![batch])
        .await
        .map_err(setup("writing the source table"))?;
    Ok(())
}

/// The scenario as Markdown.
pub fn markdown(out: &mut String, bench: &ImportBench) {
    use std::fmt::Write as _;
    let met = |ok: bool| if ok { "met" } else { "not met" };
    let _ = writeln!(
        out,
        "\n`import` (a child process of the bench, `--jobs {}`) of {} tickets from a Delta table \
         into an account enforcing {} Support requests a minute in minute windows; a simulated \
         job ends at its {} poll. The account holds {} of the tickets after the run. CPU {:.1} s, \
         peak RSS {:.0} MiB.\n",
        bench.jobs,
        bench.tickets,
        bench.budget,
        ordinal(bench.job_polls),
        bench.created,
        bench.cpu,
        bench.max_rss_mb,
    );
    let _ = writeln!(out, "| import | measured | target | |");
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "| requests answered | {} | within 10% of {} batches + {} polls = {} | {} |",
        bench.requests,
        bench.batches,
        bench.batches * bench.job_polls,
        bench.needed(),
        met(bench.requests.abs_diff(bench.needed()) * 10 <= bench.needed()),
    );
    let _ = writeln!(
        out,
        "| 429s | {} | 0 | {} |",
        bench.refused,
        met(bench.refused == 0)
    );
    let _ = writeln!(
        out,
        "| wall time | {:.1} s | at most 10% over the {:.1} s the budget allows (requests ÷ budget) | {} |",
        bench.wall,
        bench.floor(),
        met(bench.wall <= bench.floor() * 1.1),
    );
}

fn ordinal(n: u64) -> String {
    match n {
        1 => "first".to_owned(),
        2 => "second".to_owned(),
        3 => "third".to_owned(),
        n => format!("{n}th"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needed_requests_are_a_create_many_and_the_polls_of_each_batch() {
        let bench = ImportBench {
            batches: 1000,
            job_polls: 3,
            requests: 4200,
            budget: 700,
            ..ImportBench::default()
        };
        assert_eq!(bench.needed(), 4000);
        assert_eq!(bench.floor(), 360.0);
    }
}
