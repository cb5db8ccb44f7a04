//! A simulated Zendesk Support account served over HTTP on loopback.
//!
//! Why it exists: the correctness of an incremental copy depends on Zendesk's exact export
//! semantics (docs/ARCHITECTURE.md, "Zendesk facts") — cursor exports ordered by `generated_timestamp`, system updates that
//! move only that field, time exports that repeat the boundary second, the 60-second hold-back,
//! 429s with fractional or missing `Retry-After`. A real account can't be reset, made to fail on
//! demand or replayed, so tests, `sync --demo` and the benchmarks run against this simulator
//! instead: deterministic data (same [`SimConfig`] ⇒ byte-identical records, with the default
//! [`SimClock::Fixed`]), a virtual clock advanced by [`Simulator::apply_round`] (or ending at
//! the present, [`SimClock::Now`]), and fault injection through [`Faults`].
//!
//! Served endpoints (Basic `{email}/token:{api_token}` or Bearer auth; the ".json" suffix is
//! optional). Reads (GET):
//! - `/api/v2/users/me.json`
//! - cursor exports `/api/v2/incremental/tickets/cursor.json` (`start_time` | `cursor`,
//!   `per_page`, `include=metric_sets`) and `/api/v2/incremental/users/cursor.json`
//! - time exports `/api/v2/incremental/organizations.json` and
//!   `/api/v2/incremental/ticket_events.json` (`start_time`, `per_page`,
//!   `include=comment_events`), `/api/v2/help_center/incremental/articles.json` (`start_time`,
//!   `per_page`; no `end_of_stream`, `next_page` null at the end)
//! - cursor-paginated lists (`page[size]` 1..=100, `page[after]`, `page[before]`):
//!   `/api/v2/groups.json` (`exclude_deleted=false` adds deleted groups), `/api/v2/brands.json`,
//!   `/api/v2/help_center/categories.json`, `/api/v2/help_center/sections.json`,
//!   `/api/v2/help_center/articles.json`, `/api/v2/community/topics.json`,
//!   `/api/v2/community/posts.json` (the community also under `/api/v2/help_center/community/`),
//!   and the account's configuration: `/api/v2/user_fields.json`,
//!   `/api/v2/organization_fields.json`, `/api/v2/macros.json`, `/api/v2/automations.json`,
//!   `/api/v2/views.json`, `/api/v2/group_memberships.json`,
//!   `/api/v2/organization_memberships.json`, `/api/v2/triggers.json` (with `page[size]`; without,
//!   the Triggers API's one offset page)
//! - lists Zendesk documents without pagination, answered whole: `/api/v2/ticket_forms.json`,
//!   `/api/v2/custom_statuses.json`, `/api/v2/slas/policies.json`,
//!   `/api/v2/business_hours/schedules.json`, `/api/v2/custom_roles.json` (Enterprise only in
//!   Zendesk: gate it with [`Faults::deny`]), and `/api/v2/ticket_fields.json` (by cursor when a
//!   page is asked for)
//! - offset-paginated `/api/v2/tickets/{id}/side_conversations.json` (`page`, `per_page`)
//!
//! Writes (bodies by `Content-Length`, at most 16 MiB; counted against the account budget and
//! logged in [`Simulator::write_log`]), see `jobs.rs` and `webhooks.rs` for their shapes:
//! - `POST /api/v2/imports/tickets/create_many` and `PUT /api/v2/tickets/update_many`, answered
//!   with a job status; `GET /api/v2/job_statuses[/{id}]`; `GET /api/v2/tickets?external_id=`
//! - the Webhooks API (`/api/v2/webhooks`, `/{id}`, `/{id}/signing_secret`) and the Triggers
//!   API (`/api/v2/triggers`, `/{id}`)
//!
//! After each change (a round, a job completing) the registered webhooks get signed deliveries
//! (`deliver.rs`), optionally faulted ([`WebhookFaults`]); [`Simulator::deliveries`] records
//! them and [`Simulator::deliveries_settled`] waits for the queue to drain.
//!
//! Every answer carries Zendesk's rate headers, and the budgets are enforced per window (429
//! with `Retry-After` once spent): see [`Budget`], set by [`Simulator::set_budget`].
//!
//! Ground truth for tests: [`Simulator::records`], [`Simulator::deleted_keys`],
//! [`Simulator::budget_windows`], [`Simulator::tickets_created_per_external_id`],
//! [`Simulator::comments_added`], [`Simulator::update_requests`] and
//! [`Simulator::deliveries`].

