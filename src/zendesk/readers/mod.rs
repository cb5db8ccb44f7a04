//! Zendesk's endpoints as sequences of pages: one reader per stream kind behind the [`Reader`]
//! trait, and one driver loop ([`drive`]) that runs any of them (docs/ARCHITECTURE.md,
//! "Readers").
//!
//! A reader owns its position: the JSON it returns with every page is stored by the lake without
//! being read, and handed back to [`open`] by the next run, which then fetches exactly what
//! follows that page. Adding a stream kind is one file here plus its simulator endpoint.

pub mod body;
pub mod children;
mod cursor_export;
mod list;
mod time_export;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};
use url::Url;

use self::body::Body;
use super::client::endpoint_of;
use super::{Client, Error, Method, Request, RequestStats, Result};
use crate::page::{RawPage, RawRecord};
use crate::spec::{Stream, StreamKind};

pub use time_export::fingerprint;

/// A stream being read.
#[async_trait]
pub trait Reader: Send {
    /// The next page; `None` when this run has read everything Zendesk has for now.
    async fn next_page(&mut self) -> Result<Option<RawPage>>;

    /// Where the stream continues after the last page returned.
    fn position(&self) -> Value;
}

/// What every reader needs besides its position.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub stream: &'static Stream,
    /// Records asked for per page (halved on 504, grown back after a run of answered pages).
    pub page_size: u32,
    /// How the page size recovers from 504s (`PageSizing::default()` to start).
    pub sizing: PageSizing,
    pub stats: Arc<RequestStats>,
    /// Sideloads and child events the stream's tables need (`include=metric_sets`).
    pub includes: Vec<String>,
    /// Children streams: the parents to read the children of, in order.
    pub parents: Vec<children::Parent>,
}

impl Context {
    pub fn name(&self) -> &str {
        &self.stream.name
    }

    /// The stream's endpoint with its fixed parameters and its `include` parameter.
    fn endpoint(&self) -> Url {
        let mut url = self.client.endpoint(&self.stream.path);
        for (name, value) in &self.stream.query {
            set_param(&mut url, name, value);
        }
        set_includes(&mut url, &self.includes);
        url
    }

    /// GET one page of the stream under its rate budget, retried as the client retries.
    async fn get(&self, url: &Url) -> Result<Body> {
        self.get_except(url, &[]).await
    }

    /// [`Context::get`], with the statuses in `handled` returned unretried.
    async fn get_except(&self, url: &Url, handled: &'static [u16]) -> Result<Body> {
        let mut arrays: Vec<&str> = vec![self.stream.records_key.as_str()];
        arrays.extend(self.includes.iter().map(String::as_str));
        let request = Request::get(url.clone())
            .with_class(self.stream.limit_class)
            .with_handled(handled);
        self.client
            .send_parsed(self.name(), &request, &self.stats, |text| {
                Body::parse(text, &arrays)
            })
            .await
    }

    fn shape(&self, url: &Url, detail: &str) -> Error {
        Error::Shape {
            stream: self.stream.name.clone(),
            method: Method::Get,
            endpoint: endpoint_of(url),
            detail: detail.to_owned(),
        }
    }

    /// Take the page's records out of its body.
    fn records(&self, url: &Url, body: &mut Body) -> Result<Vec<RawRecord>> {
        body.take_array(&self.stream.records_key).ok_or_else(|| {
            self.shape(
                url,
                &format!("no `{}` array in the page", self.stream.records_key),
            )
        })
    }

    /// Take the sideloaded arrays the stream asked for out of the body (absent means none).
    fn sideloads(&self, body: &mut Body) -> Vec<(String, Vec<RawRecord>)> {
        self.includes
            .iter()
            .filter_map(|key| Some((key.clone(), body.take_array(key)?)))
            .collect()
    }

