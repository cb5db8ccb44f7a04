//! Failpoints for crash tests: `ZENDESK_LAKE_FAILPOINT=<name>:<n>` makes the process kill itself
//! with SIGKILL the n-th time it reaches the point `<name>`: no destructor, flush or commit
//! runs, exactly as when a scheduler or the OOM killer ends the job.
//!
//! Without the variable a failpoint costs one relaxed load of a cached `None`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The points a run can be killed at, in the order a commit reaches them.
pub const POINTS: &[&str] = &[
    "page_fetched",
    "page_decoded",
    "before_data_commit",
    // Inside a Delta commit (data and control): files written, log entry not yet.
    crate::lake::failstore::POINT,
    "after_data_commit",
    // After a data commit of a batch that writes to more tables: a half-committed batch.
    "between_data_commits",
    "after_control_commit",
];

/// The points an import can be killed at, in the order a batch reaches them: its rows recorded
/// pending, its request answered (job id not yet recorded), the job id recorded, the job ended
/// (its outcome not yet recorded), the outcome recorded.
pub const IMPORT_POINTS: &[&str] = &[
    "import_pending_recorded",
    "import_submitted",
    "import_job_recorded",
    "import_job_done",
    "import_recorded",
];

/// The points a push can be killed at, in the order a batch reaches them: its comments recorded
/// pending, its request answered (job id not yet recorded), the job id recorded, the job ended
/// (its outcome not yet recorded), the outcome recorded.
pub const PUSH_POINTS: &[&str] = &[
    "push_pending_recorded",
    "push_submitted",
    "push_job_recorded",
    "push_job_done",
    "push_recorded",
];

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("ZENDESK_LAKE_FAILPOINT").ok()?;
            let (name, at) = spec.split_once(':')?;
            Some(Armed {
                name: name.to_owned(),
                at: at.parse().ok()?,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Whether the failpoint `name` is armed in this process.
pub fn armed_at(name: &str) -> bool {
    armed().is_some_and(|a| a.name == name)
}

/// Reach the failpoint `name`.
pub fn hit(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.name != name {
        return;
    }
    if armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.at {
        eprintln!("failpoint {name}:{}: killing the process", armed.at);
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