mod activity;
mod admin;
mod api;
mod budget;
mod content;
mod data;
mod deliver;
mod endpoints;
mod events;
mod http;
mod jobs;
mod metric_events;
mod ratings;
mod tags;
mod webhooks;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use content::Kind;
use data::{Object, State};

pub use budget::{Budget, BudgetWindow};
/// Signing as the account signs its deliveries (the bench plays Zendesk with it).
pub(crate) use deliver::sign as sign_delivery;
pub use deliver::{Delivery, WebhookFault, WebhookFaults};

/// The size and identity of the simulated account.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Initial number of tickets.
    pub tickets: usize,
    /// Initial number of users (at least one, the admin behind `/users/me`, always exists).
    pub users: usize,
    /// Initial number of organizations.
    pub organizations: usize,
    /// Seed of every random choice; same config ⇒ same records.
    pub seed: u64,
    /// E-mail of the admin user; with `api_token` it forms Basic `{email}/token:{api_token}`.
    pub email: String,
    pub api_token: String,
    /// Accepted as `Authorization: Bearer {oauth_token}`.
    pub oauth_token: String,
    /// Initial number of groups; None: 6 + tickets / 250 (at most 200). Never fewer than the 4
    /// groups tickets point at (which are never deleted).
    pub groups: Option<usize>,
    /// Initial number of brands; None: 3 + tickets / 2000 (at most 20). Never fewer than the 2
    /// brands tickets point at (which are never deleted).
    pub brands: Option<usize>,
    /// Initial number of Help Center categories; None: 3 + tickets / 1000 (at most 50).
    pub categories: Option<usize>,
    /// Initial number of Help Center sections; None: 3 per category.
    pub sections: Option<usize>,
    /// Initial number of community topics; None: 3 + tickets / 2000 (at most 30).
    pub topics: Option<usize>,
    /// Initial number of community posts; None: 10 + tickets / 10 (at most 5000).
    pub posts: Option<usize>,
    /// Initial number of Help Center articles; None: 10 + tickets / 6 (at most 20000).
    pub articles: Option<usize>,
    /// Where the account's history ends and how rounds move its clock.
    pub clock: SimClock,
    /// A bulk job (ticket import, update_many) reports `completed` at this poll of its status
    /// (1-based): `queued` before the poll that reports `working`, which is the one before.
    /// 0: completed as soon as it is submitted.
    pub job_polls: u32,
    /// Whether webhooks may subscribe to ticket event types (`zen:event-type:ticket.*`); an
    /// account without the feature refuses them (400) and needs trigger-connected webhooks.
    pub webhook_ticket_events: bool,
    /// How many tags `/api/v2/tags.json` lists at most (Zendesk: the 20,000 most used of the
    /// last 60 days); a small cap makes tags leave the listing as others overtake them.
    pub tags_listed: usize,
}

/// The account's virtual clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimClock {
    /// History ends at 2024-01-01T00:00:00Z and each round moves the clock by an hour: the same
    /// config gives the same records, whenever it runs (tests, benchmarks).
    #[default]
    Fixed,
    /// History ends at the real time the account is created (its last changes two minutes
    /// before), and each round, import or update moves the clock to the real time (never back;
    /// a round at least three seconds on, a job a second): lags and freshness against this
    /// account mean what they say.
    Now,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tickets: 500,
            users: 200,
            organizations: 50,
            seed: 42,
            email: String::from("demo@example.com"),
            api_token: String::from("demo-token"),
            oauth_token: String::from("demo-oauth-token"),
            groups: None,
            brands: None,
            categories: None,
            sections: None,
            topics: None,
            posts: None,
            articles: None,
            clock: SimClock::Fixed,
            job_polls: 3,
            webhook_ticket_events: true,
            tags_listed: 20_000,
        }
    }
}

impl SimConfig {
    /// The account of `sync --demo`, `listen --demo` and `simulate`: big enough that every
    /// table has rows, small enough to sync in seconds.
    pub fn demo() -> SimConfig {
        SimConfig {
            tickets: 2000,
            users: 500,
            organizations: 100,
            clock: SimClock::Now,
            ..SimConfig::default()
        }
    }

