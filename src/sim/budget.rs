//! The simulated account's rate budgets: announced in Zendesk's headers and enforced per window.
//!
//! Why: a client that learns its budgets from the headers (docs/ARCHITECTURE.md, "Rate
//! budgets") can only be tested against a server that announces real numbers and answers 429
//! once they are spent. Windows are fixed, counted from when the budget was set (Zendesk's last
//! a minute; tests use a second), and another integration of the account may spend part of each
//! window the moment it starts (`foreign_*`).
//!
//! Buckets: every request draws from its account budget (Support, or Help Center and community,
//! counted apart, as Zendesk does); requests to `/api/v2/incremental/...` also from the
//! incremental-export bucket when one is set (`zendesk-ratelimit-incremental-exports`), except
//! the cursor-based user export when `users_cursor` is set: it draws from a bucket of its own
//! instead, which the simulator names `incremental-users-cursor` (Zendesk documents a separate
//! limit for that endpoint; the client follows whatever bucket names the answers carry).

use std::time::{Duration, Instant};

use super::api::Response;

/// Rate budgets of the simulated account, per window. The default is an account whose budgets
/// are large enough never to matter (a minute, a million requests), without endpoint buckets.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Length of a window.
    pub window: Duration,
    /// Support requests per window (`x-rate-limit`, `ratelimit-limit`).
    pub account: u64,
    /// Help Center and community requests per window, a budget of their own.
    pub help_center: u64,
    /// Incremental-export requests per window; None: no such header, no such limit.
    pub incremental_exports: Option<u64>,
    /// Requests per window of the cursor-based user export, in a bucket of its own instead of
    /// the export bucket; None: it draws from the export bucket.
    pub users_cursor: Option<u64>,
    /// Account requests another integration spends at the start of every window.
    pub foreign_account: u64,
    /// Export requests another integration spends at the start of every window.
    pub foreign_exports: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            window: Duration::from_secs(60),
            account: 1_000_000,
            help_center: 1_000_000,
            incremental_exports: None,
            users_cursor: None,
            foreign_account: 0,
            foreign_exports: 0,
        }
    }
}

/// What one window saw: the requests answered from each budget (the simulator's clients only,
/// not the foreign spend) and the 429s answered because a budget was spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetWindow {
    pub account: u64,
    pub help_center: u64,
    pub incremental_exports: u64,
    pub users_cursor: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Account,
    HelpCenter,
    Exports,
    UsersCursor,
}

impl Bucket {
    fn spent(self, window: &BudgetWindow) -> u64 {
        match self {
            Bucket::Account => window.account,
            Bucket::HelpCenter => window.help_center,
            Bucket::Exports => window.incremental_exports,
            Bucket::UsersCursor => window.users_cursor,
        }
    }

    fn spend(self, window: &mut BudgetWindow) {
        match self {
            Bucket::Account => window.account += 1,
            Bucket::HelpCenter => window.help_center += 1,
            Bucket::Exports => window.incremental_exports += 1,
            Bucket::UsersCursor => window.users_cursor += 1,
        }
    }

    fn header(self) -> Option<&'static str> {
        match self {
            Bucket::Account | Bucket::HelpCenter => None,
            Bucket::Exports => Some("zendesk-ratelimit-incremental-exports"),
            Bucket::UsersCursor => Some("zendesk-ratelimit-incremental-users-cursor"),
        }
    }
}

/// The budgets and what each window spent of them.
#[derive(Debug)]
pub(crate) struct Meter {
    budget: Budget,
    origin: Instant,
    windows: Vec<BudgetWindow>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new(Budget::default())
    }
}

impl Meter {
    pub(crate) fn new(budget: Budget) -> Meter {
        Meter {
            budget,
            origin: Instant::now(),
            windows: Vec::new(),
        }
    }

    pub(crate) fn windows(&self) -> Vec<BudgetWindow> {
        self.windows.clone()
    }

