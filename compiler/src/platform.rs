//! The platform config, templates/platform.yaml: tiers, the pinned gateway image, the token proxy's address,
//! the cluster's age recipients, Flux settings and network egress rules. Parsed as strictly as tenant specs.

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::quantity::{Cpu, Memory};
use crate::spec::{ImageRef, ModelRef, Provider, TierName};
use crate::yaml_position::Positions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const PLATFORM_PATH: &str = "templates/platform.yaml";
const REFERENCE: &str = "docs/platform.md";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Platform {
    pub api_version: String,
    pub kind: String,
    pub gateway: Gateway,
    pub token_proxy: TokenProxy,
    pub nango: Nango,
    pub models: Models,
    pub sops: Sops,
    pub flux: Flux,
    pub network: Network,
    pub tiers: BTreeMap<TierName, Tier>,
    /// What the platform itself runs (docs/platform.md, "services").
    pub services: crate::services::Services,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gateway {
    /// The pinned OpenClaw image every tenant runs unless an override picks another allowed one.
    pub image: ImageRef,
    /// Images an SRE override may pin (for canaries and rollbacks). Must include `image`.
    pub allowed_images: Vec<ImageRef>,
    /// The gateway's port (OpenClaw's default is 18789).
    pub port: u16,
    /// The image's unprivileged user and group id.
    pub uid: i64,
    /// The Telegram Bot API root the gateways call (`channels.telegram.apiRoot`): Telegram's own unless the
    /// platform runs a Bot API server of its own, or a test points it at a stand-in.
    #[serde(default = "default_telegram_api_root")]
    pub telegram_api_root: String,
}

/// An http(s) URL that paths are appended to: no trailing slash, no whitespace.
fn is_base_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && !url.ends_with('/')
        && !url.contains(char::is_whitespace)
}

