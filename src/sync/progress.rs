//! What a sync is doing right now, per stream, for a person to watch (docs/ARCHITECTURE.md,
//! "Progress"). The run updates one [`StreamTracker`] per stream once per page and at each
//! change of state; a display (the binary's, on a terminal) takes [`Tracker::views`] a few
//! times a second and renders them with [`render`]. Nobody reading them costs the run a lock
//! per page and nothing else.
//!
//! The estimate of what is left comes from what the export itself tells: a time position (a
//! time export's `end_time`, the newest record of a cursor export, a children stream's parent)
//! advancing towards now, or, for a children stream, the number of parents still to read. Lists
//! tell neither, so they get no estimate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::DateTime;

use crate::zendesk::RequestStats;

/// Where a stream is in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Not started yet (children streams wait for their parents' streams).
    Waiting,
    /// Fetching and decoding pages.
    Running,
    /// A batch's data and control commits are being written (fetching goes on meanwhile).
    Committing,
    Done,
    Failed,
    /// Not readable on this plan (403/404).
    Skipped,
    /// Stopped by a cancelled run, at its last recorded commit.
    Cancelled,
}

impl StreamState {
    fn label(self) -> &'static str {
        match self {
            StreamState::Waiting => "waiting",
            StreamState::Running => "running",
            StreamState::Committing => "commit",
            StreamState::Done => "done",
            StreamState::Failed => "FAILED",
            StreamState::Skipped => "skipped",
            StreamState::Cancelled => "cancelled",
        }
    }

    fn finished(self) -> bool {
        matches!(
            self,
            StreamState::Done | StreamState::Failed | StreamState::Skipped | StreamState::Cancelled
        )
    }
}

/// Every stream of one run, in the order they were registered.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    streams: Arc<Mutex<Vec<Arc<StreamTracker>>>>,
}

impl Tracker {
    /// The stream `name`'s tracker, registered (as waiting) on first use.
    pub fn stream(&self, name: &str) -> Arc<StreamTracker> {
        let mut streams = lock(&self.streams);
        if let Some(stream) = streams.iter().find(|s| s.name == name) {
            return stream.clone();
        }
        let stream = Arc::new(StreamTracker::new(name));
        streams.push(stream.clone());
        stream
    }

    /// What every stream is doing now.
    pub fn views(&self) -> Vec<StreamView> {
        let now = Instant::now();
        let streams: Vec<Arc<StreamTracker>> = lock(&self.streams).clone();
        streams.iter().map(|s| s.view_at(now)).collect()
    }
}

/// One stream's counters, updated by its run.
#[derive(Debug)]
pub struct StreamTracker {
    name: String,
    pages: AtomicU64,
    rows: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: StreamState,
    /// The stream's request counters (requests, time waited on the budget).
    stats: Option<Arc<RequestStats>>,
    started: Option<Instant>,
    finished: Option<Instant>,
    /// The first time position seen and when: the base of the rate of advance.
    first: Option<(Instant, i64)>,
    /// The latest time position and when it was seen.
    last: Option<(Instant, i64)>,
    /// Pages the stream will read in all, when it knows (one per parent of a children stream).
    total_pages: Option<u64>,
}

impl StreamTracker {
    fn new(name: &str) -> StreamTracker {
        StreamTracker {
            name: name.to_owned(),
            pages: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: StreamState::Waiting,
                stats: None,
                started: None,
                finished: None,
                first: None,
                last: None,
                total_pages: None,
            }),
        }
    }

    /// The stream started; its requests are counted in `stats`.
    pub fn start(&self, stats: Arc<RequestStats>) {
        self.start_at(stats, Instant::now());
    }

    fn start_at(&self, stats: Arc<RequestStats>, at: Instant) {
        let mut inner = lock(&self.inner);
        inner.stats = Some(stats);
        inner.started = Some(at);
        inner.state = StreamState::Running;
    }

    /// The stream will read `pages` pages in all.
    pub fn total_pages(&self, pages: u64) {
        lock(&self.inner).total_pages = Some(pages);
    }

    /// A page of `records` arrived; `until` is the stream's time position after it (unix
    /// seconds), when it has one.
    pub fn page(&self, records: usize, until: Option<i64>) {
        self.page_at(records, until, Instant::now());
    }

    fn page_at(&self, records: usize, until: Option<i64>, at: Instant) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(records as u64, Ordering::Relaxed);
        if let Some(until) = until {
            let mut inner = lock(&self.inner);
            inner.first.get_or_insert((at, until));
            // A position never moves back; a page without progress keeps the time of the last.
            if inner.last.is_none_or(|(_, last)| until > last) {
                inner.last = Some((at, until));
            }
        }
    }

    /// Commits started (`true`) or ended (`false`).
    pub fn committing(&self, on: bool) {
        let mut inner = lock(&self.inner);
        if !inner.state.finished() {
            inner.state = if on {
                StreamState::Committing
            } else {
                StreamState::Running
            };
        }
    }

    /// The stream's run ended in `state`.
    pub fn finish(&self, state: StreamState) {
        self.finish_at(state, Instant::now());
    }

    fn finish_at(&self, state: StreamState, at: Instant) {
        let mut inner = lock(&self.inner);
        inner.state = state;
        inner.finished = Some(at);
    }

    fn view_at(&self, now: Instant) -> StreamView {
        let inner = lock(&self.inner);
        let elapsed = match inner.started {
            Some(started) => inner
                .finished
                .unwrap_or(now)
                .saturating_duration_since(started),
            None => Duration::ZERO,
        };
        // Seconds of the export covered per second of the run, between the first and the
        // latest position seen.
        let advance = match (inner.first, inner.last) {
            (Some((t0, p0)), Some((t1, p1))) if p1 > p0 => {
                let secs = t1.saturating_duration_since(t0).as_secs_f64();
                (secs > 0.0).then(|| (p1 - p0) as f64 / secs)
            }
            _ => None,
        };
        StreamView {
            name: self.name.clone(),
            state: inner.state,
            pages: self.pages.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            requests: inner.stats.as_ref().map_or(0, |s| s.requests()),
            waited: inner.stats.as_ref().map_or(Duration::ZERO, |s| s.waited()),
            elapsed,
            from: inner.first.map(|(_, p)| p),
            position: inner.last.map(|(_, p)| p),
            advance,
            total_pages: inner.total_pages,
        }
    }
}