    fn flag(&self, url: &Url, body: &Body, name: &str) -> Result<bool> {
        body.get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.shape(url, &format!("no boolean `{name}`")))
    }

    /// GET one page. A 504 (Zendesk's answer to a page too heavy to build in time) halves the
    /// page size, down to [`MIN_PAGE_SIZE`], where 504 is retried like any server error; a run
    /// of answered pages doubles it back up to the size asked for before ([`PageSizing`]).
    /// `None` when the start time is less than a minute old: nothing to fetch yet.
    async fn get_page(&mut self, url: &mut Url) -> Result<Option<Body>> {
        let stream = self.stream.name.as_str();
        loop {
            set_param(url, PAGE_SIZE_PARAM, &self.page_size.to_string());
            let handled: &'static [u16] = if self.page_size > MIN_PAGE_SIZE {
                &[504]
            } else {
                &[]
            };
            match self.get_except(url, handled).await {
                Err(err) if is_start_time_too_recent(&err) => {
                    info!(%stream, "start_time is less than a minute old: nothing to fetch yet");
                    return Ok(None);
                }
                Err(err) if err.status() == Some(504) && self.page_size > MIN_PAGE_SIZE => {
                    self.sizing.shrunk(self.page_size);
                    self.page_size = (self.page_size / 2).max(MIN_PAGE_SIZE);
                    warn!(%stream, page_size = self.page_size, "504 on a large page: asking for smaller pages");
                    self.stats
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                other => {
                    if other.is_ok() {
                        if let Some(size) = self.sizing.answered(self.page_size) {
                            self.page_size = size;
                            info!(%stream, page_size = size, "pages answered again: asking for larger ones");
                        }
                    }
                    return other.map(Some);
                }
            }
        }
    }
}

/// Answered pages in a row after which a page size halved by a 504 is doubled again.
const GROW_AFTER: u32 = 5;

/// The most answered pages in a row a grow may wait for (after repeated 504s on grown pages).
const GROW_AFTER_MAX: u32 = 160;

/// How a stream's page size recovers from 504s: a 504 may be a moment's load, so after
/// [`GROW_AFTER`] answered pages in a row the size doubles, up to the size asked for before the
/// first 504 (at most [`MAX_PAGE_SIZE`]). When a grown size meets a 504 again, the run of
/// successes the next grow waits for doubles, so a page size Zendesk cannot serve costs a
/// failed request ever more rarely.
#[derive(Debug, Clone, Default)]
pub struct PageSizing {
    /// The page size asked for before the first 504.
    full: Option<u32>,
    /// Pages answered in a row since the last change of size.
    streak: u32,
    /// Answered pages the next grow waits for (0: [`GROW_AFTER`]).
    needed: u32,
    /// The size was grown and has not met a 504 since.
    grown: bool,
}

impl PageSizing {
    /// A 504 on a page of `size`, which is about to be halved.
    fn shrunk(&mut self, size: u32) {
        let full = *self.full.get_or_insert(size);
        self.full = Some(full.max(size));
        let needed = self.needed.max(GROW_AFTER);
        self.needed = if self.grown {
            (needed * 2).min(GROW_AFTER_MAX)
        } else {
            needed
        };
        self.grown = false;
        self.streak = 0;
    }

    /// A page of `size` was answered: the size to ask for next, when it changes.
    fn answered(&mut self, size: u32) -> Option<u32> {
        let full = self.full?.min(MAX_PAGE_SIZE);
        if size >= full {
            return None;
        }
        self.streak += 1;
        if self.streak < self.needed.max(GROW_AFTER) {
            return None;
        }
        self.streak = 0;
        self.grown = true;
        Some(size.saturating_mul(2).min(full))
    }
}

/// Open the reader of a stream at `position` (from the control table), or at `start_time`
/// (unix seconds) for a stream never read.
pub fn open(
    context: Context,
    position: Option<&Value>,
    start_time: i64,
) -> Result<Box<dyn Reader>> {
    Ok(match context.stream.kind {
        StreamKind::CursorExport => Box::new(cursor_export::CursorExport::open(
            context, position, start_time,
        )?),
        StreamKind::TimeExport => Box::new(time_export::TimeExport::open(
            context, position, start_time,
        )?),
        StreamKind::List => Box::new(list::List::open(context, position, start_time)?),
        StreamKind::Children => Box::new(children::Children::open(context, position)?),
    })
}

