//! Zendesk's background jobs (`GET /api/v2/job_statuses/{id}` and the account's list): a bulk
//! write answers with a job status at once and applies its rows later, so its outcome is known
//! only once the job reports `completed` or `failed`.
//!
//! Polling draws from the account budget like every request (the client acquires it), and backs
//! off between polls from [`Poll::first`] to [`Poll::max`]: a job of 100 rows takes seconds, and
//! polling it faster spends the budget the import itself needs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::zendesk::{Client, Error, Request, RequestStats, Result};

/// The label of job requests in errors and logs.
pub const STREAM: &str = "jobs";

/// The fewest requests a bulk write's batch takes: the write, and one poll of its job (the
/// dry runs' estimates).
pub const REQUESTS_PER_BATCH: u64 = 2;

/// How many pages of the account's job list are read: it is newest first, and the jobs that
/// matter (still queued or working) are the newest.
const LIST_PAGES: usize = 10;

/// The wait between polls of one job: `first`, doubled after each poll, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            first: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

/// One job as Zendesk reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    /// Per row of the request, once the job ended (`null` before).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub results: Vec<JobResult>,
}

/// The outcome of one row of a job: its `index` in the request, and the id of what it made or
/// its error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobResult {
    pub index: usize,
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub details: Option<Value>,
}

fn null_as_empty<'de, D>(deserializer: D) -> std::result::Result<Vec<JobResult>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Vec<JobResult>>::deserialize(deserializer)?.unwrap_or_default())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl JobResult {
    /// Zendesk's error for this row (`error: details`), `None` when it succeeded.
    pub fn error_message(&self) -> Option<String> {
        let error = self.error.as_ref().filter(|e| !e.is_null())?;
        Some(match self.details.as_ref().filter(|d| !d.is_null()) {
            Some(details) => format!("{}: {}", text(error), text(details)),
            None => text(error),
        })
    }
}

impl JobStatus {
    /// `completed`, `failed` or `killed`: its results are final.
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "killed")
    }

    /// Still `queued` or `working`: its rows may yet be applied.
    pub fn is_running(&self) -> bool {
        !self.is_done()
    }

    /// The result of the row at `index` of the request.
    pub fn result(&self, index: usize) -> Option<&JobResult> {
        self.results.iter().find(|r| r.index == index)
    }

    /// Read `{"job_status": {...}}`, the answer of a bulk write and of a poll.
    pub fn from_answer(
        stream: &str,
        method: crate::zendesk::Method,
        endpoint: &str,
        answer: Value,
    ) -> Result<JobStatus> {
        let status = answer.get("job_status").cloned().unwrap_or(Value::Null);
        serde_json::from_value(status).map_err(|e| Error::Shape {
            stream: stream.to_owned(),
            method,
            endpoint: endpoint.to_owned(),
            detail: format!("no readable job_status: {e}"),
        })
    }
}

/// The job `id` as Zendesk reports it now; `None` when Zendesk no longer knows it (404: job
/// statuses expire).
pub async fn status(client: &Client, stats: &RequestStats, id: &str) -> Result<Option<JobStatus>> {
    let path = format!("/api/v2/job_statuses/{id}.json");
    let request = Request::get(client.endpoint(&path)).with_handled(&[404]);
    match client.send(STREAM, &request, stats).await {
        Ok(answer) => JobStatus::from_answer(STREAM, request.method(), &path, answer).map(Some),
        Err(error) if error.status() == Some(404) => Ok(None),
        Err(error) => Err(error),
    }
}

/// What Zendesk's jobs say of rows an earlier run sent ([`resolve`]).
#[derive(Debug)]
pub struct Resolved<'a, T> {
    /// Each row whose job ended with a result for it, with that result.
    pub results: Vec<(&'a T, JobResult)>,
    /// The rows no job says anything of: no job recorded, a job Zendesk no longer knows, no
    /// result for the row's index.
    pub unknown: Vec<&'a T>,
}

