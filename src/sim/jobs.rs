//! Writes to the simulated account: ticket import (`create_many`) and `update_many`, both
//! answered with a job status that a client polls, and the ticket listing by `external_id` a
//! client uses to find what an interrupted import did.
//!
//! Why: writes to Zendesk are not idempotent (docs/ARCHITECTURE.md, "The write
//! path"), so the product's exactly-once import is only testable against an account
//! whose jobs take a while, fail per row, and whose tickets exist only once a job has completed.
//!
//! Shapes, from Zendesk's reference and the recorded samples (`tickets_create_many.json`,
//! `job_status.json`):
//! - `POST /api/v2/imports/tickets/create_many[?archive_immediately=true]` `{"tickets": [...]}`
//!   (at most 100) and `PUT /api/v2/tickets/update_many` `{"tickets": [{"id": ..}, ...]}` answer
//!   200 `{"job_status": {id, url, total, progress: null, status: "queued", message: null,
//!   results: null}}`; the id is `V3-` and 32 hex digits, as recorded.
//! - `GET /api/v2/job_statuses/{id}` reports `queued`, then `working`, then `completed` at the
//!   poll [`super::SimConfig::job_polls`]: the job is applied at that poll, not before. Results
//!   of an import are `{index, id, account_id}` (as recorded) or `{index, error, details}`; of
//!   an update `{index, id, action: "update", success: true, status: "Updated"}` or `{index, id,
//!   error, details}`. The error codes and details are not in the reference: the simulator's
//!   guesses are `RecordInvalid` for an unknown requester, `RecordNotFound` for an unknown or
//!   deleted ticket and `TicketUpdateFailed` / "Status: closed prevents ticket update" for a
//!   closed one (the message Zendesk's UI and forums quote).
//! - `GET /api/v2/job_statuses` lists the jobs, newest first; more than 30 unfinished jobs
//!   refuse a new one with 429 `TooManyJobs` and a `Retry-After`.
//! - `GET /api/v2/tickets/{id}/comments` lists the comments `update_many` added to a ticket
//!   (`{comments: [{id, type, author_id, body, html_body, plain_body, public, attachments,
//!   audit_id, via, metadata, created_at}], next_page, previous_page, count}`), oldest first,
//!   with offset pagination (`page`, `per_page` up to 100); the generated history's comments are
//!   not listed there (they are in the ticket events' export).
//! - `GET /api/v2/tickets?external_id=X` lists the live, unarchived tickets with that external
//!   id (`{tickets, next_page: null, previous_page: null, count}`); the unfiltered listing is not
//!   served.
//!
//! What a completed job does: it happens at the account's now (a fixed clock's now, or the
//! real time), which then moves a second on, so nothing a later round changes sorts before it in
//! an export. An imported ticket keeps its given `created_at` / `updated_at`; its
//! `generated_timestamp` and its events are at the import. A requester given by e-mail that
//! does not exist is created as an end user. Archived imports stay in the exports.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use serde_json::{json, Map, Value};

use super::api::{Request, Response};
use super::data::{
    custom_status_id, rfc3339, splitmix, stream_rng, AddedComment, Change, ChangeKind, Object,
    Source, State, BRAND_IDS, CUSTOM_FIELD_IDS, FIRST_TICKET_ID, FIRST_USER_ID, RECORD_BASE_URL,
    STATUSES, TICKET_FORM_IDS,
};
use super::events::strings;
use super::Simulator;

/// Zendesk's limit of tickets per bulk request.
const MAX_BULK: usize = 100;
/// Zendesk's limit of jobs an account runs at once.
const MAX_RUNNING_JOBS: usize = 30;
/// The simulated account's id, in job results and webhook events.
pub(crate) const ACCOUNT_ID: i64 = 18_525_119;
/// Random stream numbers of this module (see `data::stream_rng`).
const STREAM_IMPORT: u64 = 31;
const STREAM_UPDATE: u64 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Working,
    Completed,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Working => "working",
            Phase::Completed => "completed",
        }
    }
}

