//! Zendesk's rate budgets, learned from its response headers (docs/ARCHITECTURE.md, "Rate
//! budgets").
//!
//! Why: the configured per-minute numbers are guesses. A High Volume account may send 30 export
//! requests a minute, not 10; an account whose other integrations already spend most of its
//! budget has far less than its plan's number left. Zendesk says which on every response:
//! `x-rate-limit` / `ratelimit-limit` (the account's budget per window), `x-rate-limit-remaining`
//! / `ratelimit-remaining` and `ratelimit-reset` (what is left of the current window and when it
//! ends), and endpoint buckets such as `zendesk-ratelimit-incremental-exports: total=10;
//! remaining=9; resets=43`. A [`Budget`] starts from the configured number and then follows
//! those headers, up or down.
//!
//! How a request is paced, per budget it draws from:
//! - its own pacing: a token bucket of `limit` requests, refilled at `limit` per window (a burst
//!   of a whole window at first, then an even rate), `limit` being the announced number once
//!   Zendesk announced one;
//! - Zendesk's word on the current window: when what is left of it is less than the own pacing
//!   would spend before its reset, the remaining requests are spread evenly over the time left,
//!   and none is sent while nothing is left. Requests already sent but not yet answered count as
//!   spent (the answer that reported `remaining` may not have counted them);
//! - after a window Zendesk reported on has ended, the next request goes alone, and the others
//!   wait for its answer: it tells what the new window holds (another integration may have
//!   spent it already).
//!
//! A request draws from its account budget (Support, or Help Center and community, which
//! Zendesk counts apart) and from its endpoint's buckets: the incremental-export bucket for
//! export streams until their answers name their buckets, then exactly the buckets they name
//! (so an export Zendesk meters in a bucket of its own, such as the cursor-based user export, is
//! paced by that one).
//!
//! Fairness: every stream of a run shares one [`Budgets`] (the client is cloned into each), and
//! requests waiting for a budget are served strictly in turn: they queue on a tokio mutex, which
//! is FIFO, and only the head of the queue waits for the budget, re-deciding whenever an answer
//! changes what is known. governor's `until_ready`, used before, lets every waiter poll and the
//! fastest win, so a stream could wait for a slot again and again while others took it.
//!
//! The window is a minute at Zendesk; [`Budgets::new`] takes its length so that tests can run
//! the same logic against a simulator whose windows last a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::spec::LimitClass;

/// The bucket incremental exports draw from until their answers name theirs.
pub const INCREMENTAL_EXPORTS: &str = "incremental-exports";

/// Prefix of Zendesk's endpoint-bucket headers.
const BUCKET_HEADER: &str = "zendesk-ratelimit-";

/// What one response says about one budget. Every part is optional: garbage is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Announcement {
    /// Requests per window.
    pub limit: Option<u32>,
    /// Requests left in the current window.
    pub remaining: Option<u32>,
    /// Time until the current window ends.
    pub resets: Option<Duration>,
}

impl Announcement {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none()
    }
}

/// The account budget's headers: `x-rate-limit`, `x-rate-limit-remaining`, `ratelimit-limit`,
/// `ratelimit-remaining`, `ratelimit-reset`. When both forms are present the stricter wins.
pub fn account_announcement(headers: &HeaderMap) -> Announcement {
    let count = |name: &str| headers.get(name)?.to_str().ok().and_then(parse_count);
    let stricter = |a: Option<u32>, b: Option<u32>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Announcement {
        limit: stricter(count("x-rate-limit"), count("ratelimit-limit")).filter(|&n| n > 0),
        remaining: stricter(
            count("x-rate-limit-remaining"),
            count("ratelimit-remaining"),
        ),
        resets: headers
            .get("ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_seconds),
    }
}

/// Every endpoint bucket of a response: `zendesk-ratelimit-<name>: total=N; remaining=M;
/// resets=S`, by name (lower-cased). Headers without a usable total or remaining are ignored.
pub fn bucket_announcements(headers: &HeaderMap) -> Vec<(String, Announcement)> {
    let mut buckets = Vec::new();
    for (name, value) in headers {
        let Some(bucket) = name.as_str().strip_prefix(BUCKET_HEADER) else {
            continue;
        };
        let Ok(value) = value.to_str() else {
            continue;
        };
        let mut announcement = Announcement::default();
        for part in value.split([';', ',']) {
            let Some((key, raw)) = part.split_once('=') else {
                continue;
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "total" => announcement.limit = parse_count(raw).filter(|&n| n > 0),
                "remaining" => announcement.remaining = parse_count(raw),
                "resets" => announcement.resets = parse_seconds(raw),
                _ => {}
            }
        }
        if !bucket.is_empty() && !announcement.is_empty() {
            buckets.push((bucket.to_owned(), announcement));
        }
    }
    buckets
}

/// A non-negative whole number of requests (`"700"`, `" 9 "`; also `"9.0"`).
fn parse_count(raw: &str) -> Option<u32> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<u32>() {
        return Some(n);
    }
    let n = raw.parse::<f64>().ok()?;
    (n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX)).then_some(n as u32)
}