fn default_telegram_api_root() -> String {
    "https://api.telegram.org".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenProxy {
    /// In-cluster base URL pods use for LLM and connection calls.
    pub url: String,
    /// Namespace the proxy runs in (the tenant table lives there too).
    pub namespace: String,
    /// Labels of the proxy's pods, for the tenants' egress NetworkPolicy.
    pub pod_labels: BTreeMap<String, String>,
    /// The proxy's container port, for the NetworkPolicy.
    pub port: u16,
    /// How many ConfigMaps the tenant table is split into. Must be 256: the table is sharded like
    /// tenants/ and flux/tenants/ (crate::layout), so a change to one tenant rewrites one small shard.
    pub tenant_table_shards: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Nango {
    /// Nango integration key (Provider-Config-Key) for each provider.
    pub provider_config_keys: BTreeMap<Provider, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Models {
    /// The model new tenants get.
    pub default: ModelRef,
    /// Models a tenant may choose.
    pub offered: Vec<OfferedModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OfferedModel {
    #[serde(rename = "ref")]
    pub model_ref: ModelRef,
    pub name: String,
    pub context_window: u64,
    pub max_tokens: u64,
    pub reasoning: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sops {
    /// The cluster's age recipients (public keys); every tenant secrets file is encrypted for exactly these.
    pub age_recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Flux {
    pub namespace: String,
    /// The GitRepository every Kustomization reads from.
    pub source_name: String,
    pub interval: String,
    pub retry_interval: String,
    pub timeout: String,
    /// The least-privilege service account per-tenant Kustomizations run as.
    pub service_account_name: String,
    /// The Secret holding the cluster's age identity (key ending in .agekey).
    pub decryption_secret_name: String,
    /// Number of kustomize-controller shards (sharding.fluxcd.io/key: shard-N).
    pub shards: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    pub dns: Dns,
    pub public_egress: PublicEgress,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dns {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublicEgress {
    pub ports: Vec<u16>,
    pub ip_blocks: Vec<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default)]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tier {
    pub cpu_request: Cpu,
    pub cpu_limit: Cpu,
    pub memory_request: Memory,
    pub memory_limit: Memory,
    /// Size of the agent's state volume.
    pub storage: Memory,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    pub monthly_token_budget: u64,
    pub concurrent_requests: u32,
    /// What the tier costs a month, shown to customers choosing a tier (the platform bot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_price: Option<Price>,
}

/// A price as customers see it: a decimal amount in an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Price {
    /// Decimal amount with at most two fraction digits, as a string (`"9"`, `"29.90"`).
    pub amount: String,
    /// ISO 4217 code in capitals (`EUR`, `USD`, `BRL`).
    pub currency: String,
}

impl Price {
    /// Whether the amount is digits with at most two fraction digits and the currency three
    /// capital letters.
    pub fn is_valid(&self) -> bool {
        let (whole, fraction) = self
            .amount
            .split_once('.')
            .unwrap_or((self.amount.as_str(), ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        !whole.is_empty()
            && whole.len() <= 9
            && digits(whole)
            && fraction.len() <= 2
            && digits(fraction)
            && fraction.is_empty() != self.amount.contains('.')
            && self.currency.len() == 3
            && self.currency.bytes().all(|b| b.is_ascii_uppercase())
    }
}

impl Platform {
    /// Parses and checks templates/platform.yaml.
    pub fn parse(path: &str, source: &str) -> Result<Platform, Diagnostics> {
        let platform: Platform = crate::yaml::from_str(path, source, REFERENCE)?;
        let positions = Positions::of(source);
        let mut problems = Diagnostics::new();
        let mut bad = |at: &str, message: String, hint: &str| {
            problems.push(
                Diagnostic::file(path, message)
                    .located(source, positions.find(at))
                    .with_hint(hint.to_string()),
            );
        };
        if platform.api_version != crate::spec::API_VERSION || platform.kind != "Platform" {
            bad(
                "kind",
                format!(
                    "expected apiVersion {} and kind Platform, found {} and {}",
                    crate::spec::API_VERSION,
                    platform.api_version,
                    platform.kind
                ),
                "start the file with `apiVersion: openclaw.cloud/v1alpha1` and `kind: Platform`",
            );
        }
        if !platform
            .gateway
            .allowed_images
            .contains(&platform.gateway.image)
        {
            bad(
                "gateway.allowedImages",
                format!(
                    "gateway.allowedImages does not include the pinned image {}",
                    platform.gateway.image
                ),
                "list gateway.image in gateway.allowedImages",
            );
        }
        if platform.gateway.uid < 1 {
            bad(
                "gateway.uid",
                "gateway.uid must be a non-root user id (>= 1)".into(),
                "the OpenClaw image runs as 1000",
            );
        }
        for (at, url, example) in [
            (
                "tokenProxy.url",
                &platform.token_proxy.url,
                "http://token-proxy.openclaw-platform.svc.cluster.local:8080",
            ),
            (
                "gateway.telegramApiRoot",
                &platform.gateway.telegram_api_root,
                "https://api.telegram.org (the gateway appends /bot<token>/<method>)",
            ),
        ] {
            if !is_base_url(url) {
                bad(
                    at,
                    format!("{at} {url:?} is not an http(s) base URL without a trailing slash"),
                    &format!("write it like {example}"),
                );
            }
        }
        let shards = platform.token_proxy.tenant_table_shards;
        if shards != crate::layout::SHARDS {
            bad(
                "tokenProxy.tenantTableShards",
                format!("tokenProxy.tenantTableShards is {shards}"),
                "set it to 256: the tenant table is sharded like tenants/, by the first byte of sha256(name), so that a change to one tenant rewrites one small shard",
            );
        }
        if !(1..=64).contains(&platform.flux.shards) {
            bad(
                "flux.shards",
                format!("flux.shards is {}", platform.flux.shards),
                "use 1 to 64 kustomize-controller shards",
            );
        }
        for p in Provider::ALL {
            if !platform.nango.provider_config_keys.contains_key(&p) {
                bad(
                    "nango.providerConfigKeys",
                    format!("nango.providerConfigKeys has no entry for {}", p.as_str()),
                    "map every provider (google, github, slack, linear, notion, jira) to its Nango integration key",
                );
            }
        }
        if platform.models.offered.is_empty() {
            bad(
                "models.offered",
                "models.offered is empty".into(),
                "offer at least one model",
            );
        }
        if platform.offered_model(&platform.models.default).is_none() {
            bad(
                "models.default",
                format!(
                    "models.default {} is not in models.offered",
                    platform.models.default
                ),
                "pick one of models.offered",
            );
        }
        let mut seen_models = std::collections::BTreeSet::new();
        for (i, m) in platform.models.offered.iter().enumerate() {
            if !seen_models.insert(&m.model_ref) {
                bad(
                    &format!("models.offered.{i}"),
                    format!("model {} is offered twice", m.model_ref),
                    "remove the duplicate",
                );
            }
            if m.model_ref.as_str().split('/').next() != Some("kimi") {
                bad(
                    &format!("models.offered.{i}.ref"),
                    format!("model {} is not served by the kimi provider", m.model_ref),
                    "the token proxy serves the kimi provider only; use kimi/<model>",
                );
            }
        }
        if platform.sops.age_recipients.is_empty() {
            bad(
                "sops.ageRecipients",
                "sops.ageRecipients is empty".into(),
                "list the cluster's age public keys (age1...)",
            );
        }
        for (i, r) in platform.sops.age_recipients.iter().enumerate() {
            if r.parse::<age::x25519::Recipient>().is_err() {
                bad(
                    &format!("sops.ageRecipients.{i}"),
                    format!("{r:?} is not an age X25519 recipient"),
                    "use the public key printed by age-keygen (age1...)",
                );
            }
        }
        if platform.tiers.is_empty() {
            bad(
                "tiers",
                "no tiers are defined".into(),
                "define at least one tier",
            );
        }
        for (name, t) in &platform.tiers {
            let at = format!("tiers.{name}");
            if t.cpu_request.millis() > t.cpu_limit.millis() {
                bad(
                    &at,
                    format!(
                        "tier {name}: cpuRequest {} exceeds cpuLimit {}",
                        t.cpu_request, t.cpu_limit
                    ),
                    "keep requests at or below limits",
                );
            }
            if t.memory_request.bytes() > t.memory_limit.bytes() {
                bad(
                    &at,
                    format!(
                        "tier {name}: memoryRequest {} exceeds memoryLimit {}",
                        t.memory_request, t.memory_limit
                    ),
                    "keep requests at or below limits",
                );
            }
            if t.requests_per_minute == 0
                || t.tokens_per_minute == 0
                || t.monthly_token_budget == 0
                || t.concurrent_requests == 0
            {
                bad(&at, format!("tier {name}: rate limits and budget must be positive"), "set requestsPerMinute, tokensPerMinute, monthlyTokenBudget and concurrentRequests above 0");
            }
            if let Some(price) = t.monthly_price.as_ref().filter(|p| !p.is_valid()) {
                bad(
                    &at,
                    format!(
                        "tier {name}: monthlyPrice {:?} {:?} is not a price",
                        price.amount, price.currency
                    ),
                    "write it like `monthlyPrice: {amount: \"29.90\", currency: EUR}`",
                );
            }
        }
        for (i, block) in platform.network.public_egress.ip_blocks.iter().enumerate() {
            for (j, cidr) in std::iter::once(&block.cidr)
                .chain(block.except.iter())
                .enumerate()
            {
                if parse_cidr(cidr).is_none() {
                    let at = if j == 0 {
                        format!("network.publicEgress.ipBlocks.{i}.cidr")
                    } else {
                        format!("network.publicEgress.ipBlocks.{i}.except.{}", j - 1)
                    };
                    bad(
                        &at,
                        format!("{cidr:?} is not a CIDR block"),
                        "write it like 10.0.0.0/8 or fc00::/7",
                    );
                }
            }
        }
        if platform.network.public_egress.ports.is_empty() {
            bad(
                "network.publicEgress.ports",
                "network.publicEgress.ports is empty".into(),
                "allow at least TCP 443",
            );
        }
        crate::services::check(&platform.services, &mut bad);
        problems.into_result(platform)
    }

    pub fn tier(&self, name: &TierName) -> Option<&Tier> {
        self.tiers.get(name)
    }

    pub fn offered_model(&self, model: &ModelRef) -> Option<&OfferedModel> {
        self.models.offered.iter().find(|m| &m.model_ref == model)
    }

    pub fn tier_names(&self) -> String {
        self.tiers
            .keys()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}
