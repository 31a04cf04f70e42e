//! The tenant spec: the Rust types of `tenants/<shard>/<name>/tenant.yaml` (apiVersion openclaw.cloud/v1alpha1, kind
//! Tenant), parsed strictly.
//!
//! Parse, don't validate: every field that has rules is a newtype whose constructor enforces them, so a
//! [`TenantSpec`] that exists is well-formed. Rules that need the platform config (does the tier exist, is the
//! model offered, are overrides within the tier) live in [`crate::validate`]. The JSON Schema committed at
//! tenants/tenant.schema.json is generated from these types (see [`json_schema`]); docs/tenant-spec.md is the
//! reference page.

use crate::diagnostics::Diagnostic;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

pub const API_VERSION: &str = "openclaw.cloud/v1alpha1";
pub const KIND: &str = "Tenant";
/// Longest tenant name: `customer-` + name must stay a valid 63-character namespace, with room to spare.
pub const MAX_NAME_LEN: usize = 40;
/// Names that would collide with generated files beside the tenant folders.
pub const RESERVED_NAMES: &[&str] = &["kustomization", "platform", "tenants", "flux-system"];

/// Defines a string newtype: parsed by `$check`, (de)serialised as a plain string, with a JSON Schema.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr, $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `value`, explaining what is wrong when it does not fit.
            pub fn parse(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value).map(|()| $name(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(value)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// Characters refused in free text that reaches git or a database (reasons, names, emails): control
/// characters (C0, DEL, C1: NUL, CR, ESC, ...), the line and paragraph separators U+2028 and
/// U+2029, and the bidirectional embeddings, overrides and isolates, which reorder what a reader
/// sees. They can cut a commit message short, forge a trailer line, or hide text.
pub fn refused_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(60).collect();
    if value.chars().count() > 60 {
        s.push('…');
    }
    format!("{s:?}")
}

fn check_dns_label(value: &str, max: usize, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > max {
        return Err(format!(
            "{what} {} is {} characters long; at most {max} are allowed",
            shown(value),
            value.len()
        ));
    }
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends {
        return Err(format!(
            "{what} {} is not a DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit",
            shown(value)
        ));
    }
    Ok(())
}

string_newtype!(
    /// A tenant's name: a DNS-1123 label of at most 40 characters; its namespace is `customer-<name>`.
    TenantName,
    |v| {
        check_dns_label(v, MAX_NAME_LEN, "tenant name")?;
        if RESERVED_NAMES.contains(&v) {
            return Err(format!("tenant name {v:?} is reserved (it would collide with generated files)"));
        }
        Ok(())
    },
    {"type": "string", "minLength": 1, "maxLength": 40, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
     "description": "DNS-1123 label, at most 40 characters; the namespace is customer-<name>"}
);

impl TenantName {
    /// The Kubernetes namespace the tenant's resources live in.
    pub fn namespace(&self) -> String {
        format!("customer-{}", self.0)
    }
}

string_newtype!(
    /// The name of a tier defined in templates/platform.yaml.
    TierName,
    |v| check_dns_label(v, 30, "tier name"),
    {"type": "string", "minLength": 1, "maxLength": 30, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
     "description": "a key of tiers in templates/platform.yaml (starter, pro, team)"}
);

string_newtype!(
    /// A model reference `provider/model`, one of the models templates/platform.yaml offers.
    ModelRef,
    |v| {
        let ok = v.len() <= 100
            && v.split_once('/').is_some_and(|(p, m)| {
                !p.is_empty()
                    && !m.is_empty()
                    && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            });
        if ok {
            Ok(())
        } else {
            Err(format!("model {} is not of the form provider/model (for example kimi/kimi-for-coding)", shown(v)))
        }
    },
    {"type": "string", "maxLength": 100, "pattern": "^[a-z0-9-]+/[A-Za-z0-9._-]+$",
     "description": "provider/model, one of the models in templates/platform.yaml"}
);

/// Longest language tag accepted (the schema's `maxLength` says the same).
pub const MAX_LANGUAGE_LEN: usize = 35;

string_newtype!(
    /// A BCP 47 language tag such as `en` or `pt-BR`: the language the agent answers in.
    Language,
    |v| {
        if v.len() > MAX_LANGUAGE_LEN {
            return Err(format!(
                "language {} is {} characters long; a BCP 47 tag here is at most {MAX_LANGUAGE_LEN}",
                shown(v),
                v.len()
            ));
        }
        let mut parts = v.split('-');
        let primary = parts.next().unwrap_or_default();
        let ok = (2..=3).contains(&primary.len())
            && primary.bytes().all(|b| b.is_ascii_lowercase())
            && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if ok { Ok(()) } else { Err(format!("language {} is not a BCP 47 tag such as en or pt-BR", shown(v))) }
    },
    {"type": "string", "maxLength": MAX_LANGUAGE_LEN, "pattern": "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
     "description": "BCP 47 language tag, e.g. en, de, pt-BR"}
);

string_newtype!(
    /// The identity of one incarnation of a tenant: a UUID minted when the api provisions it. A
    /// name destroyed and provisioned again gets a new one, and history, usage and budgets are
    /// scoped to it, so a new owner of a reused name sees nothing of the previous one.
    TenantUid,
    |v| {
        let ok = v.len() == 36
            && v.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if ok {
            Ok(())
        } else {
            Err(format!("uid {} is not a lowercase UUID (8-4-4-4-12 hex digits)", shown(v)))
        }
    },
    {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
     "description": "the tenant incarnation's identity, a UUID the api mints at provisioning; never reused"}
);

string_newtype!(
    /// SHA-256 of a proxy token: 64 lowercase hex characters. The token itself lives only in the SOPS file.
    TokenSha256,
    |v| {
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(())
        } else {
            Err(format!("token hash {} is not 64 lowercase hex characters (a SHA-256)", shown(v)))
        }
    },
    {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256 of the proxy token, lowercase hex"}
);

impl TokenSha256 {
    /// The hash of `token`.
    pub fn of_token(token: &str) -> TokenSha256 {
        use sha2::Digest;
        TokenSha256(hex::encode(sha2::Sha256::digest(token.as_bytes())))
    }
}

string_newtype!(
    /// An email address (the owner's contact).
    Email,
    |v| {
        let ok = v.len() <= 254
            && !v.chars().any(|c| c.is_whitespace() || refused_char(c))
            && v.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && local.len() <= 64 && domain.contains('.') && !domain.contains('@')
                    && !domain.starts_with('.') && !domain.ends_with('.')
            });
        if ok { Ok(()) } else { Err(format!("email {} is not an address like name@example.com", shown(v))) }
    },
    {"type": "string", "maxLength": 254, "format": "email"}
);