enum Work {
    Import { tickets: Vec<Value>, archive: bool },
    Update { tickets: Vec<Value> },
}

struct Job {
    id: String,
    total: usize,
    polls: u32,
    phase: Phase,
    /// Until it completes.
    work: Option<Work>,
    results: Value,
    message: Value,
}

/// The account's jobs and what they did (ground truth for tests).
#[derive(Default)]
pub(crate) struct Jobs {
    /// In submission order.
    jobs: Vec<Job>,
    /// Tickets created per external id, by imports.
    created: BTreeMap<String, usize>,
    /// Tickets imported with `archive_immediately` (and closed).
    archived: BTreeSet<i64>,
    /// Comments `update_many` added, per ticket.
    comments: BTreeMap<i64, Vec<Value>>,
    /// Every `update_many` body received.
    updates: Vec<Value>,
}

impl Jobs {
    pub(crate) fn created_per_external_id(&self) -> BTreeMap<String, usize> {
        self.created.clone()
    }

    pub(crate) fn comments_added(&self) -> BTreeMap<i64, Vec<Value>> {
        self.comments.clone()
    }

    pub(crate) fn update_requests(&self) -> Vec<Value> {
        self.updates.clone()
    }

    pub(crate) fn is_archived(&self, ticket: i64) -> bool {
        self.archived.contains(&ticket)
    }

    fn running(&self) -> usize {
        self.jobs
            .iter()
            .filter(|job| job.phase != Phase::Completed)
            .count()
    }
}

/// `{"error": ..., "description": ...}` with status 400.
fn invalid(description: &str) -> Response {
    Response::invalid(description)
}

/// The array of tickets of a bulk body, or the 400 that refuses it.
fn bulk_tickets(request: &Request) -> Result<Vec<Value>, Response> {
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|_| invalid("The request body is not valid JSON"))?;
    let tickets = body
        .get("tickets")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("tickets parameter is required"))?;
    if tickets.is_empty() {
        return Err(invalid("tickets parameter is required"));
    }
    if tickets.len() > MAX_BULK {
        return Err(invalid("Too many tickets in request (limit 100)"));
    }
    if tickets.iter().any(|ticket| !ticket.is_object()) {
        return Err(invalid("Each ticket must be an object"));
    }
    Ok(tickets.clone())
}

fn unix_of(value: &Value) -> Option<Result<i64, ()>> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp().max(0))
                .map_err(|_| ()),
        ),
        _ => Some(Err(())),
    }
}

fn int(map: &Map<String, Value>, field: &str) -> Option<i64> {
    map.get(field).and_then(Value::as_i64)
}