/// A stream's progress at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamView {
    pub name: String,
    pub state: StreamState,
    pub pages: u64,
    /// Records received.
    pub rows: u64,
    pub requests: u64,
    /// Time its requests waited on the rate budgets.
    pub waited: Duration,
    /// Since it started (until it finished, once it has).
    pub elapsed: Duration,
    /// The first time position seen (unix seconds).
    pub from: Option<i64>,
    /// The latest time position (unix seconds).
    pub position: Option<i64>,
    /// Seconds of the export covered per second of the run.
    pub advance: Option<f64>,
    /// Pages in all, when the stream knows.
    pub total_pages: Option<u64>,
}

impl StreamView {
    /// Records per second since the stream started.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (secs > 0.0 && self.rows > 0).then(|| self.rows as f64 / secs)
    }

    /// What is left, estimated from what the export tells (`now` in unix seconds): the pages
    /// still to read at the page rate so far when the total is known, else the distance from
    /// the time position to now at the rate the position has advanced. `None` when finished or
    /// when the export tells nothing.
    pub fn eta(&self, now: i64) -> Option<Duration> {
        if self.state.finished() {
            return None;
        }
        if let Some(total) = self.total_pages {
            let secs = self.elapsed.as_secs_f64();
            if self.pages == 0 || secs <= 0.0 {
                return None;
            }
            let left = total.saturating_sub(self.pages) as f64;
            return Some(Duration::from_secs_f64(left * secs / self.pages as f64));
        }
        let (position, advance) = (self.position?, self.advance?);
        let behind = (now - position).max(0) as f64;
        Some(Duration::from_secs_f64(behind / advance))
    }
}

/// The progress block: a header and one line per stream (`now` in unix seconds).
pub fn render(views: &[StreamView], elapsed: Duration, now: i64) -> Vec<String> {
    let done = views.iter().filter(|v| v.state.finished()).count();
    let mut lines = Vec::with_capacity(views.len() + 1);
    lines.push(format!(
        "sync: {done}/{} streams finished, {} elapsed",
        views.len(),
        format_duration(elapsed)
    ));
    lines.extend(views.iter().map(|v| render_line(v, now)));
    lines
}

/// One stream's line: name, state, pages, rows, rows/s, time waited on the budget, position,
/// estimate of what is left.
pub fn render_line(view: &StreamView, now: i64) -> String {
    let pages = match view.total_pages {
        Some(total) => format!("{}/{}", view.pages, total),
        None => view.pages.to_string(),
    };
    let rate = view
        .rate()
        .map_or_else(|| "-".to_owned(), |r| format!("{}", r.round() as u64));
    let position = view.position.map_or_else(|| "-".to_owned(), format_date);
    let eta = match view.state {
        StreamState::Done => "done".to_owned(),
        state if state.finished() => "-".to_owned(),
        _ => view
            .eta(now)
            .map_or_else(|| "?".to_owned(), |d| format!("~{}", format_duration(d))),
    };
    format!(
        "  {:<17} {:<7} {:>7} pages {:>9} rows {:>6} rows/s  waited {:>7}  at {:<16}  left {}",
        view.name,
        view.state.label(),
        pages,
        view.rows,
        rate,
        format_duration(view.waited),
        position,
        eta
    )
}