string_newtype!(
    /// A Nango connection id. Not a secret: it only works together with the platform's Nango key.
    ConnectionId,
    |v| {
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            Ok(())
        } else {
            Err(format!("connection id {} must be 1 to 128 characters of letters, digits, '-', '.', '_'", shown(v)))
        }
    },
    {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._-]+$"}
);

string_newtype!(
    /// A container image reference pinned to a version tag or digest (never `latest`).
    ImageRef,
    |v| {
        let ok = v.len() <= 255
            && !v.chars().any(|c| c.is_whitespace() || c.is_control())
            && (v.contains("@sha256:")
                || v.rsplit_once(':').is_some_and(|(repo, tag)| !repo.is_empty() && !tag.contains('/') && !tag.is_empty() && tag != "latest"));
        if ok { Ok(()) } else { Err(format!("image {} must be pinned to a version tag or a digest (not latest)", shown(v))) }
    },
    {"type": "string", "maxLength": 255, "pattern": "^[^\\s]+(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[0-9a-f]{64})$"}
);

/// A Telegram user id (positive integer, below 2^53 so that it survives JSON everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct TelegramId(i64);

impl TelegramId {
    pub const MAX: i64 = (1 << 53) - 1;
    pub fn parse(v: i64) -> Result<Self, String> {
        if (1..=Self::MAX).contains(&v) {
            Ok(TelegramId(v))
        } else {
            Err(format!(
                "Telegram user id {v} is out of range: it must be a positive integer below 2^53"
            ))
        }
    }
    pub fn get(self) -> i64 {
        self.0
    }
}
impl TryFrom<i64> for TelegramId {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        Self::parse(v)
    }
}
impl From<TelegramId> for i64 {
    fn from(v: TelegramId) -> i64 {
        v.0
    }
}
impl fmt::Display for TelegramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl JsonSchema for TelegramId {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("TelegramId")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 1, "maximum": 9007199254740991i64,
                      "description": "Telegram user id"})
    }
}