/// Tags as Zendesk keeps them: sorted, unique.
fn tag_list(value: Option<&Value>) -> Vec<String> {
    let mut tags = strings(value);
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// The account's custom fields with the given values (`[{id, value}]`) over `current`.
fn merged_custom_fields(current: &Value, given: Option<&Value>) -> Value {
    let mut values: BTreeMap<i64, Value> = match current.as_array() {
        Some(fields) => fields
            .iter()
            .filter_map(|f| Some((f.get("id")?.as_i64()?, f.get("value")?.clone())))
            .collect(),
        None => CUSTOM_FIELD_IDS
            .iter()
            .map(|id| (*id, Value::Null))
            .collect(),
    };
    for field in given.and_then(Value::as_array).into_iter().flatten() {
        if let Some(id) = field.get("id").and_then(Value::as_i64) {
            let value = field.get("value").cloned().unwrap_or(Value::Null);
            values.insert(id, value);
        }
    }
    // The account's fields in their order, then any other id given.
    let mut ordered: Vec<Value> = Vec::new();
    for id in CUSTOM_FIELD_IDS {
        if let Some(value) = values.remove(&id) {
            ordered.push(json!({"id": id, "value": value}));
        }
    }
    ordered.extend(
        values
            .into_iter()
            .map(|(id, value)| json!({"id": id, "value": value})),
    );
    Value::Array(ordered)
}

fn comment_body(comment: &Map<String, Value>) -> Option<String> {
    ["body", "value", "html_body"]
        .iter()
        .find_map(|key| comment.get(*key).and_then(Value::as_str))
        .map(String::from)
}

type RowError = (&'static str, String);

impl State {
    /// The live users by e-mail (one scan, for one job).
    fn users_by_email(&self) -> BTreeMap<String, i64> {
        self.users
            .values()
            .filter_map(|text| {
                let user: Value = serde_json::from_str(text).ok()?;
                Some((
                    user.get("email")?.as_str()?.to_ascii_lowercase(),
                    user.get("id")?.as_i64()?,
                ))
            })
            .collect()
    }

    /// Creates an end user for an import's `requester: {name, email}` at `ts`.
    fn import_user(
        &mut self,
        rng: &mut StdRng,
        name: &str,
        email: &str,
        ts: i64,
        changes: &mut Vec<Change>,
    ) -> i64 {
        let id = FIRST_USER_ID + self.users.len() as i64;
        // A generated user with the given identity: every field a user has, the requester's own.
        self.create_user(rng, "", ts, ts);
        self.users.update(id, ts, false, |map| {
            map.insert("name".into(), json!(name));
            map.insert("email".into(), json!(email));
            map.insert("role".into(), json!("end-user"));
            map.insert("role_type".into(), Value::Null);
            map.insert("custom_role_id".into(), Value::Null);
            map.insert("ticket_restriction".into(), json!("requested"));
            map.insert("restricted_agent".into(), json!(true));
            map.insert("moderator".into(), json!(false));
            map.insert("suspended".into(), json!(false));
            map.insert("default_group_id".into(), Value::Null);
            map.insert("signature".into(), Value::Null);
            map.insert("two_factor_auth_enabled".into(), Value::Null);
            map.insert("report_csv".into(), json!(false));
            map.insert("alias".into(), Value::Null);
        });
        if let Some(after) = self.users.object(id) {
            changes.push(Change {
                object: Object::Users,
                kind: ChangeKind::Create,
                source: Source::Import,
                id,
                ts,
                before: None,
                after,
                comments: Vec::new(),
            });
        }
        id
    }

    /// Imports one ticket of a `create_many` at `ts`; its id, or the row's error.
    fn import_ticket(
        &mut self,
        rng: &mut StdRng,
        given: &Map<String, Value>,
        ts: i64,
        archive: bool,
        emails: &mut BTreeMap<String, i64>,
        changes: &mut Vec<Change>,
    ) -> Result<i64, RowError> {
        let time = |field: &str| -> Result<Option<i64>, RowError> {
            match given.get(field).and_then(unix_of) {
                None => Ok(None),
                Some(Ok(t)) => Ok(Some(t)),
                Some(Err(())) => Err((
                    "InvalidValue",
                    format!("{field}: is not a valid ISO 8601 time"),
                )),
            }
        };
        let status = match given.get("status").and_then(Value::as_str) {
            None => "new".to_string(),
            Some(status) if STATUSES.contains(&status) => status.to_string(),
            Some(other) => return Err(("InvalidValue", format!("Status: {other} is invalid"))),
        };
        let created = time("created_at")?.unwrap_or(ts).min(ts);
        // Comments: [{author_id, value | body | html_body, public, created_at}], else the
        // description as the one comment.
        let mut comments: Vec<(i64, String, bool, i64)> = Vec::new();
        let requester = if let Some(id) = int(given, "requester_id") {
            if self.users.get(id).is_none() {
                return Err(("RecordInvalid", format!("Requester: user {id} not found")));
            }
            id
        } else if let Some(requester) = given.get("requester").and_then(Value::as_object) {
            let Some(email) = requester.get("email").and_then(Value::as_str) else {
                return Err(("RecordInvalid", "Requester: email is required".into()));
            };
            match emails.get(&email.to_ascii_lowercase()) {
                Some(id) => *id,
                None => {
                    let name = requester
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| email.split('@').next().unwrap_or(email));
                    let id = self.import_user(rng, name, email, ts, changes);
                    emails.insert(email.to_ascii_lowercase(), id);
                    id
                }
            }
        } else {
            // As Zendesk: the requester defaults to the user making the request.
            FIRST_USER_ID
        };
        for comment in given
            .get("comments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(comment) = comment.as_object() else {
                continue;
            };
            let at = match comment.get("created_at").and_then(unix_of) {
                None => created,
                Some(Ok(t)) => t.min(ts),
                Some(Err(())) => {
                    return Err((
                        "InvalidValue",
                        "Comment created_at: is not a valid ISO 8601 time".into(),
                    ))
                }
            };
            comments.push((
                int(comment, "author_id").unwrap_or(requester),
                comment_body(comment).unwrap_or_default(),
                comment
                    .get("public")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                at,
            ));
        }
        if comments.is_empty() {
            if let Some(description) = given.get("description").and_then(Value::as_str) {
                comments.push((requester, description.to_string(), true, created));
            }
        }
        let last_comment = comments.iter().map(|c| c.3).max().unwrap_or(created);
        let updated = time("updated_at")?
            .unwrap_or(last_comment.max(created))
            .min(ts);
        let _solved = time("solved_at")?;
        let id = FIRST_TICKET_ID + self.tickets.len() as i64;
        let requester_org = self
            .users
            .object(requester)
            .and_then(|user| user.get("organization_id").cloned())
            .unwrap_or(Value::Null);
        let subject = given.get("subject").cloned().unwrap_or(Value::Null);
        let custom_fields = merged_custom_fields(&Value::Null, given.get("custom_fields"));
        let field = |name: &str| given.get(name).cloned().unwrap_or(Value::Null);
        let or = |name: &str, default: Value| match given.get(name) {
            Some(value) if !value.is_null() => value.clone(),
            _ => default,
        };
        let value = json!({
            "url": format!("{RECORD_BASE_URL}/api/v2/tickets/{id}.json"),
            "id": id,
            "external_id": field("external_id"),
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": null}},
            "created_at": rfc3339(created),
            "updated_at": rfc3339(updated),
            "type": field("type"),
            "subject": subject,
            "raw_subject": subject,
            "description": comments.first().map(|c| json!(c.1)).unwrap_or(Value::Null),
            "priority": field("priority"),
            "status": status,
            "recipient": null,
            "requester_id": requester,
            "submitter_id": or("submitter_id", json!(requester)),
            "assignee_id": field("assignee_id"),
            "organization_id": or("organization_id", requester_org),
            "group_id": field("group_id"),
            "collaborator_ids": or("collaborator_ids", json!([])),
            "follower_ids": [],
            "email_cc_ids": [],
            "forum_topic_id": null,
            "problem_id": null,
            "has_incidents": false,
            "is_public": comments.is_empty() || comments.iter().any(|c| c.2),
            "due_at": field("due_at"),
            "tags": tag_list(given.get("tags")),
            "custom_fields": custom_fields,
            "satisfaction_rating": null,
            "sharing_agreement_ids": [],
            "custom_status_id": custom_status_id(&status),
            "fields": custom_fields,
            "followup_ids": [],
            "ticket_form_id": or("ticket_form_id", json!(TICKET_FORM_IDS[0])),
            "brand_id": or("brand_id", json!(BRAND_IDS[0])),
            "allow_channelback": false,
            "allow_attachments": true,
            "from_messaging_channel": false,
            "generated_timestamp": ts,
        });
        self.tickets.insert(id, ts, &value);
        let Some(after) = self.tickets.object(id) else {
            return Ok(id);
        };
        let ids = self.activity.imported(rng, &after, ts, &comments);
        if let Some(external) = given.get("external_id").and_then(Value::as_str) {
            *self.jobs.created.entry(external.to_string()).or_default() += 1;
        }
        if archive && status == "closed" {
            self.jobs.archived.insert(id);
        }
        changes.push(Change {
            object: Object::Tickets,
            kind: ChangeKind::Create,
            source: Source::Import,
            id,
            ts,
            before: None,
            comments: ids
                .into_iter()
                .zip(&comments)
                .map(|(id, (author, body, public, _))| AddedComment {
                    id,
                    author_id: *author,
                    body: body.clone(),
                    public: *public,
                })
                .collect(),
            after,
        });
        Ok(id)
    }

    /// Applies one row of an `update_many` at `ts`, by the admin.
    fn update_ticket(
        &mut self,
        rng: &mut StdRng,
        row: &Map<String, Value>,
        ts: i64,
        changes: &mut Vec<Change>,
    ) -> Result<i64, (Option<i64>, RowError)> {
        let Some(id) = int(row, "id") else {
            return Err((None, ("InvalidValue", "id: is required".into())));
        };
        let Some(before) = self
            .tickets
            .object(id)
            .filter(|_| !self.tickets.is_deleted(id))
        else {
            return Err((Some(id), ("RecordNotFound", "Not found".into())));
        };
        if before.get("status").and_then(Value::as_str) == Some("closed") {
            return Err((
                Some(id),
                (
                    "TicketUpdateFailed",
                    "Status: closed prevents ticket update".into(),
                ),
            ));
        }
        if let Some(status) = row.get("status").and_then(Value::as_str) {
            if !STATUSES.contains(&status) {
                let details = format!("Status: {status} is invalid");
                return Err((Some(id), ("InvalidValue", details)));
            }
        }
        let comment = row.get("comment").and_then(Value::as_object).map(|c| {
            (
                comment_body(c).unwrap_or_default(),
                c.get("public").and_then(Value::as_bool).unwrap_or(true),
            )
        });
        let mut tags = tag_list(before.get("tags"));
        if let Some(given) = row.get("tags") {
            tags = tag_list(Some(given));
        }
        tags.extend(tag_list(row.get("additional_tags")));
        let removed = tag_list(row.get("remove_tags"));
        tags.retain(|tag| !removed.contains(tag));
        tags.sort_unstable();
        tags.dedup();
        let custom = row
            .get("custom_fields")
            .map(|given| merged_custom_fields(&before["custom_fields"], Some(given)));
        self.tickets.update(id, ts, false, |map| {
            for field in [
                "status",
                "priority",
                "type",
                "assignee_id",
                "group_id",
                "organization_id",
                "external_id",
            ] {
                if let Some(value) = row.get(field) {
                    map.insert(field.into(), value.clone());
                }
            }
            if let Some(status) = row.get("status").and_then(Value::as_str) {
                map.insert("custom_status_id".into(), json!(custom_status_id(status)));
            }
            map.insert("tags".into(), json!(tags));
            if let Some(custom) = custom {
                map.insert("fields".into(), custom.clone());
                map.insert("custom_fields".into(), custom);
            }
            map.insert("updated_at".into(), json!(rfc3339(ts)));
            map.insert("generated_timestamp".into(), json!(ts));
        });
        let Some(after) = self.tickets.object(id) else {
            return Ok(id);
        };
        let updater = FIRST_USER_ID;
        let comment_id =
            self.activity
                .api_updated(rng, &before, &after, ts, updater, comment.clone());
        let mut added = Vec::new();
        if let (Some(comment_id), Some((body, public))) = (comment_id, comment) {
            self.jobs.comments.entry(id).or_default().push(json!({
                "id": comment_id,
                "ticket_id": id,
                "author_id": updater,
                "body": body,
                "public": public,
                "created_at": rfc3339(ts),
            }));
            added.push(AddedComment {
                id: comment_id,
                author_id: updater,
                body,
                public,
            });
        }
        changes.push(Change {
            object: Object::Tickets,
            kind: ChangeKind::Update,
            source: Source::Update,
            id,
            ts,
            before: Some(before),
            after,
            comments: added,
        });
        Ok(id)
    }

    /// Applies a job's work at the account's now (which then moves a second on); its results.
    fn run_job(&mut self, work: Work, job_number: u64, changes: &mut Vec<Change>) -> Value {
        let ts = self.tick(0, 0);
        let mut results = Vec::new();
        match work {
            Work::Import { tickets, archive } => {
                let mut rng = stream_rng(self.seed(), job_number, STREAM_IMPORT);
                let mut emails = self.users_by_email();
                for (index, ticket) in tickets.iter().enumerate() {
                    let Some(ticket) = ticket.as_object() else {
                        continue;
                    };
                    results.push(
                        match self.import_ticket(
                            &mut rng,
                            ticket,
                            ts,
                            archive,
                            &mut emails,
                            changes,
                        ) {
                            Ok(id) => json!({"index": index, "id": id, "account_id": ACCOUNT_ID}),
                            Err((error, details)) => {
                                json!({"index": index, "error": error, "details": details})
                            }
                        },
                    );
                }
            }
            Work::Update { tickets } => {
                let mut rng = stream_rng(self.seed(), job_number, STREAM_UPDATE);
                for (index, row) in tickets.iter().enumerate() {
                    let Some(row) = row.as_object() else {
                        continue;
                    };
                    results.push(match self.update_ticket(&mut rng, row, ts, changes) {
                        Ok(id) => json!({
                            "index": index, "id": id, "action": "update",
                            "success": true, "status": "Updated",
                        }),
                        Err((id, (error, details))) => json!({
                            "index": index, "id": id, "error": error, "details": details,
                        }),
                    });
                }
            }
        }
        self.now = ts + 1;
        Value::Array(results)
    }

    /// Polls job `index`: one poll more, and the job runs when it reaches its completing poll.
    fn poll(&mut self, index: usize, job_polls: u32, changes: &mut Vec<Change>) {
        let job = &mut self.jobs.jobs[index];
        job.polls += 1;
        let polls = job.polls;
        self.advance(index, polls, job_polls, changes);
    }

    /// Moves job `index` to the phase its `polls` reach.
    fn advance(&mut self, index: usize, polls: u32, job_polls: u32, changes: &mut Vec<Change>) {
        let job = &mut self.jobs.jobs[index];
        if job.phase == Phase::Completed {
            return;
        }
        if polls >= job_polls {
            let work = job.work.take();
            if let Some(work) = work {
                let results = self.run_job(work, index as u64 + 1, changes);
                let now = self.now;
                let job = &mut self.jobs.jobs[index];
                job.results = results;
                job.phase = Phase::Completed;
                job.message = json!(format!(
                    "Completed at {}",
                    chrono::DateTime::from_timestamp(now, 0)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000").to_string())
                        .unwrap_or_default()
                ));
            }
        } else if polls + 1 >= job_polls {
            job.phase = Phase::Working;
        }
    }

    /// Completes every job still queued or working (as if each were polled to the end).
    pub(crate) fn complete_jobs(&mut self, changes: &mut Vec<Change>) {
        for index in 0..self.jobs.jobs.len() {
            self.advance(index, u32::MAX, 0, changes);
        }
    }

    pub(crate) fn job_values(&self, base_url: &str) -> Vec<Value> {
        self.jobs
            .jobs
            .iter()
            .map(|job| job_json(job, base_url))
            .collect()
    }
}

