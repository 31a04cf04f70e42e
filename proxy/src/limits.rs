//! Per-tenant limits: requests and tokens per minute, requests in flight, and the monthly token budget.
//!
//! This module owns the limiter state, which lives only in memory: governor rate limiters keyed by tenant
//! (each with its own tier's quota), a semaphore per tenant for concurrency, and a budget account per tenant
//! that reserves an estimate when a request is admitted and reconciles it with the metered usage when the
//! request ends. When the api's budget feed is configured its figures are the baseline and local usage since
//! the last feed snapshot is added on top; without it each replica counts its own traffic for the month.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::table::{Limits, Tenant, TenantName};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Budget share past which responses carry a warning header.
pub const WARNING_RATIO: f64 = 0.9;

/// The api's view of a tenant's budget for the current period.
pub use contracts::budget::FeedState;

/// A period is a calendar month in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    pub fn of(t: DateTime<Utc>) -> Self {
        Self {
            year: t.year(),
            month: t.month(),
        }
    }

    pub fn next_start(self) -> DateTime<Utc> {
        let (y, m) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .single()
            .unwrap_or_else(Utc::now)
    }

    /// `YYYY-MM`, the form the budget feed uses.
    pub fn label(self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }
}

#[derive(Debug)]
struct Budget {
    period: Period,
    /// Used tokens according to the last budget feed snapshot for this period.
    feed_used: u64,
    feed_state: Option<FeedState>,
    /// Tokens metered here since that snapshot (or since the period began without a feed).
    local_used: u64,
    /// Estimates of requests in flight.
    reserved: u64,
}

impl Budget {
    fn new(period: Period) -> Self {
        Self {
            period,
            feed_used: 0,
            feed_state: None,
            local_used: 0,
            reserved: 0,
        }
    }

    fn roll(&mut self, now: Period) {
        if self.period != now {
            *self = Budget {
                reserved: self.reserved,
                ..Budget::new(now)
            };
        }
    }

    fn committed(&self) -> u64 {
        self.feed_used + self.local_used + self.reserved
    }
}

struct TenantLimiter {
    limits: Limits,
    requests: Limiter,
    tokens: Limiter,
    in_flight: Arc<Semaphore>,
}

impl TenantLimiter {
    fn new(limits: Limits, clock: &DefaultClock) -> Self {
        let rpm = NonZeroU32::new(limits.requests_per_minute).unwrap_or(NonZeroU32::MIN);
        let tpm = NonZeroU32::new(limits.tokens_per_minute).unwrap_or(NonZeroU32::MIN);
        let limiter =
            |quota| RateLimiter::direct_with_clock(quota, clock.clone()).with_middleware();
        Self {
            limits,
            requests: limiter(Quota::per_minute(rpm)),
            tokens: limiter(Quota::per_minute(tpm)),
            in_flight: Arc::new(Semaphore::new(limits.concurrent_requests as usize)),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    Requests {
        limit: u32,
        retry_after: Duration,
    },
    Tokens {
        limit: u32,
        retry_after: Duration,
    },
    Concurrency {
        limit: u32,
    },
    Budget {
        budget: u64,
        resets_at: DateTime<Utc>,
    },
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Requests { .. } => "requests_per_minute",
            Rejection::Tokens { .. } => "tokens_per_minute",
            Rejection::Concurrency { .. } => "concurrent_requests",
            Rejection::Budget { .. } => "monthly_budget",
        }
    }
}

/// Headroom reported with an admitted request.
#[derive(Debug, Clone, Copy)]
pub struct Headroom {
    pub requests_limit: u32,
    pub requests_remaining: u32,
    pub tokens_limit: u32,
    pub tokens_remaining: u32,
    /// Share of the monthly budget committed, including this request's estimate.
    pub budget_used_ratio: f64,
}

/// An admitted request's hold on its tenant's limits. Settle it with the metered token count; dropping it
/// unsettled settles the reservation at zero actual usage.
pub struct Admission {
    budget: Arc<Mutex<Budget>>,
    limiter: Arc<TenantLimiter>,
    estimate: u64,
    settled: bool,
    _permit: OwnedSemaphorePermit,
    pub headroom: Headroom,
}

impl Admission {
    pub fn settle(mut self, actual: u64) {
        self.settle_inner(actual);
    }