    /// The environment a pipeline sees when it syncs this account served at `base_url`: its
    /// URL and credentials (what `config::Settings::resolve` reads from the process's).
    pub fn env(&self, base_url: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ZENDESK_BASE_URL".to_owned(), base_url.to_owned()),
            ("ZENDESK_EMAIL".to_owned(), self.email.clone()),
            ("ZENDESK_API_TOKEN".to_owned(), self.api_token.clone()),
        ])
    }
}

/// One round of account activity, applied to each of tickets, users and organizations.
///
/// The other records follow from it: every visible ticket change (update, delete, create) is a
/// ticket event and may move the ticket's metric set and side conversations; groups, brands,
/// categories, sections, topics, posts, articles and every list of the account's configuration
/// (fields, forms, custom statuses, macros, triggers, automations, views, SLA policies,
/// memberships, schedules, custom roles) get at least one create / update / delete each when
/// the round has any creates / updates (silent ones included) / deletes (posts and articles one
/// per 4, memberships one per 10, the others one per 20).
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// New records per object.
    pub creates: usize,
    /// Visible changes to existing live records (moves updated_at).
    pub updates: usize,
    /// Ticket system updates that move only generated_timestamp; normal updates for the others.
    pub silent_updates: usize,
    /// Soft deletes (tickets `status = "deleted"`, users `active = false`, organizations
    /// `deleted_at`).
    pub deletes: usize,
}

impl Round {
    /// The demo's round: every kind of change, soft deletes included.
    pub fn demo() -> Round {
        Round {
            creates: 20,
            updates: 40,
            silent_updates: 10,
            deletes: 5,
        }
    }
}

/// How rounds choose the tickets they update: `share` of the updates (silent ones included) go
/// to the newest `newest` fraction of the live tickets by id, the rest to older ones, as on a
/// real account, where open tickets are recent and closed ones rarely change. Deletions are
/// chosen among all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentBias {
    pub share: f64,
    pub newest: f64,
}

