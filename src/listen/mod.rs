//! `listen`'s server (docs/ARCHITECTURE.md, "Webhooks"): Zendesk's webhook deliveries make the
//! lake minutes old without polling. axum's router on hyper's HTTP/1 server, with keep-alive, a
//! header read timeout, a body limit (413) and a body read timeout; TLS is the ingress's job.
//!
//! - `POST /webhooks/zendesk`: a delivery, verified ([`crate::webhooks`]), then answered at once
//!   (Zendesk gives up after about 10 s and retries): 401 for a bad, missing or stale signature,
//!   400 for a genuine body that is not a JSON object, 200 otherwise. A genuine delivery marks
//!   the streams that follow its event type, and [`schedule`] runs them.
//! - `GET /healthz`: 200 while the process serves, with each stream's last successful run.
//! - `GET /metrics`: [`metrics`] in Prometheus's text format.
//!
//! No body, signature or secret is ever logged.

pub mod metrics;
pub mod schedule;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tracing::{debug, info, warn};

use crate::spec::Stream;
use crate::sync::Syncer;
use crate::webhooks::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::webhooks::{Delivery, Rejected, Seen, Verifier};
use metrics::{Delivered, Metrics};
use schedule::{Cadence, Health, Trigger};

/// The path Zendesk delivers to.
pub const DELIVERY_PATH: &str = "/webhooks/zendesk";

/// Envelope ids remembered to recognise Zendesk's duplicate deliveries.
const SEEN_IDS: usize = 100_000;

/// How long a graceful shutdown waits for open connections.
const DRAIN: Duration = Duration::from_secs(5);

/// How long a shutdown waits for the run in progress to stop after its commit; with the drain,
/// the process exits within 30 s of its signal.
const STOP_WITHIN: Duration = Duration::from_secs(22);

/// How the server listens and when it runs.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub bind: SocketAddr,
    pub cadence: Cadence,
    /// Largest body accepted (413 above).
    pub body_limit: usize,
    /// Longest a client may take to send its request head, and its body.
    pub read_timeout: Duration,
}

impl ListenOptions {
    pub fn new(bind: SocketAddr, cadence: Cadence) -> Self {
        ListenOptions {
            bind,
            cadence,
            body_limit: 1 << 20,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// What a `listen` did before it stopped.
#[derive(Debug, Clone, Default)]
pub struct ListenReport {
    pub deliveries: u64,
    pub accepted: u64,
}

/// What the handlers share.
struct Shared {
    verifier: Verifier,
    streams: Vec<&'static Stream>,
    seen: Mutex<Seen>,
    trigger: Arc<Trigger>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    report: Mutex<ListenReport>,
}

/// A bound listener, not serving yet.
pub struct Listener {
    listener: TcpListener,
    options: ListenOptions,
}

impl Listener {
    pub async fn bind(options: ListenOptions) -> io::Result<Listener> {
        let listener = TcpListener::bind(options.bind).await?;
        Ok(Listener { listener, options })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve deliveries and run `syncer` on them until `shutdown` completes; then stop
    /// accepting, let the run in progress stop after the commit it is making, and return.
    pub async fn serve(
        self,
        syncer: Arc<Syncer>,
        verifier: Verifier,
        shutdown: impl Future<Output = ()>,
    ) -> ListenReport {
        let streams = syncer
            .settings()
            .tables
            .iter()
            .fold(Vec::new(), |mut all, t| {
                let stream = t.source();
                if !all.iter().any(|s: &&Stream| s.name == stream.name) {
                    all.push(stream);
                }
                all
            });
        let shared = Arc::new(Shared {
            verifier,
            streams,
            seen: Mutex::new(Seen::new(SEEN_IDS)),
            trigger: Arc::default(),
            metrics: Arc::default(),
            health: Arc::default(),
            report: Mutex::default(),
        });
        // Every stream runs first: the lake may have fallen behind while no listener served.
        let all = shared.streams.iter().map(|s| s.name.clone()).collect();
        shared.health.set_activity(&Default::default(), &all);
        let cancel = CancellationToken::new();
        let scheduler = tokio::spawn(schedule::schedule(
            syncer,
            shared.trigger.clone(),
            shared.metrics.clone(),
            shared.health.clone(),
            self.options.cadence,
            cancel.clone(),
        ));
        let app = router(shared.clone(), &self.options);
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.options.read_timeout)
            .keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, typically: back off instead of spinning.
                            warn!(%error, "listen: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let service = TowerToHyperService::new(app.clone());
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            debug!(%error, "listen: connection ended with an error");
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        info!("listen: stopping");
        drop(self.listener);
        cancel.cancel();
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            debug!("listen: connections still open after the drain; closing them");
        }
        let mut scheduler = scheduler;
        match tokio::time::timeout(STOP_WITHIN, &mut scheduler).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "listen: the scheduler ended with an error"),
            Err(_) => {
                // Abandoned as a crash would be: the next run goes on from the last recorded
                // commit.
                warn!("listen: the run in progress did not stop in time; abandoning it");
                scheduler.abort();
            }
        }
        let report = shared.report.lock().map(|r| r.clone()).unwrap_or_default();
        report
    }
}

fn router(shared: Arc<Shared>, options: &ListenOptions) -> Router {
    Router::new()
        .route(DELIVERY_PATH, post(deliver))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(RequestBodyLimitLayer::new(options.body_limit))
        .layer(RequestBodyTimeoutLayer::new(options.read_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.read_timeout * 2,
        ))
        .with_state(shared)
}

async fn deliver(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let (status, outcome) = receive(&shared, &headers, &body);
    shared.metrics.delivered(outcome);
    if let Ok(mut report) = shared.report.lock() {
        report.deliveries += 1;
        report.accepted += u64::from(outcome == Delivered::accepted);
    }
    status
}

/// Verify, read and route one delivery.
fn receive(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Delivered) {
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let now = chrono::Utc::now();
    match shared.verifier.verify(
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        body,
        now,
    ) {
        Ok(()) => {}
        Err(Rejected::BadSignature) => return (StatusCode::UNAUTHORIZED, Delivered::bad_signature),
        Err(Rejected::Stale) => return (StatusCode::UNAUTHORIZED, Delivered::stale),
    }
    let delivery = match Delivery::parse(body) {
        Ok(delivery) => delivery,
        Err(_) => return (StatusCode::BAD_REQUEST, Delivered::malformed),
    };
    if let Some(id) = &delivery.id {
        let new = shared
            .seen
            .lock()
            .map(|mut seen| seen.insert(id))
            .unwrap_or(true);
        if !new {
            return (StatusCode::OK, Delivered::duplicate);
        }
    }
    let streams = delivery.streams(&shared.streams);
    if streams.is_empty() {
        debug!(event_type = %delivery.event_type, "listen: a delivery about no configured stream");
        return (StatusCode::OK, Delivered::ignored);
    }
    debug!(event_type = %delivery.event_type, streams = streams.len(), "listen: delivery accepted");
    shared.trigger.mark(streams.iter().map(|s| s.name.as_str()));
    (StatusCode::OK, Delivered::accepted)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut activity = shared.health.activity();
    activity.pending.extend(shared.trigger.marked());
    let body = serde_json::json!({
        "status": "serving",
        "running": activity.running,
        "pending": activity.pending,
        "streams": shared.health.snapshot(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}
