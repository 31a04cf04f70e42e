//! Wiring: connects the database, opens the state repo, starts the writer thread and the HTTP
//! server, and stops them in order (stop accepting, finish in-flight requests, let the writer push
//! what it holds, then return).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::http::AppState;
use crate::routes::router;
use crate::state_repo::{RepoError, StateRepo};
use crate::store::{Store, StoreError};
use crate::writer::{self, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("state repo: {0}")]
    Repo(#[from] RepoError),
    #[error("writer: {0}")]
    Writer(#[from] WriteError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("sign-in: {0}")]
    Auth(String),
    #[error("platform bot: {0}")]
    Bot(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("flux receiver: {0}")]
    Receiver(String),
}

/// A started api.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    writer: std::thread::JoinHandle<()>,
    /// The cluster status sweeper and the Flux receiver notifier, stopped with the server.
    sweeper: Option<tokio::task::JoinHandle<()>>,
    receiver: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, waits for in-flight requests and the writer, then returns.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let Running {
            stop,
            server,
            writer,
            sweeper,
            receiver,
            ..
        } = self;
        let _ = stop.send(());
        let served = finish(server, writer).await;
        for task in [sweeper, receiver].into_iter().flatten() {
            task.abort();
        }
        served
    }

    /// Waits until the server stops (after the shutdown signal given to [`start`]).
    pub async fn wait(self) -> Result<(), AppError> {
        let served = finish(self.server, self.writer).await;
        for task in [self.sweeper, self.receiver].into_iter().flatten() {
            task.abort();
        }
        served
    }
}

async fn finish(
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    writer: std::thread::JoinHandle<()>,
) -> Result<(), AppError> {
    let served = server.await.unwrap_or(Ok(()));
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    served.map_err(AppError::Serve)
}

/// Starts the api; it stops when `signal` completes or [`Running::shutdown`] is called.
pub async fn start(
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, AppError> {
    // Refuse unsafe settings (dev login off loopback, ...) however the config was built.
    config.check()?;
    let auth = crate::auth::Auth::load(&config).map_err(AppError::Auth)?;
    let config = Arc::new(config);
    let store = Store::connect(
        config.database_url.expose_secret(),
        config.database_max_connections,
    )
    .await?;
    let repo_config = config.repo.clone();
    let repo = tokio::task::spawn_blocking(move || StateRepo::open_or_clone(&repo_config))
        .await
        .map_err(|e| AppError::Writer(WriteError::Internal(e.to_string())))??;
    let runtime = tokio::runtime::Handle::current();
    let writer_config = config.repo.clone();
    let writer_store = store.clone();
    let (handle, writer) = tokio::task::spawn_blocking(move || {
        writer::spawn(repo, writer_store, writer_config, runtime)
    })
    .await
    .map_err(|e| AppError::Writer(WriteError::Internal(e.to_string())))??;
    let receiver = match (
        &config.cluster.receiver_url,
        &config.cluster.receiver_token_path,
    ) {
        (Some(url), Some(path)) => Some(crate::cluster::receiver::Receiver {
            url: url.clone(),
            token: crate::cluster::receiver::read_token(path).map_err(AppError::Receiver)?,
            timeout: std::time::Duration::from_secs(5),
        }),
        _ => None,
    };
    let receiver = receiver.map(|r| crate::cluster::receiver::spawn(r, handle.pushes()));
    let cluster = crate::cluster::Cluster::start(&config.cluster).await?;
    let sweeper = (!matches!(cluster.link(), crate::cluster::Link::Off)).then(|| {
        crate::cluster::status::spawn_sweeper(
            cluster.clone(),
            store.clone(),
            config.repo.local_path.clone(),
            config.cluster.unhealthy_after_seconds,
            std::time::Duration::from_secs(config.cluster.sweep_interval_seconds),
        )
    });
    let state = Arc::new(
        AppState::new(config.clone(), store, handle)
            .with_auth(auth)
            .with_cluster(cluster),
    );
    crate::feed_refresher::spawn_refresher(&state);
    let bot = crate::bot::Bot::load(&state).await.map_err(AppError::Bot)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| AppError::Listen(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::Listen(config.listen, e))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = match bot {
        Some(bot) => {
            bot.spawn();
            router(state).layer(axum::Extension(bot))
        }
        None => router(state),
    };
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = signal => {}
                _ = stopped => {}
            }
            tracing::info!("shutting down: finishing in-flight requests");
        })
        .await
    });
    tracing::info!(%addr, "api listening");
    Ok(Running {
        addr,
        stop,
        server,
        writer,
        sweeper,
        receiver,
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
