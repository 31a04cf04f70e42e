//! The shared state of the HTTP surface: [`App`], what every handler reads, built once from the
//! configuration, with the helpers handlers share (the presented token, upstream targets, the
//! clients). The router is [`crate::routes`]'s; LLM calls live in [`crate::llm`], connection calls
//! in [`crate::connections`]. This module names no handler module, so none of them depends on it in
//! a circle.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::InvalidUri;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api_error::{ApiError, ErrorKind};
use crate::config::{ms, trim_base, Config};
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::narrowing::{Narrowed, Narrowing};
use crate::reload::TableHandle;
use crate::table::{Lookup, Tenant, TenantState};
use crate::upstream::{Upstream, UpstreamSettings};
use crate::usage::UsageSink;

/// An upstream with its platform credential already turned into a (sensitive) header value.
pub struct UpstreamTarget {
    pub base: String,
    pub auth: HeaderValue,
    /// The LLM endpoint (`/v1/chat/completions` or `/v1/messages`), parsed once rather than per request.
    pub endpoint: Option<Uri>,
    /// The model list (`/v1/models`), parsed once.
    pub models: Option<Uri>,
}

/// Everything a request handler needs.
pub struct App {
    pub table: TableHandle,
    /// What the budget feed says can only narrow the table in force (crate::narrowing).
    pub narrowing: Arc<Narrowing>,
    pub limiters: Arc<Limiters>,
    pub usage: UsageSink,
    pub metrics: Metrics,
    /// The outbound client for LLM upstreams and Nango.
    pub upstream: Upstream,
    pub openai: Option<UpstreamTarget>,
    pub anthropic: Option<UpstreamTarget>,
    pub nango: Option<UpstreamTarget>,
    pub max_body_bytes: usize,
    /// One permit per upstream request in flight; bounds the outbound connection pool.
    pub upstream_slots: Arc<Semaphore>,
    pub slot_wait: Duration,
    pub upstream_timeout: Duration,
    pub default_output_estimate: u32,
    /// What a call to an unconfigured upstream is told to set (`upstreams.unconfigured_hint`).
    pub unconfigured_hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0} is not usable in an HTTP header")]
    Credential(&'static str),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{key} is not a valid URL ({url:?}: {reason}); use e.g. https://api.example.com")]
    Url {
        key: &'static str,
        url: String,
        reason: String,
    },
}

