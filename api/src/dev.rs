//! The one-command local platform: a data folder holding an SQLite database, a bare state repo
//! seeded from this checkout's templates/ and flux/, a generated age key pair and admin token,
//! and the configuration that ties them together.
//!
//! Seeding copies templates/ (with `sops.ageRecipients` replaced by the dev public key, so that
//! the dev identity can decrypt what the api writes) and flux/ except the folders the compiler
//! owns, then compiles with no tenants to produce those. The example tenants of tenants/ are not
//! copied: their secrets are encrypted for the real cluster's keys.

use std::io::Write;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use git2::{Repository, Signature};
use sha2::{Digest, Sha256};

use crate::config::{AdminToken, Config, TelegramVerification};
use crate::state_repo::Edit;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("writing the seed: {0}")]
    Repo(#[from] crate::state_repo::RepoError),
    #[error("compiling the seed: {0}")]
    Compile(String),
    #[error("{0}")]
    Seed(String),
}

/// Where the dev platform keeps its files.
pub struct DevPaths {
    pub root: PathBuf,
}

impl DevPaths {
    pub fn database(&self) -> PathBuf {
        self.root.join("api.db")
    }
    pub fn state_repo(&self) -> PathBuf {
        self.root.join("state.git")
    }
    pub fn api_clone(&self) -> PathBuf {
        self.root.join("api-clone.git")
    }
    pub fn identity(&self) -> PathBuf {
        self.root.join("age.agekey")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin-token")
    }
    /// The token proxy's credential for /internal/usage and /internal/budget.
    pub fn proxy_credential(&self) -> PathBuf {
        self.root.join("proxy-credential")
    }
    /// The tenant table as the dev token proxy reads it (exported from the state repo).
    pub fn tenant_table(&self) -> PathBuf {
        self.root.join("tenant-table")
    }
    /// The dev token proxy's usage journal.
    pub fn usage_journal(&self) -> PathBuf {
        self.root.join("proxy-usage")
    }
    /// The RSA key that signs the dev platform's access tokens.
    pub fn jwt_key(&self) -> PathBuf {
        self.root.join("jwt-signing-key.pem")
    }
    /// The dev platform bot's token (made up: Telegram does not know it).
    pub fn bot_token(&self) -> PathBuf {
        self.root.join("platform-bot-token")
    }
    /// The dev platform bot's webhook secret.
    pub fn bot_webhook_secret(&self) -> PathBuf {
        self.root.join("bot-webhook-secret")
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevError {
    let what = what.into();
    move |e| DevError::Io(what, e)
}

fn write_private(path: &Path, contents: &str) -> Result<(), DevError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path.display().to_string()))?;
    file.write_all(contents.as_bytes())
        .map_err(io(path.display().to_string()))
}

/// Creates the data folder on first use; returns the admin token and the age public key.
pub fn prepare(paths: &DevPaths, checkout: &Path) -> Result<(String, String), DevError> {
    std::fs::create_dir_all(&paths.root).map_err(io(paths.root.display().to_string()))?;
    if !paths.identity().exists() {
        let identity = age::x25519::Identity::generate();
        let text = format!(
            "# created by openclaw-api dev\n# public key: {}\n{}\n",
            identity.to_public(),
            identity.to_string().expose_secret()
        );
        write_private(&paths.identity(), &text)?;
    }
    let identity_text = std::fs::read_to_string(paths.identity()).map_err(io("age identity"))?;
    let recipient = identity_text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .ok_or_else(|| {
            DevError::Seed(format!(
                "{} has no public key line",
                paths.identity().display()
            ))
        })?
        .to_owned();
    if !paths.admin_token().exists() {
        let bytes: [u8; 32] = rand::random();
        write_private(&paths.admin_token(), &format!("{}\n", hex::encode(bytes)))?;
    }
    let token = std::fs::read_to_string(paths.admin_token())
        .map_err(io("admin token"))?
        .trim()
        .to_owned();
    if !paths.proxy_credential().exists() {
        let bytes: [u8; 32] = rand::random();
        write_private(
            &paths.proxy_credential(),
            &format!("{}\n", hex::encode(bytes)),
        )?;
    }
    if !paths.jwt_key().exists() {
        let pem = crate::auth::generate_private_key_pem()
            .map_err(|e| DevError::Seed(format!("generating the dev signing key: {e}")))?;
        write_private(&paths.jwt_key(), &pem)?;
    }
    // The platform bot's made-up token and its webhook secret.
    for (path, prefix) in [
        (paths.bot_token(), "700000001:AAD"),
        (paths.bot_webhook_secret(), ""),
    ] {
        if !path.exists() {
            let bytes: [u8; 20] = rand::random();
            write_private(&path, &format!("{prefix}{}\n", hex::encode(bytes)))?;
        }
    }
    if !paths.state_repo().join("HEAD").exists() {
        seed(&paths.state_repo(), checkout, &recipient)?;
    }
    Ok((token, recipient))
}