fn job_json(job: &Job, base_url: &str) -> Value {
    let progress = match job.phase {
        Phase::Queued => Value::Null,
        Phase::Working => json!(job.total / 2),
        Phase::Completed => json!(job.total),
    };
    json!({
        "id": job.id,
        "url": format!("{base_url}/api/v2/job_statuses/{}.json", job.id),
        "total": job.total,
        "progress": progress,
        "status": job.phase.name(),
        "message": job.message,
        "results": if job.phase == Phase::Completed { job.results.clone() } else { Value::Null },
    })
}

/// Comments per page of a ticket's comments, Zendesk's maximum (and default).
const COMMENTS_PER_PAGE: usize = 100;

/// The ticket id of a `/api/v2/tickets/{id}/comments` path.
fn comments_of(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v2/tickets/")?
        .strip_suffix("/comments")
        .filter(|id| !id.contains('/'))
}

/// A comment as the comments' listing shows it (`type`, bodies, visibility, author, via).
fn comment_json(comment: &Value) -> Value {
    let body = comment["body"].as_str().unwrap_or_default();
    let html = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    json!({
        "id": comment["id"],
        "type": "Comment",
        "author_id": comment["author_id"],
        "body": body,
        "html_body": format!("<div class=\"zd-comment\" dir=\"auto\"><p dir=\"auto\">{html}</p></div>"),
        "plain_body": body,
        "public": comment["public"],
        "attachments": [],
        "audit_id": comment["id"],
        "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": null}},
        "metadata": {"system": {}, "custom": {}},
        "created_at": comment["created_at"],
    })
}

