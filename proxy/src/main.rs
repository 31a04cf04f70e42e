//! The proxy binary: reads configuration, sets up logging, runs until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The openclaw-cloud token proxy.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); PROXY_* environment variables override it.
    #[arg(long, env = "PROXY_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Log lines are gathered in memory and written to stdout in batches by a background thread, so that a
    // request pays only for formatting its line and a slow stdout pipe never stalls it (proxy::logging).
    // Not lossy: usage events that could not be shipped are logged and must not be dropped here.
    let (writer, _flush_on_exit) =
        proxy::logging::BatchWriter::new(std::io::stdout(), proxy::logging::DEFAULT_INTERVAL);
    tracing_subscriber::fmt()
        .json()
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROXY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = proxy::Config::load(args.config.as_deref()).context("loading configuration")?;
    let running = proxy::start(config).await.context("starting the proxy")?;
    tracing::info!(addr = %running.addr, "proxy listening");
    let stopper = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopper.send(true);
    });
    running.wait().await.context("serving")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
