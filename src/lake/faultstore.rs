//! An object store that misbehaves on purpose, for the tests of every writer of the lake under
//! object-store faults (README.md, "Reliability"; docs/ARCHITECTURE.md, "Ambiguous commits").
//!
//! `ZENDESK_LAKE_STORE_FAULTS` holds rules separated by `;`, each `<fault> <request> [<path>]
//! <when>`, applied to every lake the process opens:
//! - fault: `503` (answered 503 Slow Down, not applied), `drop` (the connection dropped before
//!   the request was sent: not applied), `lost` (applied, its answer lost), `exists` (applied,
//!   its answer lost, and the client's retry answered: "already exists" for a create-only put,
//!   success for anything else), `late` (an answer slower than the timeout: the caller gets a
//!   timeout, and the request is applied after the store's next request, `late:N` after its N
//!   next ones, or never if none comes);
//! - request: `create` (create-only puts: the Delta log's commits), `put` (other puts: data
//!   files, checkpoints), `part` and `complete` (a multipart upload's parts and completion),
//!   `get` (reads, ranges included), `list`, `delete`, `copy`, `rename`, or `any`;
//! - path: a pattern of the whole path where `*` stands for any characters (default `*`);
//! - when: `#N` (the N-th request the rule matches), `#N..M` (the N-th to the M-th), `#N..`
//!   (the N-th and every one after), or `P%` (each matching request with probability P/100, drawn from `seed S`, a rule of its own;
//!   default seed 1).
//!
//! `split <path>` turns every put of a matching path into a multipart upload of at least
//! three parts, so that `part` and `complete` faults reach the files small tests write.
//! Every injected fault is logged at WARN with `injected object-store fault`.
//!
//! Without the variable the lake never builds this store.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{
    CopyMode, CopyOptions, Error as StoreError, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, RenameTargetMode, Result, UploadPart,
};
use futures::stream::{self, BoxStream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::warn;

/// The environment variable holding the rules.
pub const VARIABLE: &str = "ZENDESK_LAKE_STORE_FAULTS";

/// The smallest part of a split put: parts of a real multipart upload are larger, but its
/// requests are the same.
const SPLIT_PARTS: usize = 3;

/// What goes wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    Dropped,
    Lost,
    Exists,
    /// Applied after this many further requests.
    Late(u32),
}

/// A kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Create,
    Put,
    Part,
    Complete,
    Get,
    List,
    Delete,
    Copy,
    Rename,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    /// The matching requests numbered from the first to the last (counting from 1), or on
    /// when there is no last.
    Between(u64, Option<u64>),
    Percent(f64),
}

#[derive(Debug)]
struct Rule {
    fault: Fault,
    request: Request,
    path: String,
    when: When,
    seen: AtomicU64,
}

