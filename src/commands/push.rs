//! `zendesk-lake push`: changes to existing tickets from a SQL query over the lake (a team's
//! model output beside the product's tables, joined or not with `tickets`) into Zendesk through
//! `update_many`, only what differs from the lake's copy of each ticket (docs/ARCHITECTURE.md,
//! "The write path").
//!
//! The rooms, in order: an incremental sync of the tickets' stream (so the diff is against
//! Zendesk's latest state) → the lake source ([`Lake::query`]) → the encoder ([`TICKET_UPDATE`],
//! which refuses a bad source before any request, and reads the lake's tickets too) → the diff
//! → the writers ([`tickets::update_many`], [`jobs`]) → the state table [`PUSH_STATE`] → an
//! incremental sync again, so the lake shows the result.
//!
//! # Once
//! Field changes are idempotent: a second run finds nothing to change and sends nothing.
//! Comments are not: each is keyed by its ticket and a hash of its body and visibility, recorded
//! `pending` (with its index in the request) before its request, with its job once Zendesk
//! answered, and `done` after its job; a key recorded `done` is never sent again. A run that
//! ends between the two (killed, its answer lost, its job's polling failed) leaves it `pending`,
//! and the next push settles it before anything else ([`resolve`]): by its job's result when
//! Zendesk still knows the job, else, once every running job of the account ended, by the
//! ticket's comments: found is `done`, not found is `unapplied` and sent again. An update
//! Zendesk refused is recorded by its ticket and a hash of the update, so that the same push
//! does not send it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tracing::{info, warn};

use crate::config::Settings;
use crate::encode::{Encoded, TICKET_UPDATE};
use crate::failpoint;
use crate::lake::lease::Lease;
use crate::lake::state::{JobRef, PushRow, PushStatus, Recorded, StateWriter, PUSH_STATE};
use crate::lake::Lake;
use crate::spec::{self, Table, DELETED_COLUMN};
use crate::sync::{self, Syncer};
use crate::zendesk::writers::jobs::{self, Poll};
use crate::zendesk::writers::tickets::{self, MAX_BULK};
use crate::zendesk::{Client, RequestStats};

/// The table whose rows a push changes, and whose stream is synced around it.
const TICKETS_TABLE: &str = "tickets";

/// Fields replaced as a whole when given and different.
const SCALARS: [&str; 7] = [
    "status",
    "priority",
    "type",
    "assignee_id",
    "group_id",
    "organization_id",
    "external_id",
];

/// Statuses Zendesk refuses updates of (`deleted` is the lake's mark of a deleted ticket).
const FROZEN: [&str; 2] = ["closed", "deleted"];

/// Ids per look-up of the lake's tickets.
const LOOKUP_CHUNK: usize = 1000;

pub use super::write::Error;

/// What `push` does.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub sql: String,
    pub dry_run: bool,
    /// Tickets to change at most: more refuses the push before any write.
    pub max_tickets: usize,
    pub poll: Poll,
}

impl PushOptions {
    pub fn sql(sql: &str) -> PushOptions {
        PushOptions {
            sql: sql.to_owned(),
            dry_run: false,
            max_tickets: 10_000,
            poll: Poll::default(),
        }
    }

    pub fn with_dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    pub fn with_max_tickets(mut self, max: usize) -> Self {
        self.max_tickets = max;
        self
    }

    pub fn with_poll(mut self, poll: Poll) -> Self {
        self.poll = poll;
        self
    }
}

/// One changed field of a ticket: the lake's value and the new one (`null` for none).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub ticket_id: i64,
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// What one run did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushReport {
    /// Rows of the source.
    pub rows: usize,
    /// Rows that change nothing (or only repeat a comment already pushed), not sent.
    pub unchanged: usize,
    /// Every field this run changes, by ticket.
    pub changes: Vec<FieldChange>,
    /// Tickets the lake shows closed or deleted, not sent, with their status.
    pub frozen: Vec<(i64, String)>,
    /// Tickets whose same update Zendesk refused in an earlier run, not sent again.
    pub refused_before: Vec<i64>,
    /// Tickets sent.
    pub sent: usize,
    /// Tickets Zendesk updated.
    pub updated: usize,
    /// Tickets Zendesk refused in this run, with its message.
    pub refused: Vec<(i64, String)>,
    /// Tickets sent whose outcome is unknown (the next push settles their comments).
    pub pending: Vec<i64>,
    /// Comments an earlier run left pending, settled by this one: applied (`done`), and not
    /// applied (sent again if the source still has them).
    pub settled_done: usize,
    pub settled_unapplied: usize,
    /// Update requests this run sends (dry: would send).
    pub update_requests: u64,
    /// Requests to Zendesk, syncs left out.
    pub requests: u64,
    pub seconds: f64,
    pub dry_run: bool,
}

