//! Configuration: one TOML file plus `PROXY_`-prefixed environment variables that override it.
//!
//! This module owns the shape of the configuration and its defaults. Nested keys are reached from the
//! environment with a double underscore: `PROXY_UPSTREAMS__OPENAI__API_KEY` sets `upstreams.openai.api_key`.
//! Secrets are held as [`SecretString`] so that neither `Debug` nor an error message can print them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("invalid proxy configuration: {0}")]
pub struct ConfigError(String);

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory holding the tenant table: `*.json` shards as mounted, or the compiler's ConfigMap files
    /// (`flux/platform/tenant-table/*.yaml` of a state repo checkout).
    pub table_dir: PathBuf,
    /// How often the table directory is checked for changes.
    #[serde(default = "default_reload_interval_ms")]
    pub table_reload_interval_ms: u64,
    pub upstreams: Upstreams,
    #[serde(default)]
    pub nango: Option<NangoConfig>,
    #[serde(default)]
    pub api: Option<ApiConfig>,
    #[serde(default)]
    pub limits: RequestLimits,
    #[serde(default)]
    pub usage: UsageConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstreams {
    /// The OpenAI-compatible upstream (Moonshot) behind /v1/chat/completions.
    pub openai: Option<Upstream>,
    /// The Anthropic-compatible upstream (Kimi Code) behind /v1/messages.
    pub anthropic: Option<Upstream>,
    /// Said in the 502 that a call to an unconfigured upstream gets, e.g. which option to set (the dev
    /// platform names its own). With it the proxy may start without any upstream.
    #[serde(default)]
    pub unconfigured_hint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Root URL to which `/v1/...` is appended, e.g. `https://api.moonshot.ai`.
    pub base_url: String,
    /// The platform key sent upstream in place of the tenant's token.
    pub api_key: SecretString,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NangoConfig {
    /// Nango's base URL; connection calls go to `{base_url}/proxy/<path>`.
    pub base_url: String,
    pub secret_key: SecretString,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The api's base URL; the proxy calls `{base_url}/internal/usage` and `{base_url}/internal/budget`.
    pub base_url: String,
    /// The proxy's own credential for the api's internal endpoints.
    pub credential: SecretString,
    /// How often the budget feed is polled; 0 turns the feed off.
    #[serde(default = "default_budget_poll_ms")]
    pub budget_poll_interval_ms: u64,
}

/// Limits on requests and on the proxy's own resources.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time allowed to connect to an upstream.
    pub connect_timeout_ms: u64,
    /// Time allowed until an upstream's response headers arrive; past it the caller gets 504.
    pub upstream_timeout_ms: u64,
    /// Longest silence allowed between two reads of an upstream body (streams included).
    pub upstream_read_timeout_ms: u64,
    /// Idle connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// Upstream requests (LLM and Nango) in flight at once, across all tenants: the bound on the
    /// connection pool. A request that finds no free slot within `connect_timeout_ms` gets 503.
    pub max_upstream_connections: usize,
    /// How long shutdown waits for in-flight requests and streams.
    pub shutdown_grace_ms: u64,
    /// Tokens reserved for a request that names no max_tokens, on top of its estimated input.
    pub default_output_estimate: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            connect_timeout_ms: 5_000,
            upstream_timeout_ms: 120_000,
            upstream_read_timeout_ms: 120_000,
            pool_max_idle_per_host: 256,
            max_upstream_connections: 4096,
            shutdown_grace_ms: 30_000,
            default_output_estimate: 1_024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Usage events held in memory while the api is slow or down; past it events go to the log.
    pub buffer_size: usize,
    /// Events sent in one POST.
    pub batch_size: usize,
    /// Longest wait before a partial batch is sent.
    pub flush_interval_ms: u64,
    /// First retry delay; doubles per failure up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Time allowed for one usage POST.
    pub request_timeout_ms: u64,
    /// Directory of the usage journal (proxy::journal) on the pod's own volume: with it, usage
    /// survives a kill of the process. One directory per replica. Used only with `api`.
    pub journal_dir: Option<PathBuf>,
    /// Bound on the journal's files together; past it events are buffered in memory only.
    pub journal_max_bytes: u64,
    /// Size at which the journal starts a new segment file.
    pub journal_segment_bytes: u64,
    /// How often the journal is synced to disk (fdatasync): what a crash of the machine (not of the
    /// process) can lose. 0 syncs every event before its response ends.
    pub journal_fsync_interval_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            buffer_size: 100_000,
            batch_size: 500,
            flush_interval_ms: 1_000,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            request_timeout_ms: 10_000,
            journal_dir: None,
            journal_max_bytes: 256 * 1024 * 1024,
            journal_segment_bytes: 8 * 1024 * 1024,
            journal_fsync_interval_ms: 1_000,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_reload_interval_ms() -> u64 {
    1_000
}
fn default_budget_poll_ms() -> u64 {
    2_000
}

impl Config {
    /// Reads `file` (if given) and then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "configuration file {} does not exist",
                    file.display()
                )));
            }
            fig = fig.merge(Toml::file(file));
        }
        // PROXY_CONFIG and PROXY_LOG belong to the binary (file path, log filter), not to the configuration.
        let env = Env::prefixed("PROXY_")
            .filter(|key| key != "config" && key != "log")
            .split("__");
        Self::from_figment(fig.merge(env))
    }

    /// Parses a configuration from TOML text alone (no environment); used by tests and the bench.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        // figment errors name the key and the source, never the value of a secret.
        let cfg: Config = fig.extract().map_err(|e| ConfigError(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.upstreams.openai.is_none()
            && self.upstreams.anthropic.is_none()
            && self.upstreams.unconfigured_hint.is_none()
        {
            return Err(ConfigError(
                "configure at least one of upstreams.openai and upstreams.anthropic".into(),
            ));
        }
        let urls = [
            self.upstreams
                .openai
                .as_ref()
                .map(|u| ("upstreams.openai.base_url", &u.base_url)),
            self.upstreams
                .anthropic
                .as_ref()
                .map(|u| ("upstreams.anthropic.base_url", &u.base_url)),
            self.nango.as_ref().map(|n| ("nango.base_url", &n.base_url)),
            self.api.as_ref().map(|a| ("api.base_url", &a.base_url)),
        ];
        for (key, url) in urls.into_iter().flatten() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "{key} must start with http:// or https://, got {url:?}"
                )));
            }
        }
        if self.usage.buffer_size == 0 || self.usage.batch_size == 0 {
            return Err(ConfigError(
                "usage.buffer_size and usage.batch_size must be greater than 0".into(),
            ));
        }
        if self.usage.journal_dir.is_some()
            && (self.usage.journal_segment_bytes == 0
                || self.usage.journal_max_bytes < self.usage.journal_segment_bytes)
        {
            return Err(ConfigError(
                "usage.journal_segment_bytes must be greater than 0 and at most usage.journal_max_bytes".into(),
            ));
        }
        if self.limits.max_upstream_connections == 0 {
            return Err(ConfigError(
                "limits.max_upstream_connections must be greater than 0".into(),
            ));
        }
        if self.limits.max_body_bytes == 0 {
            return Err(ConfigError(
                "limits.max_body_bytes must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A base URL without its trailing slash, so that paths can be appended.
pub fn trim_base(url: &str) -> &str {
    url.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const MINIMAL: &str = r#"
table_dir = "/etc/tenants"
[upstreams.openai]
base_url = "https://api.moonshot.ai"
api_key = "sk-platform-secret"
"#;

    #[test]
    fn minimal_file_gets_defaults() {
        let cfg = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(cfg.listen.port(), 8080);
        assert_eq!(cfg.limits.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(cfg.usage.buffer_size, 100_000);
        assert_eq!(
            cfg.upstreams
                .openai
                .as_ref()
                .unwrap()
                .api_key
                .expose_secret(),
            "sk-platform-secret"
        );
        assert!(!format!("{cfg:?}").contains("sk-platform-secret"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("proxy.toml", MINIMAL)?;
            jail.set_env("PROXY_UPSTREAMS__OPENAI__API_KEY", "sk-from-env");
            jail.set_env("PROXY_LIMITS__MAX_BODY_BYTES", "1000");
            jail.set_env("PROXY_LOG", "warn");
            jail.set_env("PROXY_CONFIG", "proxy.toml");
            let cfg = Config::load(Some(Path::new("proxy.toml"))).unwrap();
            assert_eq!(
                cfg.upstreams
                    .openai
                    .as_ref()
                    .unwrap()
                    .api_key
                    .expose_secret(),
                "sk-from-env"
            );
            assert_eq!(cfg.limits.max_body_bytes, 1000);
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_reported_without_secrets() {
        let err =
            Config::from_toml(&MINIMAL.replace("https://api.moonshot.ai", "ftp://x")).unwrap_err();
        assert!(
            err.to_string().contains("upstreams.openai.base_url"),
            "{err}"
        );
        let err = Config::from_toml(&format!("{MINIMAL}\nbogus = 1\n")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(!err.to_string().contains("sk-platform-secret"));
    }
}