/// Seconds until a reset, whole or fractional, at most a day. Zendesk sends whole seconds, which
/// may have been rounded down: a whole number is taken as a second more, so that no request
/// lands in the window that just ran out.
fn parse_seconds(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let secs = raw.parse::<f64>().ok()?;
    let margin = if raw.contains('.') { 0.0 } else { 1.0 };
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs))
        .then(|| Duration::from_secs_f64(secs + margin))
}

/// One budget: requests per window, paced, queued in turn.
pub struct Budget {
    name: String,
    window: Duration,
    /// Requests waiting for this budget queue here (tokio's mutex is FIFO).
    turn: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// Signalled when an answer changed what is known, or a request was answered.
    changed: Notify,
}

/// What Zendesk last said about the current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Requests left, ours in flight deducted.
    left: u32,
    reset_at: Instant,
}

#[derive(Debug)]
struct State {
    /// Requests per window: configured until Zendesk announces a number.
    limit: u32,
    /// The own pacing's token bucket.
    tokens: f64,
    refilled: Instant,
    last_sent: Option<Instant>,
    window: Option<Window>,
    /// Requests granted whose answer has not been read.
    unseen: u32,
    /// Zendesk reported on this budget's windows: after one ends, a request goes alone first.
    reported: bool,
    /// A request of this budget was answered: until then, the first one goes alone.
    answered: bool,
}

/// When the head of the queue may send.
#[derive(Debug, PartialEq)]
enum Ready {
    Now,
    At(Instant),
    /// When the request in flight has been answered.
    Answer,
}

impl State {
    fn new(limit: u32, now: Instant) -> State {
        State {
            limit: limit.max(1),
            tokens: f64::from(limit.max(1)),
            refilled: now,
            last_sent: None,
            window: None,
            unseen: 0,
            reported: false,
            answered: false,
        }
    }

    fn rate(&self, window: Duration) -> f64 {
        f64::from(self.limit) / window.as_secs_f64().max(1e-3)
    }