    fn settle_inner(&mut self, actual: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        {
            let mut b = lock(&self.budget);
            b.reserved = b.reserved.saturating_sub(self.estimate);
            b.roll(Period::of(Utc::now()));
            b.local_used += actual;
        }
        // The per-minute limiter took the estimate up front; charge what the estimate missed. A limiter
        // cannot go into debt, so an overrun larger than the free capacity is charged as far as it goes.
        if actual > self.estimate {
            let extra =
                (actual - self.estimate).min(u64::from(self.limiter.limits.tokens_per_minute));
            if let Some(n) = NonZeroU32::new(extra as u32) {
                let _ = self.limiter.tokens.check_n(n);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.settle_inner(0);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// All tenants' limiter state.
#[derive(Default)]
pub struct Limiters {
    limiters: DashMap<TenantName, Arc<TenantLimiter>>,
    budgets: DashMap<TenantName, Arc<Mutex<Budget>>>,
    /// One clock for every limiter: making one probes the CPU (CPUID, which traps in a virtual
    /// machine), far too costly for each new tenant's first request.
    clock: DefaultClock,
}

fn retry_after(
    n: &governor::NotUntil<<DefaultClock as Clock>::Instant>,
    clock: &DefaultClock,
) -> Duration {
    n.wait_time_from(clock.now())
}

impl Limiters {
    fn limiter(&self, tenant: &Tenant) -> Arc<TenantLimiter> {
        if let Some(l) = self.limiters.get(&tenant.name) {
            if l.limits == tenant.limits {
                return l.clone();
            }
        }
        // First request, or the tier changed: start from a fresh limiter with the new quota.
        let l = Arc::new(TenantLimiter::new(tenant.limits, &self.clock));
        self.limiters.insert(tenant.name.clone(), l.clone());
        l
    }

    fn budget(&self, name: &TenantName) -> Arc<Mutex<Budget>> {
        self.budgets
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Budget::new(Period::of(Utc::now())))))
            .clone()
    }

    /// Admits a request whose token use is estimated at `estimate`, or says why not.
    pub fn admit(&self, tenant: &Tenant, estimate: u64) -> Result<Admission, Rejection> {
        let now = Period::of(Utc::now());
        let budget_limit = tenant.limits.monthly_token_budget;
        let budget = self.budget(&tenant.name);
        {
            let mut b = lock(&budget);
            b.roll(now);
            if b.feed_state == Some(FeedState::Exhausted) || b.committed() >= budget_limit {
                return Err(Rejection::Budget {
                    budget: budget_limit,
                    resets_at: now.next_start(),
                });
            }
        }
        let limiter = self.limiter(tenant);
        let limits = limiter.limits;
        let requests = limiter.requests.check().map_err(|n| Rejection::Requests {
            limit: limits.requests_per_minute,
            retry_after: retry_after(&n, &self.clock),
        })?;
        let permit =
            limiter
                .in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| Rejection::Concurrency {
                    limit: limits.concurrent_requests,
                })?;
        let charge = estimate.clamp(1, u64::from(limits.tokens_per_minute)) as u32;
        let tokens = match limiter
            .tokens
            .check_n(NonZeroU32::new(charge).unwrap_or(NonZeroU32::MIN))
        {
            Ok(Ok(s)) => s,
            Ok(Err(n)) => {
                return Err(Rejection::Tokens {
                    limit: limits.tokens_per_minute,
                    retry_after: retry_after(&n, &self.clock),
                })
            }
            // Cannot happen: the charge is clamped to the quota.
            Err(_) => {
                return Err(Rejection::Tokens {
                    limit: limits.tokens_per_minute,
                    retry_after: Duration::from_secs(60),
                })
            }
        };
        let ratio = {
            let mut b = lock(&budget);
            b.reserved += estimate;
            b.committed() as f64 / budget_limit as f64
        };
        Ok(Admission {
            budget,
            limiter,
            estimate,
            settled: false,
            _permit: permit,
            headroom: Headroom {
                requests_limit: limits.requests_per_minute,
                requests_remaining: requests.remaining_burst_capacity(),
                tokens_limit: limits.tokens_per_minute,
                tokens_remaining: tokens.remaining_burst_capacity(),
                budget_used_ratio: ratio,
            },
        })
    }

