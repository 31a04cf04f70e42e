//! Configuration: one typed [`Config`] layered from built-in defaults, an optional TOML file and
//! `OPENCLAW_API_*` environment variables (nested keys joined with `__`, e.g.
//! `OPENCLAW_API_REPO__REMOTE_URL`). This module owns the shape and the checks of the
//! configuration; it reads no secrets other than the ones it is pointed at.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The smallest `repo.max_packs`: two of the state repo's rollups (8 packs each) must fit beside a
/// new pack (`state_repo` checks the figure against its rollup fan-in at compile time).
pub const MIN_MAX_PACKS: usize = 16;

/// The whole service configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// `sqlite://path?mode=rwc` (embedded default) or `postgres://...`. A secret: a PostgreSQL URL may
    /// carry a password. Not serialised (the defaults layer gets it from [`default_database_url`]).
    #[serde(default = "default_database_url", skip_serializing)]
    pub database_url: SecretString,
    /// Database connection pool size.
    pub database_max_connections: u32,
    pub repo: RepoConfig,
    pub telegram: TelegramConfig,
    /// Callers allowed to use the api; tokens are stored as SHA-256 hashes only.
    pub admin_tokens: Vec<AdminToken>,
    /// Credentials of the token proxy for /internal/usage and /internal/budget (SHA-256 only).
    /// More than one lets a credential be rotated without downtime.
    pub proxy_credentials: Vec<ProxyCredential>,
    /// Customer sign-in and sessions.
    pub auth: AuthConfig,
    /// Development mode: relaxes checks that must hold in production (Telegram verification).
    /// Only `openclaw-api dev` turns it on: [`Config::load`] (what `serve` reads) refuses it.
    pub dev_mode: bool,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_grace_seconds: u64,
    /// The platform bot (docs/bot.md); off unless `bot.token_path` is set.
    pub bot: BotConfig,
    /// The cluster the status is read from (docs/cluster-status.md); off by default.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// Where the api reads the cluster's status from: read-only watches of the tenants' Flux
/// Kustomizations, Deployments and Pods.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `off` (default: every status says "no cluster connected"), `in-cluster` (the pod's
    /// service account), `kubeconfig` (`kubeconfig_path`) or `url` (`url`, no credentials: a
    /// local stand-in or `kubectl proxy`).
    pub mode: ClusterMode,
    /// The API server's base URL for `mode = "url"` (`http://127.0.0.1:8001`).
    pub url: Option<String>,
    /// The kubeconfig file for `mode = "kubeconfig"` (its current context).
    pub kubeconfig_path: Option<PathBuf>,
    /// The namespace of the tenants' Flux Kustomizations (`tenant-<name>`).
    pub flux_namespace: String,
    /// A tenant not running for this long is `unhealthy`.
    pub unhealthy_after_seconds: u64,
    /// How often the gauges of tenants by phase are recomputed.
    pub sweep_interval_seconds: u64,
    /// The Flux Receiver (generic-hmac) to call after each push, `http(s)://…/hook/<digest>`;
    /// unset: Flux finds new commits at its interval. Works with `mode = "off"` too.
    pub receiver_url: Option<String>,
    /// File holding the Receiver's token (its Secret's `token` key).
    pub receiver_token_path: Option<PathBuf>,
}

/// How the api reaches the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterMode {
    #[default]
    Off,
    InCluster,
    Kubeconfig,
    Url,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            mode: ClusterMode::Off,
            url: None,
            kubeconfig_path: None,
            flux_namespace: "flux-system".into(),
            unhealthy_after_seconds: 600,
            sweep_interval_seconds: 15,
            receiver_url: None,
            receiver_token_path: None,
        }
    }
}

