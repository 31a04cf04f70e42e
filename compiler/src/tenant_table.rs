//! The token proxy's tenant table (docs/tenant-table.md): per tenant the token hash, state, tier limits and
//! connections, split into 256 ConfigMap shards by the same hash as the repository's layout
//! ([`crate::layout`]), so that no ConfigMap nears the 1 MiB limit and a change to one tenant rewrites one
//! shard of about N/256 tenants.

use crate::platform::Platform;
use crate::spec::TenantSpec;

pub use contracts::tenant_table::{
    Limits, TableConnection, TableEntry, TableFile, TenantState, FORMAT_VERSION,
};
/// The folder of the table's ConfigMaps ([`crate::layout::TABLE_DIR`]).
pub const DIR: &str = crate::layout::TABLE_DIR;

/// The shard a tenant belongs to: its layout shard, the first byte of sha256(name).
pub fn shard_of(name: &str) -> u32 {
    crate::layout::shard_number(name)
}

/// The two-hex-digit id of a shard.
pub fn shard_id(shard: u32) -> String {
    crate::layout::shard_name(shard)
}

/// The path of a shard's ConfigMap file ([`crate::layout::table_shard_path`]).
pub fn shard_path(shard: u32) -> String {
    crate::layout::table_shard_path(shard)
}

/// The table entry of a (validated) tenant.
pub fn entry(platform: &Platform, spec: &TenantSpec) -> TableEntry {
    let tier = platform
        .tier(&spec.spec.tier)
        .expect("validated specs name an existing tier");
    let mut connections: Vec<TableConnection> = spec
        .spec
        .connections
        .iter()
        .map(|c| TableConnection {
            provider: c.provider,
            connection_id: c.connection_id.to_string(),
            provider_config_key: platform.nango.provider_config_keys[&c.provider].clone(),
        })
        .collect();
    connections.sort_by_key(|c| c.provider);
    TableEntry {
        name: spec.name().to_string(),
        token_sha256: spec.spec.proxy_token.sha256.to_string(),
        state: spec.spec.state,
        tier: spec.spec.tier.to_string(),
        limits: Limits {
            requests_per_minute: tier.requests_per_minute.into(),
            tokens_per_minute: tier.tokens_per_minute,
            monthly_token_budget: tier.monthly_token_budget,
            concurrent_requests: tier.concurrent_requests.into(),
        },
        connections,
    }
}

/// The JSON text of a shard: fields in documented order, tenants sorted by name.
pub fn shard_json(mut tenants: Vec<TableEntry>) -> String {
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    let mut text = serde_json::to_string_pretty(&TableFile {
        version: FORMAT_VERSION,
        tenants,
    })
    .expect("table serialises");
    text.push('\n');
    text
}

/// Parses a shard's JSON text (as written by [`shard_json`]).
pub fn parse_shard_json(text: &str) -> Result<TableFile, String> {
    let file: TableFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!(
            "tenant table version {} is not {FORMAT_VERSION}",
            file.version
        ));
    }
    Ok(file)
}
