//! Access changes that reach the proxy through the api's budget feed before the tenant table does.
//!
//! The tenant table is the source of truth, but in a cluster it arrives through Flux and the kubelet's
//! ConfigMap sync: minutes. The budget feed is polled every few seconds and carries, per tenant, the
//! state, token hash and limits of the table at the state repo's head (docs/budget-feed.md). This module
//! owns how the proxy uses them: **only to narrow** what the table in force allows, never to widen it.
//!
//! - the feed says suspended: the tenant is suspended (403), whatever the table says;
//! - the feed names another token hash than the table: the table's token was rotated away (401); the
//!   new token works once the table carries it;
//! - each limit is the lower of the table's and the feed's.
//!
//! Reactivation, a new token and a raised tier therefore take effect with the table; a suspension, a
//! rotation and a lowered tier take effect with the feed, and lifting a narrowing that only the feed
//! applied (reactivating a tenant whose suspension never reached the table) takes effect with the next
//! poll. Tenants the feed does not list are left as the table has them.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::table::{Limits, Tenant, TenantName, TenantState, TokenHash};

/// What the feed says about one tenant's access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedAccess {
    pub state: TenantState,
    pub token: TokenHash,
    pub limits: Limits,
}

/// Why the feed refuses a tenant the table admits.
#[derive(Debug, PartialEq, Eq)]
pub enum Narrowed {
    /// The presented token is not the tenant's current one.
    TokenRotated,
    Suspended,
}

/// The feed's access entries in force, replaced as a whole by each poll.
#[derive(Default)]
pub struct Narrowing(ArcSwap<HashMap<TenantName, FeedAccess>>);

fn lower(table: Limits, feed: Limits) -> Limits {
    Limits {
        requests_per_minute: table.requests_per_minute.min(feed.requests_per_minute),
        tokens_per_minute: table.tokens_per_minute.min(feed.tokens_per_minute),
        monthly_token_budget: table.monthly_token_budget.min(feed.monthly_token_budget),
        concurrent_requests: table.concurrent_requests.min(feed.concurrent_requests),
    }
}

impl Narrowing {
    /// Puts a poll's entries in force.
    pub fn replace(&self, entries: HashMap<TenantName, FeedAccess>) {
        self.0.store(Arc::new(entries));
    }

    /// The tenant as the table has it, narrowed by the feed, or why the feed refuses it.
    pub fn apply(&self, tenant: Arc<Tenant>) -> Result<Arc<Tenant>, Narrowed> {
        let entries = self.0.load();
        let Some(feed) = entries.get(&tenant.name) else {
            return Ok(tenant);
        };
        if feed.token != tenant.token {
            return Err(Narrowed::TokenRotated);
        }
        if feed.state == TenantState::Suspended {
            return Err(Narrowed::Suspended);
        }
        let limits = lower(tenant.limits, feed.limits);
        if limits == tenant.limits {
            return Ok(tenant);
        }
        Ok(Arc::new(Tenant {
            limits,
            ..Tenant::clone(&tenant)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(state: TenantState, token: &str, rpm: u32) -> Arc<Tenant> {
        Arc::new(Tenant {
            name: TenantName::parse("acme").unwrap(),
            token: TokenHash::of_token(token),
            state,
            tier: "starter".into(),
            limits: Limits {
                requests_per_minute: rpm,
                tokens_per_minute: 1_000,
                monthly_token_budget: 5_000,
                concurrent_requests: 2,
            },
            connections: Vec::new(),
        })
    }

    fn feed(t: &Tenant) -> Narrowing {
        let n = Narrowing::default();
        n.replace(HashMap::from([(
            t.name.clone(),
            FeedAccess {
                state: t.state,
                token: t.token,
                limits: t.limits,
            },
        )]));
        n
    }

    #[test]
    fn the_feed_narrows_and_never_widens() {
        let table = tenant(TenantState::Active, "tok", 30);
        // Same as the table: the table's tenant itself.
        let same = feed(&table).apply(table.clone()).unwrap();
        assert!(Arc::ptr_eq(&same, &table));
        // Suspended, rotated, lowered: each narrows.
        let n = feed(&tenant(TenantState::Suspended, "tok", 30));
        assert_eq!(n.apply(table.clone()).unwrap_err(), Narrowed::Suspended);
        let n = feed(&tenant(TenantState::Active, "new-token", 30));
        assert_eq!(n.apply(table.clone()).unwrap_err(), Narrowed::TokenRotated);
        let n = feed(&tenant(TenantState::Active, "tok", 3));
        assert_eq!(
            n.apply(table.clone()).unwrap().limits.requests_per_minute,
            3
        );
        // Active, a raised tier: the table's suspension and limits stand.
        let suspended = tenant(TenantState::Suspended, "tok", 30);
        let n = feed(&tenant(TenantState::Active, "tok", 300));
        assert_eq!(
            n.apply(suspended.clone()).unwrap().state,
            TenantState::Suspended
        );
        assert_eq!(
            n.apply(table.clone()).unwrap().limits.requests_per_minute,
            30
        );
        // A tenant the feed does not list is the table's.
        assert!(Arc::ptr_eq(
            &Narrowing::default().apply(table.clone()).unwrap(),
            &table
        ));
    }
}
