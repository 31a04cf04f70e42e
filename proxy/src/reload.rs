//! Keeping the tenant table current: loading it at start, watching its directory, swapping it atomically.
//!
//! This module owns the [`TableHandle`] every request reads from. The directory is polled: a fingerprint of
//! every table file (`*.json`, `*.yaml`: resolved path, size, modification time) is compared each interval, which sees both
//! in-place edits and the kubelet's symlink swap of projected volumes. A changed directory is loaded in full;
//! if the new table is invalid the error is logged and the last good table stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::table::{table_files, TableError, TenantTable};

/// The table in force, shared by all requests. `None` until a first valid table was loaded.
#[derive(Clone, Default)]
pub struct TableHandle(Arc<ArcSwapOption<TenantTable>>);

impl TableHandle {
    pub fn current(&self) -> Option<Arc<TenantTable>> {
        self.0.load_full()
    }

    pub fn store(&self, table: TenantTable) {
        self.0.store(Some(Arc::new(table)));
    }

    pub fn is_loaded(&self) -> bool {
        self.0.load().is_some()
    }
}

/// What the directory looked like: each file's path, resolved path, size and modification time.
pub type Fingerprint = Vec<(PathBuf, PathBuf, u64, Option<SystemTime>)>;

/// Takes the directory's fingerprint (blocking: a few system calls per file).
pub fn fingerprint(dir: &Path) -> Result<Fingerprint, TableError> {
    Ok(table_files(dir)?
        .into_iter()
        .map(|f| {
            let real = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
            let meta = std::fs::metadata(&f).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = meta.and_then(|m| m.modified().ok());
            (f, real, len, mtime)
        })
        .collect())
}

/// Loads the directory and, if valid, puts the table in force. Returns whether it did.
pub fn load_into(dir: &Path, handle: &TableHandle, metrics: &Metrics) -> bool {
    match TenantTable::load_dir(dir) {
        Ok(table) => {
            let n = table.len();
            handle.store(table);
            metrics.table_tenants.set(n as i64);
            metrics.table_reloads.with_label_values(&["ok"]).inc();
            tracing::info!(tenants = n, dir = %dir.display(), "tenant table loaded");
            true
        }
        Err(e) => {
            metrics.table_reloads.with_label_values(&["error"]).inc();
            if handle.is_loaded() {
                tracing::error!(error = %e, "tenant table rejected; keeping the last good table");
            } else {
                tracing::error!(error = %e, "tenant table rejected; no table in force, requests get 503");
            }
            false
        }
    }
}

/// Polls `dir` every `interval` until `stop` turns true; `on_change` runs after each successful swap.
/// `seen` is the fingerprint taken before the table in force was loaded (`None`: unreadable then).
pub async fn watch_dir(
    mut seen: Option<Fingerprint>,
    dir: PathBuf,
    interval: Duration,
    handle: TableHandle,
    metrics: Metrics,
    on_change: impl Fn(&TenantTable) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    // A fingerprint costs a few system calls per file (hundreds for a sharded table): blocking work that
    // would otherwise hold up the requests sharing its runtime thread, once every interval.
    let take_fingerprint = |dir: &PathBuf| {
        let dir = dir.clone();
        async move {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || fingerprint(&d))
                .await
                .unwrap_or_else(|e| {
                    Err(TableError::ReadDir {
                        dir,
                        source: std::io::Error::other(e),
                    })
                })
        }
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let now = match take_fingerprint(&dir).await {
            Ok(f) => Some(f),
            Err(e) => {
                if seen.is_some() {
                    tracing::error!(error = %e, "tenant table directory unreadable; keeping the last good table");
                }
                None
            }
        };
        // Unchanged files are not reparsed, valid or not: a rejected table is reported once, not every
        // interval, and retried when it changes.
        if now == seen {
            continue;
        }
        if now.is_some() {
            let d = dir.clone();
            let h = handle.clone();
            let m = metrics.clone();
            // Parsing a large table is blocking work; keep it off the request threads' hot path.
            let ok = tokio::task::spawn_blocking(move || load_into(&d, &h, &m))
                .await
                .unwrap_or(false);
            if ok {
                if let Some(t) = handle.current() {
                    on_change(&t);
                }
            }
        }
        seen = now;
    }
}