/// Read pages until the end of the stream, sending each down `pages` with its hold on
/// `read_ahead`; the last one sent is marked `end_of_stream`. Stops early, without error, when
/// the receiver has gone away.
pub async fn drive(
    mut reader: Box<dyn Reader>,
    pages: mpsc::Sender<(RawPage, Held)>,
    read_ahead: ReadAhead,
) -> Result<()> {
    loop {
        read_ahead.room().await;
        let page = match reader.next_page().await? {
            Some(page) => page,
            // Nothing more for now: an empty last page carries the final position.
            None => RawPage {
                records: Vec::new(),
                sideloads: Vec::new(),
                position: reader.position(),
                end_of_stream: true,
                parent: None,
                until: None,
            },
        };
        crate::failpoint::hit("page_fetched");
        let end = page.end_of_stream;
        let held = read_ahead.hold(page.text_bytes());
        if pages.send((page, held)).await.is_err() || end {
            return Ok(());
        }
    }
}

/// Page text a stream's decode stage may hold before its fetch waits ([`ReadAhead`]): many
/// normal pages (1000 records are a few megabytes), a small part of a crowded second's.
pub const READ_AHEAD_BYTES: usize = 64 << 20;

/// How much page text the stages after a stream's fetch hold: the fetch reads the next page
/// only while they hold less than the limit. A page is usually a few megabytes and the next
/// one is read while it is decoded; but a time export never splits a second, and one second
/// of a large account can hold tens of thousands of records (hundreds of megabytes, read twice:
/// the next page repeats its last second). Such a page is decoded (and, by the sync, committed)
/// before anything more is read, so that two of them are never held at once
/// (docs/ARCHITECTURE.md, "How a sync runs").
#[derive(Clone)]
pub struct ReadAhead {
    shared: Arc<ReadAheadState>,
}

struct ReadAheadState {
    limit: usize,
    held: std::sync::atomic::AtomicUsize,
    freed: tokio::sync::Notify,
}

/// A page's share of [`ReadAhead`], given back when dropped: once the page is decoded, or
/// for a crowded page, once it is committed.
pub struct Held {
    shared: Arc<ReadAheadState>,
    bytes: usize,
}

impl ReadAhead {
    pub fn new(limit: usize) -> Self {
        ReadAhead {
            shared: Arc::new(ReadAheadState {
                limit,
                held: Default::default(),
                freed: Default::default(),
            }),
        }
    }

    /// Bytes of page text held now.
    pub fn held(&self) -> usize {
        self.shared.held.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Returns once less than the limit is held.
    async fn room(&self) {
        loop {
            let freed = self.shared.freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before the check, so a release between the check and the wait wakes it.
            freed.as_mut().enable();
            if self.held() < self.shared.limit {
                return;
            }
            freed.await;
        }
    }

    /// Counts `bytes` as held until the returned guard is dropped.
    pub fn hold(&self, bytes: usize) -> Held {
        self.shared
            .held
            .fetch_add(bytes, std::sync::atomic::Ordering::AcqRel);
        Held {
            shared: self.shared.clone(),
            bytes,
        }
    }
}

impl Held {
    /// Bytes of page text this share counts.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared
            .held
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
        self.shared.freed.notify_waiters();
    }
}

/// A position read back from the control table, or `Err` naming the stream when it is not the
/// reader's.
fn parse_position<T: serde::de::DeserializeOwned>(stream: &Stream, position: &Value) -> Result<T> {
    serde_json::from_value(position.clone()).map_err(|e| Error::Shape {
        stream: stream.name.clone(),
        method: Method::Get,
        endpoint: stream.path.clone(),
        detail: format!("the stored position {position} is not this reader's: {e}"),
    })
}

/// A reader's position as JSON. Positions are plain structs of integers and strings, which
/// always serialise.
fn to_json<T: serde::Serialize>(position: &T) -> Value {
    serde_json::to_value(position).unwrap_or(Value::Null)
}

/// Zendesk's largest export page.
const MAX_PAGE_SIZE: u32 = 1000;

/// The smallest page asked for when Zendesk answers 504 to bigger ones.
const MIN_PAGE_SIZE: u32 = 10;

/// Empty pages in a row that do not move the position before an export counts as stuck.
const MAX_IDLE_PAGES: u32 = 10;

/// The export endpoints' page-size parameter.
const PAGE_SIZE_PARAM: &str = "per_page";

/// Set the query parameter `name` to `value`, replacing any it had.
fn set_param(url: &mut Url, name: &str, value: &str) {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(name, value);
}

fn set_includes(url: &mut Url, includes: &[String]) {
    if !includes.is_empty() {
        set_param(url, "include", &includes.join(","));
    }
}

