//! The outbound HTTP client for LLM upstreams and Nango: hyper's pooled client with the proxy's timeouts.
//!
//! This module owns how a request leaves the proxy: TCP with `TCP_NODELAY`, TLS through rustls (webpki
//! roots, HTTP/2 when the upstream offers it by ALPN) for https upstreams, a bounded pool of idle
//! connections, no redirects and no retries. Three timeouts apply:
//! - connect (`limits.connect_timeout_ms`): TCP connect and TLS handshake together;
//! - until response headers (`limits.upstream_timeout_ms`, and at most `limits.upstream_read_timeout_ms`),
//!   applied by [`crate::llm::send_upstream`] with [`Upstream::header_timeout`];
//! - silence inside a response body (`limits.upstream_read_timeout_ms`): [`TimedBody`].
//!
//! The usage shipper and the budget feed, which call the api a few times a second at most, keep using
//! reqwest; this client serves the per-request path, where reqwest's extra layers (redirect handling that
//! re-parses the URL, its tower stack, a timer per request) cost measurable CPU.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

type Connector = TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>;

/// The request type sent upstream: a body the proxy already holds in full (or none).
pub type UpstreamRequest = hyper::Request<Full<Bytes>>;
/// An upstream response whose body enforces the read timeout.
pub type UpstreamResponse = hyper::Response<TimedBody>;

/// Settings of the outbound client, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
}

/// The pooled outbound client. Cheap to share: everything is behind the client's own `Arc`s.
#[derive(Clone)]
pub struct Upstream {
    client: Client<Connector, Full<Bytes>>,
    read_timeout: Duration,
}

/// Why an upstream exchange failed, as far as the caller's error mapping needs to know.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting (TCP and TLS) took longer than `limits.connect_timeout_ms`.
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// Unreachable, refused, reset, TLS failure, or closed before a complete response.
    #[error("upstream request failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::ConnectTimeout)
    }
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let connector = TimeoutConnector {
            inner: https,
            timeout: settings.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .build(connector);
        Self {
            client,
            read_timeout: settings.read_timeout,
        }
    }

    /// How long to wait for response headers: the upstream timeout, but never longer than the read timeout
    /// (a silent upstream is silent whether or not it has sent headers yet).
    pub fn header_timeout(&self, upstream_timeout: Duration) -> Duration {
        upstream_timeout.min(self.read_timeout)
    }

    /// Sends a request and waits for the response headers (the caller bounds the wait).
    pub async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        match self.client.request(req).await {
            Ok(resp) => {
                let read_timeout = self.read_timeout;
                Ok(resp.map(|body| TimedBody::new(body, read_timeout)))
            }
            Err(e) if is_connect_timeout(&e) => Err(UpstreamError::ConnectTimeout),
            Err(e) => Err(UpstreamError::Failed(describe(&e))),
        }
    }
}

fn is_connect_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<ConnectTimedOut>() {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// The error and its causes on one line. hyper's errors name no URL, header or body content.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Marks a connect (TCP plus TLS) that outlived the connect timeout.
#[derive(Debug)]
struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl std::error::Error for ConnectTimedOut {}

/// Bounds the whole connect, TLS handshake included (the TCP connector alone bounds only TCP).
#[derive(Clone)]
struct TimeoutConnector<C> {
    inner: C,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for TimeoutConnector<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

/// An error inside an upstream response body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the upstream sent nothing for {0:?}")]
    Timeout(Duration),
    #[error("reading the upstream body failed: {0}")]
    Read(#[from] hyper::Error),
}

impl BodyError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Timeout(_))
    }
}

/// An upstream response body that fails once the upstream stays silent for longer than the read timeout.
///
/// Silence is counted from the first poll that finds no data, as reqwest counts it: time the proxy spends
/// waiting for a slow client to read (back-pressure) is not the upstream's silence. The timer is created
/// once, on the first wait, and moved forward only when it fires early; frames cost no timer operation,
/// and a body that arrives with its headers (the usual non-streaming case) costs no timer at all.
pub struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    /// When the current wait for data began; `None` right after a frame.
    waiting_since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            waiting_since: None,
            sleep: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting_since = None;
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        let deadline = *this.waiting_since.get_or_insert_with(Instant::now) + this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(Some(Err(BodyError::Timeout(this.timeout))));
            }
            // Set for an earlier wait that data ended in time.
            sleep.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