impl ClusterConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match self.mode {
            ClusterMode::Url => {
                let url = self.url.as_deref().unwrap_or_default();
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.parse::<axum::http::Uri>().is_ok()
                    && !url.contains('@');
                if !ok {
                    return invalid(format!(
                        "cluster.url {url:?} must be an http:// or https:// URL without credentials \
                         (cluster.mode = \"url\"); use mode = \"kubeconfig\" for a cluster that needs them"
                    ));
                }
            }
            ClusterMode::Kubeconfig if self.kubeconfig_path.is_none() => {
                return invalid(
                    "cluster.mode = \"kubeconfig\" needs cluster.kubeconfig_path".into(),
                );
            }
            _ => {}
        }
        if self.flux_namespace.is_empty()
            || self.flux_namespace.len() > 63
            || !self
                .flux_namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return invalid(format!(
                "cluster.flux_namespace {:?} must be a Kubernetes namespace name (lowercase letters, digits, '-')",
                self.flux_namespace
            ));
        }
        if !(1..=7 * 24 * 3600).contains(&self.unhealthy_after_seconds) {
            return invalid("cluster.unhealthy_after_seconds must be 1 to 604800 (a week)".into());
        }
        match (&self.receiver_url, &self.receiver_token_path) {
            (None, None) => {}
            (Some(url), Some(_)) => {
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.parse::<axum::http::Uri>().is_err()
                {
                    return invalid(
                        "cluster.receiver_url must be the Receiver's http:// or https:// URL (…/hook/<digest>)".into(),
                    );
                }
            }
            _ => {
                return invalid(
                    "cluster.receiver_url and cluster.receiver_token_path go together: the Receiver's URL and the file with its token".into(),
                )
            }
        }
        if !(1..=3600).contains(&self.sweep_interval_seconds) {
            return invalid("cluster.sweep_interval_seconds must be 1 to 3600".into());
        }
        Ok(())
    }
}

/// The platform's Telegram bot: its token and webhook secret are read from files, never from the
/// configuration itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// File holding the platform bot's token (it may be the login bot's). Unset: no bot.
    pub token_path: Option<PathBuf>,
    /// File holding the webhook's secret token (1 to 256 of `A-Za-z0-9_-`), sent back by Telegram
    /// in `X-Telegram-Bot-Api-Secret-Token`.
    pub webhook_secret_path: Option<PathBuf>,
    /// The api's public base URL (`https://api.example.com`); the webhook is
    /// `{public_url}/telegram/webhook`.
    pub public_url: Option<String>,
    /// Call `setWebhook` at start (with the secret and the update kinds the bot reads).
    pub set_webhook: bool,
    /// Base URL of the Bot API; the bot calls `{api_base_url}/bot<token>/<method>`.
    pub api_base_url: String,
    /// Timeout of one Bot API call.
    pub timeout_seconds: u64,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            token_path: None,
            webhook_secret_path: None,
            public_url: None,
            set_webhook: false,
            api_base_url: "https://api.telegram.org".into(),
            timeout_seconds: 10,
        }
    }
}

/// The GitOps state repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// The api's own bare clone (created on first start).
    pub local_path: PathBuf,
    /// The repository Flux watches: a path, `file://`, `ssh://` or `https://` URL. A secret: an
    /// HTTPS URL may carry credentials (`https://user:token@host/…`); errors and logs show it
    /// through [`redact_url_credentials`]. Not serialised (the defaults layer gets it from
    /// [`default_remote_url`]).
    #[serde(default = "default_remote_url", skip_serializing)]
    pub remote_url: SecretString,
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
    /// Most pack files the api lets its clone's (and a remote on this machine's) `objects/pack/`
    /// hold: at this many, the next batch first removes rolled-up packs and rolls packs up until
    /// there is room (docs/api.md, "Pack rollups").
    pub max_packs: usize,
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