/// A duration as its two largest units: `0s`, `45s`, `12m 05s`, `3h 20m`, `2d 4h`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m {:02}s", secs / 60, secs % 60),
        3_600..86_400 => format!("{}h {:02}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

/// Unix seconds as a UTC date and minute: `2023-09-18 15:57`.
pub fn format_date(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// The lock, also after a panic elsewhere while holding it: the counters stay usable for display.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn durations_read_in_their_two_largest_units() {
        for (d, shown) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m 00s"),
            (725, "12m 05s"),
            (12_000, "3h 20m"),
            (86_400 * 2 + 3_600 * 4 + 59, "2d 4h"),
        ] {
            assert_eq!(format_duration(secs(d)), shown, "{d}");
        }
        assert_eq!(format_date(1_695_052_663), "2023-09-18 15:57");
    }

    #[test]
    fn a_page_counts_its_records_and_moves_the_position_forward_only() {
        let tracker = Tracker::default();
        let stream = tracker.stream("tickets");
        assert!(Arc::ptr_eq(&stream, &tracker.stream("tickets")));
        assert_eq!(tracker.views()[0].state, StreamState::Waiting);
        let t0 = Instant::now();
        let stats = Arc::new(RequestStats::default());
        stream.start_at(stats.clone(), t0);
        stream.page_at(100, Some(1_000), t0 + secs(1));
        stream.page_at(100, Some(1_600), t0 + secs(4));
        // A position never moves back, and a page without one leaves it.
        stream.page_at(50, Some(1_200), t0 + secs(5));
        stream.page_at(0, None, t0 + secs(6));
        stats.requests.fetch_add(4, Ordering::Relaxed);
        stats.waited.fetch_add(2_500_000, Ordering::Relaxed);
        let view = stream.view_at(t0 + secs(10));
        assert_eq!(view.state, StreamState::Running);
        assert_eq!((view.pages, view.rows, view.requests), (4, 250, 4));
        assert_eq!(view.waited, Duration::from_millis(2_500));
        assert_eq!((view.from, view.position), (Some(1_000), Some(1_600)));
        // 600 s of the export in 3 s of the run.
        assert_eq!(view.advance, Some(200.0));
        assert_eq!(view.rate(), Some(25.0));
        assert_eq!(view.elapsed, secs(10));
        // 2 000 s behind now at 200 s per second: 10 s left.
        assert_eq!(view.eta(3_600), Some(secs(10)));

        stream.committing(true);
        assert_eq!(stream.view_at(t0).state, StreamState::Committing);
        stream.committing(false);
        stream.finish_at(StreamState::Done, t0 + secs(12));
        stream.committing(false);
        let done = stream.view_at(t0 + secs(100));
        assert_eq!(
            done.state,
            StreamState::Done,
            "a finished stream stays finished"
        );
        assert_eq!(
            done.elapsed,
            secs(12),
            "the clock stops when the stream finishes"
        );
        assert_eq!(done.eta(3_600), None);
    }

    #[test]
    fn the_estimate_comes_only_from_what_the_export_tells() {
        let view = StreamView {
            name: "groups".into(),
            state: StreamState::Running,
            pages: 3,
            rows: 300,
            requests: 3,
            waited: Duration::ZERO,
            elapsed: secs(6),
            from: None,
            position: None,
            advance: None,
            total_pages: None,
        };
        // A list tells neither a time position nor a total.
        assert_eq!(view.eta(0), None);
        // One position seen: no rate of advance yet.
        let one = StreamView {
            position: Some(10),
            from: Some(10),
            ..view.clone()
        };
        assert_eq!(one.eta(100), None);
        // A position ahead of now (clock skew) is no time left, not a negative one.
        let ahead = StreamView {
            position: Some(200),
            advance: Some(5.0),
            ..view.clone()
        };
        assert_eq!(ahead.eta(100), Some(Duration::ZERO));
        // Children: 3 of 12 parents in 6 s, 9 left at 2 s each.
        let children = StreamView {
            total_pages: Some(12),
            ..view.clone()
        };
        assert_eq!(children.eta(0), Some(secs(18)));
    }

    #[test]
    fn lines_name_the_stream_and_its_counters() {
        let view = StreamView {
            name: "ticket_events".into(),
            state: StreamState::Running,
            pages: 12,
            rows: 12_000,
            requests: 12,
            waited: secs(185),
            elapsed: secs(30),
            from: Some(1_695_000_000),
            position: Some(1_695_052_663),
            advance: Some(100.0),
            total_pages: None,
        };
        let line = render_line(&view, 1_695_052_663 + 4_000);
        for part in [
            "ticket_events",
            "running",
            "12 pages",
            "12000 rows",
            "400 rows/s",
            "waited  3m 05s",
            "at 2023-09-18 15:57",
            "left ~40s",
        ] {
            assert!(line.contains(part), "{part:?} in {line:?}");
        }
        let done = StreamView {
            state: StreamState::Done,
            ..view.clone()
        };
        assert!(render_line(&done, 0).ends_with("left done"));
        let block = render(&[view, done], secs(75), 0);
        assert_eq!(block.len(), 3);
        assert_eq!(block[0], "sync: 1/2 streams finished, 1m 15s elapsed");
    }
}