/// Failures to inject, by request number (1-based, counting every request received).
///
/// Every "every n" rule hits requests numbered n, 2n, ... (0 never hits). Faults are decided
/// before the credentials are checked. When several rules hit one request, the first of these
/// wins: `reset_every`; `delay_every` (waits, then goes on to the other rules);
/// `rate_limit_every`; `server_error_every` / `fail_from_request`; `truncate_every`;
/// `html_every`. `lose_write_answer_every` acts last, on the answer made: the write is applied
/// and its answer replaced by a reset. The per-page rules (`max_page_size`, `stall_time_export_over`,
/// `empty_page_every`, `duplicate_in_page_every`, `foreign_next_url`) shape the export response
/// that a request gets when none of those replaced it (a truncated response included).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// every n-th request (counting all requests, 1-based: request numbers n, 2n, ...) answers 429
    pub rate_limit_every: Option<u64>,
    /// value of the Retry-After header on those 429s (e.g. "0.05"); None = header missing
    pub retry_after: Option<String>,
    /// every n-th request answers 500 (checked after rate_limit_every)
    pub server_error_every: Option<u64>,
    /// all requests with number >= this answer 500 (to exhaust a client's retries)
    pub fail_from_request: Option<u64>,
    /// Status used by `server_error_every` and `fail_from_request` (default 500 when None): e.g.
    /// 502, 503, 504.
    pub server_error_status: Option<u16>,
    /// Answer 504 to any export request whose per_page (explicit, or the default 1000) is larger
    /// than this (Zendesk does this on heavy pages); smaller pages succeed. An explicit per_page
    /// above 1000 counts as the 1000 it is clamped to.
    pub max_page_size: Option<usize>,
    /// `max_page_size` holds only for requests numbered up to this (heavy pages time out for a
    /// while, then Zendesk serves them again); None: for every request.
    pub max_page_size_until: Option<u64>,
    /// Every n-th request: close the connection right after reading the request, without sending
    /// any response bytes (a connection reset).
    pub reset_every: Option<u64>,
    /// Every n-th write request (any method but GET, numbered apart from reads, 1-based):
    /// handled as usual, so the account applies it, then its connection is closed without an
    /// answer, as when Zendesk applied a request and its answer was lost on the way back.
    pub lose_write_answer_every: Option<u64>,
    /// Every n-th request: send the status line and headers with the full Content-Length, then
    /// only the first half of the body, then close.
    pub truncate_every: Option<u64>,
    /// Every n-th request: answer 200 with `Content-Type: text/html` and an HTML body (a proxy's
    /// error page), not JSON.
    pub html_every: Option<u64>,
    /// Every n-th request: wait `delay_ms` before answering (to exceed a client's timeout), then
    /// answer normally. The wait does not hold up other connections.
    pub delay_every: Option<u64>,
    /// How long `delay_every` waits, in milliseconds.
    pub delay_ms: u64,
    /// Export responses carry an `after_url` / `next_page` on another host
    /// (`https://evil.example.com/...`, same path and query) instead of the simulator's own.
    pub foreign_next_url: bool,
    /// Time export only: behave like Zendesk when more records share one second than a page
    /// holds: when this is Some(n) and a page starting at start_time S holds more than n records
    /// in second S, answer that page with the records of second S only, cut at per_page
    /// (end_time = S, end_of_stream = false), so a client sees a stall. `Some(0)`: any start
    /// second holding a record stalls.
    pub stall_time_export_over: Option<usize>,
    /// Every n-th export page (by request number): duplicate the first record of the page within
    /// the page (same record twice, side by side).
    pub duplicate_in_page_every: Option<u64>,
    /// Every n-th cursor-export request returns an empty page with `end_of_stream: false` and the
    /// same after_cursor it was given (the next request then answers normally). A request by
    /// start_time gets the cursor of that start time.
    pub empty_page_every: Option<u64>,
    /// Every n-th request succeeds but reports the account budget spent
    /// (`x-rate-limit-remaining: 0`, `ratelimit-remaining: 0`): a client should wait before its
    /// next request instead of running into 429s. `budget_reset` (seconds), when set, replaces
    /// every answer's `ratelimit-reset` (by default the time left of the [`Budget`] window).
    pub budget_exhausted_every: Option<u64>,
    pub budget_reset: Option<String>,
    /// Plan gating: a request whose path starts with one of these prefixes (e.g.
    /// `"/api/v2/help_center"`) answers the paired status once its credentials are checked: 404
    /// `{"error":"InvalidEndpoint"}`, any other status (e.g. 403) `{"error":"Forbidden"}`. The
    /// first matching prefix wins.
    pub deny: Vec<(String, u16)>,
    /// The lists Zendesk documents without pagination (ticket forms, custom statuses, ...)
    /// answer their first n records and an offset `next_page`, as if Zendesk had started
    /// paginating them: a client must not take that page for the whole list.
    pub paginate_whole_lists: Option<usize>,
}

struct Inner {
    config: SimConfig,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    budget: Mutex<budget::Meter>,
    log: Mutex<Vec<String>>,
    /// When each logged request arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
    requests: AtomicU64,
    /// Rendered answers, while [`Simulator::set_response_cache`] is on.
    rendered: Mutex<Option<PageCache>>,
    /// Requests answered by rendering while the cache was on (not from it).
    cache_misses: AtomicU64,
    /// Bytes of HTTP messages answered from the cache.
    replayed_bytes: AtomicU64,
    /// Every write request (any method but GET), in order.
    writes: Mutex<Vec<WriteRequest>>,
    /// Webhooks and triggers.
    hooks: Mutex<webhooks::Hooks>,
    /// Webhook deliveries queued and made.
    outbox: Mutex<deliver::Outbox>,
    /// Wakes the delivery task when the outbox has work.
    outbox_ready: tokio::sync::Notify,
    /// Tells [`Simulator::deliveries_settled`] the outbox went empty.
    settled: tokio::sync::Notify,
}

/// A write request the account received (ground truth for tests).
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// The body, parsed when it is JSON (else its text as a JSON string).
    pub body: Value,
}

/// Pre-rendered HTTP messages, appended to one file, with where each request's message is.
struct PageCache {
    file: Arc<std::fs::File>,
    path: std::path::PathBuf,
    /// Bytes written so far.
    len: u64,
    /// Offset and length of each request target's message.
    index: HashMap<String, (u64, usize)>,
}

