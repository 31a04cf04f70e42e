//! The budget feed (docs/budget-feed.md): the api serves, per tenant, the billable tokens used in the
//! current UTC month, the budget, a state and the tenant's access at the state repo's head; every proxy
//! replica polls it.

use serde::{Deserialize, Serialize};

use crate::tenant_table::{Limits, TenantState};

/// The body of `GET /internal/budget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = FeedBody))]
#[serde(deny_unknown_fields)]
pub struct BudgetFeed {
    /// The UTC calendar month the figures are for, `YYYY-MM`.
    pub period: String,
    /// Every tenant in the tenant table at the state repo's head, by name.
    pub tenants: Vec<TenantBudget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantBudget {
    pub tenant: String,
    /// Billable tokens used in the period.
    pub used: u64,
    /// The monthly token budget of the tenant's tier.
    pub budget: u64,
    pub state: FeedState,
    /// The tenant's entry in the tenant table at the head, for the proxies to narrow theirs with. The
    /// api always sends it; a proxy reads a feed without it (from an older api) as "no narrowing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

/// A tenant's budget state as the proxies act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FeedState {
    Ok,
    /// At least 90 percent of the budget used.
    Warning,
    /// The budget is used up: the proxies refuse LLM calls until the period ends.
    Exhausted,
}

impl FeedState {
    /// The state of `used` tokens against `budget` (docs/budget-feed.md).
    pub fn of(used: u64, budget: u64) -> FeedState {
        if used >= budget {
            FeedState::Exhausted
        } else if u128::from(used) * 10 >= u128::from(budget) * 9 {
            FeedState::Warning
        } else {
            FeedState::Ok
        }
    }
}

/// A tenant's access as the table at the state repo's head has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Access {
    /// `active` or `suspended`.
    pub state: TenantState,
    /// SHA-256 of the current proxy token, 64 lowercase hex characters.
    pub token_sha256: String,
    pub limits: Limits,
}