impl PushReport {
    /// Nothing refused, nothing left unknown.
    pub fn is_ok(&self) -> bool {
        self.refused.is_empty() && self.pending.is_empty()
    }

    /// Tickets with a change to send.
    pub fn tickets(&self) -> usize {
        self.changes
            .iter()
            .map(|c| c.ticket_id)
            .collect::<BTreeSet<_>>()
            .len()
    }

    pub fn summary(&self) -> String {
        if self.dry_run {
            return format!(
                "dry run: {} tickets to change ({} fields), {} update requests, {} unchanged, {} closed or deleted; nothing sent",
                self.tickets(),
                self.changes.len(),
                self.update_requests,
                self.unchanged,
                self.frozen.len()
            );
        }
        format!(
            "updated {}, refused {}, pending {}, unchanged {}, closed or deleted {}, refused before {}, update requests {}, {:.1} s",
            self.updated,
            self.refused.len(),
            self.pending.len(),
            self.unchanged,
            self.frozen.len(),
            self.refused_before.len(),
            self.update_requests,
            self.seconds
        )
    }
}

/// One ticket's update to send, with the state keys it carries.
struct Update {
    ticket_id: i64,
    object: Map<String, Value>,
    comment_key: Option<String>,
    refused_key: String,
}

fn hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The state key of a comment pushed to a ticket: its ticket and a hash of what was sent.
pub fn comment_key(ticket_id: i64, comment: &Value) -> String {
    format!("comment/{ticket_id}/{}", hash(&comment.to_string()))
}

fn refused_key(ticket_id: i64, object: &Map<String, Value>) -> String {
    format!(
        "refused/{ticket_id}/{}",
        hash(&Value::Object(object.clone()).to_string())
    )
}