impl PageCache {
    fn create(path: &std::path::Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Self {
            file: Arc::new(file),
            path: path.to_owned(),
            len: 0,
            index: HashMap::new(),
        })
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        // Best effort: the file is only a cache.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The simulated account; cheap to clone (all clones share one account).
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("seed", &self.inner.config.seed)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Generates the initial records; the virtual clock starts at 2024-01-01T00:00:00Z
    /// ([`SimClock::Fixed`]) or at the real time ([`SimClock::Now`]).
    pub fn new(config: SimConfig) -> Self {
        let state = State::new(&config);
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                faults: Mutex::new(Faults::default()),
                budget: Mutex::new(budget::Meter::default()),
                log: Mutex::new(Vec::new()),
                arrivals: Mutex::new(Vec::new()),
                requests: AtomicU64::new(0),
                rendered: Mutex::new(None),
                cache_misses: AtomicU64::new(0),
                replayed_bytes: AtomicU64::new(0),
                writes: Mutex::new(Vec::new()),
                hooks: Mutex::new(webhooks::Hooks::default()),
                outbox: Mutex::new(deliver::Outbox::default()),
                outbox_ready: tokio::sync::Notify::new(),
                settled: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Bind 127.0.0.1:port (0 = ephemeral) and serve in a spawned tokio task until the returned
    /// handle is dropped or shut down; a second task sends the webhook deliveries.
    pub async fn serve(&self, port: u16) -> io::Result<SimServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(http::accept_loop(
            listener,
            self.clone(),
            Arc::from(base_url.as_str()),
        ));
        let deliverer = tokio::spawn(self.clone().deliver_loop());
        Ok(SimServer {
            base_url,
            task: Some(task),
            deliverer: Some(deliverer),
        })
    }

    /// Apply one round of changes to tickets, users and organizations, deterministically (seeded
    /// by config.seed and the round number), and advance the virtual clock (an hour with
    /// [`SimClock::Fixed`]; to the real time, at least three seconds on, with [`SimClock::Now`]).
    /// The other records follow (see [`Round`]): ticket events, metric sets and side
    /// conversations of the changed tickets, and creates / updates / deletes of the listed
    /// objects. The registered webhooks get their deliveries of the round's changes (queued,
    /// sent by the server's task).
    pub fn apply_round(&self, round: &Round) {
        let (changes, rounds, window, now) = {
            let mut state = self.state();
            let changes = state.apply_round(round, &self.inner.config.email);
            (changes, state.rounds(), state.window, state.now)
        };
        let seed = self.inner.config.seed;
        self.hooks().round(seed, rounds, round, window, now);
        self.deliver_changes(changes);
    }

    /// Completes every bulk job still queued or working, as if each had been polled to the end
    /// (its tickets exist from now on; webhooks get their deliveries).
    pub fn complete_jobs(&self) {
        let mut changes = Vec::new();
        self.state().complete_jobs(&mut changes);
        self.deliver_changes(changes);
    }

    /// Ground truth: every bulk job as `GET /api/v2/job_statuses/{id}` shows it now (its `url`
    /// on the record host), in submission order. Reading them polls nothing.
    pub fn jobs(&self) -> Vec<Value> {
        self.state().job_values(data::RECORD_BASE_URL)
    }

    /// Ground truth: how many tickets imports created per `external_id` (a correct import
    /// creates each once).
    pub fn tickets_created_per_external_id(&self) -> BTreeMap<String, usize> {
        self.state().jobs.created_per_external_id()
    }

    /// Ground truth: the comments `update_many` added, per ticket id, in order (`{id, ticket_id,
    /// author_id, body, public, created_at}`).
    pub fn comments_added(&self) -> BTreeMap<i64, Vec<Value>> {
        self.state().jobs.comments_added()
    }

    /// Ground truth: the body of every `update_many` request received (`{"tickets": [...]}`),
    /// refused ones (over 100 tickets, not JSON) excepted.
    pub fn update_requests(&self) -> Vec<Value> {
        self.state().jobs.update_requests()
    }