/// The configuration of the dev platform.
pub fn config(
    paths: &DevPaths,
    token: &str,
    telegram_base_url: Option<&str>,
    listen: std::net::SocketAddr,
) -> Config {
    let mut config = Config {
        dev_mode: true,
        listen,
        database_url: format!("sqlite://{}?mode=rwc", paths.database().display()).into(),
        ..Config::default()
    };
    config.repo.local_path = paths.api_clone();
    config.repo.remote_url = paths.state_repo().display().to_string().into();
    config.repo.age_identity_path = Some(paths.identity());
    config.auth.private_key_path = Some(paths.jwt_key());
    config.auth.key_id = "dev".into();
    config.auth.issuer = "openclaw-api-dev".into();
    // Sign-in without Telegram; Config::check refuses it unless `listen` is a loopback address.
    config.auth.dev_login = true;
    config.admin_tokens = vec![AdminToken {
        name: "dev-admin".into(),
        email: "dev-admin@localhost.localdomain".into(),
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
    }];
    // A proxy run beside the dev platform ships usage and polls the budget feed with this credential.
    if let Ok(credential) = std::fs::read_to_string(paths.proxy_credential()) {
        config.proxy_credentials = vec![crate::config::ProxyCredential {
            name: "dev-proxy".into(),
            sha256: hex::encode(Sha256::digest(credential.trim().as_bytes())),
        }];
    }
    // The platform bot, driven by posting updates to the webhook (the banner says how). Its
    // replies go to the Bot API stand-in when there is one; otherwise they wait in bot_outbox
    // (a closed local port: nothing leaves the machine).
    config.bot.token_path = Some(paths.bot_token());
    config.bot.webhook_secret_path = Some(paths.bot_webhook_secret());
    config.bot.api_base_url = telegram_base_url.unwrap_or("http://127.0.0.1:9").to_owned();
    match telegram_base_url {
        Some(url) => {
            config.telegram.base_url = url.to_owned();
            config.telegram.verification = TelegramVerification::Getme;
        }
        None => config.telegram.verification = TelegramVerification::Skip,
    }
    config
}

/// Replaces the `ageRecipients` list of platform.yaml with `recipient`, keeping everything else.
pub fn with_recipient(platform_yaml: &str, recipient: &str) -> Result<String, DevError> {
    let mut out = String::with_capacity(platform_yaml.len());
    let mut lines = platform_yaml.lines().peekable();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("ageRecipients:") && !replaced {
            let indent = line.len() - line.trim_start().len();
            while let Some(next) = lines.peek() {
                let t = next.trim_start();
                let next_indent = next.len() - t.len();
                if t.starts_with("- ") && next_indent >= indent {
                    lines.next();
                } else {
                    break;
                }
            }
            out.push_str(&format!("{}- {recipient}\n", " ".repeat(indent + 2)));
            replaced = true;
        }
    }
    if !replaced {
        return Err(DevError::Seed(
            "templates/platform.yaml has no sops.ageRecipients list".into(),
        ));
    }
    Ok(out)
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<Edit>) -> Result<(), DevError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir.display().to_string()))?
        .collect::<Result<_, _>>()
        .map_err(io(dir.display().to_string()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}/{name}");
        if compiler::is_generated_path(&format!("{path}/x")) || compiler::is_generated_path(&path) {
            continue;
        }
        let kind = entry.file_type().map_err(io(path.clone()))?;
        if kind.is_dir() {
            collect(&entry.path(), &path, out)?;
        } else if kind.is_file() {
            let contents = std::fs::read(entry.path()).map_err(io(path.clone()))?;
            out.push(Edit::Write { path, contents });
        }
    }
    Ok(())
}

/// Creates the bare state repo with one commit: templates/, flux/ and the compiled empty output.
pub fn seed(state_repo: &Path, checkout: &Path, recipient: &str) -> Result<(), DevError> {
    seed_with_tenants(state_repo, checkout, recipient, &[])
}