    /// Admits a call that uses no tokens (a connection call): requests per minute and concurrency only.
    pub fn admit_call(&self, tenant: &Tenant) -> Result<Admission, Rejection> {
        let limiter = self.limiter(tenant);
        let limits = limiter.limits;
        let requests = limiter.requests.check().map_err(|n| Rejection::Requests {
            limit: limits.requests_per_minute,
            retry_after: retry_after(&n, &self.clock),
        })?;
        let permit =
            limiter
                .in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| Rejection::Concurrency {
                    limit: limits.concurrent_requests,
                })?;
        Ok(Admission {
            budget: self.budget(&tenant.name),
            limiter,
            estimate: 0,
            settled: false,
            _permit: permit,
            headroom: Headroom {
                requests_limit: limits.requests_per_minute,
                requests_remaining: requests.remaining_burst_capacity(),
                tokens_limit: limits.tokens_per_minute,
                tokens_remaining: limits.tokens_per_minute,
                budget_used_ratio: 0.0,
            },
        })
    }

    /// Applies one tenant's figures from the api's budget feed.
    pub fn apply_feed(&self, name: &TenantName, period: Period, used: u64, state: FeedState) {
        let budget = self.budget(name);
        let mut b = lock(&budget);
        b.roll(Period::of(Utc::now()));
        if b.period != period {
            return;
        }
        b.feed_used = used;
        b.feed_state = Some(state);
        // The feed's figure already includes what this replica shipped; local counting restarts from it.
        b.local_used = 0;
    }

    /// Forgets tenants that left the table.
    pub fn retain(&self, keep: impl Fn(&TenantName) -> bool) {
        self.limiters.retain(|k, _| keep(k));
        self.budgets.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{TenantState, TokenHash};

    fn tenant(rpm: u32, tpm: u32, budget: u64, conc: u32) -> Tenant {
        Tenant {
            name: TenantName::parse("acme").unwrap(),
            token: TokenHash::of_token("t"),
            state: TenantState::Active,
            tier: "starter".into(),
            limits: Limits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                monthly_token_budget: budget,
                concurrent_requests: conc,
            },
            connections: vec![],
        }
    }

    #[test]
    fn requests_per_minute() {
        let l = Limiters::default();
        let t = tenant(2, 1000, 1_000_000, 10);
        let a = l.admit(&t, 1).unwrap();
        assert_eq!(a.headroom.requests_remaining, 1);
        l.admit(&t, 1).unwrap();
        match l.admit(&t, 1) {
            Err(Rejection::Requests {
                limit: 2,
                retry_after,
            }) => {
                assert!(retry_after > Duration::from_secs(20))
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn concurrency_slots_return_on_drop() {
        let l = Limiters::default();
        let t = tenant(100, 100_000, 1_000_000, 1);
        let a = l.admit(&t, 1).unwrap();
        assert!(matches!(
            l.admit(&t, 1),
            Err(Rejection::Concurrency { limit: 1 })
        ));
        drop(a);
        l.admit(&t, 1).unwrap();
    }

    #[test]
    fn tokens_per_minute() {
        let l = Limiters::default();
        let t = tenant(100, 1000, 1_000_000, 10);
        l.admit(&t, 900).unwrap().settle(900);
        assert!(matches!(
            l.admit(&t, 200),
            Err(Rejection::Tokens { limit: 1000, .. })
        ));
    }

    #[test]
    fn budget_reserves_then_reconciles() {
        let l = Limiters::default();
        let t = tenant(100, 100_000, 1000, 10);
        let a = l.admit(&t, 600).unwrap();
        let b = l.admit(&t, 300).unwrap();
        assert!(b.headroom.budget_used_ratio >= 0.9);
        // 900 reserved of 1000: a third request still fits, a fourth is refused once these are settled.
        a.settle(50);
        b.settle(40);
        let c = l.admit(&t, 100).unwrap();
        c.settle(950);
        assert!(matches!(
            l.admit(&t, 1),
            Err(Rejection::Budget { budget: 1000, .. })
        ));
    }

    #[test]
    fn feed_sets_the_baseline_and_state() {
        let l = Limiters::default();
        let t = tenant(100, 100_000, 1000, 10);
        let now = Period::of(Utc::now());
        l.apply_feed(&t.name, now, 500, FeedState::Ok);
        l.admit(&t, 10).unwrap().settle(10);
        l.apply_feed(&t.name, now, 999, FeedState::Warning);
        let a = l.admit(&t, 10).unwrap();
        assert!(a.headroom.budget_used_ratio > 0.99);
        drop(a);
        l.apply_feed(&t.name, now, 10, FeedState::Exhausted);
        assert!(matches!(l.admit(&t, 1), Err(Rejection::Budget { .. })));
        // A snapshot for another period is ignored.
        l.apply_feed(
            &t.name,
            Period {
                year: 1999,
                month: 1,
            },
            0,
            FeedState::Ok,
        );
        assert!(matches!(l.admit(&t, 1), Err(Rejection::Budget { .. })));
    }

    #[test]
    fn periods() {
        let p = Period {
            year: 2026,
            month: 12,
        };
        assert_eq!(p.next_start().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert_eq!(p.label(), "2026-12");
    }
}