/// Customer sign-in (Telegram Login Widget, dev login), sessions (RS256 access tokens, rotating
/// refresh tokens) and the limits around them. Without a signing key, only admin tokens work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of the access tokens.
    pub issuer: String,
    /// `aud` of the access tokens.
    pub audience: String,
    /// `kid` of the current signing key.
    pub key_id: String,
    /// PEM file of the RSA private key (PKCS#8 or PKCS#1, at least 2048 bits) that signs access
    /// tokens.
    pub private_key_path: Option<PathBuf>,
    /// The same key as PEM text (for `OPENCLAW_API_AUTH__PRIVATE_KEY_PEM`); the path wins.
    #[serde(default, skip_serializing)]
    pub private_key_pem: Option<SecretString>,
    /// Public keys of earlier signing keys: tokens they signed are still accepted (and published
    /// in the JWKS) until they expire. Drop a key once its last token has.
    pub previous_keys: Vec<PreviousKey>,
    pub access_ttl_seconds: u64,
    pub refresh_ttl_seconds: u64,
    /// File holding the platform bot's token: the key of the Telegram Login Widget's signature.
    pub telegram_bot_token_path: Option<PathBuf>,
    /// Oldest accepted `auth_date` of Telegram login data.
    pub telegram_login_max_age_seconds: u64,
    /// Sign-in by Telegram id without Telegram. Only in dev mode, only on a loopback address.
    pub dev_login: bool,
    /// Customers with these Telegram ids are admins.
    pub admin_telegram_ids: Vec<i64>,
    /// Most tenants one customer may own (admins are not limited).
    pub max_tenants_per_customer: u32,
    /// Sign-in and refresh attempts per client address and minute.
    pub login_per_minute: u32,
    /// Self-service sign-ups per client address and hour.
    pub signups_per_hour: u32,
    /// Changes (commits, account edits) one customer may make per minute; admins are not
    /// limited.
    pub customer_writes_per_minute: u32,
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For` names the client. Others' is ignored.
    pub trusted_proxies: Vec<String>,
    /// Origins (`https://app.example.com`) allowed to send cookie-authenticated writes. Empty:
    /// only the api's own origin (the `Host` header).
    pub allowed_origins: Vec<String>,
    /// Where the browser sign-in (`GET /v1/auth/telegram/callback`) redirects after success.
    pub login_redirect: String,
}

/// The public key of an earlier signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    pub key_id: String,
    /// PEM file (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
    pub public_key_path: Option<PathBuf>,
    pub public_key_pem: Option<String>,
}

/// The default state repo: a bare repository beside the api's data.
pub fn default_remote_url() -> SecretString {
    SecretString::from("data/state.git")
}

