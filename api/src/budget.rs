//! The budget feed for the token proxies (docs/budget-feed.md): per tenant, the billable tokens
//! used in the current UTC month, the monthly budget and a state (ok, warning, exhausted).
//!
//! Every proxy replica polls the feed every few seconds, so a poll must cost next to nothing: the
//! answer is a prebuilt JSON body in memory (with an ETag), replaced by a background task. That task
//! rebuilds it shortly after each ingested batch (at most every [`MIN_GAP`]) and at least every
//! [`REFRESH_EVERY`], from two sources:
//!
//! - **used**: the ledger's monthly aggregates in the database (one grouped read of the month), so
//!   the figures are exactly what was stored, whichever api process stored it;
//! - **budget**: the tenant table the compiler renders into the state repo
//!   (`flux/platform/tenant-table/`), read at the head of the api's tracking branch. Each entry
//!   carries the tenant's `monthlyTokenBudget` from its current tier in `templates/platform.yaml`,
//!   the same number the proxies enforce. Resizes made by the api and by SRE pull requests both
//!   land there (CI checks that the rendered table matches the specs), and the api fetches the
//!   remote every `repo.fetch_interval_seconds`, so the feed follows merged changes within one
//!   fetch interval. Only shards whose blob changed are parsed again.
//!
//! The feed lists the tenants of the table at the head; a destroyed tenant disappears from it.
//! Each entry also carries the tenant's `access` at the head (state, token hash, limits), which the
//! proxies use only to narrow the table they have loaded until it catches up (docs/budget-feed.md):
//! a suspension, a token rotation or a lowered tier reaches them within a poll.
//!
//! This module builds the answer and knows no HTTP: [`crate::feed_refresher`] keeps it current,
//! [`crate::routes::budget`] serves it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::period::Period;

/// Longest time between two rebuilds (month turns, tier changes, other api processes' ingest).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Shortest time between two rebuilds under continuous ingest.
pub const MIN_GAP: Duration = Duration::from_millis(250);

pub use contracts::budget::{Access, BudgetFeed as FeedBody, FeedState, TenantBudget};
pub use contracts::tenant_table::Limits as AccessLimits;

/// A tenant's access as its entry in the table at the head has it.
pub fn access_of(entry: compiler::tenant_table::TableEntry) -> Access {
    Access {
        state: entry.state,
        token_sha256: entry.token_sha256,
        limits: entry.limits,
    }
}

/// What the feed needs of one tenant in the table at the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadTenant {
    pub budget: u64,
    pub access: Access,
    /// The providers of the tenant's connections (the platform bot's notices; not in the feed).
    pub providers: Vec<contracts::provider::Provider>,
}

/// One published answer.
pub struct Snapshot {
    pub period: Period,
    pub body: Bytes,
    /// The body's entity tag, quoted (`"<hex>"`).
    pub etag: String,
    /// Budget and access per tenant at the head.
    pub budgets: Arc<BTreeMap<String, HeadTenant>>,
}

/// The current answer and the signal that asks for a new one.
#[derive(Default)]
pub struct BudgetFeed {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    wake: Notify,
}

impl BudgetFeed {
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The budget of a tenant in the table at the head, if it is there.
    pub fn budget_of(&self, tenant: &str) -> Option<u64> {
        self.current()?.budgets.get(tenant).map(|t| t.budget)
    }

    /// Asks for a rebuild (after new usage was stored).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits for the next [`BudgetFeed::wake`].
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Replaces the answer.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(snapshot));
    }
}

/// Builds the answer for `period` from the budgets at the head and the usage per tenant.
pub fn build(
    period: Period,
    budgets: Arc<BTreeMap<String, HeadTenant>>,
    used: &HashMap<String, i64>,
) -> Snapshot {
    let tenants = budgets
        .iter()
        .map(|(tenant, head)| {
            let used = used.get(tenant).copied().unwrap_or(0).max(0) as u64;
            TenantBudget {
                tenant: tenant.clone(),
                used,
                budget: head.budget,
                state: FeedState::of(used, head.budget),
                access: Some(head.access.clone()),
            }
        })
        .collect();
    let body = serde_json::to_vec(&FeedBody {
        period: period.label(),
        tenants,
    })
    .expect("the feed serialises");
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..16]));
    Snapshot {
        period,
        body: Bytes::from(body),
        etag,
        budgets,
    }
}

// ---------------------------------------------------------------------------------------------
// Budgets from the tenant table at the head

/// What was read from the tenant table, kept between rebuilds.
#[derive(Default)]
pub struct TableCache {
    head: Option<git2::Oid>,
    /// Per shard file: its blob and its tenants.
    shards: HashMap<String, (git2::Oid, Vec<(String, HeadTenant)>)>,
    budgets: Arc<BTreeMap<String, HeadTenant>>,
}

impl TableCache {
    /// Budget and access per tenant at the head last loaded.
    pub fn budgets(&self) -> &Arc<BTreeMap<String, HeadTenant>> {
        &self.budgets
    }
}

