//! Prometheus metrics: what the proxy counts and how /metrics renders it.
//!
//! This module owns every metric's name, help text and labels. Labels carry tenant names, model names,
//! API families and statuses, never tokens.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::table::TenantName;

/// The LLM routes, whose per-request metric handles are resolved once at startup.
pub const LLM_ROUTES: [&str; 2] = ["chat_completions", "messages"];

/// Token kinds, in the order of [`TokenHandles`].
pub const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// Most models whose token counters are cached per tenant; others are looked up by label each time.
const MAX_CACHED_MODELS_PER_TENANT: usize = 16;

/// One LLM route's metric handles, so that a request does not hash label values or allocate for them.
pub struct RouteHandles {
    pub requests_ok: IntCounter,
    pub duration: Histogram,
    pub time_to_first_byte: Histogram,
    pub partial: IntCounter,
}

/// `proxy_tokens_total` handles of one (tenant, model), in [`TOKEN_KINDS`] order; a series is created on
/// its first non-zero count, as the label lookup would.
type TokenHandles = [OnceLock<IntCounter>; 4];

/// Cached token counter handles: per tenant, a short list of (model, handles).
type TokenHandleCache = DashMap<TenantName, Vec<(Box<str>, TokenHandles)>>;

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
    /// Usage events buffered but not journaled, by reason (full, error).
    pub usage_not_journaled: IntCounterVec,
    pub table_tenants: IntGauge,
    pub table_reloads: IntCounterVec,
    pub budget_feed_polls: IntCounterVec,
    routes: Arc<[RouteHandles; 2]>,
    token_handles: Arc<TokenHandleCache>,
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
        let requests = counter_vec(
            "proxy_requests_total",
            "Requests answered, by route and HTTP status.",
            &["route", "status"],
        );
        let request_duration = histogram(
            "proxy_request_duration_seconds",
            "Time from request to the end of the response body, by route.",
            &["route"],
        );
        let time_to_first_byte = histogram(
            "proxy_upstream_time_to_first_byte_seconds",
            "Time until the upstream's response headers arrived, by route.",
            &["route"],
        );
        let partial_responses = counter_vec(
            "proxy_partial_responses_total",
            "Responses cut short before their protocol end, by route.",
            &["route"],
        );
        let routes = Arc::new(LLM_ROUTES.map(|route| RouteHandles {
            requests_ok: requests.with_label_values(&[route, "200"]),
            duration: request_duration.with_label_values(&[route]),
            time_to_first_byte: time_to_first_byte.with_label_values(&[route]),
            partial: partial_responses.with_label_values(&[route]),
        }));
        Self {
            requests,
            request_duration,
            time_to_first_byte,
            partial_responses,
            routes,
            token_handles: Arc::new(DashMap::new()),
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
            usage_not_journaled: counter_vec(
                "proxy_usage_not_journaled_events_total",
                "Usage events buffered in memory only, by reason (full: journal at its size bound; error: the write failed).",
                &["reason"],
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

    /// The cached handles of an LLM route (one of [`LLM_ROUTES`]).
    pub fn route(&self, route: &str) -> &RouteHandles {
        let i = LLM_ROUTES.iter().position(|r| *r == route).unwrap_or(0);
        &self.routes[i]
    }

    /// Counts a request answered with `status` on `route`.
    pub fn count_request(&self, route: &'static str, status: u16) {
        if status == 200 && LLM_ROUTES.contains(&route) {
            self.route(route).requests_ok.inc();
            return;
        }
        match axum::http::StatusCode::from_u16(status) {
            Ok(s) => self.requests.with_label_values(&[route, s.as_str()]).inc(),
            Err(_) => self
                .requests
                .with_label_values(&[route, &status.to_string()])
                .inc(),
        }
    }

    /// Adds metered tokens for a tenant and model; `counts` are in [`TOKEN_KINDS`] order.
    pub fn count_tokens(&self, tenant: &TenantName, model: &str, counts: [u64; 4]) {
        if counts.iter().all(|&n| n == 0) {
            return;
        }
        let add = |h: &TokenHandles| {
            for (i, (c, n)) in h.iter().zip(counts).enumerate() {
                if n > 0 {
                    c.get_or_init(|| {
                        self.tokens
                            .with_label_values(&[tenant.as_str(), model, TOKEN_KINDS[i]])
                    })
                    .inc_by(n);
                }
            }
        };
        if let Some(models) = self.token_handles.get(tenant) {
            if let Some((_, h)) = models.iter().find(|(m, _)| &**m == model) {
                add(h);
                return;
            }
        }
        let mut models = self.token_handles.entry(tenant.clone()).or_default();
        if let Some((_, h)) = models.iter().find(|(m, _)| &**m == model) {
            add(h);
        } else if models.len() < MAX_CACHED_MODELS_PER_TENANT {
            let h = TokenHandles::default();
            add(&h);
            models.push((model.into(), h));
        } else {
            add(&TokenHandles::default());
        }
    }

    /// Drops cached handles of tenants that left the table (their series stay in the registry).
    pub fn retain_tenants(&self, keep: impl Fn(&TenantName) -> bool) {
        self.token_handles.retain(|k, _| keep(k));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
