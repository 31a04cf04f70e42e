//! The background task that keeps the budget feed ([`crate::budget`]) current: it rebuilds the
//! answer from the tenant table at the state repo's head and the ledger's monthly aggregates
//! shortly after each ingested batch (at most every [`MIN_GAP`]) and at least every
//! [`REFRESH_EVERY`]. A failed rebuild keeps the last answer in force. It holds the api only
//! weakly and stops with it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::budget::{build, load_budgets, TableCache, MIN_GAP, REFRESH_EVERY};
use crate::http::AppState;
use crate::period::Period;
use crate::usage::billable_by_tenant;

async fn refresh(state: &Arc<AppState>, cache: TableCache) -> (TableCache, Result<(), String>) {
    let repo_path = state.config.repo.local_path.clone();
    let reference = state.tracking_ref();
    let loaded = tokio::task::spawn_blocking(move || {
        let mut cache = cache;
        let result = load_budgets(&repo_path, &reference, &mut cache);
        (cache, result)
    })
    .await;
    let (cache, result) = match loaded {
        Ok(done) => done,
        Err(e) => return (TableCache::default(), Err(e.to_string())),
    };
    if let Err(e) = result {
        return (cache, Err(e));
    }
    let period = Period::current();
    let used = match billable_by_tenant(state.store.pool(), period).await {
        Ok(rows) => rows.into_iter().collect::<HashMap<_, _>>(),
        Err(e) => return (cache, Err(format!("cannot read usage: {e}"))),
    };
    let snapshot = build(period, cache.budgets().clone(), &used);
    crate::metrics::get()
        .budget_feed_tenants
        .set(cache.budgets().len() as i64);
    state.ledger.feed.publish(snapshot);
    (cache, Ok(()))
}

/// Keeps the feed current until the api stops (it holds the api only weakly).
pub fn spawn_refresher(state: &Arc<AppState>) {
    let weak: Weak<AppState> = Arc::downgrade(state);
    let ledger = state.ledger.clone();
    tokio::spawn(async move {
        let mut cache = TableCache::default();
        let mut failing: Option<String> = None;
        loop {
            let Some(state) = weak.upgrade() else { return };
            let (next, result) = refresh(&state, cache).await;
            cache = next;
            drop(state);
            match result {
                Ok(()) => {
                    if failing.take().is_some() {
                        tracing::info!("budget feed rebuilt again");
                    }
                }
                Err(e) => {
                    if failing.as_deref() != Some(e.as_str()) {
                        tracing::warn!(error = %e, "cannot rebuild the budget feed; the last one stays in force");
                    }
                    failing = Some(e);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
                _ = ledger.feed.woken() => tokio::time::sleep(MIN_GAP).await,
            }
        }
    });
}