    fn refill(&mut self, now: Instant, window: Duration) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate(window)).min(f64::from(self.limit));
        self.refilled = now;
    }

    fn ready(&mut self, now: Instant, window: Duration) -> Ready {
        self.refill(now, window);
        let rate = self.rate(window);
        let mut at = if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / rate)
        };
        match self.window {
            Some(known) if now < known.reset_at => {
                if known.left == 0 {
                    at = at.max(known.reset_at);
                } else {
                    let left_secs = (known.reset_at - now).as_secs_f64();
                    let own = self.tokens + left_secs * rate;
                    if let Some(last) = self.last_sent.filter(|_| f64::from(known.left) < own) {
                        // Spread what is left evenly from the last request up to the reset.
                        let from = last.min(now);
                        let spacing = (known.reset_at - from) / (known.left + 1);
                        at = at.max(from + spacing);
                    }
                }
            }
            // Nothing known of the current window: one request goes alone to learn it.
            _ if (self.reported || !self.answered) && self.unseen > 0 => return Ready::Answer,
            _ => {}
        }
        if at <= now {
            Ready::Now
        } else {
            Ready::At(at)
        }
    }

    fn grant(&mut self, now: Instant) {
        self.tokens -= 1.0;
        self.last_sent = Some(now);
        self.unseen += 1;
        if let Some(known) = self.window.as_mut().filter(|k| now < k.reset_at) {
            known.left = known.left.saturating_sub(1);
        }
    }

    /// Apply an answer's announcement; `own`: the answer is to a request this budget granted.
    /// Returns the new limit when it changed.
    fn learn(
        &mut self,
        announcement: Option<&Announcement>,
        own: bool,
        now: Instant,
        window: Duration,
    ) -> Option<u32> {
        if own {
            self.unseen = self.unseen.saturating_sub(1);
            self.answered = true;
        }
        let announcement = announcement?;
        let mut changed = None;
        if let Some(limit) = announcement.limit.filter(|&l| l != self.limit) {
            self.refill(now, window);
            self.limit = limit;
            self.tokens = self.tokens.min(f64::from(limit));
            changed = Some(limit);
        }
        if let Some(remaining) = announcement.remaining {
            let resets = announcement.resets.unwrap_or(window);
            let reset_at = now + resets;
            // Our other requests in flight may not have been counted yet.
            let left = remaining.saturating_sub(self.unseen);
            self.reported = true;
            self.window = Some(match self.window {
                // The same window (its reset within half a window of the known one): what is
                // left only shrinks; an answer overtaken by a later one must not raise it.
                Some(known)
                    if now < known.reset_at
                        && reset_at <= known.reset_at + window / 2
                        && known.reset_at <= reset_at + window / 2 =>
                {
                    Window {
                        left: known.left.min(left),
                        reset_at: known.reset_at.max(reset_at),
                    }
                }
                Some(known) if now < known.reset_at && reset_at < known.reset_at => known,
                _ => Window { left, reset_at },
            });
        }
        changed
    }
}

impl Budget {
    pub fn new(name: &str, limit: u32, window: Duration) -> Budget {
        Budget {
            name: name.to_owned(),
            window,
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::new(limit, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Poisoning needs a panic while holding the lock; the code under it cannot panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests per window as now known.
    pub fn limit(&self) -> u32 {
        self.state().limit
    }

    /// Wait for this budget's turn and for the budget, then count one request as sent.
    async fn acquire(&self) {
        let _turn = self.turn.lock().await;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so no change between the two is missed.
            changed.as_mut().enable();
            let ready = {
                let mut state = self.state();
                let now = Instant::now();
                let ready = state.ready(now, self.window);
                if ready == Ready::Now {
                    state.grant(now);
                    return;
                }
                ready
            };
            match ready {
                Ready::At(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = &mut changed => {}
                    }
                }
                Ready::Answer | Ready::Now => changed.await,
            }
        }
    }

    fn learn(&self, announcement: Option<&Announcement>, own: bool) {
        let changed = self
            .state()
            .learn(announcement, own, Instant::now(), self.window);
        if let Some(limit) = changed {
            info!(budget = %self.name, limit, "Zendesk announced the budget: pacing to it");
        }
        self.changed.notify_waiters();
    }
}

/// Every budget of a run, shared by all its streams.
pub struct Budgets {
    window: Duration,
    configured_account: u32,
    support: Arc<Budget>,
    help_center: Arc<Budget>,
    buckets: Mutex<HashMap<String, Arc<Budget>>>,
    /// Endpoints (paths, numeric segments as `{id}`) whose answers named their buckets.
    routes: Mutex<HashMap<String, Vec<String>>>,
}

impl Budgets {
    /// Budgets from the configured numbers, per `window` (a minute at Zendesk).
    pub fn new(account: u32, incremental: u32, window: Duration) -> Budgets {
        let buckets = HashMap::from([(
            INCREMENTAL_EXPORTS.to_owned(),
            Arc::new(Budget::new(INCREMENTAL_EXPORTS, incremental, window)),
        )]);
        Budgets {
            window,
            configured_account: account,
            support: Arc::new(Budget::new("account", account, window)),
            help_center: Arc::new(Budget::new("help-center", account, window)),
            buckets: Mutex::new(buckets),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// The account budget of a path: Help Center and community requests are counted apart.
    fn account_of(&self, path: &str) -> &Arc<Budget> {
        if ["/api/v2/help_center", "/api/v2/community"]
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            &self.help_center
        } else {
            &self.support
        }
    }

    /// The bucket `name`, created with `limit` (else the configured account number) when new.
    fn bucket(&self, name: &str, limit: Option<u32>) -> Arc<Budget> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .entry(name.to_owned())
            .or_insert_with(|| {
                debug!(budget = name, "Zendesk named a rate bucket");
                Arc::new(Budget::new(
                    name,
                    limit.unwrap_or(self.configured_account),
                    self.window,
                ))
            })
            .clone()
    }