    /// The current window's number and the time left of it.
    fn window(&self, now: Instant) -> (usize, Duration) {
        let length = self.budget.window.max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.origin);
        let index = (elapsed.as_nanos() / length.as_nanos()) as usize;
        let end = length * (index as u32 + 1);
        (index, end.saturating_sub(elapsed))
    }

    fn current(&mut self, index: usize) -> &mut BudgetWindow {
        if self.windows.len() <= index {
            self.windows.resize(index + 1, BudgetWindow::default());
        }
        &mut self.windows[index]
    }

    fn buckets(&self, path: &str) -> Vec<Bucket> {
        let mut buckets = vec![if ["/api/v2/help_center", "/api/v2/community"]
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            Bucket::HelpCenter
        } else {
            Bucket::Account
        }];
        let users_cursor =
            path.strip_suffix(".json").unwrap_or(path) == "/api/v2/incremental/users/cursor";
        if users_cursor && self.budget.users_cursor.is_some() {
            buckets.push(Bucket::UsersCursor);
        } else if path.starts_with("/api/v2/incremental/")
            && self.budget.incremental_exports.is_some()
        {
            buckets.push(Bucket::Exports);
        }
        buckets
    }

    fn limit(&self, bucket: Bucket) -> u64 {
        match bucket {
            Bucket::Account => self.budget.account,
            Bucket::HelpCenter => self.budget.help_center,
            Bucket::Exports => self.budget.incremental_exports.unwrap_or(u64::MAX),
            Bucket::UsersCursor => self.budget.users_cursor.unwrap_or(u64::MAX),
        }
    }

    fn foreign(&self, bucket: Bucket) -> u64 {
        match bucket {
            Bucket::Account | Bucket::HelpCenter => self.budget.foreign_account,
            Bucket::Exports | Bucket::UsersCursor => self.budget.foreign_exports,
        }
    }

    fn remaining(&self, bucket: Bucket, window: &BudgetWindow) -> u64 {
        self.limit(bucket)
            .saturating_sub(self.foreign(bucket))
            .saturating_sub(bucket.spent(window))
    }

    /// Spend a request of `path` from its budgets, or answer the 429 Zendesk gives once one of
    /// them is spent for the window.
    pub(crate) fn spend(&mut self, path: &str, now: Instant) -> Option<Response> {
        let (index, left) = self.window(now);
        let buckets = self.buckets(path);
        let window = self.current(index).to_owned();
        if buckets.iter().any(|&b| self.remaining(b, &window) == 0) {
            self.current(index).refused += 1;
            let mut response = Response::error(429, "TooManyRequests");
            response.headers.push(("retry-after", seconds(left)));
            return Some(response);
        }
        let window = self.current(index);
        for bucket in buckets {
            bucket.spend(window);
        }
        None
    }

    /// The rate headers of an answer to `path`: the account's (`remaining` 0 when `exhausted`,
    /// the reset `reset` when given) and the endpoint bucket's.
    pub(crate) fn headers(
        &mut self,
        path: &str,
        now: Instant,
        exhausted: bool,
        reset: Option<String>,
    ) -> Vec<(&'static str, String)> {
        let (index, left) = self.window(now);
        let window = self.current(index).to_owned();
        let mut headers = Vec::new();
        for bucket in self.buckets(path) {
            let limit = self.limit(bucket);
            let remaining = self.remaining(bucket, &window);
            match bucket.header() {
                None => {
                    let remaining = if exhausted { 0 } else { remaining }.to_string();
                    headers.extend([
                        ("x-rate-limit", limit.to_string()),
                        ("x-rate-limit-remaining", remaining.clone()),
                        ("ratelimit-limit", limit.to_string()),
                        ("ratelimit-remaining", remaining),
                        (
                            "ratelimit-reset",
                            reset.clone().unwrap_or_else(|| seconds(left)),
                        ),
                    ]);
                }
                Some(name) => headers.push((
                    name,
                    format!(
                        "total={limit}; remaining={remaining}; resets={}",
                        seconds(left)
                    ),
                )),
            }
        }
        headers
    }
}

