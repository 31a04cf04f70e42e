//! The tenant table: parsing, merging and looking up the file the compiler renders.
//!
//! This module owns the in-memory form of docs/tenant-table.md. It parses each shard strictly (unknown
//! fields, out-of-range values, duplicate names or token hashes are errors), merges shards into one
//! [`TenantTable`], and resolves a presented proxy token to its tenant by SHA-256 with a constant-time
//! comparison. A directory may hold the shards as mounted (`*.json`) or as the compiler renders them (the
//! ConfigMap files `*.yaml` of `flux/platform/tenant-table/`, whose `*.json` data keys are the shards), so
//! a checkout of the state repo needs no extraction step. It does no I/O beyond reading the directory it
//! is asked to load; watching for changes lives in [`crate::reload`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use contracts::tenant_table::{TableEntry, TableFile};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only format version this reader accepts.
pub use contracts::tenant_table::FORMAT_VERSION;

/// Why a table could not be loaded. Messages name the file and the offending value, never a token.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read tenant table directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read tenant table file {file}: {source}")]
    ReadFile {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: unsupported version {found}; this proxy reads version {FORMAT_VERSION}")]
    Version { file: PathBuf, found: u32 },
    #[error("{file}: tenant {tenant:?}: {message}")]
    Invalid {
        file: PathBuf,
        tenant: String,
        message: String,
    },
    #[error("tenant name {name:?} appears twice ({first} and {second}); each tenant belongs to one shard")]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("tenants {first:?} and {second:?} have the same token hash; every tenant needs its own token")]
    DuplicateToken { first: String, second: String },
    #[error("{file}: {message}")]
    ConfigMap { file: PathBuf, message: String },
    #[error(
        "tenant table directory {dir} holds no *.json shard and no tenant-table ConfigMap (*.yaml)"
    )]
    Empty { dir: PathBuf },
}

/// A tenant name: a DNS-1123 label of at most 40 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantName(Arc<str>);

impl TenantName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty() || s.len() > 40 {
            return Err(format!("name {s:?} must be 1 to 40 characters"));
        }
        if !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(format!(
                "name {s:?} must be a DNS-1123 label (lowercase letters, digits, '-', not at either end)"
            ));
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The SHA-256 of a proxy token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Parses 64 lowercase hex characters.
    pub fn parse_hex(s: &str) -> Result<Self, String> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("tokenSha256 must be 64 lowercase hex characters".to_owned());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| format!("tokenSha256: {e}"))?;
        Ok(Self(out))
    }

    /// Hashes a presented token.
    pub fn of_token(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not the token, but there is no reason to print it either.
        f.write_str("TokenHash(..)")
    }
}

pub use contracts::tenant_table::TenantState;
pub use contracts::Provider;

/// A tenant's limits, inlined from its tier. Every value is positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    pub monthly_token_budget: u64,
    pub concurrent_requests: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub provider: Provider,
    pub connection_id: String,
    pub provider_config_key: String,
}

/// One tenant as the proxy sees it.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: TenantName,
    pub token: TokenHash,
    pub state: TenantState,
    pub tier: String,
    pub limits: Limits,
    pub connections: Vec<Connection>,
}

impl Tenant {
    pub fn connection(&self, provider: Provider) -> Option<&Connection> {
        self.connections.iter().find(|c| c.provider == provider)
    }
}

// The wire types are the contract's (`contracts::tenant_table`): exactly the documented fields.

/// Limits as the proxy holds them: every value positive, the per-minute and concurrency ones within
/// `u32`. Errors name the field.
pub(crate) fn checked_limits(l: &contracts::tenant_table::Limits) -> Result<Limits, String> {
    if l.monthly_token_budget == 0 {
        return Err("limits.monthlyTokenBudget must be greater than 0".into());
    }
    Ok(Limits {
        requests_per_minute: positive_u32("requestsPerMinute", l.requests_per_minute)?,
        tokens_per_minute: positive_u32("tokensPerMinute", l.tokens_per_minute)?,
        monthly_token_budget: l.monthly_token_budget,
        concurrent_requests: positive_u32("concurrentRequests", l.concurrent_requests)?,
    })
}

fn positive_u32(field: &str, v: u64) -> Result<u32, String> {
    if v == 0 {
        return Err(format!("limits.{field} must be greater than 0"));
    }
    u32::try_from(v).map_err(|_| format!("limits.{field} = {v} is too large"))
}

