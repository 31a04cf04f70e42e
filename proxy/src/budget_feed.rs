//! The api's budget feed: per-tenant used tokens and budget state for the current month.
//!
//! This module owns the feed's wire shape (docs/budget-feed.md) and the poller that applies it to the
//! limiters. A failed poll is logged and counted; the figures in force stay until the next good one.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::trim_base;
use crate::limits::{FeedState, Limiters, Period};
use crate::metrics::Metrics;
use crate::table::TenantName;

/// The body of `GET /internal/budget`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFeed {
    /// The period the figures are for, `YYYY-MM` (UTC calendar month).
    pub period: String,
    pub tenants: Vec<TenantBudget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBudget {
    pub tenant: String,
    pub used: u64,
    pub budget: u64,
    pub state: FeedState,
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

/// Fetches the feed once and applies it. Returns the number of tenants applied.
pub async fn poll_once(
    client: &reqwest::Client,
    url: &str,
    credential: &SecretString,
    limiters: &Limiters,
    timeout: Duration,
) -> Result<usize, FeedError> {
    let resp = client
        .get(url)
        .bearer_auth(credential.expose_secret())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| FeedError::Transport(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(FeedError::Status(resp.status().as_u16()));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| FeedError::Transport(e.without_url().to_string()))?;
    let feed: BudgetFeed =
        serde_json::from_slice(&bytes).map_err(|e| FeedError::Body(e.to_string()))?;
    let period = parse_period(&feed.period)?;
    let mut applied = 0;
    for t in feed.tenants {
        // A name the table does not know yet is harmless; an invalid one is skipped.
        if let Ok(name) = TenantName::parse(&t.tenant) {
            limiters.apply_feed(&name, period, t.used, t.state);
            applied += 1;
        }
    }
    Ok(applied)
}

/// Polls every `interval` until `stop` turns true.
pub async fn run(
    client: reqwest::Client,
    api_base: String,
    credential: SecretString,
    limiters: std::sync::Arc<Limiters>,
    metrics: Metrics,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let url = format!("{}/internal/budget", trim_base(&api_base));
    loop {
        match poll_once(
            &client,
            &url,
            &credential,
            &limiters,
            interval.max(Duration::from_secs(2)),
        )
        .await
        {
            Ok(n) => {
                metrics.budget_feed_polls.with_label_values(&["ok"]).inc();
                tracing::debug!(tenants = n, "budget feed applied");
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
        assert!(parse_period("26-1").is_err());
    }
}