/// Whether the agent runs: the same state the tenant table carries (one definition).
pub use contracts::tenant_table::TenantState;

/// Who suspended a tenant: the state the reactivation rule reads. A customer may lift only a
/// suspension they made; a suspended spec without `suspendedBy` (an SRE's edit, a spec from before
/// the field existed) counts as the platform's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Suspender {
    /// The owner, through the api.
    Customer,
    /// An admin (or an SRE).
    Platform,
    /// Billing (unpaid invoices).
    Billing,
}

impl Suspender {
    pub fn as_str(self) -> &'static str {
        match self {
            Suspender::Customer => "customer",
            Suspender::Platform => "platform",
            Suspender::Billing => "billing",
        }
    }
}

/// How hard the model thinks by default (OpenClaw's agents.defaults.thinkingDefault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Thinking {
    Off,
    Minimal,
    Low,
    Medium,
    High,
}

impl Thinking {
    pub fn as_str(self) -> &'static str {
        match self {
            Thinking::Off => "off",
            Thinking::Minimal => "minimal",
            Thinking::Low => "low",
            Thinking::Medium => "medium",
            Thinking::High => "high",
        }
    }
}

/// A service the agent can use on the customer's behalf through Nango (one definition for the spec, the
/// tenant table and the proxy).
pub use contracts::Provider;