    /// Requests per window of a bucket as now known (`None`: never configured nor named).
    pub fn bucket_limit(&self, name: &str) -> Option<u32> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.get(name).map(|b| b.limit())
    }

    /// Requests per window of the Support account budget as now known.
    pub fn account_limit(&self) -> u32 {
        self.support.limit()
    }

    /// Wait until a GET of `path` may be sent under every budget it draws from.
    pub async fn acquire(&self, path: &str, class: LimitClass) -> Grant {
        let route = route_of(path);
        let learned = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&route)
            .cloned();
        let names = learned.unwrap_or_else(|| match class {
            LimitClass::Incremental => vec![INCREMENTAL_EXPORTS.to_owned()],
            LimitClass::Account => Vec::new(),
        });
        let mut needed: Vec<(Option<String>, Arc<Budget>)> = names
            .into_iter()
            .map(|name| {
                let budget = self.bucket(&name, None);
                (Some(name), budget)
            })
            .collect();
        needed.push((None, self.account_of(path).clone()));
        let mut grant = Grant {
            granted: Vec::with_capacity(needed.len()),
        };
        for (name, budget) in needed {
            budget.acquire().await;
            // Pushed once acquired: a request dropped while waiting gives back what it holds.
            grant.granted.push((name, budget));
        }
        grant
    }

    /// Read an answer's headers (any status): the budgets of `grant` learn what they say, and
    /// the endpoint learns which buckets it draws from.
    pub fn settle(&self, mut grant: Grant, path: &str, headers: &HeaderMap) {
        let account = account_announcement(headers);
        let buckets = bucket_announcements(headers);
        if !buckets.is_empty() {
            let names: Vec<String> = buckets.iter().map(|(name, _)| name.clone()).collect();
            self.routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(route_of(path), names);
        }
        let find = |name: &str| buckets.iter().find(|(n, _)| n == name).map(|(_, a)| a);
        let mut drawn = Vec::new();
        for (name, budget) in grant.granted.drain(..) {
            let announcement = match &name {
                Some(name) => find(name),
                None => Some(&account).filter(|a| !a.is_empty()),
            };
            budget.learn(announcement, true);
            drawn.extend(name);
        }
        // Buckets named that this request did not draw from (named for the first time).
        for (name, announcement) in buckets.iter().filter(|(n, _)| !drawn.contains(n)) {
            self.bucket(name, announcement.limit)
                .learn(Some(announcement), false);
        }
    }
}

/// Budgets a request was granted; given back (as answered) by [`Budgets::settle`], or on drop
/// when the request failed without an answer.
pub struct Grant {
    granted: Vec<(Option<String>, Arc<Budget>)>,
}

impl Drop for Grant {
    fn drop(&mut self) {
        for (_, budget) in self.granted.drain(..) {
            budget.learn(None, true);
        }
    }
}

