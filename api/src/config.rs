//! Configuration: one typed [`Config`] layered from built-in defaults, an optional TOML file and
//! `OPENCLAW_API_*` environment variables (nested keys joined with `__`, e.g.
//! `OPENCLAW_API_REPO__REMOTE_URL`). This module owns the shape and the checks of the
//! configuration; it reads no secrets other than the ones it is pointed at.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole service configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// `sqlite://path?mode=rwc` (embedded default) or `postgres://...`.
    pub database_url: String,
    /// Database connection pool size.
    pub database_max_connections: u32,
    pub repo: RepoConfig,
    pub telegram: TelegramConfig,
    /// Callers allowed to use the api; tokens are stored as SHA-256 hashes only.
    pub admin_tokens: Vec<AdminToken>,
    /// Credentials of the token proxy for /internal/usage and /internal/budget (SHA-256 only).
    /// More than one lets a credential be rotated without downtime.
    pub proxy_credentials: Vec<ProxyCredential>,
    /// Development mode: relaxes checks that must hold in production (Telegram verification).
    pub dev_mode: bool,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_grace_seconds: u64,
}

/// The GitOps state repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// The api's own bare clone (created on first start).
    pub local_path: PathBuf,
    /// The repository Flux watches: a path, `file://`, `ssh://` or `https://` URL.
    pub remote_url: String,
    /// Branch to commit to.
    pub branch: String,
    /// Private key for SSH remotes.
    pub ssh_key_path: Option<PathBuf>,
    /// File holding an access token for HTTPS remotes (sent as the basic-auth password).
    pub token_path: Option<PathBuf>,
    /// User name sent with the HTTPS token.
    pub token_username: String,
    /// An age identity among the platform's recipients, used to re-encrypt a tenant's secrets when
    /// one of them changes (proxy token rotation). Without it, rotation is refused.
    pub age_identity_path: Option<PathBuf>,
    /// What a request does when the remote cannot be reached.
    pub on_unreachable: UnreachablePolicy,
    /// Pushes retried after a rejection (someone else pushed meanwhile) before giving up.
    pub push_retries: usize,
    /// How often the api fetches the remote to pick up merged pull requests.
    pub fetch_interval_seconds: u64,
    /// Most changes combined into one push.
    pub max_batch: usize,
    /// Committer identity of the api's commits (the author is the caller).
    pub committer_name: String,
    pub committer_email: String,
}

/// Behaviour when the git remote cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnreachablePolicy {
    /// Undo the change and answer 503: nothing is left half-written.
    Fail,
    /// Keep the change in the outbox, answer 202 and push when the remote is back.
    Queue,
}

/// How Telegram bot tokens are checked at provisioning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Base URL of the Bot API; the api calls `{base_url}/bot<token>/getMe`.
    pub base_url: String,
    /// `getme` asks Telegram; `skip` only checks the format and is refused outside dev mode.
    pub verification: TelegramVerification,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TelegramVerification {
    Getme,
    Skip,
}

/// One admin API token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Actor name: the author of the commits this caller makes.
    pub name: String,
    pub email: String,
    /// SHA-256 of the token, 64 lowercase hex characters.
    pub sha256: String,
}

/// One credential of the token proxy (docs/usage-events.md); never an admin token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyCredential {
    /// Which proxy deployment holds it (for the operator).
    pub name: String,
    /// SHA-256 of the credential, 64 lowercase hex characters.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            database_url: "sqlite://data/api.db?mode=rwc".into(),
            database_max_connections: 8,
            repo: RepoConfig {
                local_path: "data/api-clone.git".into(),
                remote_url: "data/state.git".into(),
                branch: "main".into(),
                ssh_key_path: None,
                token_path: None,
                token_username: "x-access-token".into(),
                age_identity_path: None,
                on_unreachable: UnreachablePolicy::Fail,
                push_retries: 8,
                fetch_interval_seconds: 15,
                max_batch: 64,
                committer_name: "openclaw-api".into(),
                committer_email: "api@openclaw.cloud".into(),
            },
            telegram: TelegramConfig {
                base_url: "https://api.telegram.org".into(),
                verification: TelegramVerification::Getme,
                timeout_seconds: 5,
            },
            admin_tokens: Vec::new(),
            proxy_credentials: Vec::new(),
            dev_mode: false,
            shutdown_grace_seconds: 20,
        }
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Config {
    /// Defaults, then the TOML file (if any), then `OPENCLAW_API_*` variables; checked.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("OPENCLAW_API_").split("__"));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.check()?;
        Ok(config)
    }

    /// Rules that span fields.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.telegram.verification == TelegramVerification::Skip && !self.dev_mode {
            return Err(ConfigError::Invalid(
                "telegram.verification = \"skip\" is only allowed in dev mode; production must verify bot tokens with getMe".into(),
            ));
        }
        for token in &self.admin_tokens {
            let ok = token.sha256.len() == 64
                && token
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "admin_tokens: the token of {:?} must be a SHA-256 as 64 lowercase hex characters",
                    token.name
                )));
            }
            if token.name.is_empty() || !token.email.contains('@') {
                return Err(ConfigError::Invalid(format!(
                    "admin_tokens: {:?} needs a name and an email (they become the commit author)",
                    token.name
                )));
            }
        }
        for credential in &self.proxy_credentials {
            if !is_sha256_hex(&credential.sha256) {
                return Err(ConfigError::Invalid(format!(
                    "proxy_credentials: the credential of {:?} must be a SHA-256 as 64 lowercase hex characters (printf %s \"$CREDENTIAL\" | openclaw-api hash-token)",
                    credential.name
                )));
            }
            if self
                .admin_tokens
                .iter()
                .any(|t| t.sha256 == credential.sha256)
            {
                return Err(ConfigError::Invalid(format!(
                    "proxy_credentials: the credential of {:?} is also an admin token; give the proxy its own credential",
                    credential.name
                )));
            }
        }
        if self.repo.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "repo.max_batch must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_verification_is_refused_outside_dev_mode() {
        let mut config = Config::default();
        config.telegram.verification = TelegramVerification::Skip;
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("only allowed in dev mode"), "{err}");
        config.dev_mode = true;
        config.check().unwrap();
    }

    #[test]
    fn admin_token_hash_must_be_hex() {
        let mut config = Config::default();
        config.admin_tokens.push(AdminToken {
            name: "ops".into(),
            email: "ops@example.com".into(),
            sha256: "not-a-hash".into(),
        });
        assert!(config.check().is_err());
    }

    #[test]
    fn proxy_credentials_are_hashes_and_not_admin_tokens() {
        let hash = "a".repeat(64);
        let mut config = Config::default();
        config.proxy_credentials.push(ProxyCredential {
            name: "proxy".into(),
            sha256: "not-a-hash".into(),
        });
        assert!(config.check().is_err());
        config.proxy_credentials[0].sha256 = hash.clone();
        config.check().unwrap();
        config.admin_tokens.push(AdminToken {
            name: "ops".into(),
            email: "ops@example.com".into(),
            sha256: hash,
        });
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("also an admin token"), "{err}");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\n[repo]\nbranch = \"prod\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.repo.branch, "prod");
        assert_eq!(config.repo.push_retries, 8);
    }
}
