//! Usage events and their shipping to the api.
//!
//! This module owns the usage event's wire shape (docs/usage-events.md) and the bounded in-memory buffer
//! between request handling and the api. Recording never blocks or fails a request: when the buffer is full
//! the event is written to the log as one structured line instead. A single shipper task sends batches to
//! `POST {api}/internal/usage`; an event leaves the buffer only after the api acknowledged the batch holding
//! it, so a slow or unreachable api loses nothing within the bound. Retries back off exponentially with
//! jitter. The api deduplicates by event id, which makes resending safe. On shutdown the buffer is flushed,
//! and whatever cannot be delivered in time is logged.
//!
//! With `usage.journal_dir` set, every buffered event is also in the [`crate::journal`] on disk until
//! its acknowledgement, so that a killed process loses nothing: the next start ships it first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{watch, Notify};

use crate::config::{ms, trim_base, UsageConfig};
use crate::journal::{Appended, Journal};
use crate::metering::ApiKind;
use crate::metrics::Metrics;

pub use contracts::usage::ApiName;

/// One metered request (`contracts::usage`), its id and start time held typed.
pub type UsageEvent = contracts::usage::UsageEvent<uuid::Uuid, DateTime<Utc>>;

/// The body of `POST /internal/usage`.
pub type UsageBatch = contracts::usage::UsageBatch<UsageEvent>;

impl From<ApiKind> for ApiName {
    fn from(k: ApiKind) -> Self {
        match k {
            ApiKind::OpenAi => ApiName::Openai,
            ApiKind::Anthropic => ApiName::Anthropic,
        }
    }
}

/// Where the shipper sends batches.
#[derive(Clone)]
pub struct UsageTarget {
    pub url: String,
    pub credential: Arc<SecretString>,
}

impl UsageTarget {
    pub fn new(api_base: &str, credential: SecretString) -> Self {
        Self {
            url: format!("{}/internal/usage", trim_base(api_base)),
            credential: Arc::new(credential),
        }
    }
}

/// An event waiting for the api, with the journal segment that holds it.
struct Waiting {
    event: UsageEvent,
    segment: u64,
}

/// The buffer and its journal, under one lock so that the journal's order is the buffer's.
struct Buffer {
    queue: VecDeque<Waiting>,
    journal: Option<Journal>,
}

struct Inner {
    buffer: Mutex<Buffer>,
    /// Whether `buffer.journal` is set (fixed at construction; read without the lock).
    journaled: bool,
    capacity: usize,
    notify: Notify,
    /// The shipper is woken only once this many events wait (a full batch); below that it ships on its
    /// flush interval. Waking it for every event would cost a cross-thread wake-up per request.
    wake_at: AtomicUsize,
    metrics: Metrics,
}

/// The handle request handlers record into. Cheap to clone.
#[derive(Clone)]
pub struct UsageSink {
    inner: Arc<Inner>,
}

fn log_event(event: &UsageEvent, reason: &'static str) {
    // The whole event as JSON on one line, so that it can be replayed from the logs.
    let json = serde_json::to_string(event).unwrap_or_default();
    tracing::warn!(target: "usage_overflow", reason, event = %json, "usage event not shipped");
}

impl UsageSink {
    pub fn new(capacity: usize, metrics: Metrics) -> Self {
        Self::with_journal(capacity, metrics, None, Vec::new())
    }

    /// A sink whose events are journaled in `journal`, starting with the events `replayed` from it.
    pub fn with_journal(
        capacity: usize,
        metrics: Metrics,
        journal: Option<Journal>,
        replayed: Vec<(UsageEvent, u64)>,
    ) -> Self {
        let mut queue = VecDeque::with_capacity(capacity.min(4096).max(replayed.len()));
        queue.extend(
            replayed
                .into_iter()
                .map(|(event, segment)| Waiting { event, segment }),
        );
        metrics.usage_buffered.set(queue.len() as i64);
        Self {
            inner: Arc::new(Inner {
                journaled: journal.is_some(),
                buffer: Mutex::new(Buffer { queue, journal }),
                capacity,
                notify: Notify::new(),
                wake_at: AtomicUsize::new(1),
                metrics,
            }),
        }
    }

