//! Prometheus metrics: every metric the api counts, its name, help text and labels, and the text
//! /metrics serves.
//!
//! The api and the token proxy use the same stack (the `prometheus` crate); each process keeps its
//! own registry, so the dev platform (which runs the proxy in process) serves two separate pages.
//! Labels carry routes, methods, statuses, actions and outcomes, never tenant secrets or tokens.
//!
//! A process has one set (tests start several apps in one process and share it): [`get`].

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Every metric of the api, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// `api_http_requests_total{method,route,status}`.
    pub http_requests: IntCounterVec,
    /// `api_http_request_seconds{method,route}`.
    pub http_request_seconds: HistogramVec,
    /// `api_commits_total{action}`.
    pub commits: IntCounterVec,
    /// `api_push_seconds`.
    pub push_seconds: Histogram,
    /// `api_push_rejections_total`.
    pub push_rejections: IntCounter,
    /// `api_write_batch_size`.
    pub write_batch_size: Histogram,
    /// `api_apply_seconds`.
    pub apply_seconds: Histogram,
    /// `api_record_seconds`.
    pub record_seconds: Histogram,
    /// `api_outbox_pending`.
    pub outbox_pending: IntGauge,
    /// `api_remote_reachable`.
    pub remote_reachable: IntGauge,
    /// `api_usage_batches_total{result}`.
    pub usage_batches: IntCounterVec,
    /// `api_usage_events_total{result}`.
    pub usage_events: IntCounterVec,
    /// `api_usage_ingest_seconds`.
    pub usage_ingest_seconds: Histogram,
    /// `api_budget_feed_tenants`.
    pub budget_feed_tenants: IntGauge,
    /// `api_bot_calls_total{method,outcome}`.
    pub bot_calls: IntCounterVec,
    /// `api_bot_updates_total{outcome}`.
    pub bot_updates: IntCounterVec,
    /// `api_bot_intake_batch_size`.
    pub bot_intake_batch_size: Histogram,
    /// `api_flux_notify_seconds`.
    pub flux_notify_seconds: Histogram,
    /// `api_cluster_tenants{phase,health}`.
    pub cluster_tenants: IntGaugeVec,
    /// `api_cluster_cached_objects{kind}`.
    pub cluster_cached_objects: IntGaugeVec,
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        let seconds = seconds_buckets();
        let http_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "api_http_request_seconds",
                "Time to answer a request, by method and route.",
            )
            .buckets(seconds.clone()),
            &["method", "route"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(http_request_seconds.clone()))
            .expect("unique name");
        Metrics {
            http_requests: counter_vec(
                "api_http_requests_total",
                "Requests answered, by method, route and status.",
                &["method", "route", "status"],
            ),
            http_request_seconds,
            commits: counter_vec(
                "api_commits_total",
                "Commits the writer recorded, by tenant action.",
                &["action"],
            ),
            push_seconds: histogram(
                "api_push_seconds",
                "Time to push a batch to the state repo's remote, retries included.",
                seconds.clone(),
            ),
            push_rejections: counter(
                "api_push_rejections_total",
                "Pushes the remote rejected because its branch had moved.",
            ),
            write_batch_size: histogram(
                "api_write_batch_size",
                "Changes the writer took in one batch.",
                exponential_buckets(1.0, 2.0, 12).expect("valid buckets"),
            ),
            apply_seconds: histogram(
                "api_apply_seconds",
                "Time to apply a batch's changes to the tree.",
                seconds.clone(),
            ),
            record_seconds: histogram(
                "api_record_seconds",
                "Time to record a batch in the outbox and flush its pack.",
                seconds.clone(),
            ),
            outbox_pending: gauge(
                "api_outbox_pending",
                "Changes recorded but not yet on the remote.",
            ),
            remote_reachable: gauge(
                "api_remote_reachable",
                "1 when the last push or fetch reached the remote, else 0.",
            ),
            usage_batches: counter_vec(
                "api_usage_batches_total",
                "Usage batches from the token proxies, by result (stored, refused).",
                &["result"],
            ),
            usage_events: counter_vec(
                "api_usage_events_total",
                "Usage events from the token proxies, by result (stored, duplicate).",
                &["result"],
            ),
            usage_ingest_seconds: histogram(
                "api_usage_ingest_seconds",
                "Time to check and store a usage batch.",
                seconds.clone(),
            ),
            flux_notify_seconds: histogram(
                "api_flux_notify_seconds",
                "Time from a push to Flux's Receiver answering the notification.",
                seconds,
            ),
            bot_intake_batch_size: histogram(
                "api_bot_intake_batch_size",
                "Telegram updates the platform bot's webhook stored in one transaction.",
                exponential_buckets(1.0, 2.0, 13).expect("valid buckets"),
            ),
            cluster_tenants: gauge_vec(
                "api_cluster_tenants",
                "Tenants by pipeline phase and health, as the cluster status last swept them.",
                &["phase", "health"],
            ),
            cluster_cached_objects: gauge_vec(
                "api_cluster_cached_objects",
                "Objects in the cluster watch caches, by kind.",
                &["kind"],
            ),
            budget_feed_tenants: gauge(
                "api_budget_feed_tenants",
                "Tenants in the budget feed the proxies poll.",
            ),
            bot_calls: counter_vec(
                "api_bot_calls_total",
                "Bot API calls of the platform bot, by method and outcome.",
                &["method", "outcome"],
            ),
            bot_updates: counter_vec(
                "api_bot_updates_total",
                "Telegram updates the platform bot's webhook received, by outcome.",
                &["outcome"],
            ),
            registry,
        }
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding a gathered family into memory fails only on a malformed family, which the
        // typed constructors above cannot build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Buckets for durations, from a millisecond to a minute.