/// `{base}{path}` as an absolute http or https URI, checked once at startup.
fn endpoint(key: &'static str, base: &str, path: &str) -> Result<Uri, BuildError> {
    let url = format!("{base}{path}");
    let invalid = |reason: String| BuildError::Url {
        key,
        url: url.clone(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: InvalidUri| invalid(e.to_string()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(invalid("not an absolute http or https URL".into()));
    }
    Ok(uri)
}

fn sensitive(prefix: &str, secret: &str, what: &'static str) -> Result<HeaderValue, BuildError> {
    let mut v = HeaderValue::from_str(&format!("{prefix}{secret}"))
        .map_err(|_| BuildError::Credential(what))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The client for calls to the api (usage shipping, budget feed): bounded pool, timeouts, no automatic
/// retries or redirects.
pub fn http_client(config: &Config) -> Result<reqwest::Client, BuildError> {
    let l = &config.limits;
    reqwest::Client::builder()
        .connect_timeout(ms(l.connect_timeout_ms))
        .read_timeout(ms(l.upstream_read_timeout_ms))
        .pool_max_idle_per_host(l.pool_max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BuildError::Client(e.to_string()))
}

/// The client for LLM upstreams and Nango, on the per-request path.
pub fn upstream_client(config: &Config) -> Upstream {
    let l = &config.limits;
    Upstream::new(UpstreamSettings {
        connect_timeout: ms(l.connect_timeout_ms),
        read_timeout: ms(l.upstream_read_timeout_ms),
        pool_max_idle_per_host: l.pool_max_idle_per_host,
        pool_idle_timeout: Duration::from_secs(90),
    })
}

impl App {
    pub fn new(
        config: &Config,
        table: TableHandle,
        limiters: Arc<Limiters>,
        usage: UsageSink,
        metrics: Metrics,
        upstream: Upstream,
    ) -> Result<Self, BuildError> {
        let openai = match &config.upstreams.openai {
            Some(u) => Some(UpstreamTarget {
                base: trim_base(&u.base_url).to_owned(),
                auth: sensitive(
                    "Bearer ",
                    u.api_key.expose_secret(),
                    "upstreams.openai.api_key",
                )?,
                endpoint: Some(endpoint(
                    "upstreams.openai.base_url",
                    trim_base(&u.base_url),
                    "/v1/chat/completions",
                )?),
                models: Some(endpoint(
                    "upstreams.openai.base_url",
                    trim_base(&u.base_url),
                    "/v1/models",
                )?),
            }),
            None => None,
        };
        let anthropic = match &config.upstreams.anthropic {
            Some(u) => Some(UpstreamTarget {
                base: trim_base(&u.base_url).to_owned(),
                auth: sensitive("", u.api_key.expose_secret(), "upstreams.anthropic.api_key")?,
                endpoint: Some(endpoint(
                    "upstreams.anthropic.base_url",
                    trim_base(&u.base_url),
                    "/v1/messages",
                )?),
                models: Some(endpoint(
                    "upstreams.anthropic.base_url",
                    trim_base(&u.base_url),
                    "/v1/models",
                )?),
            }),
            None => None,
        };
        let nango = match &config.nango {
            Some(n) => {
                // Checked here so that a bad base URL fails at startup, not on every connection call.
                endpoint("nango.base_url", trim_base(&n.base_url), "/proxy/")?;
                Some(UpstreamTarget {
                    base: trim_base(&n.base_url).to_owned(),
                    auth: sensitive("Bearer ", n.secret_key.expose_secret(), "nango.secret_key")?,
                    endpoint: None,
                    models: None,
                })
            }
            None => None,
        };
        Ok(Self {
            table,
            narrowing: Arc::default(),
            limiters,
            usage,
            metrics,
            upstream,
            openai,
            anthropic,
            nango,
            max_body_bytes: config.limits.max_body_bytes,
            upstream_slots: Arc::new(Semaphore::new(config.limits.max_upstream_connections)),
            slot_wait: ms(config.limits.connect_timeout_ms),
            upstream_timeout: ms(config.limits.upstream_timeout_ms),
            default_output_estimate: config.limits.default_output_estimate,
            unconfigured_hint: config.upstreams.unconfigured_hint.clone(),
        })
    }

    /// Resolves a presented token to an active tenant.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Arc<Tenant>, ApiError> {
        let Some(table) = self.table.current() else {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "the proxy has no tenant table yet; retry shortly",
            ));
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(ApiError::new(
                ErrorKind::Authentication,
                "missing proxy token: send it as Authorization: Bearer <token> (or x-api-key for /v1/messages)",
            ));
        };
        let rotated = || {
            ApiError::new(
                ErrorKind::Authentication,
                "invalid proxy token: it was never issued or has been rotated",
            )
        };
        let suspended = |t: &Tenant| {
            ApiError::new(
                ErrorKind::Permission,
                format!("tenant {} is suspended", t.name),
            )
        };
        let found = match table.lookup(token) {
            Lookup::Unknown => return Err(rotated()),
            Lookup::Found(t) => t,
        };
        match self.narrowing.apply(found.clone()) {
            Err(Narrowed::TokenRotated) => Err(rotated()),
            Err(Narrowed::Suspended) => Err(suspended(&found)),
            Ok(t) if t.state == TenantState::Suspended => Err(suspended(&t)),
            Ok(t) => Ok(t),
        }
    }

    /// Takes one of the proxy-wide upstream slots, waiting at most as long as a connect may take.
    pub async fn upstream_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        // The usual case, a free slot, needs no timer.
        if let Ok(permit) = self.upstream_slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.slot_wait, self.upstream_slots.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.metrics
                    .rejections
                    .with_label_values(&["upstream_connections"])
                    .inc();
                Err(ApiError::new(
                    ErrorKind::Unavailable,
                    "the proxy is at its upstream connection limit; retry shortly",
                )
                .header("retry-after", 1))
            }
        }
    }

    /// Reads a request body up to the configured limit.
    pub async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<bytes::Bytes, ApiError> {
        let limit = self.max_body_bytes;
        let too_large = || {
            ApiError::new(
                ErrorKind::TooLarge,
                format!("request body exceeds the limit of {limit} bytes"),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::new(ErrorKind::InvalidRequest, "request body could not be read")
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

/// The token a caller presented: `Authorization: Bearer`, or `x-api-key` where `api_key_header` allows it.
pub fn presented_token(headers: &HeaderMap, api_key_header: bool) -> Option<&str> {
    if api_key_header {
        if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            return Some(v.trim());
        }
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}
