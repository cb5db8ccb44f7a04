//! What `listen` exposes at `/metrics`, in Prometheus's text format (OpenMetrics), through the
//! `prometheus-client` crate. Names start with `zendesk_lake_` and carry their unit; counters
//! end in `_total`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sync::{Outcome, SyncReport};

/// What became of a delivery.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Delivered {
    /// Genuine and new: its streams run soon.
    accepted,
    /// An envelope id already accepted.
    duplicate,
    bad_signature,
    /// Signed too far from now.
    stale,
    /// Genuine, but not a JSON object.
    malformed,
    /// Genuine, about no configured stream.
    ignored,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: Delivered,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum RunOutcome {
    ok,
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    stream: String,
    outcome: RunOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

/// The listener's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    runs: Family<RunLabels, Counter>,
    rows: Family<TableLabels, Counter>,
    requests: Family<StreamLabels, Counter>,
    last_success: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    watermark: Family<StreamLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            deliveries: Family::default(),
            runs: Family::default(),
            rows: Family::default(),
            requests: Family::default(),
            last_success: Family::default(),
            watermark: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "zendesk_lake_webhook_deliveries",
            "Webhook deliveries received, by what became of them",
            metrics.deliveries.clone(),
        );
        registry.register(
            "zendesk_lake_runs",
            "Runs of each stream, by outcome",
            metrics.runs.clone(),
        );
        registry.register(
            "zendesk_lake_rows_written",
            "Rows upserted or marked deleted, per table",
            metrics.rows.clone(),
        );
        registry.register(
            "zendesk_lake_requests",
            "Requests to Zendesk, per stream",
            metrics.requests.clone(),
        );
        registry.register(
            "zendesk_lake_last_success_timestamp_seconds",
            "When each stream's last successful run ended (unix seconds)",
            metrics.last_success.clone(),
        );
        registry.register(
            "zendesk_lake_watermark_timestamp_seconds",
            "Each stream's watermark: the newest change it has committed (unix seconds)",
            metrics.watermark.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn delivered(&self, outcome: Delivered) {
        self.deliveries
            .get_or_create(&DeliveryLabels { outcome })
            .inc();
    }

    /// Count a run's streams, tables, requests and positions; `now` in unix seconds.
    pub fn ran(&self, report: &SyncReport, now: f64) {
        let mut streams: Vec<&str> = Vec::new();
        for table in &report.tables {
            let rows = table.upserted + table.deleted;
            self.rows
                .get_or_create(&TableLabels {
                    table: table.table.clone(),
                })
                .inc_by(rows);
            if streams.contains(&table.stream.as_str()) {
                continue;
            }
            streams.push(&table.stream);
            let stream = StreamLabels {
                stream: table.stream.clone(),
            };
            // Requests and watermark are the stream's, the same on each of its tables.
            self.requests.get_or_create(&stream).inc_by(table.requests);
            if let Some(watermark) = table.watermark {
                self.watermark
                    .get_or_create(&stream)
                    .set(watermark as f64 / 1e6);
            }
            let failed = report
                .tables
                .iter()
                .any(|t| t.stream == table.stream && matches!(t.outcome, Outcome::Failed(_)));
            let outcome = match failed {
                true => RunOutcome::failed,
                false => RunOutcome::ok,
            };
            if table.outcome == Outcome::Cancelled {
                continue;
            }
            self.runs
                .get_or_create(&RunLabels {
                    stream: table.stream.clone(),
                    outcome,
                })
                .inc();
            if !failed {
                self.last_success.get_or_create(&stream).set(now);
            }
        }
    }

    /// The metrics in Prometheus's text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
