//! Prometheus metrics: what the proxy counts and how /metrics renders it.
//!
//! This module owns every metric's name, help text and labels. Labels carry tenant names, model names,
//! API families and statuses, never tokens.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// All metrics, registered in one registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub time_to_first_byte: HistogramVec,
    pub tokens: IntCounterVec,
    pub rejections: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub partial_responses: IntCounterVec,
    pub usage_buffered: IntGauge,
    pub usage_shipped: IntCounter,
    pub usage_ship_failures: IntCounter,
    pub usage_overflow: IntCounter,
    pub table_tenants: IntGauge,
    pub table_reloads: IntCounterVec,
    pub budget_feed_polls: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Self {
            requests: counter_vec(
                "proxy_requests_total",
                "Requests answered, by route and HTTP status.",
                &["route", "status"],
            ),
            request_duration: histogram(
                "proxy_request_duration_seconds",
                "Time from request to the end of the response body, by route.",
                &["route"],
            ),
            time_to_first_byte: histogram(
                "proxy_upstream_time_to_first_byte_seconds",
                "Time until the upstream's response headers arrived, by route.",
                &["route"],
            ),
            tokens: counter_vec(
                "proxy_tokens_total",
                "Tokens metered, by tenant, model and kind (input, output, cache_read, cache_write).",
                &["tenant", "model", "kind"],
            ),
            rejections: counter_vec(
                "proxy_limit_rejections_total",
                "Requests refused by a limit, by reason.",
                &["reason"],
            ),
            upstream_errors: counter_vec(
                "proxy_upstream_errors_total",
                "Upstream failures, by route and kind (timeout, connect, status_4xx, status_5xx, body).",
                &["route", "kind"],
            ),
            partial_responses: counter_vec(
                "proxy_partial_responses_total",
                "Responses cut short before their protocol end, by route.",
                &["route"],
            ),
            usage_buffered: gauge("proxy_usage_buffered_events", "Usage events waiting to be shipped."),
            usage_shipped: counter("proxy_usage_shipped_events_total", "Usage events the api acknowledged."),
            usage_ship_failures: counter(
                "proxy_usage_ship_failures_total",
                "Usage batches that failed and will be retried.",
            ),
            usage_overflow: counter(
                "proxy_usage_overflow_events_total",
                "Usage events written to the log because the buffer was full or shutdown ran out of time.",
            ),
            table_tenants: gauge("proxy_tenant_table_tenants", "Tenants in the table in force."),
            table_reloads: counter_vec(
                "proxy_tenant_table_reloads_total",
                "Tenant table loads, by result (ok, error).",
                &["result"],
            ),
            budget_feed_polls: counter_vec(
                "proxy_budget_feed_polls_total",
                "Budget feed polls, by result (ok, error).",
                &["result"],
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