/// `tenants/<shard>/<name>/tenant.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(
    title = "openclaw-cloud Tenant",
    description = "tenants/<shard>/<name>/tenant.yaml"
)]
pub struct TenantSpec {
    /// Always `openclaw.cloud/v1alpha1`.
    #[schemars(schema_with = "api_version_schema")]
    pub api_version: String,
    /// Always `Tenant`.
    #[schemars(schema_with = "kind_schema")]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

fn api_version_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"const": API_VERSION})
}
fn kind_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"const": KIND})
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Must equal the name of the tenant folder, tenants/<shard>/<name>/.
    pub name: TenantName,
    /// This incarnation's identity, minted by the api at provisioning (absent on tenants made by
    /// hand or before uids existed). Never change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<TenantUid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub owner: Owner,
    /// A key of `tiers` in templates/platform.yaml.
    pub tier: TierName,
    /// `active` or `suspended`. Deleting a tenant means removing its folder.
    pub state: TenantState,
    /// Who suspended the tenant (only with `state: suspended`). Absent counts as `platform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_by: Option<Suspender>,
    pub agent: Agent,
    /// OAuth connections in Nango, written by the api. At most one per provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub connections: Vec<Connection>,
    pub proxy_token: ProxyToken,
    /// SRE-only knobs, bounded by the tier.
    #[serde(default, skip_serializing_if = "Overrides::is_empty")]
    pub overrides: Overrides,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Owner {
    pub email: Email,
    pub telegram_user_id: TelegramId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Agent {
    /// provider/model; one of `models` in templates/platform.yaml.
    pub model: ModelRef,
    pub thinking: Thinking,
    /// The language the agent answers in.
    pub language: Language,
    /// Telegram user ids allowed to talk to the agent (dmPolicy allowlist). 1 to 32 distinct ids.
    #[schemars(length(min = 1, max = 32))]
    pub allow_from: Vec<TelegramId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Connection {
    pub provider: Provider,
    pub connection_id: ConnectionId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyToken {
    /// SHA-256 (lowercase hex) of the token stored in secrets.sops.yaml.
    pub sha256: TokenSha256,
}

/// SRE-only knobs. Every value must stay within the tier's bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Overrides {
    /// A gateway image other than the platform's pin; must be listed in gateway.allowedImages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Container resources; each at most the tier's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceOverrides>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.image.is_none() && self.resources.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<crate::quantity::Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<crate::quantity::Memory>,
}

/// The largest spec file accepted (a spec is a few hundred bytes).
pub const MAX_SPEC_BYTES: usize = 64 * 1024;

impl TenantSpec {
    /// Parses `source`, the text of the file at `path`, strictly. The error names the position and how to fix.
    pub fn parse(path: &str, source: &str) -> Result<TenantSpec, Diagnostic> {
        if source.len() > MAX_SPEC_BYTES {
            return Err(Diagnostic::file(
                path,
                format!(
                    "file is {} bytes; a tenant spec is at most {MAX_SPEC_BYTES} bytes",
                    source.len()
                ),
            )
            .with_hint("a spec holds a few settings; secrets belong in secrets.sops.yaml"));
        }
        let spec: TenantSpec = crate::yaml::from_str(path, source, "docs/tenant-spec.md")?;
        let positions = || crate::yaml_position::Positions::of(source);
        if spec.api_version != API_VERSION {
            return Err(Diagnostic::file(
                path,
                format!(
                    "apiVersion is {:?}; expected {API_VERSION:?}",
                    spec.api_version
                ),
            )
            .located(source, positions().find("apiVersion"))
            .with_hint(format!("set `apiVersion: {API_VERSION}`")));
        }
        if spec.spec.suspended_by.is_some() && spec.spec.state != TenantState::Suspended {
            return Err(Diagnostic::file(
                path,
                "suspendedBy is set but state is not suspended".to_owned(),
            )
            .located(source, positions().find("suspendedBy"))
            .with_hint("remove suspendedBy when the tenant is active"));
        }
        if spec.kind != KIND {
            return Err(Diagnostic::file(
                path,
                format!("kind is {:?}; expected {KIND:?}", spec.kind),
            )
            .located(source, positions().find("kind"))
            .with_hint("set `kind: Tenant`"));
        }
        Ok(spec)
    }

    pub fn name(&self) -> &TenantName {
        &self.metadata.name
    }

    /// The canonical text of the spec, as the api writes it: a schema modeline, then the fields in a fixed
    /// order.
    pub fn to_yaml(&self) -> String {
        let body = crate::yaml::to_string(self).expect("a tenant spec always serialises");
        format!("# yaml-language-server: $schema=../../tenant.schema.json\n{body}")
    }
}

/// The JSON Schema of tenant.yaml, as committed at tenants/tenant.schema.json.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(TenantSpec);
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123_and_the_length_limit() {
        assert!(TenantName::parse("acme").is_ok());
        assert!(TenantName::parse("a-1").is_ok());
        assert!(TenantName::parse("a".repeat(40)).is_ok());
        assert!(TenantName::parse("a".repeat(41)).is_err());
        for bad in [
            "",
            "-a",
            "a-",
            "Acme",
            "a_b",
            "../x",
            "a.b",
            "kustomization",
        ] {
            assert!(TenantName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_hash_of_token() {
        assert_eq!(
            TokenSha256::of_token("test").as_str(),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert!(TokenSha256::parse("ABC").is_err());
    }

    #[test]
    fn models_languages_images() {
        assert!(ModelRef::parse("kimi/kimi-for-coding").is_ok());
        assert!(ModelRef::parse("kimi").is_err());
        assert!(Language::parse("pt-BR").is_ok());
        assert!(Language::parse("english").is_err());
        assert!(Language::parse(format!("en{}", "-abcdefgh".repeat(4))).is_err());
        assert!(Language::parse("en-abcdefgh-abcdefgh-abcdefgh").is_ok());
        assert!(TenantUid::parse("0f4c2a9e-5b1d-4c3e-9a7f-2d6b8e1c0a53").is_ok());
        assert!(TenantUid::parse("ACME").is_err());
        assert!(ImageRef::parse("ghcr.io/openclaw/openclaw:2026.9.6").is_ok());
        assert!(ImageRef::parse("ghcr.io/openclaw/openclaw:latest").is_err());
        assert!(ImageRef::parse("ghcr.io/openclaw/openclaw").is_err());
        assert!(TelegramId::parse(0).is_err());
    }
}