/// A request applied after its caller was given a timeout, waiting for `countdown` further
/// requests.
struct Pending {
    countdown: u32,
    apply: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// The rules, with their counts, shared by every store of the process.
pub struct Plan {
    rules: Vec<Rule>,
    /// Faults injected so far.
    injected: AtomicU64,
    split: Option<String>,
    rng: Mutex<StdRng>,
    pending: tokio::sync::Mutex<Vec<Pending>>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("rules", &self.rules)
            .field("split", &self.split)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The plan of `text` (see the module's documentation).
    pub fn parse(text: &str) -> std::result::Result<Plan, String> {
        let mut rules = Vec::new();
        let mut split = None;
        let mut seed = 1;
        for rule in text.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let invalid = |why: &str| format!("{VARIABLE}: rule {rule:?}: {why}");
            match words.as_slice() {
                ["seed", value] => {
                    seed = value
                        .parse()
                        .map_err(|_| invalid("the seed is not a number"))?
                }
                ["split", path] => split = Some((*path).to_owned()),
                [fault, request, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
                    let (path, when) = match rest {
                        [when] => ("*", *when),
                        [path, when] => (*path, *when),
                        _ => unreachable!("one or two words, by the guard"),
                    };
                    rules.push(Rule {
                        fault: parse_fault(fault).ok_or_else(|| invalid("unknown fault"))?,
                        request: parse_request(request)
                            .ok_or_else(|| invalid("unknown request"))?,
                        path: path.to_owned(),
                        when: parse_when(when).ok_or_else(|| invalid("unknown when"))?,
                        seen: AtomicU64::new(0),
                    });
                }
                _ => return Err(invalid("expected `<fault> <request> [<path>] <when>`")),
            }
        }
        Ok(Plan {
            rules,
            injected: AtomicU64::new(0),
            split,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            pending: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    /// The plan of the process, from [`VARIABLE`]: `None` when it is not set, an error naming
    /// the rule when it does not parse.
    pub fn from_env() -> std::result::Result<Option<Arc<Plan>>, String> {
        static PLAN: OnceLock<std::result::Result<Option<Arc<Plan>>, String>> = OnceLock::new();
        PLAN.get_or_init(|| match std::env::var(VARIABLE) {
            Ok(text) => Plan::parse(&text).map(|plan| Some(Arc::new(plan))),
            Err(_) => Ok(None),
        })
        .clone()
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The fault for a request of kind `request` to `path`, if a rule hits it.
    fn fault(&self, request: Request, path: &Path) -> Option<Fault> {
        let mut hit = None;
        for rule in &self.rules {
            if !(rule.request == request || rule.request == Request::Any)
                || !matches(&rule.path, path.as_ref())
            {
                continue;
            }
            let n = rule.seen.fetch_add(1, Ordering::SeqCst) + 1;
            let fires = match rule.when {
                When::Between(first, last) => n >= first && last.is_none_or(|last| n <= last),
                When::Percent(p) => {
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    rng.gen::<f64>() * 100.0 < p
                }
            };
            if fires && hit.is_none() {
                warn!(fault = ?rule.fault, ?request, %path, "injected object-store fault");
                self.injected.fetch_add(1, Ordering::SeqCst);
                hit = Some(rule.fault);
            }
        }
        hit
    }

    /// Apply the requests whose countdown ends with this one, before it is served.
    async fn settle_pending(&self) {
        let due = {
            let mut pending = self.pending.lock().await;
            if pending.is_empty() {
                return;
            }
            let mut due = Vec::new();
            let mut kept = Vec::new();
            for mut late in pending.drain(..) {
                late.countdown = late.countdown.saturating_sub(1);
                match late.countdown {
                    0 => due.push(late.apply),
                    _ => kept.push(late),
                }
            }
            *pending = kept;
            due
        };
        for apply in due {
            apply.await;
        }
    }

    async fn defer(&self, after: u32, apply: impl Future<Output = ()> + Send + 'static) {
        self.pending.lock().await.push(Pending {
            countdown: after,
            apply: Box::pin(apply),
        });
    }
}

fn parse_fault(word: &str) -> Option<Fault> {
    Some(match word {
        "503" => Fault::SlowDown,
        "drop" => Fault::Dropped,
        "lost" => Fault::Lost,
        "exists" => Fault::Exists,
        "late" => Fault::Late(1),
        other => Fault::Late(other.strip_prefix("late:")?.parse().ok()?),
    })
}

fn parse_request(word: &str) -> Option<Request> {
    Some(match word {
        "create" => Request::Create,
        "put" => Request::Put,
        "part" => Request::Part,
        "complete" => Request::Complete,
        "get" => Request::Get,
        "list" => Request::List,
        "delete" => Request::Delete,
        "copy" => Request::Copy,
        "rename" => Request::Rename,
        "any" => Request::Any,
        _ => return None,
    })
}

fn parse_when(word: &str) -> Option<When> {
    if let Some(percent) = word.strip_suffix('%') {
        return percent.parse().ok().map(When::Percent);
    }
    let n = word.strip_prefix('#')?;
    let (first, last) = match n.split_once("..") {
        Some((first, "")) => (first, None),
        Some((first, last)) => (first, Some(last.parse().ok()?)),
        None => (n, Some(n.parse().ok()?)),
    };
    Some(When::Between(first.parse().ok()?, last))
}

/// Whether `text` matches `pattern`, where `*` stands for any characters.
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().expect("split yields at least one part");
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.ends_with(last)
}

fn injected(what: &str) -> StoreError {
    StoreError::Generic {
        store: "FaultStore",
        source: format!("injected fault: {what}").into(),
    }
}

fn answer_lost() -> StoreError {
    injected("connection reset after the request was sent")
}

fn timed_out() -> StoreError {
    injected("no answer within the timeout")
}

fn refused(fault: Fault) -> StoreError {
    match fault {
        Fault::SlowDown => injected("503 Slow Down"),
        _ => injected("connection dropped before the request was sent"),
    }
}

/// A store passing requests to `inner`, except those the plan's rules hit.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<Plan>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: Arc<Plan>) -> Self {
        FaultStore { inner, plan }
    }

    /// A request that changes the store: `apply` runs it on the inner store; `exists` is the
    /// answer of the client's retry after a lost answer.
    async fn change<T: Send + 'static>(
        &self,
        request: Request,
        path: &Path,
        apply: impl Future<Output = Result<T>> + Send + 'static,
        exists: impl FnOnce(T) -> Result<T>,
    ) -> Result<T> {
        self.plan.settle_pending().await;
        match self.plan.fault(request, path) {
            None => apply.await,
            Some(fault @ (Fault::SlowDown | Fault::Dropped)) => Err(refused(fault)),
            Some(Fault::Lost) => {
                apply.await?;
                Err(answer_lost())
            }
            Some(Fault::Exists) => exists(apply.await?),
            Some(Fault::Late(after)) => {
                self.plan
                    .defer(after, async move {
                        let _ = apply.await;
                    })
                    .await;
                Err(timed_out())
            }
        }
    }