/// Seconds with millisecond precision (`"0.412"`): whole seconds are too coarse for the short
/// windows of tests.
fn seconds(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'h>(headers: &'h [(&'static str, String)], name: &str) -> Option<&'h str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    const TICKETS: &str = "/api/v2/incremental/tickets/cursor.json";

    #[test]
    fn a_spent_window_answers_429_until_the_next_one() {
        let mut meter = Meter::new(Budget {
            window: Duration::from_secs(1),
            incremental_exports: Some(3),
            foreign_exports: 1,
            ..Budget::default()
        });
        let start = meter.origin;
        let at = |ms| start + Duration::from_millis(ms);
        // Another integration spent 1 of 3: two are left.
        let headers = meter.headers(TICKETS, at(0), false, None);
        assert_eq!(
            header(&headers, "zendesk-ratelimit-incremental-exports"),
            Some("total=3; remaining=2; resets=1.000")
        );
        assert!(meter.spend(TICKETS, at(100)).is_none());
        assert!(meter.spend(TICKETS, at(200)).is_none());
        let headers = meter.headers(TICKETS, at(250), false, None);
        assert_eq!(
            header(&headers, "zendesk-ratelimit-incremental-exports"),
            Some("total=3; remaining=0; resets=0.750")
        );
        let refused = meter.spend(TICKETS, at(600)).expect("429");
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused.headers, "retry-after"), Some("0.400"));
        // The account budget is not an export's: groups go on.
        assert!(meter.spend("/api/v2/groups.json", at(700)).is_none());
        // A new window: two again.
        assert!(meter.spend(TICKETS, at(1000)).is_none());
        assert_eq!(
            meter.windows(),
            vec![
                BudgetWindow {
                    account: 3,
                    incremental_exports: 2,
                    refused: 1,
                    ..BudgetWindow::default()
                },
                BudgetWindow {
                    account: 1,
                    incremental_exports: 1,
                    ..BudgetWindow::default()
                },
            ]
        );
    }

    #[test]
    fn account_headers_count_down_and_help_center_counts_apart() {
        let mut meter = Meter::new(Budget {
            account: 700,
            help_center: 400,
            foreign_account: 100,
            ..Budget::default()
        });
        let now = meter.origin;
        assert!(meter.spend("/api/v2/groups.json", now).is_none());
        let support = meter.headers("/api/v2/groups.json", now, false, None);
        assert_eq!(header(&support, "x-rate-limit"), Some("700"));
        assert_eq!(header(&support, "ratelimit-limit"), Some("700"));
        assert_eq!(header(&support, "x-rate-limit-remaining"), Some("599"));
        assert_eq!(header(&support, "ratelimit-remaining"), Some("599"));
        assert_eq!(header(&support, "ratelimit-reset"), Some("60.000"));
        assert_eq!(
            header(&support, "zendesk-ratelimit-incremental-exports"),
            None,
            "no export bucket unless one is set"
        );
        let help = meter.headers("/api/v2/help_center/sections.json", now, false, None);
        assert_eq!(header(&help, "x-rate-limit"), Some("400"));
        assert_eq!(header(&help, "x-rate-limit-remaining"), Some("300"));
        let spent = meter.headers("/api/v2/groups.json", now, true, Some("0.3".into()));
        assert_eq!(header(&spent, "x-rate-limit-remaining"), Some("0"));
        assert_eq!(header(&spent, "ratelimit-reset"), Some("0.3"));
    }

    #[test]
    fn the_user_cursor_export_can_have_a_bucket_of_its_own() {
        let mut meter = Meter::new(Budget {
            incremental_exports: Some(10),
            users_cursor: Some(1),
            ..Budget::default()
        });
        let now = meter.origin;
        let users = "/api/v2/incremental/users/cursor.json";
        assert!(meter.spend(users, now).is_none());
        let headers = meter.headers(users, now, false, None);
        assert!(
            header(&headers, "zendesk-ratelimit-incremental-users-cursor")
                .is_some_and(|v| v.starts_with("total=1; remaining=0;"))
        );
        assert_eq!(
            header(&headers, "zendesk-ratelimit-incremental-exports"),
            None
        );
        assert!(meter.spend(users, now).is_some(), "its own bucket is spent");
        assert!(
            meter.spend(TICKETS, now).is_none(),
            "the export bucket is not"
        );
    }
}