    /// Buffers an event for shipping (and journals it, with a journal); never blocks beyond a short
    /// lock and one write to the journal, never fails.
    pub fn record(&self, event: UsageEvent) {
        // Serialised before taking the lock that every request shares.
        let line = self.has_journal().then(|| serde_json::to_vec(&event));
        let mut b = self.lock();
        if b.queue.len() >= self.inner.capacity {
            drop(b);
            self.inner.metrics.usage_overflow.inc();
            log_event(&event, "buffer_full");
            return;
        }
        let mut segment = 0;
        if let (Some(journal), Some(Ok(line))) = (b.journal.as_mut(), line) {
            let not_journaled = |reason| {
                self.inner
                    .metrics
                    .usage_not_journaled
                    .with_label_values(&[reason])
                    .inc()
            };
            segment = journal.current_segment();
            match journal.append(&line) {
                Ok(Appended::In(seq)) => segment = seq,
                Ok(Appended::Full) => not_journaled("full"),
                Err(e) => {
                    not_journaled("error");
                    tracing::warn!(error = %e, "usage event buffered but not journaled");
                }
            }
        }
        b.queue.push_back(Waiting { event, segment });
        let len = b.queue.len();
        drop(b);
        self.inner.metrics.usage_buffered.set(len as i64);
        if len >= self.inner.wake_at.load(Ordering::Relaxed) {
            self.inner.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    fn has_journal(&self) -> bool {
        self.inner.journaled
    }

    /// The journal's files to sync (see [`sync_journal`]).
    fn journal_files(&self) -> Vec<Arc<std::fs::File>> {
        self.lock()
            .journal
            .as_mut()
            .map(Journal::to_sync)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.inner.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peek_batch(&self, n: usize) -> Vec<UsageEvent> {
        self.lock()
            .queue
            .iter()
            .take(n)
            .map(|w| w.event.clone())
            .collect()
    }

    /// Removes the first `n` events, which the api acknowledged, and acknowledges them in the journal.
    fn ack(&self, n: usize) {
        let mut b = self.lock();
        let n = n.min(b.queue.len());
        let acked: Vec<Waiting> = b.queue.drain(..n).collect();
        let oldest_waiting = b.queue.front().map(|w| w.segment);
        let len = b.queue.len();
        if let Some(journal) = b.journal.as_mut() {
            if let Err(e) = journal.ack(acked.iter().map(|w| w.event.id), oldest_waiting) {
                // Harmless for correctness: a replay resends what the api already stored, once.
                tracing::warn!(error = %e, "cannot record a usage acknowledgement in the journal");
            }
        }
        drop(b);
        self.inner.metrics.usage_buffered.set(len as i64);
    }

    /// Logs and discards every buffered event (used when there is no api, or at the end of shutdown).
    /// A journal keeps them: the next start ships them.
    pub fn drain_to_log(&self, reason: &'static str) {
        let events: Vec<_> = self.lock().queue.drain(..).collect();
        for w in &events {
            log_event(&w.event, reason);
        }
        self.inner.metrics.usage_buffered.set(0);
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("usage endpoint unreachable: {0}")]
    Transport(String),
    #[error("usage endpoint answered {0}")]
    Status(u16),
}

/// Sends batches until `stop` turns true, then flushes for at most `flush_deadline`.
pub async fn ship(
    sink: UsageSink,
    client: reqwest::Client,
    target: UsageTarget,
    cfg: ShipperSettings,
    mut stop: watch::Receiver<bool>,
) {
    sink.inner
        .wake_at
        .store(cfg.batch_size.max(1), Ordering::Relaxed);
    let mut backoff = cfg.initial_backoff;
    loop {
        if *stop.borrow() {
            break;
        }
        if sink.len() < cfg.batch_size {
            // Wait for a full batch, the flush interval, or shutdown.
            tokio::select! {
                _ = tokio::time::sleep(cfg.flush_interval) => {}
                _ = wait_for_batch(&sink, cfg.batch_size) => {}
                _ = stop.changed() => {}
            }
        }
        let batch = sink.peek_batch(cfg.batch_size);
        if batch.is_empty() {
            continue;
        }
        match send(&client, &target, &batch, cfg.request_timeout).await {
            Ok(()) => {
                sink.ack(batch.len());
                sink.inner.metrics.usage_shipped.inc_by(batch.len() as u64);
                backoff = cfg.initial_backoff;
            }
            Err(e) => {
                sink.inner.metrics.usage_ship_failures.inc();
                tracing::warn!(error = %e, buffered = sink.len(), retry_in_ms = backoff.as_millis() as u64, "usage batch not delivered");
                let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
                tokio::select! {
                    _ = tokio::time::sleep(backoff + jitter) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
    flush(&sink, &client, &target, &cfg).await;
}

async fn wait_for_batch(sink: &UsageSink, batch: usize) {
    loop {
        sink.inner.notify.notified().await;
        if sink.len() >= batch {
            return;
        }
    }
}

async fn flush(
    sink: &UsageSink,
    client: &reqwest::Client,
    target: &UsageTarget,
    cfg: &ShipperSettings,
) {
    let deadline = tokio::time::Instant::now() + cfg.flush_deadline;
    while !sink.is_empty() && tokio::time::Instant::now() < deadline {
        let batch = sink.peek_batch(cfg.batch_size);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match send(client, target, &batch, cfg.request_timeout.min(left)).await {
            Ok(()) => {
                sink.ack(batch.len());
                sink.inner.metrics.usage_shipped.inc_by(batch.len() as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage flush failed");
                tokio::time::sleep(cfg.initial_backoff.min(left)).await;
            }
        }
    }
    if !sink.is_empty() {
        sink.drain_to_log("shutdown_undelivered");
    }
}

async fn send(
    client: &reqwest::Client,
    target: &UsageTarget,
    events: &[UsageEvent],
    timeout: Duration,
) -> Result<(), SendError> {
    let resp = client
        .post(&target.url)
        .bearer_auth(target.credential.expose_secret())
        .timeout(timeout)
        .json(&contracts::usage::UsageBatch {
            events: events.iter().collect::<Vec<_>>(),
        })
        .send()
        .await
        // Only the kind of failure: reqwest's error text carries the URL, which is fine, but keep it short.
        .map_err(|e| SendError::Transport(e.without_url().to_string()))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(SendError::Status(resp.status().as_u16()))
    }
}

/// Syncs the journal's files to disk every `interval` until `stop` turns true, and once more then.
pub async fn sync_journal(sink: UsageSink, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.changed() => true,
        };
        let files = sink.journal_files();
        let synced =
            tokio::task::spawn_blocking(move || files.iter().try_for_each(|f| f.sync_data())).await;
        if let Ok(Err(e)) = synced {
            tracing::warn!(error = %e, "cannot sync the usage journal");
        }
        if stopping {
            return;
        }
    }
}

/// Timing of the shipper, from [`UsageConfig`].
#[derive(Clone, Debug)]
pub struct ShipperSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub request_timeout: Duration,
    pub flush_deadline: Duration,
}

impl ShipperSettings {
    pub fn from_config(c: &UsageConfig, flush_deadline: Duration) -> Self {
        Self {
            batch_size: c.batch_size,
            flush_interval: ms(c.flush_interval_ms),
            initial_backoff: ms(c.initial_backoff_ms),
            max_backoff: ms(c.max_backoff_ms.max(c.initial_backoff_ms)),
            request_timeout: ms(c.request_timeout_ms),
            flush_deadline,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event of tenant acme with `n` input tokens and a fresh id.
    pub(crate) fn event(n: u64) -> UsageEvent {
        UsageEvent {
            id: uuid::Uuid::now_v7(),
            tenant: "acme".into(),
            model: "kimi-k2".into(),
            input_tokens: n,
            output_tokens: 2,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 5,
            status: 200,
            partial: false,
            api: ApiName::Openai,
            started_at: "2026-11-25T12:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn wire_shape_matches_the_documented_one() {
        let mut e = event(3);
        e.id = "0193a1b2-0000-7000-8000-000000000001".parse().unwrap();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "0193a1b2-0000-7000-8000-000000000001",
                "tenant": "acme", "model": "kimi-k2",
                "inputTokens": 3, "outputTokens": 2, "cacheReadTokens": 0, "cacheWriteTokens": 0,
                "latencyMs": 5, "status": 200, "partial": false, "api": "openai",
                "startedAt": "2026-11-25T12:00:00Z"
            })
        );
    }

    #[test]
    fn a_full_buffer_overflows_to_the_log_not_the_floor() {
        let metrics = Metrics::new();
        let sink = UsageSink::new(2, metrics.clone());
        for i in 0..3 {
            sink.record(event(i));
        }
        assert_eq!(sink.len(), 2);
        assert_eq!(metrics.usage_overflow.get(), 1);
        sink.ack(1);
        assert_eq!(sink.peek_batch(10)[0].input_tokens, 1);
    }
}