/// [`seed`] with `tenants` already in the repo (benchmarks start from thousands of tenants).
pub fn seed_with_tenants(
    state_repo: &Path,
    checkout: &Path,
    recipient: &str,
    tenants: &[compiler::TenantFiles],
) -> Result<(), DevError> {
    let mut files = Vec::new();
    collect(&checkout.join("templates"), "templates", &mut files)?;
    collect(&checkout.join("flux"), "flux", &mut files)?;
    for extra in compiler::layout::SPECS_DIR_FILES {
        let extra = format!("{}/{extra}", compiler::layout::SPECS_DIR);
        if let Ok(contents) = std::fs::read(checkout.join(&extra)) {
            files.push(Edit::Write {
                path: extra,
                contents,
            });
        }
    }
    for file in &mut files {
        if let Edit::Write { path, contents } = file {
            if path == compiler::platform::PLATFORM_PATH {
                let text = String::from_utf8_lossy(contents).into_owned();
                *contents = with_recipient(&text, recipient)?.into_bytes();
            }
        }
    }
    let platform_text = files
        .iter()
        .find_map(|f| match f {
            Edit::Write { path, contents } if path == compiler::platform::PLATFORM_PATH => {
                Some(String::from_utf8_lossy(contents).into_owned())
            }
            _ => None,
        })
        .ok_or_else(|| {
            DevError::Seed(format!(
                "{} is missing from the checkout",
                compiler::platform::PLATFORM_PATH
            ))
        })?;
    let platform = compiler::Platform::parse(compiler::platform::PLATFORM_PATH, &platform_text)
        .map_err(|d| DevError::Compile(d.to_string()))?;
    let templates = compiler::source::templates_from_dir(&checkout.join("templates"))
        .map_err(|d| DevError::Compile(d.to_string()))?;
    let output = compiler::compile(&platform, &templates, tenants)
        .map_err(|d| DevError::Compile(d.to_string()))?;
    for tenant in tenants {
        if let Some(spec) = &tenant.spec {
            files.push(Edit::Write {
                path: tenant.spec_path(),
                contents: spec.clone().into_bytes(),
            });
        }
        if let Some(secrets) = &tenant.secrets {
            files.push(Edit::Write {
                path: tenant.secrets_path(),
                contents: secrets.clone().into_bytes(),
            });
        }
    }
    for (path, contents) in output.files {
        files.push(Edit::Write {
            path,
            contents: contents.into_bytes(),
        });
    }
    write_initial_commit(
        state_repo,
        &files,
        "Seed the dev state repo from the checkout's templates/ and flux/",
    )
}

/// Initialises a bare repo at `path` whose `main` holds exactly `files`.
pub fn write_initial_commit(path: &Path, files: &[Edit], message: &str) -> Result<(), DevError> {
    let repo = Repository::init_bare(path)?;
    repo.set_head("refs/heads/main")?;
    let sig = Signature::now("openclaw-api dev", "dev@localhost.localdomain")?;
    crate::state_repo::write_root_commit(path, "refs/heads/main", files, &sig, message)?;
    Ok(())
}