fn sorted_tags(value: Option<&Value>) -> Vec<String> {
    let mut tags: Vec<String> = value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// What of `row` differs from `lake` (the lake's copy of the ticket, when it has one): the
/// update object (without its `id`, empty when nothing changes) and its field changes. The
/// comment is left to the caller, which knows what was pushed before.
pub fn diff(
    ticket_id: i64,
    row: &Map<String, Value>,
    lake: Option<&Map<String, Value>>,
) -> (Map<String, Value>, Vec<FieldChange>) {
    let before = |field: &str| {
        lake.and_then(|l| l.get(field))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut update = Map::new();
    let mut changes = Vec::new();
    let mut change = |field: &str, before: Value, after: Value| {
        changes.push(FieldChange {
            ticket_id,
            field: field.to_owned(),
            before,
            after,
        })
    };
    for field in SCALARS {
        let Some(after) = row.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let before = before(field);
        if &before != after {
            update.insert(field.to_owned(), after.clone());
            change(field, before, after.clone());
        }
    }
    let lake_tags = sorted_tags(lake.and_then(|l| l.get("tags")));
    let mut tags = lake_tags.clone();
    if row.get("tags").is_some_and(Value::is_array) {
        let given = sorted_tags(row.get("tags"));
        if given != lake_tags {
            update.insert("tags".into(), json!(given));
        }
        tags = given;
    }
    let added: Vec<String> = sorted_tags(row.get("additional_tags"))
        .into_iter()
        .filter(|t| !tags.contains(t))
        .collect();
    if !added.is_empty() {
        tags.extend(added.iter().cloned());
        update.insert("additional_tags".into(), json!(added));
    }
    let removed: Vec<String> = sorted_tags(row.get("remove_tags"))
        .into_iter()
        .filter(|t| tags.contains(t))
        .collect();
    if !removed.is_empty() {
        tags.retain(|t| !removed.contains(t));
        update.insert("remove_tags".into(), json!(removed));
    }
    tags.sort_unstable();
    if tags != lake_tags {
        change("tags", json!(lake_tags), json!(tags));
    }
    if let Some(given) = row.get("custom_fields").and_then(Value::as_array) {
        let current: HashMap<i64, Value> = lake
            .and_then(|l| l.get("custom_fields"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some((
                    f.get("id")?.as_i64()?,
                    f.get("value").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect();
        let mut fields = Vec::new();
        for field in given {
            let Some(id) = field.get("id").and_then(Value::as_i64) else {
                continue;
            };
            let after = field.get("value").cloned().unwrap_or(Value::Null);
            let before = current.get(&id).cloned().unwrap_or(Value::Null);
            if before != after {
                change(&format!("custom_fields.{id}"), before, after.clone());
                fields.push(json!({"id": id, "value": after}));
            }
        }
        if !fields.is_empty() {
            update.insert("custom_fields".into(), Value::Array(fields));
        }
    }
    (update, changes)
}

/// The comment of a row as sent: its body, and `public` only when asked (an internal note
/// otherwise); `None` without a body.
fn comment_of(row: &Map<String, Value>) -> Option<Value> {
    let comment = row.get("comment")?.as_object()?;
    let body = comment.get("body")?.as_str().filter(|b| !b.is_empty())?;
    let public = comment.get("public").and_then(Value::as_bool) == Some(true);
    Some(json!({"body": body, "public": public}))
}

/// A syncer of the tickets' stream (with its other configured tables), and the tickets table
/// it syncs.
async fn tickets_syncer(settings: &Settings) -> Result<(Syncer, &'static Table), Error> {
    let table = spec::find(TICKETS_TABLE)
        .ok_or_else(|| Error::Settings(format!("no table {TICKETS_TABLE} in the registry")))?;
    let mut settings = settings.clone();
    if !settings.tables.iter().any(|t| t.name == table.name) {
        settings.tables.push(table);
    }
    Ok((Syncer::try_new(settings).await?, table))
}

/// An incremental run of the tickets' stream.
async fn sync_tickets((syncer, table): &(Syncer, &'static Table)) -> Result<(), Error> {
    let report = syncer.run(&[*table]).await?;
    if report.failed() {
        let failed: Vec<String> = report
            .tables
            .iter()
            .filter(|t| matches!(t.outcome, sync::Outcome::Failed(_)))
            .map(|t| format!("{}: {:?}", t.table, t.outcome))
            .collect();
        return Err(Error::SyncFailed(failed.join("; ")));
    }
    Ok(())
}

/// The lake's copy of the tickets `ids`, by id, read with the update's shape; a deleted one
/// shows the status `deleted`.
async fn lake_tickets(lake: &Lake, ids: &[i64]) -> Result<HashMap<i64, Map<String, Value>>, Error> {
    let mut out = HashMap::new();
    if lake.open(TICKETS_TABLE).await?.is_none() {
        return Ok(out);
    }
    let columns: Vec<String> = std::iter::once("id")
        .chain(SCALARS.iter().copied().filter(|c| *c != "status"))
        .chain(["tags", "custom_fields"])
        .map(|c| format!("\"{c}\""))
        .collect();
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT {}, CASE WHEN \"{DELETED_COLUMN}\" THEN 'deleted' ELSE status END AS status \
             FROM \"{TICKETS_TABLE}\" WHERE id IN ({})",
            columns.join(", "),
            list.join(", ")
        );
        let batches = lake.query(&sql).await?;
        for row in TICKET_UPDATE.encode(&batches)? {
            if let Some(id) = row.object.get("id").and_then(Value::as_i64) {
                out.insert(id, row.object);
            }
        }
    }
    Ok(out)
}

/// Push the source's changes to Zendesk.
pub async fn push(settings: Settings, options: PushOptions) -> Result<PushReport, Error> {
    let started = Instant::now();
    let lake = Lake::try_new(&settings.lake, settings.storage.clone())?;
    // The source is checked before anything is synced or sent, and read again after the sync,
    // so that a query joined with the tickets sees their latest state.
    let checked = TICKET_UPDATE.encode(&lake.query(&options.sql).await?)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    // The state is read under the lease: no other run sends comments while this one decides.
    // A dry run sends nothing and takes none.
    let lease = match options.dry_run {
        true => None,
        false => Some(Lease::acquire(&lake, PUSH_STATE.name, &run_id).await?),
    };
    let result = run_push(
        &settings,
        &options,
        &lake,
        &checked,
        &run_id,
        lease.as_ref(),
    )
    .await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    let mut report = result?;
    report.seconds = started.elapsed().as_secs_f64();
    if !report.dry_run {
        info!(summary = %report.summary(), "push done");
    }
    Ok(report)
}

/// [`push`], once its source is checked and its lease (unless dry) taken.
async fn run_push(
    settings: &Settings,
    options: &PushOptions,
    lake: &Lake,
    checked: &[Encoded],
    run_id: &str,
    lease: Option<&Lease>,
) -> Result<PushReport, Error> {
    let mut state: HashMap<String, PushRow> = lake
        .state_latest::<PushRow>(&PUSH_STATE)
        .await?
        .into_iter()
        .map(|row| (row.key.clone(), row))
        .collect();
    let mut report = PushReport {
        dry_run: options.dry_run,
        ..PushReport::default()
    };
    let writer = StateWriter::new(lake, PUSH_STATE, run_id);
    let stats = Arc::new(RequestStats::default());
    // One syncer for the whole push: the credentials are checked and the lake migrated once,
    // and its client, with the budgets it learns from Zendesk's headers, sends the push's own
    // requests too.
    let syncer = tickets_syncer(settings).await?;
    let client = syncer.0.client();
    let pending: Vec<PushRow> = state
        .values()
        .filter(|r| r.status == PushStatus::Pending)
        .cloned()
        .collect();
    // Settled before the sync: waiting for a pending job applies its fields, which the sync
    // then brings into the lake the diff reads. A dry run leaves them pending (it writes nothing).
    if !pending.is_empty() && !options.dry_run {
        let sent: HashMap<String, Value> = checked
            .iter()
            .filter_map(|row| {
                let id = row.object.get("id")?.as_i64()?;
                let comment = comment_of(&row.object)?;
                Some((comment_key(id, &comment), comment))
            })
            .collect();
        info!(
            run_id,
            pending = pending.len(),
            "settling the comments an earlier push left pending"
        );
        for row in resolve(client, &stats, &writer, options.poll, &pending, &sent).await? {
            match row.status {
                PushStatus::Done => report.settled_done += 1,
                PushStatus::Unapplied => report.settled_unapplied += 1,
                PushStatus::Refused => report
                    .refused
                    .push((row.ticket_id, row.error.clone().unwrap_or_default())),
                PushStatus::Pending => {}
            }
            state.insert(row.key.clone(), row);
        }
    }
    sync_tickets(&syncer).await?;
    let rows = TICKET_UPDATE.encode(&lake.query(&options.sql).await?)?;
    report.rows = rows.len();
    let ids: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.object.get("id").and_then(Value::as_i64))
        .collect();
    let current = lake_tickets(lake, &ids).await?;
    let mut updates = Vec::new();
    for row in &rows {
        let Some(id) = row.object.get("id").and_then(Value::as_i64) else {
            continue;
        };
        let lake_row = current.get(&id);
        let (mut object, mut changes) = diff(id, &row.object, lake_row);
        let mut key = None;
        if let Some(comment) = comment_of(&row.object) {
            let k = comment_key(id, &comment);
            let pushed = state.get(&k).is_some_and(|s| s.status.holds());
            if !pushed {
                changes.push(FieldChange {
                    ticket_id: id,
                    field: "comment".into(),
                    before: Value::Null,
                    after: comment.clone(),
                });
                object.insert("comment".into(), comment);
                key = Some(k);
            }
        }
        if object.is_empty() {
            report.unchanged += 1;
            continue;
        }
        let status = lake_row
            .and_then(|l| l.get("status"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if FROZEN.contains(&status) {
            report.frozen.push((id, status.to_owned()));
            continue;
        }
        let refused = refused_key(id, &object);
        if state
            .get(&refused)
            .is_some_and(|s| s.status == PushStatus::Refused)
        {
            report.refused_before.push(id);
            continue;
        }
        object.insert("id".into(), json!(id));
        report.changes.extend(changes);
        updates.push(Update {
            ticket_id: id,
            object,
            comment_key: key,
            refused_key: refused,
        });
    }
    if updates.len() > options.max_tickets {
        return Err(Error::TooMany {
            tickets: updates.len(),
            max: options.max_tickets,
        });
    }
    report.update_requests = updates.len().div_ceil(MAX_BULK) as u64;
    let Some(lease) = lease.filter(|_| !options.dry_run) else {
        report.requests = report.update_requests * jobs::REQUESTS_PER_BATCH;
        return Ok(report);
    };
    if !updates.is_empty() {
        info!(run_id, tickets = updates.len(), "push starts");
        for chunk in updates.chunks(MAX_BULK) {
            lease.check()?;
            send_batch(client, &stats, &writer, options.poll, chunk, &mut report).await?;
        }
        sync_tickets(&syncer).await?;
    }
    report.requests = stats.requests();
    report.refused.sort();
    report.pending.sort_unstable();
    Ok(report)
}

fn push_row(ticket_id: i64, key: &str, status: PushStatus) -> PushRow {
    PushRow {
        key: key.to_owned(),
        ticket_id,
        status,
        error: None,
        job: JobRef::default(),
        recorded: Recorded::default(),
    }
}

/// Send one batch and follow its job to the end, its comments recorded `pending` before and
/// `done` after, its refusals recorded.
async fn send_batch(
    client: &Client,
    stats: &RequestStats,
    writer: &StateWriter,
    poll: Poll,
    chunk: &[Update],
    report: &mut PushReport,
) -> Result<(), Error> {
    let mut pending: Vec<PushRow> = chunk
        .iter()
        .enumerate()
        .filter_map(|(index, u)| {
            let key = u.comment_key.as_deref()?;
            Some(PushRow {
                job: JobRef::at(index),
                ..push_row(u.ticket_id, key, PushStatus::Pending)
            })
        })
        .collect();
    writer.append(&pending).await?;
    failpoint::hit("push_pending_recorded");
    let tickets: Vec<Value> = chunk
        .iter()
        .map(|u| Value::Object(u.object.clone()))
        .collect();
    report.sent += chunk.len();
    let job = match tickets::update_many(client, stats, &tickets).await {
        Ok(job) => job,
        Err(error) if error.may_have_applied() => {
            warn!(%error, tickets = chunk.len(), "the update may have been applied: its comments stay pending for the next push to settle");
            report.pending.extend(chunk.iter().map(|u| u.ticket_id));
            return Ok(());
        }
        Err(error) if error.is_unauthorized() => return Err(error.into()),
        Err(error) => {
            warn!(%error, tickets = chunk.len(), "the update was refused");
            let message = error.to_string();
            let outcomes: Vec<(usize, Option<String>)> = (0..chunk.len())
                .map(|i| (i, Some(message.clone())))
                .collect();
            return record(writer, chunk, None, &outcomes, report).await;
        }
    };
    failpoint::hit("push_submitted");
    for row in &mut pending {
        row.job.job_id = Some(job.id.clone());
    }
    writer.append(&pending).await?;
    failpoint::hit("push_job_recorded");
    let done = jobs::ended(client, stats, job, poll).await;
    failpoint::hit("push_job_done");
    let mut outcomes = Vec::new();
    for (index, update) in chunk.iter().enumerate() {
        match done.result(index) {
            Some(result) => outcomes.push((index, result.error_message())),
            None => report.pending.push(update.ticket_id),
        }
    }
    record(writer, chunk, Some(&done.id), &outcomes, report).await?;
    failpoint::hit("push_recorded");
    Ok(())
}

/// A comment's text as compared with a ticket's: whitespace collapsed (Zendesk may trim it or
/// change its line ends).
fn normalized(body: &str) -> String {
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Settle the comments an earlier run left `pending` (docs/ARCHITECTURE.md, "The write path"):
/// by the result of their recorded job when Zendesk still knows it; else, once every running
/// job of the account ended, by the ticket's comments (`sent`, the source's comments by key,
/// gives the body to look for; a key the source no longer has is looked for by its hash).
/// Found is `done`, a refusal `refused`, not found `unapplied`. The settled rows, recorded.
async fn resolve(
    client: &Client,
    stats: &RequestStats,
    writer: &StateWriter,
    poll: Poll,
    pending: &[PushRow],
    sent: &HashMap<String, Value>,
) -> Result<Vec<PushRow>, Error> {
    let next = |row: &PushRow, status: PushStatus, error: Option<String>| PushRow {
        status,
        error,
        ..row.clone()
    };
    let by_jobs = jobs::resolve(client, stats, poll, pending, |r| r.job.job()).await?;
    let mut resolved: Vec<PushRow> = by_jobs
        .results
        .iter()
        .map(|(row, result)| match result.error_message() {
            None => next(row, PushStatus::Done, None),
            Some(message) => next(row, PushStatus::Refused, Some(message)),
        })
        .collect();
    let mut by_ticket: BTreeMap<i64, Vec<&PushRow>> = BTreeMap::new();
    for row in by_jobs.unknown {
        by_ticket.entry(row.ticket_id).or_default().push(row);
    }
    for (ticket, rows) in by_ticket {
        let comments = tickets::comments(client, stats, ticket).await?;
        let bodies: BTreeSet<String> = comments
            .iter()
            .filter_map(|c| c.get("body")?.as_str().map(normalized))
            .collect();
        let keys: BTreeSet<String> = comments
            .iter()
            .filter_map(|c| c.get("body")?.as_str())
            .flat_map(|body| {
                [true, false]
                    .map(|public| comment_key(ticket, &json!({"body": body, "public": public})))
            })
            .collect();
        for row in rows {
            let found = match sent.get(&row.key).and_then(|c| c.get("body")?.as_str()) {
                Some(body) => bodies.contains(&normalized(body)),
                None => keys.contains(&row.key),
            };
            resolved.push(if found {
                next(row, PushStatus::Done, None)
            } else {
                warn!(ticket, key = %row.key, "a pending comment is not on its ticket: never applied, sent again");
                next(
                    row,
                    PushStatus::Unapplied,
                    Some("not found on its ticket after its run ended: never applied".into()),
                )
            });
        }
    }
    writer.append(&resolved).await?;
    Ok(resolved)
}

/// Record the outcomes of a batch's rows (by index: Zendesk's message for a refused one).
async fn record(
    writer: &StateWriter,
    chunk: &[Update],
    job: Option<&str>,
    outcomes: &[(usize, Option<String>)],
    report: &mut PushReport,
) -> Result<(), Error> {
    let mut rows = Vec::new();
    for (index, message) in outcomes {
        let Some(update) = chunk.get(*index) else {
            continue;
        };
        let job_id = job.map(str::to_owned);
        match message {
            None => {
                report.updated += 1;
                if let Some(key) = &update.comment_key {
                    rows.push(PushRow {
                        job: JobRef {
                            job_id,
                            job_index: None,
                        },
                        ..push_row(update.ticket_id, key, PushStatus::Done)
                    });
                }
            }
            Some(message) => {
                report.refused.push((update.ticket_id, message.clone()));
                let keys = std::iter::once(&update.refused_key).chain(&update.comment_key);
                for key in keys {
                    rows.push(PushRow {
                        error: Some(message.clone()),
                        job: JobRef {
                            job_id: job_id.clone(),
                            job_index: None,
                        },
                        ..push_row(update.ticket_id, key, PushStatus::Refused)
                    });
                }
            }
        }
    }
    writer.append(&rows).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn only_what_differs_is_sent() {
        let lake = map(json!({
            "id": 1, "status": "open", "priority": "low", "tags": ["a", "b"],
            "custom_fields": [{"id": 10, "value": "x"}, {"id": 11, "value": null}],
        }));
        let row = map(json!({
            "id": 1, "status": "open", "priority": "high",
            "additional_tags": ["b", "c"], "remove_tags": ["a", "z"],
            "custom_fields": [{"id": 10, "value": "x"}, {"id": 11, "value": true}],
        }));
        let (update, changes) = diff(1, &row, Some(&lake));
        assert_eq!(
            Value::Object(update),
            json!({
                "priority": "high", "additional_tags": ["c"], "remove_tags": ["a"],
                "custom_fields": [{"id": 11, "value": true}],
            })
        );
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["priority", "tags", "custom_fields.11"]);
        assert_eq!(changes[1].after, json!(["b", "c"]));
    }

    #[test]
    fn a_row_that_changes_nothing_is_empty() {
        let lake = map(json!({"id": 1, "status": "open", "tags": ["a"]}));
        let row = map(json!({"id": 1, "status": "open", "tags": ["a"], "additional_tags": ["a"]}));
        let (update, changes) = diff(1, &row, Some(&lake));
        assert!(update.is_empty() && changes.is_empty());
    }

    #[test]
    fn comments_are_internal_unless_public_and_keyed_by_content() {
        let row = map(json!({"id": 1, "comment": {"body": "hi"}}));
        let comment = comment_of(&row).unwrap();
        assert_eq!(comment, json!({"body": "hi", "public": false}));
        assert_eq!(comment_key(1, &comment), comment_key(1, &comment.clone()));
        assert_ne!(comment_key(1, &comment), comment_key(2, &comment));
        assert!(comment_of(&map(json!({"id": 1, "comment": {"body": ""}}))).is_none());
    }
}