/// `text` with the userinfo of every URL in it hidden (`https://user:token@host/x` becomes
/// `https://***@host/x`), for errors and logs that may quote a remote's URL.
pub fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The embedded default database.
pub fn default_database_url() -> SecretString {
    SecretString::from("sqlite://data/api.db?mode=rwc")
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "openclaw-api".into(),
            audience: "openclaw-cloud".into(),
            key_id: "main".into(),
            private_key_path: None,
            private_key_pem: None,
            previous_keys: Vec::new(),
            access_ttl_seconds: 15 * 60,
            refresh_ttl_seconds: 30 * 24 * 3600,
            telegram_bot_token_path: None,
            telegram_login_max_age_seconds: 3600,
            dev_login: false,
            admin_telegram_ids: Vec::new(),
            max_tenants_per_customer: 3,
            login_per_minute: 20,
            signups_per_hour: 10,
            customer_writes_per_minute: 30,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            login_redirect: "/".into(),
        }
    }
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
            database_url: default_database_url(),
            database_max_connections: 8,
            repo: RepoConfig {
                local_path: "data/api-clone.git".into(),
                remote_url: default_remote_url(),
                branch: "main".into(),
                ssh_key_path: None,
                token_path: None,
                token_username: "x-access-token".into(),
                age_identity_path: None,
                on_unreachable: UnreachablePolicy::Fail,
                push_retries: 8,
                fetch_interval_seconds: 15,
                max_batch: 64,
                max_packs: 32,
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
            auth: AuthConfig::default(),
            dev_mode: false,
            shutdown_grace_seconds: 20,
            bot: BotConfig::default(),
            cluster: ClusterConfig::default(),
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
        if config.dev_mode || config.auth.dev_login {
            return Err(ConfigError::Invalid(
                "dev_mode and auth.dev_login are set (in the configuration file or OPENCLAW_API_DEV_MODE / \
                 OPENCLAW_API_AUTH__DEV_LOGIN), but dev mode signs anyone in and skips checks production needs: \
                 only `openclaw-api dev` turns it on. Remove them to run `serve`, or run `openclaw-api dev`"
                    .into(),
            ));
        }
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
        self.check_auth()?;
        self.check_bot()?;
        self.cluster.check()?;
        if self.repo.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "repo.max_batch must be at least 1".into(),
            ));
        }
        if self.repo.max_packs < MIN_MAX_PACKS {
            return Err(ConfigError::Invalid(format!(
                "repo.max_packs is {}; it must be at least {} (the packs two rollups take and make); \
                 raise it or leave it out (default 32)",
                self.repo.max_packs,
                MIN_MAX_PACKS
            )));
        }
        Ok(())
    }

    fn check_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if auth.dev_login {
            if !self.dev_mode {
                return Err(ConfigError::Invalid(
                    "auth.dev_login signs anyone in without Telegram: it is only allowed in dev mode".into(),
                ));
            }
            if !self.listen.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "auth.dev_login is on but the api listens on {}, which is not a loopback address: \
                     listen on 127.0.0.1 or ::1, or turn dev_login off",
                    self.listen
                )));
            }
        }
        if !(60..=3600).contains(&auth.access_ttl_seconds) {
            return Err(ConfigError::Invalid(
                "auth.access_ttl_seconds must be 60 to 3600".into(),
            ));
        }
        if auth.refresh_ttl_seconds < auth.access_ttl_seconds {
            return Err(ConfigError::Invalid(
                "auth.refresh_ttl_seconds must be at least auth.access_ttl_seconds".into(),
            ));
        }
        if !(30..=86_400).contains(&auth.telegram_login_max_age_seconds) {
            return Err(ConfigError::Invalid(
                "auth.telegram_login_max_age_seconds must be 30 to 86400".into(),
            ));
        }
        if auth.login_per_minute == 0
            || auth.signups_per_hour == 0
            || auth.customer_writes_per_minute == 0
        {
            return Err(ConfigError::Invalid(
                "auth.login_per_minute, auth.signups_per_hour and auth.customer_writes_per_minute must be at least 1".into(),
            ));
        }
        if auth.key_id.is_empty() || auth.previous_keys.iter().any(|k| k.key_id == auth.key_id) {
            return Err(ConfigError::Invalid(
                "auth.key_id must be set and differ from every auth.previous_keys key_id".into(),
            ));
        }
        for (i, net) in auth.trusted_proxies.iter().enumerate() {
            parse_net(net).map_err(|m| {
                ConfigError::Invalid(format!("auth.trusted_proxies[{i}] ({net:?}): {m}"))
            })?;
        }
        for (i, origin) in auth.allowed_origins.iter().enumerate() {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/');
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "auth.allowed_origins[{i}] ({origin:?}) must be scheme://host[:port] with no path"
                )));
            }
        }
        Ok(())
    }

    fn check_bot(&self) -> Result<(), ConfigError> {
        let bot = &self.bot;
        if bot.token_path.is_none() {
            return Ok(());
        }
        if bot.webhook_secret_path.is_none() {
            return Err(ConfigError::Invalid(
                "bot.token_path is set but bot.webhook_secret_path is not: the webhook must be authenticated; \
                 write a random secret (openssl rand -hex 32) to a file and point bot.webhook_secret_path at it"
                    .into(),
            ));
        }
        let plain_http_ok = self.dev_mode;
        if bot.set_webhook {
            let Some(url) = &bot.public_url else {
                return Err(ConfigError::Invalid(
                    "bot.set_webhook is on but bot.public_url is not set: Telegram needs the api's public https:// base URL".into(),
                ));
            };
            if !(url.starts_with("https://") || (plain_http_ok && url.starts_with("http://")))
                || url.ends_with('/')
            {
                return Err(ConfigError::Invalid(format!(
                    "bot.public_url ({url:?}) must be https://host[:port][/path] without a trailing slash (Telegram only calls https webhooks)"
                )));
            }
        }
        let base = &bot.api_base_url;
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.ends_with('/') {
            return Err(ConfigError::Invalid(format!(
                "bot.api_base_url ({base:?}) must be an http(s) base URL without a trailing slash, like https://api.telegram.org"
            )));
        }
        if !(1..=120).contains(&bot.timeout_seconds) {
            return Err(ConfigError::Invalid(
                "bot.timeout_seconds must be 1 to 120".into(),
            ));
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// A CIDR (`10.0.0.0/8`) or a single address.
pub fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    text.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| "not an IP address or CIDR".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn dev_login_needs_dev_mode_and_loopback() {
        let mut config = Config::default();
        config.auth.dev_login = true;
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("only allowed in dev mode"), "{err}");
        config.dev_mode = true;
        config.check().unwrap();
        config.listen = "0.0.0.0:8080".parse().unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        config.listen = "[::1]:8080".parse().unwrap();
        config.check().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own error type, in a test
    fn secrets_are_not_printed() {
        let mut config = Config::default();
        config.auth.private_key_pem = Some("-----BEGIN PRIVATE KEY-----".into());
        config.database_url = "postgres://api:hunter2-db-password@db:5432/api".into();
        config.repo.remote_url =
            "https://x-access-token:ghp_hunter3@git.example.com/state.git".into();
        let shown = format!("{config:?}");
        assert!(!shown.contains("BEGIN PRIVATE KEY"), "{shown}");
        assert!(!shown.contains("hunter2-db-password"), "{shown}");
        assert!(!shown.contains("ghp_hunter3"), "{shown}");
        // The database URL comes in through every layer, the environment included, and stays hidden.
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "OPENCLAW_API_DATABASE_URL",
                "postgres://api:hunter2-db-password@db:5432/api",
            );
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.database_url.expose_secret(),
                "postgres://api:hunter2-db-password@db:5432/api"
            );
            assert!(!format!("{config:?}").contains("hunter2"));
            Ok(())
        });
        // So does the remote's URL, from a file as from the environment.
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "api.toml",
                "[repo]\nremote_url = \"https://bot:ghp_hunter3@git.example.com/state.git\"\n",
            )?;
            let config =
                Config::load(Some(std::path::Path::new("api.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                config.repo.remote_url.expose_secret(),
                "https://bot:ghp_hunter3@git.example.com/state.git"
            );
            assert!(!format!("{config:?}").contains("ghp_hunter3"));
            jail.set_env(
                "OPENCLAW_API_REPO__REMOTE_URL",
                "https://bot:ghp_hunter4@git.example.com/state.git",
            );
            let config =
                Config::load(Some(std::path::Path::new("api.toml"))).map_err(|e| e.to_string())?;
            assert!(config
                .repo
                .remote_url
                .expose_secret()
                .contains("ghp_hunter4"));
            assert!(!format!("{config:?}").contains("ghp_hunter4"));
            Ok(())
        });
        // Without one, the default stays.
        assert_eq!(
            Config::default().repo.remote_url.expose_secret(),
            "data/state.git"
        );
    }

    #[test]
    fn url_credentials_are_redacted_in_text() {
        assert_eq!(
            redact_url_credentials(
                "failed to push to https://bot:ghp_secret@git.example.com/state.git: 401"
            ),
            "failed to push to https://***@git.example.com/state.git: 401"
        );
        assert_eq!(
            redact_url_credentials("'ssh://git@host:22/x' and http://u:p@a/ then http://plain/"),
            "'ssh://***@host:22/x' and http://***@a/ then http://plain/"
        );
        // A password holding '@' is hidden whole.
        assert_eq!(
            redact_url_credentials("https://u:p@ss@host"),
            "https://***@host"
        );
        assert_eq!(redact_url_credentials("no url here"), "no url here");
        assert_eq!(redact_url_credentials("data/state.git"), "data/state.git");
    }

    #[test]
    fn trusted_proxies_must_parse() {
        let mut config = Config::default();
        config.auth.trusted_proxies = vec!["10.0.0.0/8".into(), "127.0.0.1".into()];
        config.check().unwrap();
        config.auth.trusted_proxies.push("proxy.local".into());
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("trusted_proxies[2]"), "{err}");
    }

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
    fn bot_needs_a_webhook_secret_and_an_https_url() {
        let mut config = Config::default();
        config.bot.token_path = Some("bot-token".into());
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("bot.webhook_secret_path"), "{err}");
        config.bot.webhook_secret_path = Some("webhook-secret".into());
        config.check().unwrap();
        config.bot.set_webhook = true;
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("bot.public_url"), "{err}");
        config.bot.public_url = Some("http://api.example.com".into());
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("https"), "{err}");
        config.bot.public_url = Some("https://api.example.com".into());
        config.check().unwrap();
        config.bot.api_base_url = "api.telegram.org/".into();
        assert!(config.check().is_err());
    }

    #[test]
    fn loading_refuses_dev_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.toml");
        for text in ["dev_mode = true\n", "[auth]\ndev_login = true\n"] {
            std::fs::write(&file, text).unwrap();
            let err = Config::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("only `openclaw-api dev`"), "{err}");
        }
    }

    #[test]
    fn a_pack_bound_below_two_rollups_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.toml");
        std::fs::write(&file, "[repo]\nmax_packs = 3\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("repo.max_packs is 3") && err.contains("at least 16"),
            "{err}"
        );
        std::fs::write(&file, "[repo]\nmax_packs = 16\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().repo.max_packs, 16);
        assert_eq!(Config::default().repo.max_packs, 32);
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