/// What to run next, printed when the dev platform starts.
pub fn banner(paths: &DevPaths, config: &Config, token: &str, recipient: &str) -> String {
    let url = format!("http://{}", config.listen);
    let telegram = match config.telegram.verification {
        TelegramVerification::Skip => "SKIPPED: dev mode checks the bot token's format only (Telegram cannot be reached from here).\n  To verify tokens against a stand-in speaking the Bot API, restart with --telegram-base-url http://127.0.0.1:PORT".to_owned(),
        TelegramVerification::Getme => format!("getMe at {}", config.telegram.base_url),
    };
    format!(
        r#"openclaw-cloud dev platform
  api            {url}   (OpenAPI: {url}/openapi.json)
  database       {db}
  state repo     {repo}   (what Flux would watch; clone it to look)
  age identity   {identity}   (public key {recipient})
  admin token    {token}   (also in {token_file})
  proxy credential in {proxy_credential}   (the token proxy's api.credential: usage ingest, budget feed)
  Telegram       {telegram}

Provision a tenant:
  curl -sS -X POST {url}/v1/tenants \
    -H "Authorization: Bearer $(cat {token_file})" -H 'Content-Type: application/json' \
    -d '{{"name":"acme","owner":{{"email":"ada@example.com","telegramUserId":123456789}},"tier":"starter","telegramBotToken":"123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawx"}}'

Look at it:
  curl -sS {url}/v1/tenants/acme -H "Authorization: Bearer $(cat {token_file})"
  curl -sS {url}/v1/tenants/acme/history -H "Authorization: Bearer $(cat {token_file})"
  git clone -q {repo} /tmp/state && kubectl kustomize /tmp/state/{acme_output}

Sign in as a customer (dev login: no Telegram needed; only in dev mode on a loopback address):
  ACCESS=$(curl -sS -X POST {url}/v1/auth/dev-login -H 'Content-Type: application/json' \
    -d '{{"telegramId":123456789,"displayName":"Ada"}}' | sed 's/.*"accessToken":"\([^"]*\)".*/\1/')
  curl -sS {url}/v1/me -H "Authorization: Bearer $ACCESS"
  curl -sS -X POST {url}/v1/tenants -H "Authorization: Bearer $ACCESS" -H 'Content-Type: application/json' \
    -d '{{"name":"ada","owner":{{"email":"ada@example.com"}},"tier":"starter","telegramBotToken":"123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawy"}}'
  curl -sS {url}/v1/tenants -H "Authorization: Bearer $ACCESS"
  (access tokens verify with {url}/.well-known/jwks.json; signing key {jwt_key})

Talk to the platform bot without Telegram (docs/bot.md): post updates as Telegram would
  curl -sS -X POST {url}/telegram/webhook -H "X-Telegram-Bot-Api-Secret-Token: $(cat {bot_secret})" \
    -H 'Content-Type: application/json' \
    -d '{{"update_id":1,"message":{{"message_id":1,"date":0,"text":"/start","from":{{"id":123456789,"is_bot":false,"first_name":"Ada"}},"chat":{{"id":123456789,"type":"private"}}}}}}'
  Buttons are callback queries: {{"update_id":2,"callback_query":{{"id":"1","data":"lang:en","from":{{...}},"message":{{"message_id":1,"date":0,"chat":{{...}}}}}}}}
  The bot's replies: {bot_replies}
"#,
        acme_output = compiler::layout::output_dir("acme"),
        db = paths.database().display(),
        repo = paths.state_repo().display(),
        identity = paths.identity().display(),
        token_file = paths.admin_token().display(),
        proxy_credential = paths.proxy_credential().display(),
        jwt_key = paths.jwt_key().display(),
        bot_secret = paths.bot_webhook_secret().display(),
        bot_replies = if config.telegram.verification == TelegramVerification::Getme {
            format!("sent to the Bot API at {}", config.bot.api_base_url)
        } else {
            format!(
                "no Bot API here, so they wait in the outbox: sqlite3 {} \"SELECT chat_id, method, payload FROM bot_outbox ORDER BY created_at\"",
                paths.database().display()
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_recipient_list() {
        let yaml = "sops:\n  # keys\n  ageRecipients:\n    - age1aaa\n    - age1bbb\n\nflux:\n  shards: 2\n";
        let out = with_recipient(yaml, "age1dev").unwrap();
        assert_eq!(
            out,
            "sops:\n  # keys\n  ageRecipients:\n    - age1dev\n\nflux:\n  shards: 2\n"
        );
        assert!(with_recipient("flux: {}\n", "age1dev").is_err());
    }

    #[test]
    fn the_dev_platform_has_a_proxy_credential_and_never_prints_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPaths {
            root: dir.path().join("dev"),
        };
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let (token, recipient) = prepare(&paths, checkout).unwrap();
        let credential = std::fs::read_to_string(paths.proxy_credential()).unwrap();
        let credential = credential.trim();
        assert_eq!(credential.len(), 64);
        let config = config(&paths, &token, None, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.proxy_credentials.len(), 1);
        assert_eq!(
            config.proxy_credentials[0].sha256,
            hex::encode(Sha256::digest(credential.as_bytes()))
        );
        assert_ne!(
            config.proxy_credentials[0].sha256,
            config.admin_tokens[0].sha256
        );
        let shown = banner(&paths, &config, &token, &recipient);
        assert!(
            !shown.contains(credential),
            "the banner names the file, not the value"
        );
        assert!(shown.contains(&paths.proxy_credential().display().to_string()));
        // A second start keeps the same credential.
        prepare(&paths, checkout).unwrap();
        assert_eq!(
            std::fs::read_to_string(paths.proxy_credential())
                .unwrap()
                .trim(),
            credential
        );
    }
}
