//! The token proxy's tenant table (docs/tenant-table.md): one JSON shard file per layout shard, each
//! listing per tenant its token hash, state, tier limits and connections.
//!
//! Limits are `u64` on the wire so that a reader sees an out-of-range value and names it, rather than
//! failing on the number's type; the compiler writes values that fit its tier types.

use serde::{Deserialize, Serialize};

use crate::Provider;

/// The format version every shard carries; readers refuse any other.
pub const FORMAT_VERSION: u32 = 1;

/// One shard file (`tenants-XX.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableFile {
    pub version: u32,
    pub tenants: Vec<TableEntry>,
}

/// One tenant as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableEntry {
    pub name: String,
    /// SHA-256 of the tenant's proxy token, 64 lowercase hex characters.
    pub token_sha256: String,
    pub state: TenantState,
    pub tier: String,
    pub limits: Limits,
    pub connections: Vec<TableConnection>,
}

/// Whether the agent runs (the tenant spec's `spec.state`, copied into the table and the feed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(description = "Whether the agent runs."))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TenantState {
    /// The agent runs (one replica).
    Active,
    /// The agent is scaled to zero and the proxy refuses its token; state and volume are kept.
    Suspended,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
        }
    }
}

/// A tenant's limits, inlined from its tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = AccessLimits))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub monthly_token_budget: u64,
    pub concurrent_requests: u64,
}

/// A connected account: which Nango connection and provider config the proxy forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableConnection {
    pub provider: Provider,
    pub connection_id: String,
    pub provider_config_key: String,
}