#[derive(Deserialize)]
struct ConfigMapData {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

fn parse_shard(path: &str, bytes: &[u8]) -> Result<Vec<(String, HeadTenant)>, String> {
    let map: ConfigMapData =
        compiler::yaml::parse_slice(bytes).map_err(|e| format!("{path}: not a ConfigMap: {e}"))?;
    let mut entries = Vec::new();
    for (key, text) in map.data.iter().filter(|(k, _)| k.ends_with(".json")) {
        let table = compiler::tenant_table::parse_shard_json(text)
            .map_err(|e| format!("{path}: {key}: {e}"))?;
        entries.extend(table.tenants.into_iter().map(|t| {
            let head = HeadTenant {
                budget: t.limits.monthly_token_budget,
                providers: t.connections.iter().map(|c| c.provider).collect(),
                access: access_of(t.clone()),
            };
            (t.name, head)
        }));
    }
    Ok(entries)
}

/// Reads the tenant table at the head of `reference` in the repository at `repo_path`; does
/// nothing when the head has not moved.
pub fn load_budgets(
    repo_path: &Path,
    reference: &str,
    cache: &mut TableCache,
) -> Result<(), String> {
    let repo = git2::Repository::open_bare(repo_path)
        .map_err(|e| format!("cannot open the state repo clone: {e}"))?;
    let head = repo
        .refname_to_id(reference)
        .map_err(|e| format!("cannot read {reference}: {e}"))?;
    if cache.head == Some(head) {
        return Ok(());
    }
    let tree = repo
        .find_commit(head)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read commit {head}: {e}"))?;
    let mut shards = HashMap::new();
    if let Ok(entry) = tree.get_path(Path::new(compiler::tenant_table::DIR)) {
        let dir = repo
            .find_tree(entry.id())
            .map_err(|e| format!("{}: {e}", compiler::tenant_table::DIR))?;
        for entry in dir.iter() {
            let Some(name) = entry.name() else { continue };
            if !(name.starts_with("tenant-table-") && name.ends_with(".yaml")) {
                continue;
            }
            let path = format!("{}/{name}", compiler::tenant_table::DIR);
            let entries = match cache.shards.remove(name) {
                Some((blob, entries)) if blob == entry.id() => entries,
                _ => {
                    let blob = repo
                        .find_blob(entry.id())
                        .map_err(|e| format!("{path}: {e}"))?;
                    parse_shard(&path, blob.content())?
                }
            };
            shards.insert(name.to_owned(), (entry.id(), entries));
        }
    }
    let budgets: BTreeMap<String, HeadTenant> = shards
        .values()
        .flat_map(|(_, entries)| entries.iter().cloned())
        .collect();
    cache.head = Some(head);
    cache.shards = shards;
    cache.budgets = Arc::new(budgets);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_documented_thresholds() {
        assert_eq!(FeedState::of(0, 100), FeedState::Ok);
        assert_eq!(FeedState::of(89, 100), FeedState::Ok);
        assert_eq!(FeedState::of(90, 100), FeedState::Warning);
        assert_eq!(FeedState::of(99, 100), FeedState::Warning);
        assert_eq!(FeedState::of(100, 100), FeedState::Exhausted);
        assert_eq!(FeedState::of(u64::MAX, u64::MAX - 1), FeedState::Exhausted);
    }

    #[test]
    fn the_body_is_the_documented_shape() {
        let head = |budget, state: &str, token: &str| HeadTenant {
            budget,
            providers: Vec::new(),
            access: Access {
                state: serde_json::from_value(serde_json::json!(state)).unwrap(),
                token_sha256: token.repeat(64),
                limits: AccessLimits {
                    requests_per_minute: 30,
                    tokens_per_minute: 60_000,
                    monthly_token_budget: budget,
                    concurrent_requests: 2,
                },
            },
        };
        let budgets = Arc::new(BTreeMap::from([
            ("acme".to_owned(), head(5_000_000, "active", "a")),
            ("globex".to_owned(), head(30_000_000, "suspended", "b")),
        ]));
        let used = HashMap::from([("acme".to_owned(), 4_812_345i64), ("gone".to_owned(), 7)]);
        let snapshot = build(Period::parse("2026-11").unwrap(), budgets, &used);
        let body: serde_json::Value = serde_json::from_slice(&snapshot.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"period": "2026-11", "tenants": [
                {"tenant": "acme", "used": 4812345, "budget": 5000000, "state": "warning",
                 "access": {"state": "active", "tokenSha256": "a".repeat(64), "limits": {
                    "requestsPerMinute": 30, "tokensPerMinute": 60000,
                    "monthlyTokenBudget": 5000000, "concurrentRequests": 2}}},
                {"tenant": "globex", "used": 0, "budget": 30000000, "state": "ok",
                 "access": {"state": "suspended", "tokenSha256": "b".repeat(64), "limits": {
                    "requestsPerMinute": 30, "tokensPerMinute": 60000,
                    "monthlyTokenBudget": 30000000, "concurrentRequests": 2}}},
            ]})
        );
        assert_eq!(snapshot.etag.len(), 34);
        assert!(snapshot.etag.starts_with('"') && snapshot.etag.ends_with('"'));
    }
}