/// A job id as Zendesk writes them: "V3-" and 32 hex digits.
fn job_id(seed: u64, number: u64) -> String {
    let a = splitmix(seed ^ splitmix(number));
    let b = splitmix(a ^ number);
    format!("V3-{a:016x}{b:016x}")
}

impl Simulator {
    /// The writes' and jobs' endpoints; None for any other request. Changes that a request
    /// made (a job completing) are handed to the webhook deliveries.
    pub(crate) fn route_jobs(&self, request: &Request, base_url: &str) -> Option<Response> {
        let path = request.path.strip_suffix(".json").unwrap_or(&request.path);
        let method = request.method.as_str();
        let mut changes = Vec::new();
        let response = match (method, path) {
            ("POST", "/api/v2/imports/tickets/create_many") => {
                let archive = request.param("archive_immediately") == Some("true");
                self.submit(request, base_url, &mut changes, |tickets| Work::Import {
                    tickets,
                    archive,
                })
            }
            ("PUT", "/api/v2/tickets/update_many") => {
                self.submit(request, base_url, &mut changes, |tickets| Work::Update {
                    tickets,
                })
            }
            ("GET", "/api/v2/job_statuses") => {
                let state = self.state();
                let mut jobs = state.job_values(base_url);
                jobs.reverse();
                let count = jobs.len();
                Response::json(
                    200,
                    &json!({"job_statuses": jobs, "next_page": null, "previous_page": null, "count": count}),
                )
            }
            ("GET", "/api/v2/tickets") if request.param("external_id").is_some() => {
                self.list_tickets(request)
            }
            ("GET", _) if comments_of(path).is_some() => {
                let ticket = comments_of(path).unwrap_or_default();
                self.list_comments(ticket, request, base_url)
            }
            ("GET", _) if path.starts_with("/api/v2/job_statuses/") => {
                let id = &path["/api/v2/job_statuses/".len()..];
                let polls = self.inner.config.job_polls;
                let mut state = self.state();
                match state.jobs.jobs.iter().position(|job| job.id == id) {
                    Some(index) => {
                        state.poll(index, polls, &mut changes);
                        let job = job_json(&state.jobs.jobs[index], base_url);
                        Response::json(200, &json!({ "job_status": job }))
                    }
                    None => Response::error(404, "RecordNotFound"),
                }
            }
            _ => return None,
        };
        self.deliver_changes(changes);
        Some(response)
    }