/// A table entry as the proxy holds it, every value checked.
fn into_tenant(entry: TableEntry) -> Result<Tenant, (String, String)> {
    let raw_name = entry.name.clone();
    let fail = |m: String| (raw_name.clone(), m);
    let name = TenantName::parse(&entry.name).map_err(fail)?;
    let token = TokenHash::parse_hex(&entry.token_sha256).map_err(fail)?;
    if entry.tier.is_empty() {
        return Err(fail("tier must not be empty".into()));
    }
    let limits = checked_limits(&entry.limits).map_err(fail)?;
    let mut connections: Vec<Connection> = Vec::with_capacity(entry.connections.len());
    for c in entry.connections {
        if connections.iter().any(|e| e.provider == c.provider) {
            return Err(fail(format!(
                "provider {} is listed twice in connections",
                c.provider.as_str()
            )));
        }
        if c.connection_id.is_empty() || c.provider_config_key.is_empty() {
            return Err(fail(format!(
                "connection {} needs a non-empty connectionId and providerConfigKey",
                c.provider.as_str()
            )));
        }
        connections.push(Connection {
            provider: c.provider,
            connection_id: c.connection_id,
            provider_config_key: c.provider_config_key,
        });
    }
    Ok(Tenant {
        name,
        token,
        state: entry.state,
        tier: entry.tier,
        limits,
        connections,
    })
}

