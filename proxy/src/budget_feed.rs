//! The api's budget feed: per-tenant used tokens and budget state for the current month.
//!
//! This module owns the feed's wire shape (docs/budget-feed.md) and the poller that applies it to the
//! limiters and, for the access entries that can only narrow the tenant table, to [`Narrowing`]. A
//! failed poll is logged and counted; the figures in force stay until the next good one. Polls send the
//! last `ETag` in `If-None-Match`, so an unchanged feed costs the api a 304.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::app::App;
use crate::config::trim_base;
use crate::limits::{Limiters, Period};
use crate::narrowing::{FeedAccess, Narrowing};
use crate::table::{checked_limits, TenantName, TokenHash};

pub use contracts::budget::{Access as AccessWire, BudgetFeed, TenantBudget};

/// Checks `tenants[].access` of `tenant`: what can only narrow the table in force ([`Narrowing`]).
fn parse_access(access: &AccessWire, tenant: &str) -> Result<FeedAccess, FeedError> {
    let bad = |m: String| FeedError::Body(format!("tenant {tenant:?}: access: {m}"));
    let token = TokenHash::parse_hex(&access.token_sha256).map_err(bad)?;
    let l = &access.limits;
    if l.requests_per_minute == 0
        || l.tokens_per_minute == 0
        || l.monthly_token_budget == 0
        || l.concurrent_requests == 0
    {
        return Err(bad("every limit must be greater than 0".into()));
    }
    Ok(FeedAccess {
        state: access.state,
        token,
        limits: checked_limits(l).map_err(bad)?,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("budget feed unreachable: {0}")]
    Transport(String),
    #[error("budget feed answered {0}")]
    Status(u16),
    #[error("budget feed body is not a valid feed: {0}")]
    Body(String),
    #[error("budget feed period {0:?} is not YYYY-MM")]
    Period(String),
}

pub fn parse_period(s: &str) -> Result<Period, FeedError> {
    let bad = || FeedError::Period(s.to_owned());
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u32 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) {
        return Err(bad());
    }
    Ok(Period { year, month })
}

/// Where a poll delivers the feed.
pub struct FeedTargets<'a> {
    pub limiters: &'a Limiters,
    pub narrowing: &'a Narrowing,
}

/// Fetches the feed once and applies it. Returns the number of tenants applied, or `None` when the
/// api answered that the feed did not change since the `etag` (which is updated).
pub async fn poll_once(
    client: &reqwest::Client,
    url: &str,
    credential: &SecretString,
    targets: FeedTargets<'_>,
    etag: &mut Option<reqwest::header::HeaderValue>,
    timeout: Duration,
) -> Result<Option<usize>, FeedError> {
    let mut request = client
        .get(url)
        .bearer_auth(credential.expose_secret())
        .timeout(timeout);
    if let Some(tag) = etag.as_ref() {
        request = request.header(reqwest::header::IF_NONE_MATCH, tag.clone());
    }
    let resp = request
        .send()
        .await
        .map_err(|e| FeedError::Transport(e.without_url().to_string()))?;
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(FeedError::Status(resp.status().as_u16()));
    }
    let new_etag = resp.headers().get(reqwest::header::ETAG).cloned();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| FeedError::Transport(e.without_url().to_string()))?;
    let feed: BudgetFeed =
        serde_json::from_slice(&bytes).map_err(|e| FeedError::Body(e.to_string()))?;
    let period = parse_period(&feed.period)?;
    // Checked in full before anything is applied: a bad entry fails the poll, not half of it.
    let mut access = HashMap::new();
    let mut budgets = Vec::with_capacity(feed.tenants.len());
    for t in &feed.tenants {
        // A name the table does not know yet is harmless; an invalid one is skipped.
        let Ok(name) = TenantName::parse(&t.tenant) else {
            continue;
        };
        if let Some(a) = &t.access {
            access.insert(name.clone(), parse_access(a, &t.tenant)?);
        }
        budgets.push((name, t.used, t.state));
    }
    for (name, used, state) in &budgets {
        targets.limiters.apply_feed(name, period, *used, *state);
    }
    targets.narrowing.replace(access);
    *etag = new_etag;
    Ok(Some(budgets.len()))
}

/// Polls every `interval` until `stop` turns true.
pub async fn run(
    client: reqwest::Client,
    api_base: String,
    credential: SecretString,
    app: std::sync::Arc<App>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let url = format!("{}/internal/budget", trim_base(&api_base));
    let mut etag = None;
    loop {
        let targets = FeedTargets {
            limiters: &app.limiters,
            narrowing: &app.narrowing,
        };
        let metrics = &app.metrics;
        match poll_once(
            &client,
            &url,
            &credential,
            targets,
            &mut etag,
            interval.max(Duration::from_secs(2)),
        )
        .await
        {
            Ok(n) => {
                metrics.budget_feed_polls.with_label_values(&["ok"]).inc();
                tracing::debug!(tenants = ?n, "budget feed applied");
            }
            Err(e) => {
                metrics
                    .budget_feed_polls
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(error = %e, "budget feed poll failed; keeping the figures in force");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::FeedState;
    use crate::table::TenantState;

    #[test]
    fn feed_shape() {
        let f: BudgetFeed = serde_json::from_str(
            r#"{"period":"2026-11","tenants":[{"tenant":"acme","used":10,"budget":100,"state":"warning"}]}"#,
        )
        .unwrap();
        assert_eq!(f.tenants[0].state, FeedState::Warning);
        assert!(
            serde_json::from_str::<BudgetFeed>(r#"{"period":"2026-11","tenants":[],"x":1}"#)
                .is_err()
        );
        assert_eq!(
            parse_period("2026-11").unwrap(),
            Period {
                year: 2026,
                month: 11
            }
        );
        assert!(parse_period("2026-13").is_err());
        let mut f: BudgetFeed = serde_json::from_str(
            r#"{"period":"2026-11","tenants":[{"tenant":"acme","used":10,"budget":100,"state":"ok",
                "access":{"state":"suspended","tokenSha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "limits":{"requestsPerMinute":30,"tokensPerMinute":60000,"monthlyTokenBudget":100,"concurrentRequests":2}}}]}"#,
        )
        .unwrap();
        let access = parse_access(f.tenants[0].access.as_ref().unwrap(), "acme").unwrap();
        assert_eq!(access.state, TenantState::Suspended);
        assert_eq!(access.token, TokenHash::of_token("test"));
        let mut bad = f.tenants[0].access.take().unwrap();
        bad.limits.concurrent_requests = 0;
        assert!(parse_access(&bad, "acme").is_err());
        assert!(parse_period("26-1").is_err());
    }
}