fn is_start_time_too_recent(err: &Error) -> bool {
    matches!(err, Error::Status { status: 400, snippet, .. }
        if snippet.contains("StartTimeTooRecent") || snippet.contains("Too recent start_time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of `pages` pages of one record of `bytes` bytes, noting the page text held
    /// downstream each time it is asked for a page.
    struct Sized {
        pages: usize,
        bytes: usize,
        read: usize,
        read_ahead: ReadAhead,
        held_when_read: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    #[async_trait]
    impl Reader for Sized {
        async fn next_page(&mut self) -> Result<Option<RawPage>> {
            self.held_when_read
                .lock()
                .unwrap()
                .push(self.read_ahead.held());
            self.read += 1;
            let pad = "x".repeat(self.bytes - 2);
            Ok(Some(RawPage {
                records: vec![RawRecord::from_text(&format!("\"{pad}\"")).unwrap()],
                sideloads: Vec::new(),
                position: Value::from(self.read),
                end_of_stream: self.read == self.pages,
                parent: None,
                until: None,
            }))
        }

        fn position(&self) -> Value {
            Value::from(self.read)
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_fetch_reads_on_only_while_the_text_held_downstream_is_under_the_limit() {
        let read_ahead = ReadAhead::new(250);
        let held_when_read = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = Sized {
            pages: 6,
            bytes: 100,
            read: 0,
            read_ahead: read_ahead.clone(),
            held_when_read: held_when_read.clone(),
        };
        // Room in the channel for every page: only the limit can hold the fetch back.
        let (tx, mut rx) = mpsc::channel(16);
        let fetch = tokio::spawn(drive(Box::new(reader), tx, read_ahead.clone()));
        // Keep two pages, then three: the fetch stops at 300 bytes held, 3 pages.
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        let third = rx.recv().await.unwrap();
        assert_eq!(first.1.bytes + second.1.bytes + third.1.bytes, 300);
        assert_eq!(read_ahead.held(), 300);
        // Nothing more is read while they are held: the fetch task has run to its wait.
        tokio::task::yield_now().await;
        assert_eq!(held_when_read.lock().unwrap().len(), 3);
        assert!(rx.try_recv().is_err());
        drop((first, second));
        let mut rest = Vec::new();
        while let Some((page, held)) = rx.recv().await {
            rest.push(page.position);
            drop(held);
        }
        drop(third);
        fetch.await.unwrap().unwrap();
        assert_eq!(rest, [4, 5, 6].map(Value::from));
        assert_eq!(read_ahead.held(), 0);
        let held = held_when_read.lock().unwrap().clone();
        assert_eq!(held.len(), 6);
        assert!(held.iter().all(|&bytes| bytes < 250), "{held:?}");
    }

    /// The sizes asked for, starting at `start`, when the pages of sizes in `fails` answer 504.
    fn sizes(start: u32, pages: usize, fails: impl Fn(usize, u32) -> bool) -> Vec<u32> {
        let mut sizing = PageSizing::default();
        let mut size = start;
        let mut asked = Vec::new();
        for request in 0..pages {
            asked.push(size);
            if fails(request, size) {
                sizing.shrunk(size);
                size = (size / 2).max(MIN_PAGE_SIZE);
            } else if let Some(next) = sizing.answered(size) {
                size = next;
            }
        }
        asked
    }

    #[test]
    fn a_504_halves_the_page_and_five_answered_pages_double_it_back() {
        let asked = sizes(1000, 14, |request, _| request == 0);
        assert_eq!(
            asked,
            [1000, 500, 500, 500, 500, 500, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]
        );
    }

    #[test]
    fn grows_back_only_to_the_size_asked_for_before() {
        let asked = sizes(25, 13, |request, _| request == 0);
        assert_eq!(asked, [25, 12, 12, 12, 12, 12, 24, 24, 24, 24, 24, 25, 25]);
    }

    #[test]
    fn a_size_that_keeps_failing_is_tried_ever_more_rarely() {
        // Zendesk never serves more than 300: every grow to 500 fails.
        let asked = sizes(1000, 60, |_, size| size > 300);
        let failures: Vec<usize> = (0..asked.len()).filter(|&i| asked[i] > 300).collect();
        let gaps: Vec<usize> = failures.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[..3], &[1, 6, 11], "{asked:?}");
        assert!(asked.iter().all(|s| (MIN_PAGE_SIZE..=1000).contains(s)));
    }
}
