//! Write leases: one run at a time writes to Zendesk through a state table (docs/ARCHITECTURE.md,
//! "The write path").
//!
//! A state table makes a run's writes exactly once only if no other run sends the same rows
//! meanwhile: two imports that both read a row as not sent would both create its ticket, and a
//! run settling the pending rows of another that is still sending would send them again. So a
//! run that writes to Zendesk first takes the lease of its state table, and a run that finds it
//! held by a live run sends nothing ([`Error::Leased`]).
//!
//! The leases are rows of `_leases`, one per change, the newest of a state table's (by its
//! `generation`) its lease. Each row is appended on top of the version it was decided on
//! ([`StateWriter::append_if_unchanged`]), so of two runs taking a free lease at once, one
//! appends and the other reads the table again and finds it held. A lease lasts [`LEASE`] and
//! its run renews it every [`RENEW_EVERY`]; it ends when its run releases it, when it expires
//! (a run killed on another machine), or, on the same machine, as soon as its process is gone
//! (a killed run, so that the next run need not wait). A run that cannot renew its lease stops
//! sending ([`Lease::check`], [`Error::LeaseLost`]) before it expires.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::state::{
    state_rows, Recorded, StateTable, StateWriter, RECORDED_AT_COLUMN, RUN_ID_COLUMN,
    RUN_SEQ_COLUMN,
};
use super::{Error, Lake, Result};
use crate::spec::timestamp_type;

/// How long a lease lasts from its last renewal.
pub const LEASE: Duration = Duration::from_secs(60);

/// How often a run renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(15);

/// What must be left of a lease for its run to start sending a request: a run whose renewals
/// failed stops while its lease still holds.
const MARGIN: Duration = Duration::from_secs(30);

/// How many times taking a lease reads the table again after losing a race to another run.
const ATTEMPTS: u32 = 5;

/// `_leases`: one row per change of a state table's lease ([`LeaseRow`]).
pub const LEASES: StateTable = StateTable {
    name: "_leases",
    description: "zendesk-lake write leases: one row per change of a run's lease on a state table",
    key: "name",
    schema: lease_schema,
};

fn lease_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("generation", DataType::Int64, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("pid", DataType::Int64, false),
        Field::new("process", DataType::Utf8, false),
        Field::new("expires_at", timestamp_type(), false),
        Field::new("released", DataType::Boolean, false),
        Field::new(RUN_ID_COLUMN, DataType::Utf8, false),
        Field::new(RUN_SEQ_COLUMN, DataType::Int64, false),
        Field::new(RECORDED_AT_COLUMN, timestamp_type(), false),
    ]))
}

/// One row of `_leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRow {
    /// The state table the lease is of.
    pub name: String,
    /// One more than the row it follows: the newest row is the lease.
    pub generation: i64,
    /// The machine, process id and process (a random id per process) of its run.
    pub host: String,
    pub pid: i64,
    pub process: String,
    /// µs since the epoch.
    pub expires_at: i64,
    pub released: bool,
    #[serde(flatten)]
    pub recorded: Recorded,
}

impl LeaseRow {
    /// Whether its run may still be sending at `now` (µs): not released, not expired, and its
    /// process not known to be gone.
    fn holds(&self, now: i64) -> bool {
        let me = Process::get();
        !self.released
            && self.expires_at > now
            && (self.host != me.host || self.process == me.process || process_alive(self.pid))
    }

    /// Who holds it, for an error.
    fn holder(&self) -> String {
        let until = chrono::DateTime::from_timestamp_micros(self.expires_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        format!(
            "run {} on {} (pid {}), its lease until {until} unless renewed",
            self.recorded.run_id, self.host, self.pid
        )
    }
}

/// This process: its machine, id and a random id (the process id alone may be reused, by this
/// process too).
struct Process {
    host: String,
    pid: i64,
    process: String,
}

impl Process {
    fn get() -> &'static Process {
        static PROCESS: OnceLock<Process> = OnceLock::new();
        PROCESS.get_or_init(|| Process {
            host: host_name(),
            pid: i64::from(std::process::id()),
            process: uuid::Uuid::new_v4().to_string(),
        })
    }
}

fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer it is given.
    let done = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match done {
        0 => String::from_utf8_lossy(&buffer[..end]).into_owned(),
        _ => "unknown".to_owned(),
    }
}

/// Whether process `pid` of this machine, recorded by another process than this one, still
/// exists (a zombie counts, and so does a process of another user).
fn process_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 || i64::from(pid) == Process::get().pid {
        // This process is not the one that recorded the lease (its process id differs): the
        // process id was reused, so that one is gone.
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The newest row of lease `name` at `table`'s version.
async fn current(table: &DeltaTable, name: &str) -> Result<Option<LeaseRow>> {
    let sql = format!(
        "SELECT * FROM \"{}\" WHERE name = '{}' ORDER BY generation DESC LIMIT 1",
        LEASES.name,
        name.replace('\'', "''")
    );
    Ok(state_rows(LEASES.name, table, &sql)
        .await?
        .into_iter()
        .next())
}

/// What a run shares with the task renewing its lease.
#[derive(Debug)]
struct Held {
    lake: Lake,
    name: String,
    writer: StateWriter,
    /// When the lease expires, as last recorded (µs).
    expires_at: AtomicI64,
    /// Another run took it over, or it was released.
    lost: AtomicBool,
}

/// A run's lease of a state table, renewed until [`Lease::release`] (or until it is dropped:
/// then it ends when it expires, or when its process is gone).
#[derive(Debug)]
pub struct Lease {
    held: Arc<Held>,
    renewal: JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl Lease {
    /// Take the lease of state table `name` for run `run_id`; [`Error::Leased`] when a live
    /// run holds it.
    pub async fn acquire(lake: &Lake, name: &str, run_id: &str) -> Result<Lease> {
        let held = Arc::new(Held {
            lake: lake.clone(),
            name: name.to_owned(),
            writer: StateWriter::new(lake, LEASES, run_id),
            expires_at: AtomicI64::new(0),
            lost: AtomicBool::new(false),
        });
        for _ in 0..ATTEMPTS {
            let table = lake
                .create_if_missing(LEASES.name, (LEASES.schema)(), LEASES.description)
                .await?;
            let now = now_micros();
            let row = current(&table, name).await?;
            if let Some(row) = row.as_ref().filter(|r| r.holds(now)) {
                return Err(Error::Leased {
                    table: name.to_owned(),
                    holder: row.holder(),
                });
            }
            if held.put(&table, row.as_ref(), false).await? {
                info!(table = name, run_id, "took the write lease");
                let renewal = tokio::spawn(renew(held.clone()));
                return Ok(Lease { held, renewal });
            }
        }
        Err(Error::Concurrent {
            table: LEASES.name.to_owned(),
            detail: format!("the lease of {name} changed {ATTEMPTS} times while it was taken"),
        })
    }

    /// Fails ([`Error::LeaseLost`]) once the lease is lost, or too near its end for a request
    /// to be started: a run checks before each request it sends.
    pub fn check(&self) -> Result<()> {
        let left = self.held.expires_at.load(Ordering::SeqCst) - now_micros();
        if self.held.lost.load(Ordering::SeqCst) || left < micros(MARGIN) {
            return Err(Error::LeaseLost {
                table: self.held.name.clone(),
            });
        }
        Ok(())
    }

    /// End the lease, so that the next run need not wait for it (a failure is logged: the
    /// lease then ends when it expires).
    pub async fn release(self) {
        self.renewal.abort();
        let held = &self.held;
        if held.lost.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(error) = held.renew(true).await {
            warn!(table = %held.name, %error, "releasing the write lease failed: it ends when it expires");
        }
    }
}

impl Held {
    /// Append this run's row after `previous` on top of `table`: `false` when another writer
    /// committed since.
    async fn put(
        &self,
        table: &DeltaTable,
        previous: Option<&LeaseRow>,
        released: bool,
    ) -> Result<bool> {
        let me = Process::get();
        let expires_at = now_micros() + micros(LEASE);
        let row = LeaseRow {
            name: self.name.clone(),
            generation: previous.map_or(1, |p| p.generation + 1),
            host: me.host.clone(),
            pid: me.pid,
            process: me.process.clone(),
            expires_at,
            released,
            recorded: Recorded::default(),
        };
        let appended = self.writer.append_if_unchanged(&[row], table).await?;
        if appended {
            self.expires_at.store(expires_at, Ordering::SeqCst);
        }
        Ok(appended)
    }

    /// Renew the lease (or release it): `Ok(false)` when it is no longer this run's.
    async fn renew(&self, release: bool) -> Result<bool> {
        for _ in 0..ATTEMPTS {
            let table = self.lake.open(LEASES.name).await?.ok_or_else(|| {
                Error::invalid(LEASES.name, "it disappeared while a lease was held")
            })?;
            let row = current(&table, &self.name).await?;
            if row
                .as_ref()
                .is_none_or(|r| r.recorded.run_id != self.writer.run_id() || r.released)
            {
                return Ok(false);
            }
            if self.put(&table, row.as_ref(), release).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Renew `held` every [`RENEW_EVERY`] until it is lost (a failed renewal is tried again at the
/// next tick; [`Lease::check`] stops the run when none succeeds in time).
async fn renew(held: Arc<Held>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match held.renew(false).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(table = %held.name, "the write lease was taken over: this run sends nothing more");
                held.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(error) => warn!(table = %held.name, %error, "renewing the write lease failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[tokio::test]
    async fn one_run_holds_a_lease_until_it_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let first = Lease::acquire(&lake, "_import_state", "run-1")
            .await
            .unwrap();
        first.check().unwrap();
        let refused = Lease::acquire(&lake, "_import_state", "run-2")
            .await
            .expect_err("held by run-1");
        assert!(
            matches!(&refused, Error::Leased { holder, .. } if holder.contains("run-1")),
            "{refused}"
        );
        // Another table's lease is another lease.
        Lease::acquire(&lake, "_push_state", "run-2")
            .await
            .unwrap()
            .release()
            .await;
        first.release().await;
        Lease::acquire(&lake, "_import_state", "run-2")
            .await
            .unwrap()
            .release()
            .await;
    }

    #[tokio::test]
    async fn of_runs_taking_a_free_lease_at_once_one_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let runs = (0..4).map(|n| {
            let lake = lake.clone();
            tokio::spawn(async move {
                Lease::acquire(&lake, "_import_state", &format!("run-{n}")).await
            })
        });
        let taken: Vec<_> = futures::future::join_all(runs)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(taken.iter().filter(|r| r.is_ok()).count(), 1, "{taken:?}");
    }

    fn row(host: &str, pid: i64, process: &str, expires_in: i64, released: bool) -> LeaseRow {
        LeaseRow {
            name: "_import_state".into(),
            generation: 1,
            host: host.into(),
            pid,
            process: process.into(),
            expires_at: now_micros() + expires_in,
            released,
            recorded: Recorded {
                run_id: "run".into(),
                run_seq: 1,
                recorded_at: 0,
            },
        }
    }

    #[test]
    fn a_lease_ends_when_released_expired_or_its_process_is_gone() {
        let me = Process::get();
        let minute = 60_000_000;
        // Another machine's run: until it expires or is released.
        assert!(row("elsewhere", 1, "p", minute, false).holds(now_micros()));
        assert!(!row("elsewhere", 1, "p", -1, false).holds(now_micros()));
        assert!(!row("elsewhere", 1, "p", minute, true).holds(now_micros()));
        // This machine: another task of this process holds it; a process that is gone does not,
        // even when this process reused its id.
        assert!(row(&me.host, me.pid, &me.process, minute, false).holds(now_micros()));
        assert!(!row(&me.host, me.pid, "gone", minute, false).holds(now_micros()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        assert!(!row(&me.host, pid, "gone", minute, false).holds(now_micros()));
        let parent = i64::from(std::os::unix::process::parent_id());
        assert!(row(&me.host, parent, "parent", minute, false).holds(now_micros()));
    }
}
