//! Starting and stopping the proxy: wiring configuration, background tasks and the HTTP server.
//!
//! This module owns the process's lifecycle. [`start`] loads the table, binds the listener and spawns the
//! table watcher, the budget feed poller and the usage shipper; [`Running::shutdown`] stops accepting,
//! lets in-flight requests and streams finish (bounded by `limits.shutdown_grace_ms`), then flushes the
//! usage buffer.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{http_client, upstream_client, App, BuildError};
use crate::config::{ms, Config};
use crate::journal::{Journal, JournalLimits};
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::reload::{fingerprint, load_into, watch_dir, TableHandle};
use crate::routes::router;
use crate::usage::{ship, sync_journal, ShipperSettings, UsageSink, UsageTarget};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// A running proxy.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop_server: watch::Sender<bool>,
    server: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops gracefully: no new connections, in-flight responses finish, usage is flushed.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.stop_server.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after [`Running::shutdown`] or a failure).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.server.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Serve(std::io::Error::other(e))),
        }
    }

    /// A handle that triggers graceful shutdown from elsewhere (a signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop_server.clone()
    }
}

/// The usage buffer, with its journal and what the journal replays when one is configured (only
/// with an api to ship to: without one, nothing would ever acknowledge it).
async fn open_usage(config: &Config, metrics: &Metrics) -> Result<UsageSink, ServeError> {
    let capacity = config.usage.buffer_size;
    let Some(dir) = config
        .usage
        .journal_dir
        .clone()
        .filter(|_| config.api.is_some())
    else {
        return Ok(UsageSink::new(capacity, metrics.clone()));
    };
    let limits = JournalLimits {
        max_bytes: config.usage.journal_max_bytes,
        segment_bytes: config.usage.journal_segment_bytes,
        sync_every_event: config.usage.journal_fsync_interval_ms == 0,
    };
    let (journal, replayed) = tokio::task::spawn_blocking(move || Journal::open(&dir, limits))
        .await
        .map_err(|e| ServeError::Serve(std::io::Error::other(e)))??;
    if !replayed.is_empty() {
        tracing::info!(
            events = replayed.len(),
            "usage journal replayed: shipping events the api had not acknowledged"
        );
    }
    Ok(UsageSink::with_journal(
        capacity,
        metrics.clone(),
        Some(journal),
        replayed,
    ))
}

pub async fn start(config: Config) -> Result<Running, ServeError> {
    let metrics = Metrics::new();
    let table = TableHandle::default();
    // The fingerprint is taken before the load, so that the watcher sees any change made during it.
    let seen = {
        let (dir, t, m) = (config.table_dir.clone(), table.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || {
            let seen = fingerprint(&dir).ok();
            load_into(&dir, &t, &m);
            seen
        })
        .await
        .ok()
        .flatten()
    };
    let limiters = Arc::new(Limiters::default());
    let usage = open_usage(&config, &metrics).await?;
    let client = http_client(&config)?;
    let app = Arc::new(App::new(
        &config,
        table.clone(),
        limiters.clone(),
        usage.clone(),
        metrics.clone(),
        upstream_client(&config),
    )?);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;

    let (stop_bg, bg_rx) = watch::channel(false);
    let mut background = Vec::new();
    {
        let (limiters, m) = (limiters.clone(), metrics.clone());
        background.push(tokio::spawn(watch_dir(
            seen,
            config.table_dir.clone(),
            ms(config.table_reload_interval_ms.max(50)),
            table,
            metrics.clone(),
            move |t| {
                limiters.retain(|name| t.get(name.as_str()).is_some());
                m.retain_tenants(|name| t.get(name.as_str()).is_some());
            },
            bg_rx.clone(),
        )));
    }
    let grace = ms(config.limits.shutdown_grace_ms);
    let shipper = match &config.api {
        Some(api) => {
            if api.budget_poll_interval_ms > 0 {
                background.push(tokio::spawn(crate::budget_feed::run(
                    client.clone(),
                    api.base_url.clone(),
                    api.credential.clone(),
                    app.clone(),
                    ms(api.budget_poll_interval_ms),
                    bg_rx.clone(),
                )));
            }
            if config.usage.journal_dir.is_some() && config.usage.journal_fsync_interval_ms > 0 {
                background.push(tokio::spawn(sync_journal(
                    usage.clone(),
                    ms(config.usage.journal_fsync_interval_ms),
                    bg_rx.clone(),
                )));
            }
            tokio::spawn(ship(
                usage.clone(),
                client,
                UsageTarget::new(&api.base_url, api.credential.clone()),
                ShipperSettings::from_config(&config.usage, grace),
                bg_rx,
            ))
        }
        None => {
            tracing::warn!("no api configured: usage events go to the log only");
            let (usage, interval) = (usage.clone(), ms(config.usage.flush_interval_ms.max(10)));
            let mut stop = bg_rx;
            tokio::spawn(async move {
                loop {
                    usage.drain_to_log("no_api_configured");
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop.changed() => break,
                    }
                }
                usage.drain_to_log("no_api_configured");
            })
        }
    };

    let (stop_server, mut stop_rx) = watch::channel(false);
    let router = router(app.clone());
    let server = tokio::spawn(async move {
        let mut signal = stop_rx.clone();
        // Small writes (SSE events, short JSON bodies) must not wait for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|s| *s).await;
                tracing::info!("shutting down: no new connections, letting responses finish");
            })
            .into_future();
        tokio::pin!(serve);
        let result = tokio::select! {
            r = &mut serve => r.map_err(ServeError::Serve),
            _ = async {
                let _ = stop_rx.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace elapsed; cutting remaining responses");
                Ok(())
            }
        };
        // Responses are done, or the grace period is over; now ship what was metered.
        let _ = stop_bg.send(true);
        for task in background {
            let _ = task.await;
        }
        let _ = shipper.await;
        tracing::info!("proxy stopped");
        result
    });
    Ok(Running {
        addr,
        app,
        stop_server,
        server,
    })
}
