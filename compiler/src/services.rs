//! The `services` section of templates/platform.yaml: what the platform itself runs (the api, the token
//! proxy, Nango, PostgreSQL through CloudNativePG, the operators, the public entry), with every image and chart
//! version pinned here and nowhere else. [`crate::platform_render`] turns it into `flux/platform/`.
//! This module owns the shape and the checks; it renders nothing.

use crate::quantity::{Cpu, Memory};
use crate::spec::ImageRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The oldest Nango server accepted: earlier releases lack fixes the proxy's connection calls rely on.
pub const MIN_NANGO_VERSION: (u64, u64, u64) = (0, 69, 15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Services {
    pub api: Api,
    pub token_proxy: TokenProxyService,
    pub nango: NangoService,
    pub postgres: Postgres,
    pub operators: Operators,
    pub entry: Entry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    pub cpu_request: Cpu,
    pub cpu_limit: Cpu,
    pub memory_request: Memory,
    pub memory_limit: Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Api {
    /// The `openclaw-api` image (an output of flake.nix).
    pub image: ImageRef,
    pub replicas: i32,
    pub port: u16,
    /// The image's unprivileged user and group id.
    pub uid: i64,
    pub resources: Resources,
    /// The state repository the api clones, commits to and pushes.
    pub state_repo: StateRepo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateRepo {
    pub remote_url: String,
    pub branch: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenProxyService {
    /// The `token-proxy` image (an output of flake.nix).
    pub image: ImageRef,
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// The HorizontalPodAutoscaler's CPU target, percent of the request.
    pub target_cpu_utilization: i32,
    pub uid: i64,
    pub resources: Resources,
    /// Base URLs of the LLM upstreams (the keys are in the proxy's Secret).
    pub upstreams: Upstreams,
    /// Who may scrape /metrics: the monitoring namespace and its scraper's pod labels.
    pub metrics_scraper: PeerPods,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upstreams {
    /// Kimi Code (Anthropic Messages API), behind /v1/messages.
    pub anthropic: String,
    /// Moonshot (OpenAI chat completions), behind /v1/chat/completions.
    pub openai: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerPods {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NangoService {
    /// The Nango server image, `nangohq/nango-server:hosted-<version>`, at least [`MIN_NANGO_VERSION`].
    pub image: ImageRef,
    pub replicas: i32,
    pub port: u16,
    pub uid: i64,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Postgres {
    /// The PostgreSQL operand image CloudNativePG runs.
    pub image: ImageRef,
    /// Instances per cluster (one primary, the rest streaming replicas).
    pub instances: u32,
    pub storage: Memory,
    pub backups: Backups,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backups {
    /// Object store prefix; each cluster writes below it in a folder of its own name.
    pub destination_path: String,
    /// S3 endpoint, for stores other than AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// How long base backups and WAL are kept (CloudNativePG syntax: 30d, 4w).
    pub retention_policy: String,
    /// Base backup schedule (six fields: seconds first).
    pub schedule: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operators {
    pub cloudnative_pg: Chart,
    pub cert_manager: Chart,
}

/// A Helm chart at a pinned version, installed by a Flux HelmRelease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Chart {
    pub repository: String,
    pub chart: String,
    pub version: String,
    /// The namespace the operator runs in.
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Entry {
    /// The cluster's Gateway API implementation.
    pub gateway_class_name: String,
    pub hosts: Hosts,
    pub acme: Acme,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hosts {
    pub dashboard: String,
    pub api: String,
    pub webhooks: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Acme {
    pub email: String,
    pub server: String,
}

/// The numeric version of a Nango server image tag (`hosted-0.69.15`, `0.69.15`).
pub fn nango_version(image: &ImageRef) -> Option<(u64, u64, u64)> {
    let tag = image.as_str().rsplit_once(':')?.1;
    let version = tag.strip_prefix("hosted-").unwrap_or(tag);
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').count() >= 2
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks the section, reporting each problem through `bad(path in the file, message, hint)`.
pub fn check(services: &Services, bad: &mut impl FnMut(&str, String, &str)) {
    if services.api.replicas < 2 {
        bad(
            "services.api.replicas",
            format!("services.api.replicas is {}", services.api.replicas),
            "run at least 2 api replicas: the PodDisruptionBudget keeps one serving through a node drain",
        );
    }
    let proxy = &services.token_proxy;
    if proxy.min_replicas < 2 || proxy.max_replicas < proxy.min_replicas {
        bad(
            "services.tokenProxy.minReplicas",
            format!(
                "services.tokenProxy replicas {}..{} are not a range of at least 2",
                proxy.min_replicas, proxy.max_replicas
            ),
            "set minReplicas >= 2 (3 spreads over zones) and maxReplicas >= minReplicas",
        );
    }
    if !(1..=100).contains(&proxy.target_cpu_utilization) {
        bad(
            "services.tokenProxy.targetCpuUtilization",
            format!(
                "services.tokenProxy.targetCpuUtilization is {}",
                proxy.target_cpu_utilization
            ),
            "use a percentage from 1 to 100",
        );
    }
    for (at, url) in [
        (
            "services.tokenProxy.upstreams.anthropic",
            &proxy.upstreams.anthropic,
        ),
        (
            "services.tokenProxy.upstreams.openai",
            &proxy.upstreams.openai,
        ),
    ] {
        if !url.starts_with("https://") || url.ends_with('/') || url.contains(char::is_whitespace) {
            bad(
                at,
                format!("{at} {url:?} is not an https base URL without a trailing slash"),
                "write it like https://api.moonshot.ai",
            );
        }
    }
    match nango_version(&services.nango.image) {
        Some(v) if v >= MIN_NANGO_VERSION => {}
        _ => bad(
            "services.nango.image",
            format!(
                "services.nango.image {} is not a Nango server at 0.69.15 or later",
                services.nango.image
            ),
            "pin nangohq/nango-server:hosted-<version> with a version of 0.69.15 or later",
        ),
    }
    for (at, uid) in [
        ("services.api.uid", services.api.uid),
        ("services.tokenProxy.uid", proxy.uid),
        ("services.nango.uid", services.nango.uid),
    ] {
        if uid < 1 {
            bad(
                at,
                format!("{at} is {uid}"),
                "run as a non-root user id (>= 1)",
            );
        }
    }
    for (at, r) in [
        ("services.api.resources", &services.api.resources),
        ("services.tokenProxy.resources", &proxy.resources),
        ("services.nango.resources", &services.nango.resources),
    ] {
        if r.cpu_request.millis() > r.cpu_limit.millis()
            || r.memory_request.bytes() > r.memory_limit.bytes()
        {
            bad(
                at,
                format!("{at}: a request exceeds its limit"),
                "keep requests at or below limits",
            );
        }
    }
    let pg = &services.postgres;
    if pg.instances < 2 {
        bad(
            "services.postgres.instances",
            format!("services.postgres.instances is {}", pg.instances),
            "run at least 2 instances so that a failover has a replica to promote",
        );
    }
    if !pg.backups.destination_path.starts_with("s3://")
        && !pg.backups.destination_path.starts_with("gs://")
        && !pg.backups.destination_path.starts_with("https://")
    {
        bad(
            "services.postgres.backups.destinationPath",
            format!(
                "services.postgres.backups.destinationPath {:?} is not an object store URL",
                pg.backups.destination_path
            ),
            "write it like s3://bucket/prefix",
        );
    }
    if pg.backups.schedule.split_whitespace().count() != 6 {
        bad(
            "services.postgres.backups.schedule",
            format!(
                "services.postgres.backups.schedule {:?} does not have six fields",
                pg.backups.schedule
            ),
            "CloudNativePG schedules start with seconds: \"0 0 3 * * *\" is 03:00 every day",
        );
    }
    for (at, chart) in [
        (
            "services.operators.cloudnativePg",
            &services.operators.cloudnative_pg,
        ),
        (
            "services.operators.certManager",
            &services.operators.cert_manager,
        ),
    ] {
        let exact = chart.version.trim_start_matches('v');
        if exact.is_empty() || !exact.split('.').all(|p| p.parse::<u64>().is_ok()) {
            bad(
                &format!("{at}.version"),
                format!("{at}.version {:?} is not an exact version", chart.version),
                "pin an exact chart version like 0.29.0 (no ranges)",
            );
        }
        if !chart.repository.starts_with("https://") {
            bad(
                &format!("{at}.repository"),
                format!("{at}.repository {:?} is not an https URL", chart.repository),
                "use the chart repository's https URL",
            );
        }
    }
    let hosts = &services.entry.hosts;
    let mut seen = std::collections::BTreeSet::new();
    for (at, host) in [
        ("services.entry.hosts.dashboard", &hosts.dashboard),
        ("services.entry.hosts.api", &hosts.api),
        ("services.entry.hosts.webhooks", &hosts.webhooks),
    ] {
        if !is_dns_name(host) {
            bad(
                at,
                format!("{at} {host:?} is not a fully qualified DNS name"),
                "write a lowercase host name like api.example.com",
            );
        } else if !seen.insert(host) {
            bad(
                at,
                format!("{at} {host:?} is used twice"),
                "give the dashboard, the api and the webhooks a host each",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nango_versions_from_image_tags() {
        let image = |s: &str| ImageRef::parse(s).unwrap();
        assert_eq!(
            nango_version(&image("nangohq/nango-server:hosted-0.69.15")),
            Some((0, 69, 15))
        );
        assert_eq!(
            nango_version(&image("nangohq/nango-server:0.70.1")),
            Some((0, 70, 1))
        );
        assert_eq!(nango_version(&image("nangohq/nango-server:hosted")), None);
        assert_eq!(
            nango_version(&image("nangohq/nango-server:hosted-0.69.15.1")),
            None
        );
        assert!(
            nango_version(&image("nangohq/nango-server:hosted-0.69.14")).unwrap()
                < MIN_NANGO_VERSION
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("api.openclaw.cloud"));
        assert!(!is_dns_name("api"));
        assert!(!is_dns_name("API.example.com"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name("-a.example.com"));
        assert!(!is_dns_name("a.example.com\n"));
    }
}