/// A path with its numeric segments as `{id}`: one entry per endpoint, not per ticket.
fn route_of(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let stem = segment.strip_suffix(".json").unwrap_or(segment);
            if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                stem
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn reads_every_form_of_the_account_headers() {
        let old = account_announcement(&headers(&[
            ("x-rate-limit", "700"),
            ("x-rate-limit-remaining", "699"),
        ]));
        assert_eq!(old.limit, Some(700));
        assert_eq!(old.remaining, Some(699));
        assert_eq!(old.resets, None);
        let new = account_announcement(&headers(&[
            ("ratelimit-limit", "400"),
            ("ratelimit-remaining", " 12 "),
            ("ratelimit-reset", "41"),
        ]));
        assert_eq!(new.limit, Some(400));
        assert_eq!(new.remaining, Some(12));
        // Whole seconds may have been rounded down: a second more.
        assert_eq!(new.resets, Some(Duration::from_secs(42)));
        let both = account_announcement(&headers(&[
            ("x-rate-limit", "700"),
            ("ratelimit-limit", "700"),
            ("x-rate-limit-remaining", "9"),
            ("ratelimit-remaining", "8"),
            ("ratelimit-reset", "0.25"),
        ]));
        assert_eq!(both.remaining, Some(8), "the stricter wins");
        assert_eq!(both.resets, Some(Duration::from_millis(250)));
    }

    #[test]
    fn reads_endpoint_buckets_by_name() {
        let buckets = bucket_announcements(&headers(&[
            (
                "zendesk-ratelimit-incremental-exports",
                "total=30; remaining=29; resets=43",
            ),
            (
                "Zendesk-RateLimit-tickets-index",
                "Remaining=5,TOTAL=100 , resets=0.5",
            ),
            ("x-rate-limit", "700"),
        ]));
        assert_eq!(
            buckets,
            vec![
                (
                    "incremental-exports".to_owned(),
                    Announcement {
                        limit: Some(30),
                        remaining: Some(29),
                        resets: Some(Duration::from_secs(44)),
                    }
                ),
                (
                    "tickets-index".to_owned(),
                    Announcement {
                        limit: Some(100),
                        remaining: Some(5),
                        resets: Some(Duration::from_millis(500)),
                    }
                ),
            ]
        );
    }

    #[test]
    fn garbage_values_are_ignored() {
        let account = account_announcement(&headers(&[
            ("x-rate-limit", "lots"),
            ("ratelimit-limit", "0"),
            ("x-rate-limit-remaining", "-3"),
            ("ratelimit-remaining", "1e400"),
            ("ratelimit-reset", "NaN"),
        ]));
        assert_eq!(account, Announcement::default());
        assert_eq!(
            account_announcement(&headers(&[("ratelimit-reset", "-1")])).resets,
            None
        );
        assert_eq!(parse_count("9.0"), Some(9));
        assert_eq!(parse_count("9.5"), None);
        assert!(bucket_announcements(&headers(&[
            (
                "zendesk-ratelimit-incremental-exports",
                "total=; remaining=x; resets=soon"
            ),
            ("zendesk-ratelimit-", "total=10; remaining=9"),
            ("zendesk-ratelimit-other", "nonsense"),
        ]))
        .is_empty());
        // A usable part is kept when another is garbage.
        let kept = bucket_announcements(&headers(&[(
            "zendesk-ratelimit-incremental-exports",
            "total=abc; remaining=4; resets=2",
        )]));
        assert_eq!(kept[0].1.limit, None);
        assert_eq!(kept[0].1.remaining, Some(4));
    }

    #[test]
    fn missing_headers_keep_the_configured_numbers() {
        let budgets = Budgets::new(700, 10, MINUTE);
        let grant = Grant {
            granted: vec![(None, budgets.support.clone())],
        };
        budgets.settle(grant, "/api/v2/groups.json", &HeaderMap::new());
        assert_eq!(budgets.account_limit(), 700);
        assert_eq!(budgets.bucket_limit(INCREMENTAL_EXPORTS), Some(10));
        let garbage = headers(&[
            ("x-rate-limit", "many"),
            ("zendesk-ratelimit-incremental-exports", "total=0"),
        ]);
        budgets.settle(Grant { granted: vec![] }, "/api/v2/groups.json", &garbage);
        assert_eq!(budgets.account_limit(), 700);
        assert_eq!(budgets.bucket_limit(INCREMENTAL_EXPORTS), Some(10));
    }

    #[tokio::test]
    async fn announced_budgets_replace_the_configured_ones_up_and_down() {
        let budgets = Budgets::new(700, 10, MINUTE);
        let tickets = "/api/v2/incremental/tickets/cursor.json";
        let answer = headers(&[
            ("x-rate-limit", "400"),
            ("x-rate-limit-remaining", "399"),
            (
                "zendesk-ratelimit-incremental-exports",
                "total=30; remaining=29; resets=59",
            ),
        ]);
        let grant = budgets.acquire(tickets, LimitClass::Incremental).await;
        budgets.settle(grant, tickets, &answer);
        assert_eq!(budgets.account_limit(), 400);
        assert_eq!(budgets.bucket_limit(INCREMENTAL_EXPORTS), Some(30));
        // Help Center counts apart: its own announcement does not touch Support's.
        let help = headers(&[("x-rate-limit", "250")]);
        let sections = "/api/v2/help_center/sections.json";
        let grant = budgets.acquire(sections, LimitClass::Account).await;
        budgets.settle(grant, sections, &help);
        assert_eq!(budgets.account_limit(), 400);
        assert_eq!(budgets.help_center.limit(), 250);
    }

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// Send every request the state allows at once, answer it with `remaining` from
    /// `answer(n)`, and return when each was sent (ms from `start`), over `until_ms`.
    fn run(
        state: &mut State,
        window: Duration,
        start: Instant,
        until_ms: u64,
        mut answer: impl FnMut(Instant) -> Option<Announcement>,
    ) -> Vec<u64> {
        let mut sent = Vec::new();
        let mut now = start;
        while now < at(start, until_ms) {
            match state.ready(now, window) {
                Ready::Now => {
                    state.grant(now);
                    sent.push((now - start).as_millis() as u64);
                    let announcement = answer(now);
                    state.learn(announcement.as_ref(), true, now, window);
                }
                Ready::At(when) => now = when.max(now + Duration::from_micros(1)),
                Ready::Answer => unreachable!("every request is answered at once"),
            }
        }
        sent
    }

    #[test]
    fn a_budget_announced_larger_is_used() {
        // Configured for 10 a second; Zendesk says 30.
        let window = Duration::from_secs(1);
        let start = Instant::now();
        let mut state = State::new(10, start);
        let mut spent: Vec<u64> = Vec::new();
        let sent = run(&mut state, window, start, 3000, |now| {
            let index = ((now - start).as_millis() / 1000) as usize;
            spent.resize(spent.len().max(index + 1), 0);
            spent[index] += 1;
            let resets = Duration::from_secs(index as u64 + 1) - (now - start);
            Some(Announcement {
                limit: Some(30),
                remaining: Some(30u32.saturating_sub(spent[index] as u32)),
                resets: Some(resets),
            })
        });
        let per_window: Vec<usize> = (0..3)
            .map(|w| sent.iter().filter(|&&t| t / 1000 == w).count())
            .collect();
        assert!(per_window.iter().all(|&n| n <= 30), "{per_window:?}");
        assert!(per_window[1] > 20, "{per_window:?}");
    }

    #[test]
    fn a_shrinking_remaining_spreads_what_is_left_over_the_time_left() {
        // 100 a minute configured and announced, but another integration left only 4 of this
        // window, which ends in 10 s.
        let start = Instant::now();
        let mut state = State::new(100, start);
        let mut left = 4u32;
        let sent = run(&mut state, MINUTE, start, 10_000, |_| {
            left = left.saturating_sub(1);
            Some(Announcement {
                limit: Some(100),
                remaining: Some(left),
                resets: Some(Duration::from_secs(10)),
            })
        });
        // The first goes at once; each answer resets the horizon to 10 s from then, so the
        // next waits a share of it instead of spending the window's last requests at once.
        assert_eq!(sent[0], 0);
        assert!(sent.len() >= 2, "{sent:?}");
        for pair in sent.windows(2) {
            assert!(pair[1] - pair[0] >= 1000, "{sent:?}");
        }
    }

    #[test]
    fn nothing_left_waits_for_the_reset() {
        let start = Instant::now();
        let mut state = State::new(100, start);
        state.grant(start);
        state.learn(
            Some(&Announcement {
                limit: None,
                remaining: Some(0),
                resets: Some(Duration::from_millis(300)),
            }),
            true,
            start,
            MINUTE,
        );
        assert_eq!(state.ready(at(start, 1), MINUTE), Ready::At(at(start, 300)));
        // After the reset, one request goes alone to learn the new window.
        assert_eq!(state.ready(at(start, 300), MINUTE), Ready::Now);
        state.grant(at(start, 300));
        assert_eq!(state.ready(at(start, 301), MINUTE), Ready::Answer);
    }

    #[test]
    fn requests_in_flight_count_as_spent_and_a_stale_answer_cannot_raise_what_is_left() {
        let start = Instant::now();
        let mut state = State::new(100, start);
        // The first goes alone; then three at once.
        state.grant(start);
        state.learn(None, true, start, MINUTE);
        for _ in 0..3 {
            state.grant(start);
        }
        let answer = |remaining| Announcement {
            limit: None,
            remaining: Some(remaining),
            resets: Some(Duration::from_secs(30)),
        };
        // Zendesk counted only the first of the three: 5 left, two more on their way.
        state.learn(Some(&answer(5)), true, start, MINUTE);
        assert_eq!(state.window.map(|w| w.left), Some(3));
        // An answer overtaken by a later one says more was left: ignored.
        state.learn(Some(&answer(7)), true, start, MINUTE);
        assert_eq!(state.window.map(|w| w.left), Some(3));
    }

    #[test]
    fn the_first_request_goes_alone() {
        let start = Instant::now();
        let mut state = State::new(100, start);
        assert_eq!(state.ready(start, MINUTE), Ready::Now);
        state.grant(start);
        assert_eq!(state.ready(start, MINUTE), Ready::Answer);
        state.learn(None, true, start, MINUTE);
        // No headers: nothing to learn, the configured pacing alone (a burst of 100).
        for _ in 0..99 {
            assert_eq!(state.ready(start, MINUTE), Ready::Now);
            state.grant(start);
        }
        assert!(matches!(state.ready(start, MINUTE), Ready::At(_)));
    }

    #[tokio::test]
    async fn waiting_requests_are_served_in_turn() {
        // One request per 40 ms: five streams asking at once get it in the order they asked.
        let budget = Arc::new(Budget::new("t", 1, Duration::from_millis(40)));
        budget.acquire().await;
        budget.learn(None, true);
        let served = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..5)
            .map(|stream| {
                let (budget, served) = (budget.clone(), served.clone());
                // On this single-threaded runtime, tasks first run in the order spawned.
                tokio::spawn(async move {
                    budget.acquire().await;
                    served.lock().unwrap().push(stream);
                    budget.learn(None, true);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*served.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn an_export_whose_answers_name_another_bucket_draws_from_that_one() {
        let budgets = Budgets::new(1000, 1000, MINUTE);
        let users = "/api/v2/incremental/users/cursor.json";
        let grant = budgets.acquire(users, LimitClass::Incremental).await;
        let answer = headers(&[(
            "zendesk-ratelimit-incremental-users-cursor",
            "total=20; remaining=19; resets=59",
        )]);
        budgets.settle(grant, users, &answer);
        assert_eq!(budgets.bucket_limit("incremental-users-cursor"), Some(20));
        // The export bucket is spent for the minute: the user export no longer waits for it.
        let spent = headers(&[(
            "zendesk-ratelimit-incremental-exports",
            "total=10; remaining=0; resets=59",
        )]);
        let tickets = "/api/v2/incremental/tickets/cursor.json";
        let grant = budgets.acquire(tickets, LimitClass::Incremental).await;
        budgets.settle(grant, tickets, &spent);
        let grant = tokio::time::timeout(
            Duration::from_secs(5),
            budgets.acquire(users, LimitClass::Incremental),
        )
        .await
        .expect("the user export does not wait for the spent export bucket");
        drop(grant);
        assert_eq!(
            route_of("/api/v2/tickets/123/side_conversations.json"),
            "/api/v2/tickets/{id}/side_conversations"
        );
    }
}