    /// Queues a bulk job; its first status, or the answer refusing it.
    fn submit(
        &self,
        request: &Request,
        base_url: &str,
        changes: &mut Vec<Change>,
        work: impl FnOnce(Vec<Value>) -> Work,
    ) -> Response {
        let tickets = match bulk_tickets(request) {
            Ok(tickets) => tickets,
            Err(response) => return response,
        };
        let mut state = self.state();
        if state.jobs.running() >= MAX_RUNNING_JOBS {
            let mut response = Response::json(
                429,
                &json!({"error": "TooManyJobs", "description": "Number of allowed concurrent jobs exceeded"}),
            );
            response.headers.push(("retry-after", "1".into()));
            return response;
        }
        let work = work(tickets);
        if let Work::Update { tickets } = &work {
            state.jobs.updates.push(json!({ "tickets": tickets }));
        }
        let number = state.jobs.jobs.len() as u64 + 1;
        let total = match &work {
            Work::Import { tickets, .. } | Work::Update { tickets } => tickets.len(),
        };
        let id = job_id(state.seed(), number);
        state.jobs.jobs.push(Job {
            id,
            total,
            polls: 0,
            phase: Phase::Queued,
            work: Some(work),
            results: Value::Null,
            message: Value::Null,
        });
        let index = state.jobs.jobs.len() - 1;
        if self.inner.config.job_polls == 0 {
            state.advance(index, 0, 0, changes);
        }
        let job = job_json(&state.jobs.jobs[index], base_url);
        Response::json(200, &json!({ "job_status": job }))
    }