fn seconds_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_under_its_name_and_labels() {
        let m = get();
        m.http_requests
            .with_label_values(&["GET", "/healthz", "200"])
            .inc();
        m.http_request_seconds
            .with_label_values(&["GET", "/healthz"])
            .observe(0.002);
        m.commits.with_label_values(&["provision"]).inc();
        m.push_seconds.observe(0.2);
        m.push_rejections.inc();
        m.write_batch_size.observe(3.0);
        m.apply_seconds.observe(0.01);
        m.record_seconds.observe(0.01);
        m.outbox_pending.set(2);
        m.remote_reachable.set(1);
        m.usage_batches.with_label_values(&["stored"]).inc();
        m.usage_events.with_label_values(&["duplicate"]).inc_by(4);
        m.usage_ingest_seconds.observe(0.003);
        m.budget_feed_tenants.set(7);
        m.bot_calls
            .with_label_values(&["sendMessage", "sent"])
            .inc();
        m.bot_updates.with_label_values(&["stored"]).inc();
        let text = m.render();
        for line in [
            "# TYPE api_http_requests_total counter",
            "api_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}",
            "# TYPE api_http_request_seconds histogram",
            "api_http_request_seconds_bucket{method=\"GET\",route=\"/healthz\",le=\"0.0025\"}",
            "api_http_request_seconds_count{method=\"GET\",route=\"/healthz\"}",
            "api_commits_total{action=\"provision\"}",
            "api_push_seconds_sum",
            "api_push_rejections_total",
            "api_write_batch_size_bucket{le=\"4\"}",
            "api_apply_seconds_count",
            "api_record_seconds_count",
            "# TYPE api_outbox_pending gauge",
            "# TYPE api_remote_reachable gauge",
            "api_usage_batches_total{result=\"stored\"}",
            "api_usage_events_total{result=\"duplicate\"}",
            "api_usage_ingest_seconds_count",
            "# TYPE api_budget_feed_tenants gauge",
            "api_bot_calls_total{method=\"sendMessage\",outcome=\"sent\"}",
            "api_bot_updates_total{outcome=\"stored\"}",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