/// Parses one shard file's contents. `file` is only used in error messages.
pub fn parse_shard(file: &Path, text: &str) -> Result<Vec<Tenant>, TableError> {
    let shard: TableFile = serde_json::from_str(text).map_err(|e| TableError::Parse {
        file: file.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    if shard.version != FORMAT_VERSION {
        return Err(TableError::Version {
            file: file.to_owned(),
            found: shard.version,
        });
    }
    shard
        .tenants
        .into_iter()
        .map(|t| {
            into_tenant(t).map_err(|(tenant, message)| TableError::Invalid {
                file: file.to_owned(),
                tenant,
                message,
            })
        })
        .collect()
}

/// The merged table: every tenant of every shard, indexed by token hash.
#[derive(Debug, Default)]
pub struct TenantTable {
    by_token: HashMap<TokenHash, Arc<Tenant>>,
    by_name: BTreeMap<TenantName, Arc<Tenant>>,
}

/// What a presented token resolves to.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<Tenant>),
    Unknown,
}

impl TenantTable {
    /// Merges shards given as (file, tenants) pairs; duplicates across or within shards are errors.
    pub fn merge(shards: Vec<(PathBuf, Vec<Tenant>)>) -> Result<Self, TableError> {
        let mut by_name: BTreeMap<TenantName, (PathBuf, Arc<Tenant>)> = BTreeMap::new();
        let mut by_token: HashMap<TokenHash, Arc<Tenant>> = HashMap::new();
        for (file, tenants) in shards {
            for t in tenants {
                let t = Arc::new(t);
                if let Some((first, _)) = by_name.get(&t.name) {
                    return Err(TableError::DuplicateName {
                        name: t.name.to_string(),
                        first: first.clone(),
                        second: file.clone(),
                    });
                }
                if let Some(other) = by_token.get(&t.token) {
                    return Err(TableError::DuplicateToken {
                        first: other.name.to_string(),
                        second: t.name.to_string(),
                    });
                }
                by_token.insert(t.token, t.clone());
                by_name.insert(t.name.clone(), (file.clone(), t));
            }
        }
        Ok(Self {
            by_token,
            by_name: by_name.into_iter().map(|(k, (_, t))| (k, t)).collect(),
        })
    }

    /// Loads and merges every table file directly inside `dir` ([`table_files`]): `*.json` shards and
    /// the ConfigMaps (`*.yaml`) holding them. Hidden files (the kubelet's `..data` machinery) are skipped.
    pub fn load_dir(dir: &Path) -> Result<Self, TableError> {
        let mut shards = Vec::new();
        for file in table_files(dir)? {
            let text = std::fs::read_to_string(&file).map_err(|source| TableError::ReadFile {
                file: file.clone(),
                source,
            })?;
            if is_yaml(&file) {
                for (key, json) in config_map_shards(&file, &text)? {
                    let name = file.join(key);
                    let tenants = parse_shard(&name, &json)?;
                    shards.push((name, tenants));
                }
            } else {
                let tenants = parse_shard(&file, &text)?;
                shards.push((file, tenants));
            }
        }
        if shards.is_empty() {
            return Err(TableError::Empty {
                dir: dir.to_owned(),
            });
        }
        Self::merge(shards)
    }

    /// Resolves a presented token. The map is keyed by the token's hash; the final equality check on the
    /// 32 hash bytes is constant-time so that response timing says nothing about near matches.
    pub fn lookup(&self, token: &str) -> Lookup {
        let hash = TokenHash::of_token(token);
        match self.by_token.get(&hash) {
            Some(t) if bool::from(t.token.0.ct_eq(&hash.0)) => Lookup::Found(t.clone()),
            _ => Lookup::Unknown,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        TenantName::parse(name)
            .ok()
            .and_then(|n| self.by_name.get(&n))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_name.values()
    }
}

fn is_yaml(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// The file kustomize reads in a folder of ConfigMaps; it lists them and holds no tenant.
const KUSTOMIZATION: &str = "kustomization.yaml";

/// The `*.json` data entries of a ConfigMap file, as (key, text) pairs.
pub fn config_map_shards(file: &Path, text: &str) -> Result<Vec<(String, String)>, TableError> {
    #[derive(Deserialize)]
    struct ConfigMap {
        kind: String,
        #[serde(default)]
        data: BTreeMap<String, String>,
    }
    let map: ConfigMap = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        TableError::Parse {
            file: file.to_owned(),
            line,
            column,
            message: format!("not a ConfigMap: {e}"),
        }
    })?;
    if map.kind != "ConfigMap" {
        return Err(TableError::ConfigMap {
            file: file.to_owned(),
            message: format!(
                "kind is {:?}: a *.yaml file in the table directory must be a tenant-table ConfigMap",
                map.kind
            ),
        });
    }
    let shards: Vec<_> = map
        .data
        .into_iter()
        .filter(|(key, _)| key.ends_with(".json"))
        .collect();
    if shards.is_empty() {
        return Err(TableError::ConfigMap {
            file: file.to_owned(),
            message: "the ConfigMap has no *.json data key (a tenant-table shard)".into(),
        });
    }
    Ok(shards)
}

/// The table files directly inside `dir`, sorted: `*.json` shards and `*.yaml` ConfigMaps (except
/// `kustomization.yaml`). Hidden entries are skipped.
pub fn table_files(dir: &Path) -> Result<Vec<PathBuf>, TableError> {
    let rd = std::fs::read_dir(dir).map_err(|source| TableError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| TableError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let table_file = name.ends_with(".json")
            || ((name.ends_with(".yaml") || name.ends_with(".yml")) && name != KUSTOMIZATION);
        if name.starts_with('.') || !table_file {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: projected volumes expose files as links into a timestamped directory.
        if std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../docs/tenant-table.example.json");

    fn example() -> TenantTable {
        let tenants = parse_shard(Path::new("example.json"), EXAMPLE).unwrap();
        TenantTable::merge(vec![("example.json".into(), tenants)]).unwrap()
    }

    #[test]
    fn example_tokens_resolve_to_their_tenants() {
        let table = example();
        assert_eq!(table.len(), 2);
        let Lookup::Found(acme) = table.lookup("test") else {
            panic!("test token must resolve")
        };
        assert_eq!(acme.name.as_str(), "acme");
        assert_eq!(acme.state, TenantState::Active);
        assert_eq!(acme.limits.requests_per_minute, 30);
        assert_eq!(acme.limits.monthly_token_budget, 5_000_000);
        assert_eq!(
            acme.connection(Provider::Github).unwrap().connection_id,
            "0b6c2f4e-6a1d-4c53-9d55-5c0b8f3a2e11"
        );
        assert!(acme.connection(Provider::Slack).is_none());
        let Lookup::Found(globex) = table.lookup("test2") else {
            panic!("test2 token must resolve")
        };
        assert_eq!(globex.name.as_str(), "globex");
        assert_eq!(globex.state, TenantState::Suspended);
        assert!(matches!(table.lookup("test3"), Lookup::Unknown));
        assert!(matches!(table.lookup(""), Lookup::Unknown));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = EXAMPLE.replacen(
            "\"tier\": \"starter\",",
            "\"tier\": \"starter\", \"extra\": 1,",
            1,
        );
        let err = parse_shard(Path::new("t.json"), &text).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
        assert!(err.to_string().starts_with("t.json:"), "{err}");
    }

    #[test]
    fn other_versions_are_rejected() {
        let text = EXAMPLE.replacen("\"version\": 1", "\"version\": 2", 1);
        assert!(matches!(
            parse_shard(Path::new("t.json"), &text),
            Err(TableError::Version { found: 2, .. })
        ));
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for (from, to, needle) in [
            (
                "\"requestsPerMinute\": 30",
                "\"requestsPerMinute\": 0",
                "requestsPerMinute",
            ),
            ("\"name\": \"acme\"", "\"name\": \"Acme\"", "DNS-1123"),
            ("9f86d081", "9F86D081", "lowercase hex"),
            (
                "\"state\": \"active\"",
                "\"state\": \"paused\"",
                "unknown variant",
            ),
            (
                "\"provider\": \"github\"",
                "\"provider\": \"gitlab\"",
                "unknown variant",
            ),
            (
                "\"provider\": \"google\"",
                "\"provider\": \"github\"",
                "listed twice",
            ),
        ] {
            let text = EXAMPLE.replacen(from, to, 1);
            let err = parse_shard(Path::new("t.json"), &text).unwrap_err();
            assert!(err.to_string().contains(needle), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn duplicates_across_shards_are_rejected() {
        let a = parse_shard(Path::new("a.json"), EXAMPLE).unwrap();
        let b = parse_shard(Path::new("b.json"), EXAMPLE).unwrap();
        let err = TenantTable::merge(vec![("a.json".into(), a), ("b.json".into(), b)]).unwrap_err();
        assert!(matches!(err, TableError::DuplicateName { .. }), "{err}");

        let renamed = EXAMPLE.replacen("\"name\": \"acme\"", "\"name\": \"initech\"", 1);
        let a = parse_shard(Path::new("a.json"), EXAMPLE).unwrap();
        let c = parse_shard(Path::new("c.json"), &renamed)
            .unwrap()
            .into_iter()
            .filter(|t| t.name.as_str() == "initech")
            .collect();
        let err = TenantTable::merge(vec![("a.json".into(), a), ("c.json".into(), c)]).unwrap_err();
        assert!(matches!(err, TableError::DuplicateToken { .. }), "{err}");
    }

    /// The example as the compiler renders it: a ConfigMap whose data key holds the shard.
    fn config_map(key: &str, json: &str) -> String {
        let indented: String = json.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "# Generated by openclaw-compiler\napiVersion: v1\ndata:\n  {key}: |\n{indented}kind: ConfigMap\nmetadata:\n  name: tenant-table-00\n  namespace: openclaw-platform\n"
        )
    }

    #[test]
    fn config_map_files_are_read_as_rendered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tenant-table-00.yaml"),
            config_map("tenants-00.json", EXAMPLE),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [tenant-table-00.yaml]\n",
        )
        .unwrap();
        let table = TenantTable::load_dir(dir.path()).unwrap();
        assert_eq!(table.len(), 2);
        assert!(matches!(table.lookup("test"), Lookup::Found(_)));
        assert_eq!(
            table_files(dir.path()).unwrap(),
            vec![dir.path().join("tenant-table-00.yaml")]
        );

        // The same shard also present as a mounted *.json file is a duplicate, as for two shards.
        std::fs::write(dir.path().join("tenants-00.json"), EXAMPLE).unwrap();
        let err = TenantTable::load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, TableError::DuplicateName { .. }), "{err}");
    }

    #[test]
    fn yaml_that_is_not_a_tenant_table_config_map_is_refused_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.yaml");
        for (text, needle) in [
            (
                "kind: Secret\ndata: {}\n",
                "must be a tenant-table ConfigMap",
            ),
            ("kind: ConfigMap\ndata: {a.txt: x}\n", "no *.json data key"),
            ("kind: [\n", "not a ConfigMap"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = TenantTable::load_dir(dir.path()).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("x.yaml"), "{err}");
        }
        // A shard inside a ConfigMap is checked like a mounted one, and named by file and key.
        let bad = EXAMPLE.replacen("\"version\": 1", "\"version\": 2", 1);
        std::fs::write(&file, config_map("tenants-00.json", &bad)).unwrap();
        let err = TenantTable::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("x.yaml/tenants-00.json"), "{err}");
        assert!(err.contains("unsupported version 2"), "{err}");
    }
}