    /// Every write request received (POST, PUT, PATCH, DELETE), refused ones included.
    pub fn write_log(&self) -> Vec<WriteRequest> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .writes
            .lock()
            .expect("simulator writes lock poisoned")
            .clone()
    }

    /// Replaces the faults of webhook deliveries; delivery numbering is not reset.
    pub fn set_webhook_faults(&self, faults: WebhookFaults) {
        self.outbox().faults = faults;
    }

    /// Ground truth: every request made to a webhook so far (each retry and fault copy too).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.outbox().records.clone()
    }

    /// Waits until every queued webhook delivery has been sent (and answered, retried or
    /// given up). Needs a running server ([`Simulator::serve`]), whose task sends them.
    pub async fn deliveries_settled(&self) {
        loop {
            let settled = self.inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.outbox().outstanding() == 0 {
                return;
            }
            settled.await;
        }
    }

    fn hooks(&self) -> MutexGuard<'_, webhooks::Hooks> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .hooks
            .lock()
            .expect("simulator hooks lock poisoned")
    }

    fn outbox(&self) -> MutexGuard<'_, deliver::Outbox> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .outbox
            .lock()
            .expect("simulator outbox lock poisoned")
    }

    /// Logs a write request.
    /// Logs a write request and returns its 1-based number among the writes.
    fn record_write(&self, request: &api::Request) -> u64 {
        let body = serde_json::from_slice(&request.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()));
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        let mut writes = self
            .inner
            .writes
            .lock()
            .expect("simulator writes lock poisoned");
        writes.push(WriteRequest {
            method: request.method.clone(),
            target: request.target.clone(),
            body,
        });
        writes.len() as u64
    }

    /// Ground truth: every record of `object` the account ever had, with its current (or last)
    /// JSON. Unknown names have no records.
    ///
    /// - "tickets" | "users" | "organizations": exactly as the exports serialize them (deleted
    ///   records included), sorted by id.
    /// - "groups" | "brands" | "categories" | "sections" | "topics" | "posts" | "articles", and
    ///   the configuration's lists ("ticket_fields", "user_fields", "organization_fields",
    ///   "ticket_forms", "custom_statuses", "macros", "triggers", "automations", "views",
    ///   "sla_policies", "group_memberships", "organization_memberships", "schedules",
    ///   "custom_roles"): as their lists serve them, sorted by id; a hard-deleted or archived
    ///   record keeps the last JSON it was served with; a deleted group has `deleted: true`.
    /// - "side_conversations": every side conversation (of deleted tickets too), by ticket id and
    ///   then creation, with its ticket's id added as `ticket_id` (the endpoint's URL names it).
    /// - "ticket_metrics": the current metric set of every ticket (a deleted ticket's last one),
    ///   by ticket id.
    /// - "ticket_events": every event in export order (timestamp, id), in the
    ///   `include=comment_events` form.
    /// - "ticket_comments": every comment as its `Comment` child event JSON (`type` "Comment" or
    ///   "VoiceComment"; `event_type` is "Comment" for both) plus `ticket_id`, with `public` as it
    ///   is now (after any `CommentPrivacyChange`), in export order.
    /// - "ticket_field_history": one row per `Create` / `Change` child event, in export order:
    ///   `{id, ticket_id, audit_id, updater_id, event_type, field_name, value, previous_value,
    ///   via_channel, created_at}`; `audit_id`, `updater_id` and `created_at` (RFC 3339) are the
    ///   parent event's; `value` / `previous_value` are the raw JSON values (keyed tag events:
    ///   the new and the previous tag arrays), `previous_value` null for `Create`; `via_channel`
    ///   is the child's `via.channel` when the child carries a `via` object (the audit shape),
    ///   else its parent event's `via`: its `channel`, or the plain string it is (the keyed
    ///   shape's children carry none).
    pub fn records(&self, object: &str) -> Vec<Value> {
        let state = self.state();
        let parse = |texts: &mut dyn Iterator<Item = &str>| -> Vec<Value> {
            // Only text put there by `override_record` can fail to parse; it is skipped.
            texts
                .filter_map(|text| serde_json::from_str(text).ok())
                .collect()
        };
        if let Some(object) = Object::parse(object) {
            return parse(&mut state.table(object).values());
        }
        if let Some(kind) = Kind::parse(object) {
            return parse(&mut state.content.catalog(kind).values());
        }
        if object == "triggers" {
            let now = state.now;
            drop(state);
            let mut hooks = self.hooks();
            hooks.seed_triggers(now);
            return hooks.trigger_values();
        }
        match object {
            "tags" => tags::records(&state).0,
            "satisfaction_ratings" => state.ratings.values(),
            "ticket_metric_events" => metric_events::records(&state.activity).0,
            "side_conversations" => state.activity.side_conversation_values(),
            "ticket_metrics" => state.activity.metric_values(),
            "ticket_events" => state.activity.event_values(),
            "ticket_comments" => state.activity.comment_values(),
            "ticket_field_history" => state.activity.field_history_values(),
            _ => Vec::new(),
        }
    }

    /// Ground truth: the keys (the id as decimal text; a side conversation's UUID) of the
    /// records of `object` that a correct copy flags `_deleted`:
    /// - tickets `status = "deleted"`, users `active = false`, organizations with `deleted_at`;
    /// - groups with `deleted: true`; brands, categories, sections, topics, posts and the
    ///   configuration's records that vanished from their list; archived articles (gone from
    ///   the article list and the incremental export);
    /// - side conversations and metric sets (by metric set id) of deleted tickets.
    ///
    /// Events, comments and field history are never deleted; unknown names have none.
    pub fn deleted_keys(&self, object: &str) -> BTreeSet<String> {
        let state = self.state();
        if let Some(object) = Object::parse(object) {
            return state
                .table(object)
                .deleted_ids()
                .map(|id| id.to_string())
                .collect();
        }
        if let Some(kind) = Kind::parse(object) {
            return state
                .content
                .catalog(kind)
                .deleted_ids()
                .map(|id| id.to_string())
                .collect();
        }
        if object == "triggers" {
            drop(state);
            return self.hooks().gone_triggers();
        }
        match object {
            "tags" => tags::records(&state).1,
            "ticket_metric_events" => metric_events::records(&state.activity).1,
            "side_conversations" => state
                .activity
                .side_conversation_ids(state.tickets.deleted_ids())
                .collect(),
            "ticket_metrics" => state.activity.metric_ids(state.tickets.deleted_ids()),
            _ => BTreeSet::new(),
        }
    }

    /// Replace the JSON text of one record as the exports will serve it (the record keeps its
    /// place in the export order, by its current cursor key and id). For tests of hostile
    /// payloads; `records()` returns the replaced value too (parsed back when it is valid JSON;
    /// when it is not valid JSON, `records()` skips it).
    ///
    /// Text that is not valid JSON is served as is inside the page array. A later round that
    /// changes the record parses the text back, so a record whose text is not a JSON object is
    /// left alone by rounds. Does nothing (but log a warning) when the object or the id does not
    /// exist.
    pub fn override_record(&self, object: &str, id: i64, raw_json: String) {
        let replaced = Object::parse(object)
            .is_some_and(|parsed| self.state().table_mut(parsed).replace_json(id, raw_json));
        if !replaced {
            tracing::warn!(object, id, "override_record: no such record");
        }
    }

    /// Make later rounds update mostly recent tickets (None: uniformly, the default).
    pub fn set_recent_bias(&self, bias: Option<RecentBias>) {
        self.state().bias = bias;
    }

    /// Replaces the injected faults; request numbering is not reset.
    pub fn set_faults(&self, faults: Faults) {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        *self
            .inner
            .faults
            .lock()
            .expect("simulator faults lock poisoned") = faults;
    }

    /// Serve pre-rendered answers (for benchmarks, so that the simulator is not what is
    /// measured): while on, every successful answer is kept whole, by request path and query, in
    /// the file `path` (created or truncated; in the page cache rather than in this process's
    /// memory, which at a million tickets would hold the account twice), and the same request is
    /// answered again from it without consulting the account. Rounds applied meanwhile are not
    /// seen by cached requests. `None` drops the cache and removes its file.
    pub fn set_response_cache(&self, path: Option<&std::path::Path>) -> io::Result<()> {
        let cache = match path {
            Some(path) => Some(PageCache::create(path)?),
            None => None,
        };
        *self.rendered_lock() = cache;
        Ok(())
    }

    /// Requests answered by rendering (not from the cache) while the cache was on.
    pub fn cache_misses(&self) -> u64 {
        self.inner.cache_misses.load(Ordering::SeqCst)
    }

    /// Bytes of the HTTP messages answered from the cache so far.
    pub fn replayed_bytes(&self) -> u64 {
        self.inner.replayed_bytes.load(Ordering::SeqCst)
    }

    /// The cached answer to `target`, counted as a request.
    fn replayed(&self, target: &str) -> Option<Vec<u8>> {
        let (file, offset, len) = {
            let cache = self.rendered_lock();
            let cache = cache.as_ref()?;
            let &(offset, len) = cache.index.get(target)?;
            (Arc::clone(&cache.file), offset, len)
        };
        let mut message = vec![0; len];
        // The file is this process's own, written before; a failed read is a broken machine.
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut message, offset)
            .expect("reading the simulator's page cache");
        self.record_request(target);
        self.inner
            .replayed_bytes
            .fetch_add(message.len() as u64, Ordering::SeqCst);
        Some(message)
    }

    /// Keep a successful answer while the cache is on.
    fn rendered(&self, target: &str, response: &api::Response) {
        let mut cache = self.rendered_lock();
        if let Some(cache) = cache.as_mut() {
            self.inner.cache_misses.fetch_add(1, Ordering::SeqCst);
            if response.status == 200 {
                let message = http::render(response, response.body.len());
                std::os::unix::fs::FileExt::write_all_at(&*cache.file, &message, cache.len)
                    .expect("writing the simulator's page cache");
                cache
                    .index
                    .insert(target.to_owned(), (cache.len, message.len()));
                cache.len += message.len() as u64;
            }
        }
    }

    fn rendered_lock(&self) -> MutexGuard<'_, Option<PageCache>> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .rendered
            .lock()
            .expect("simulator cache lock poisoned")
    }

    /// Replaces the rate budgets the account announces and enforces; its windows start now.
    pub fn set_budget(&self, budget: Budget) {
        *self.meter() = budget::Meter::new(budget);
    }

    /// What each window of the current [`Budget`] spent, from its first window on (ground truth
    /// for tests of pacing: requests per window, and the 429s answered for a spent budget).
    pub fn budget_windows(&self) -> Vec<BudgetWindow> {
        self.meter().windows()
    }

    fn meter(&self) -> MutexGuard<'_, budget::Meter> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .budget
            .lock()
            .expect("simulator budget lock poisoned")
    }

    /// Number of HTTP requests received so far (including failed/faulted ones).
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Path + query of every request received so far, in order.
    pub fn request_log(&self) -> Vec<String> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .log
            .lock()
            .expect("simulator log lock poisoned")
            .clone()
    }

    /// When each request of [`Simulator::request_log`] arrived (wall clock, for tests of pacing).
    pub fn request_arrivals(&self) -> Vec<std::time::Instant> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .arrivals
            .lock()
            .expect("simulator log lock poisoned")
            .clone()
    }

    /// Virtual "now" of the account, unix seconds.
    pub fn now(&self) -> i64 {
        self.state().now
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .state
            .lock()
            .expect("simulator state lock poisoned")
    }

    fn faults(&self) -> Faults {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        self.inner
            .faults
            .lock()
            .expect("simulator faults lock poisoned")
            .clone()
    }

    /// Logs a request and returns its 1-based number.
    fn record_request(&self, target: &str) -> u64 {
        // Poisoning needs a panic while holding the lock, which only a bug can cause.
        let mut log = self.inner.log.lock().expect("simulator log lock poisoned");
        log.push(target.to_string());
        self.inner
            .arrivals
            .lock()
            .expect("simulator log lock poisoned")
            .push(std::time::Instant::now());
        // Numbered under the log lock so number n is the n-th log entry.
        self.inner.requests.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A running simulator server; dropping it stops accepting connections.
#[derive(Debug)]
pub struct SimServer {
    /// "http://127.0.0.1:PORT"
    pub base_url: String,
    task: Option<JoinHandle<()>>,
    /// Sends the webhook deliveries.
    deliverer: Option<JoinHandle<()>>,
}

impl SimServer {
    /// "http://127.0.0.1:PORT", the base of the `after_url`/`next_page` links it serves.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Stops accepting connections and waits until the listener is closed.
    pub async fn shutdown(mut self) {
        for task in [self.task.take(), self.deliverer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            // The tasks only end by being aborted, so the JoinError (cancelled) is expected.
            let _ = task.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        for task in [self.task.take(), self.deliverer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_account;
#[cfg(test)]
mod tests_admin;
#[cfg(test)]
mod tests_endpoints;
#[cfg(test)]
mod tests_writes;