    /// A request that changes nothing: any fault fails it, but `exists` (its retry succeeded).
    async fn read<T>(
        &self,
        request: Request,
        path: &Path,
        apply: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.plan.settle_pending().await;
        match self.plan.fault(request, path) {
            None | Some(Fault::Exists) => apply.await,
            Some(fault @ (Fault::SlowDown | Fault::Dropped)) => Err(refused(fault)),
            Some(Fault::Lost) => Err(answer_lost()),
            Some(Fault::Late(_)) => Err(timed_out()),
        }
    }

    /// A put of `payload` as a multipart upload of [`SPLIT_PARTS`] parts or more.
    async fn split_put(&self, location: &Path, payload: PutPayload) -> Result<PutResult> {
        let bytes: Vec<u8> = payload.iter().flat_map(|chunk| chunk.to_vec()).collect();
        let size = bytes.len().div_ceil(SPLIT_PARTS).max(1);
        let mut upload = self
            .put_multipart_opts(location, PutMultipartOptions::default())
            .await?;
        for chunk in bytes.chunks(size) {
            if let Err(e) = upload.put_part(PutPayload::from(chunk.to_vec())).await {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        upload.complete().await
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let create = matches!(opts.mode, PutMode::Create);
        if !create
            && self
                .plan
                .split
                .as_deref()
                .is_some_and(|p| matches(p, location.as_ref()))
        {
            return self.split_put(location, payload).await;
        }
        let request = if create {
            Request::Create
        } else {
            Request::Put
        };
        let (inner, path) = (self.inner.clone(), location.clone());
        let apply = async move { inner.put_opts(&path, payload, opts).await };
        self.change(request, location, apply, |done| match create {
            true => Err(StoreError::AlreadyExists {
                path: location.to_string(),
                source: "injected fault: the retry of an applied create-only put".into(),
            }),
            false => Ok(done),
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.plan.settle_pending().await;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultUpload {
            inner,
            path: location.clone(),
            plan: self.plan.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.read(
            Request::Get,
            location,
            self.inner.get_opts(location, options),
        )
        .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.read(
            Request::Get,
            location,
            self.inner.get_ranges(location, ranges),
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let store = Arc::new(FaultStore {
            inner: self.inner.clone(),
            plan: self.plan.clone(),
        });
        locations
            .then(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    let (inner, path) = (store.inner.clone(), location.clone());
                    let apply = async move {
                        let mut deleted = inner.delete_stream(stream::iter([Ok(path)]).boxed());
                        match deleted.next().await {
                            Some(result) => result,
                            None => Err(injected("the inner store deleted nothing")),
                        }
                    };
                    store.change(Request::Delete, &location, apply, Ok).await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.list_faulted(prefix, self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.list_faulted(prefix, self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let path = prefix.cloned().unwrap_or_default();
        self.read(Request::List, &path, self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let create = matches!(options.mode, CopyMode::Create);
        let (inner, source, target) = (self.inner.clone(), from.clone(), to.clone());
        let apply = async move { inner.copy_opts(&source, &target, options).await };
        self.change(Request::Copy, to, apply, |done| match create {
            true => Err(StoreError::AlreadyExists {
                path: to.to_string(),
                source: "injected fault: the retry of an applied create-only copy".into(),
            }),
            false => Ok(done),
        })
        .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let create = matches!(options.target_mode, RenameTargetMode::Create);
        let (inner, source, target) = (self.inner.clone(), from.clone(), to.clone());
        let apply = async move { inner.rename_opts(&source, &target, options).await };
        self.change(Request::Rename, to, apply, |done| match create {
            // The source is gone after the rename: the retry cannot find it.
            true => Err(StoreError::NotFound {
                path: from.to_string(),
                source: "injected fault: the retry of an applied rename".into(),
            }),
            false => Ok(done),
        })
        .await
    }
}

impl FaultStore {
    /// A listing that fails at once when a rule hits it (a partial listing is not one of the
    /// faults: stores answer a page whole or not at all).
    fn list_faulted(
        &self,
        prefix: Option<&Path>,
        listing: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        let plan = self.plan.clone();
        stream::once(async move {
            plan.settle_pending().await;
            match plan.fault(Request::List, &path) {
                None | Some(Fault::Exists) => listing,
                Some(fault @ (Fault::SlowDown | Fault::Dropped)) => {
                    stream::iter([Err(refused(fault))]).boxed()
                }
                Some(Fault::Lost) => stream::iter([Err(answer_lost())]).boxed(),
                Some(Fault::Late(_)) => stream::iter([Err(timed_out())]).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

/// A multipart upload whose parts and completion the plan's rules may hit.
#[derive(Debug)]
struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    path: Path,
    plan: Arc<Plan>,
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let fault = self.plan.fault(Request::Part, &self.path);
        let part = self.inner.put_part(data);
        Box::pin(async move {
            match fault {
                None | Some(Fault::Exists) => part.await,
                Some(fault @ (Fault::SlowDown | Fault::Dropped)) => Err(refused(fault)),
                // A part whose answer is lost is uploaded; the client cannot know it.
                Some(Fault::Lost | Fault::Late(_)) => {
                    part.await?;
                    Err(answer_lost())
                }
            }
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.plan.settle_pending().await;
        match self.plan.fault(Request::Complete, &self.path) {
            None => self.inner.complete().await,
            Some(fault @ (Fault::SlowDown | Fault::Dropped)) => Err(refused(fault)),
            // The object exists; the client's retry of the completion succeeds (S3 answers a
            // repeated completion of a completed upload with success).
            Some(Fault::Exists) => self.inner.complete().await,
            Some(Fault::Lost | Fault::Late(_)) => {
                self.inner.complete().await?;
                Err(answer_lost())
            }
        }
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::logstore::object_store::memory::InMemory;
    use deltalake::logstore::object_store::ObjectStoreExt;
    use futures::TryStreamExt;

    #[test]
    fn patterns_match_whole_paths() {
        assert!(matches("*", "a/b.json"));
        assert!(matches("*_delta_log/*.json", "lake/t/_delta_log/0001.json"));
        assert!(!matches(
            "*_delta_log/*.json",
            "lake/t/_delta_log/0001.json.tmp"
        ));
        assert!(matches("lake/*/x", "lake/t/x"));
        assert!(!matches("lake/*/x", "other/t/x"));
        assert!(matches("a*b*c", "abc"));
        assert!(!matches("a*b*c", "acb"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }

    #[test]
    fn rules_parse_or_name_what_is_wrong() {
        let plan = Plan::parse(
            "exists create *_delta_log/*.json #2; 503 get 5%; late:3 put #1..; seed 7; split *.parquet; lost get #2..4",
        )
        .unwrap();
        assert_eq!(plan.rules.len(), 4);
        assert_eq!(plan.rules[3].when, When::Between(2, Some(4)));
        assert_eq!(plan.rules[0].fault, Fault::Exists);
        assert_eq!(plan.rules[0].when, When::Between(2, Some(2)));
        assert_eq!(plan.rules[1].path, "*");
        assert_eq!(plan.rules[1].when, When::Percent(5.0));
        assert_eq!(plan.rules[2].fault, Fault::Late(3));
        assert_eq!(plan.rules[2].when, When::Between(1, None));
        assert_eq!(plan.split.as_deref(), Some("*.parquet"));
        for bad in [
            "boom put #1",
            "lost nothing #1",
            "lost put sometimes",
            "lost",
        ] {
            let err = Plan::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    fn faulty(rules: &str) -> (Arc<InMemory>, FaultStore) {
        let inner = Arc::new(InMemory::new());
        let store = FaultStore::new(inner.clone(), Arc::new(Plan::parse(rules).unwrap()));
        (inner, store)
    }

    fn create() -> PutOptions {
        PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        }
    }

    /// Each fault of a create-only put: applied or not as its name says, and what the caller
    /// is told.
    #[tokio::test]
    async fn faults_of_a_create_only_put() {
        let path = Path::from("t/_delta_log/00000000000000000001.json");
        for (rule, applied, already) in [
            ("503 create #1", false, false),
            ("drop create #1", false, false),
            ("lost create #1", true, false),
            ("exists create #1", true, true),
        ] {
            let (inner, store) = faulty(rule);
            let err = store
                .put_opts(&path, PutPayload::from("x"), create())
                .await
                .unwrap_err();
            assert_eq!(
                matches!(err, StoreError::AlreadyExists { .. }),
                already,
                "{rule}: {err}"
            );
            assert_eq!(inner.head(&path).await.is_ok(), applied, "{rule}");
            // Only the first matching request: the next passes.
            let other = Path::from("t/_delta_log/00000000000000000002.json");
            store
                .put_opts(&other, PutPayload::from("y"), create())
                .await
                .unwrap();
        }
    }

    /// A late request lands after the store's next request, whatever it is; with a longer
    /// countdown, after as many.
    #[tokio::test]
    async fn late_requests_land_after_the_next_ones() {
        let path = Path::from("t/a.json");
        let (inner, store) = faulty("late:2 create #1");
        let err = store
            .put_opts(&path, PutPayload::from("x"), create())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
        assert!(inner.head(&path).await.is_err());
        store.head(&Path::from("t/other")).await.unwrap_err();
        assert!(inner.head(&path).await.is_err(), "one request later");
        store.head(&Path::from("t/other")).await.unwrap_err();
        assert!(inner.head(&path).await.is_ok(), "two requests later");
    }

    /// A split put goes as a multipart upload whose part and completion faults fail it.
    #[tokio::test]
    async fn split_puts_meet_part_and_completion_faults() {
        let path = Path::from("t/part-0.parquet");
        let payload = || PutPayload::from(vec![7u8; 100]);
        let (inner, store) = faulty("split *.parquet; 503 part #2");
        store.put(&path, payload()).await.unwrap_err();
        assert!(
            inner.head(&path).await.is_err(),
            "an upload with a failed part"
        );
        store.put(&path, payload()).await.unwrap();
        assert_eq!(inner.head(&path).await.unwrap().size, 100);
        let (inner, store) = faulty("split *.parquet; lost complete #1");
        store.put(&path, payload()).await.unwrap_err();
        assert_eq!(inner.head(&path).await.unwrap().size, 100, "completed");
    }

    /// Reads fail without changing anything; a listing fails whole.
    #[tokio::test]
    async fn reads_and_listings_fail_whole() {
        let (inner, store) = faulty("503 get #1; lost list #1; drop delete *b #1");
        inner
            .put(&Path::from("t/a"), PutPayload::from("x"))
            .await
            .unwrap();
        inner
            .put(&Path::from("t/b"), PutPayload::from("x"))
            .await
            .unwrap();
        store.get(&Path::from("t/a")).await.unwrap_err();
        store.get(&Path::from("t/a")).await.unwrap();
        let listed: Result<Vec<ObjectMeta>> = store.list(None).try_collect().await;
        assert!(listed.is_err());
        assert_eq!(
            store
                .list(None)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len(),
            2
        );
        store.delete(&Path::from("t/a")).await.unwrap();
        store.delete(&Path::from("t/b")).await.unwrap_err();
        assert_eq!(
            inner
                .list(None)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// Probabilistic rules draw from their seed: the same seed, the same faults.
    #[tokio::test]
    async fn percentages_follow_their_seed() {
        let outcomes = |seed: u64| async move {
            let (inner, store) = faulty(&format!("503 get 30%; seed {seed}"));
            let path = Path::from("t/a");
            inner.put(&path, PutPayload::from("x")).await.unwrap();
            let mut out = Vec::new();
            for _ in 0..60 {
                out.push(store.head(&path).await.is_err());
            }
            out
        };
        let first = outcomes(3).await;
        assert_eq!(first, outcomes(3).await);
        assert_ne!(first, outcomes(4).await);
        let faults = first.iter().filter(|failed| **failed).count();
        assert!((5..=35).contains(&faults), "{faults} of 60");
    }
}