    /// `GET /api/v2/tickets/{id}/comments[?page=N&per_page=M]`: the comments the API added to a
    /// live ticket, oldest first, with offset pagination (at most 100 per page).
    fn list_comments(&self, ticket: &str, request: &Request, base_url: &str) -> Response {
        let state = self.state();
        let Some(id) = ticket
            .parse::<i64>()
            .ok()
            .filter(|&id| state.tickets.object(id).is_some() && !state.tickets.is_deleted(id))
        else {
            return Response::error(404, "RecordNotFound");
        };
        let number = |name: &str, default: usize| match request.param(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(()),
        };
        let (Ok(page), Ok(per_page)) = (number("page", 1), number("per_page", COMMENTS_PER_PAGE))
        else {
            return Response::invalid("page and per_page must be positive integers");
        };
        let per_page = per_page.min(COMMENTS_PER_PAGE);
        let all = state.jobs.comments.get(&id).cloned().unwrap_or_default();
        let count = all.len();
        let comments: Vec<Value> = all
            .iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .map(comment_json)
            .collect();
        let link = |page: usize| {
            json!(format!(
                "{base_url}/api/v2/tickets/{id}/comments.json?page={page}&per_page={per_page}"
            ))
        };
        let next_page = if page.saturating_mul(per_page) < count {
            link(page + 1)
        } else {
            Value::Null
        };
        let previous_page = if page > 1 {
            link(page - 1)
        } else {
            Value::Null
        };
        Response::json(
            200,
            &json!({"comments": comments, "next_page": next_page, "previous_page": previous_page, "count": count}),
        )
    }

    /// `GET /api/v2/tickets[?external_id=X]`: live, unarchived tickets.
    fn list_tickets(&self, request: &Request) -> Response {
        let state = self.state();
        let live = |id: i64| !state.tickets.is_deleted(id) && !state.jobs.is_archived(id);
        if let Some(external) = request.param("external_id") {
            let needle = format!("\"external_id\":{}", json!(external));
            let tickets: Vec<&str> = state
                .tickets
                .values()
                .filter(|text| text.contains(&needle))
                .filter(|text| {
                    serde_json::from_str::<Value>(text).is_ok_and(|t| {
                        t["external_id"] == json!(external) && t["id"].as_i64().is_some_and(live)
                    })
                })
                .collect();
            let count = tickets.len();
            return Response::page(
                "tickets",
                &tickets,
                &json!({"next_page": null, "previous_page": null, "count": count}),
            );
        }
        // The unfiltered listing is not served (it stays 404, as before the writes existed).
        Response::error(404, "InvalidEndpoint")
    }
}