/// Read what became of `rows`, sent by a run that ended before it knew (docs/ARCHITECTURE.md,
/// "The write path"): wait for each recorded job (`job_of`: its id and the row's index in its
/// request) and take the row's result; then, if any row is left unknown, wait for every job of
/// the account still running, so that what the caller finds out of those rows next (a look-up)
/// is final.
pub async fn resolve<'a, T>(
    client: &Client,
    stats: &RequestStats,
    poll: Poll,
    rows: &'a [T],
    job_of: impl Fn(&'a T) -> Option<(&'a str, Option<usize>)>,
) -> Result<Resolved<'a, T>> {
    let mut by_job: BTreeMap<&str, Vec<(&T, Option<usize>)>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for row in rows {
        match job_of(row) {
            Some((id, index)) => by_job.entry(id).or_default().push((row, index)),
            None => unknown.push(row),
        }
    }
    let mut results = Vec::new();
    for (id, rows) in by_job {
        let job = wait(client, stats, id, poll).await?;
        for (row, index) in rows {
            match job.as_ref().zip(index).and_then(|(job, i)| job.result(i)) {
                Some(result) => results.push((row, result.clone())),
                None => unknown.push(row),
            }
        }
    }
    if !unknown.is_empty() {
        wait_running(client, stats, poll).await?;
    }
    Ok(Resolved { results, unknown })
}

/// Wait for every job of the account still queued or working: a killed run's request may be
/// answered after it died, so its writes are only known once such jobs end.
pub async fn wait_running(client: &Client, stats: &RequestStats, poll: Poll) -> Result<()> {
    for job in list(client, stats).await? {
        if job.is_running() {
            info!(job = %job.id, status = %job.status, "waiting for a running job of the account");
            wait(client, stats, &job.id, poll).await?;
        }
    }
    Ok(())
}

/// `job`, as a bulk write answered it, once it ended; without results when Zendesk no longer
/// knows it or polling it failed (logged): its rows' outcome is then unknown, and the next run
/// resolves them ([`resolve`]).
pub async fn ended(client: &Client, stats: &RequestStats, job: JobStatus, poll: Poll) -> JobStatus {
    match wait(client, stats, &job.id, poll).await {
        Ok(Some(done)) => done,
        Ok(None) => JobStatus {
            results: Vec::new(),
            ..job
        },
        Err(error) => {
            warn!(%error, job = %job.id, "polling the job failed: its rows' outcome is unknown until the next run");
            JobStatus {
                results: Vec::new(),
                ..job
            }
        }
    }
}

/// Poll job `id` until it ends, backing off by `poll`; `None` when Zendesk does not know it.
pub async fn wait(
    client: &Client,
    stats: &RequestStats,
    id: &str,
    poll: Poll,
) -> Result<Option<JobStatus>> {
    let mut pause = poll.first;
    loop {
        let Some(job) = status(client, stats, id).await? else {
            return Ok(None);
        };
        if job.is_done() {
            return Ok(Some(job));
        }
        debug!(job = id, status = %job.status, wait_ms = pause.as_millis() as u64, "job running");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(poll.max);
    }
}

/// The account's jobs, newest first (the first pages of the list).
pub async fn list(client: &Client, stats: &RequestStats) -> Result<Vec<JobStatus>> {
    let mut url = client.endpoint("/api/v2/job_statuses.json");
    let mut jobs = Vec::new();
    for _ in 0..LIST_PAGES {
        let request = Request::get(url.clone());
        let answer = client.send(STREAM, &request, stats).await?;
        let page = answer
            .get("job_statuses")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        let page: Vec<JobStatus> = serde_json::from_value(page).map_err(|e| Error::Shape {
            stream: STREAM.to_owned(),
            method: request.method(),
            endpoint: url.path().to_owned(),
            detail: format!("no readable job_statuses: {e}"),
        })?;
        jobs.extend(page);
        match answer.get("next_page").and_then(Value::as_str) {
            Some(next) => url = client.pinned(STREAM, next)?,
            None => break,
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_map_by_index_with_zendesk_messages() {
        let job: JobStatus = serde_json::from_value(json!({
            "id": "V3-1", "status": "completed", "total": 2, "progress": 2, "message": "done",
            "results": [
                {"index": 1, "error": "RecordInvalid", "details": "Requester: user 9 not found"},
                {"index": 0, "id": 77, "account_id": 1},
            ],
        }))
        .unwrap();
        assert!(job.is_done());
        assert_eq!(job.result(0).unwrap().id, Some(77));
        assert_eq!(job.result(0).unwrap().error_message(), None);
        assert_eq!(
            job.result(1).unwrap().error_message().as_deref(),
            Some("RecordInvalid: Requester: user 9 not found")
        );
        let queued: JobStatus =
            serde_json::from_value(json!({"id": "V3-2", "status": "queued", "results": null}))
                .unwrap();
        assert!(queued.is_running() && queued.results.is_empty());
    }
}
