//! Harness for openclaw-cloud's end-to-end tests: starts the real api (in process on a random
//! port, or as the `openclaw-api` binary) against SQLite or a fresh PostgreSQL database, a bare
//! state repo seeded from this checkout, a dev age key and a Telegram Bot API stand-in, and reads
//! back what landed in git.
//!
//! [`pod`] runs a rendered pod's containers as the kubelet would, without a cluster; [`agent_pod`] runs the
//! real gateway that way, from a Telegram message to the agent's reply.
//!
//! Tests that need an outside tool (kubectl, PostgreSQL) fail when `CI=true` and the tool is
//! missing, and are skipped (with a `SKIP` line) otherwise: [`outside_tool`] decides.

pub mod agent_pod;
pub mod bot_api;
pub mod kube_api;
pub mod outside_tool;
pub mod pod;
pub mod ssh;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use age::secrecy::ExposeSecret;
use api::config::{AdminToken, Config, ProxyCredential, TelegramVerification, UnreachablePolicy};
use git2::{Oid, Repository};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The database behind the api.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Whether an outside requirement is met; fails the test under CI=true when it is not, and prints a
/// `SKIP` line otherwise ([`outside_tool::require`] with the install hint of `.ci/install-tools`).
pub fn require(what: &str, available: bool) -> bool {
    outside_tool::require(what, outside_tool::INSTALL_TOOLS, available)
}

/// Whether `kubectl` runs here (required in CI).
pub fn kubectl_available() -> bool {
    let ok = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    require("kubectl", ok)
}

/// The root of this checkout.
pub fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the checkout")
        .to_path_buf()
}

/// A PostgreSQL server URL (`E2E_POSTGRES_URL`, default the local trust-auth server).
pub fn postgres_admin_url() -> String {
    std::env::var("E2E_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates a fresh database for one test; None (skip) when PostgreSQL is not reachable outside CI.
pub async fn fresh_postgres() -> Option<String> {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await;
    if conn.is_err() {
        // The server may lack the `test` database; the `postgres` one always exists.
        if let Some((base, _)) = admin.rsplit_once('/') {
            if let Ok(c) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
                conn = Ok(c);
            }
        }
    }
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            outside_tool::require(
                &format!("PostgreSQL at {admin} ({e})"),
                "start PostgreSQL on 127.0.0.1:5432 with trust authentication, or set E2E_POSTGRES_URL",
                false,
            );
            return None;
        }
    };
    let name = format!("e2e_{}", hex::encode(rand::random::<[u8; 6]>()));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin);
    Some(format!("{base}/{name}"))
}

/// Drops a database made by [`fresh_postgres`].
pub async fn drop_postgres(url: &str) {
    use sqlx::Connection;
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    let admin = postgres_admin_url();
    let fallback = admin
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/postgres"))
        .unwrap_or_default();
    let conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => Ok(conn),
        Err(_) => sqlx::PgConnection::connect(&fallback).await,
    };
    if let Ok(mut conn) = conn {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// A database for one test: SQLite in `dir`, or a fresh PostgreSQL database; None (skip) when
/// PostgreSQL is not reachable outside CI.
pub async fn database_url(backend: Backend, dir: &Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!(
            "sqlite://{}?mode=rwc",
            dir.join("api.db").display()
        )),
        Backend::Postgres => fresh_postgres().await,
    }
}

/// A Telegram Bot API stand-in: getMe succeeds for the tokens in `accepted`.
pub struct TelegramStandIn {
    pub url: String,
    pub accepted: Arc<Mutex<HashSet<String>>>,
    /// Every token getMe was asked about.
    pub asked: Arc<Mutex<Vec<String>>>,
}

pub async fn telegram_stand_in() -> TelegramStandIn {
    use axum::extract::Path as AxPath;
    use axum::routing::get;
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (acc, ask) = (accepted.clone(), asked.clone());
    let app = axum::Router::new().route(
        "/{bot}/getMe",
        get(move |AxPath(bot): AxPath<String>| {
            let (acc, ask) = (acc.clone(), ask.clone());
            async move {
                let token = bot.strip_prefix("bot").unwrap_or_default().to_owned();
                ask.lock().unwrap().push(token.clone());
                if acc.lock().unwrap().contains(&token) {
                    let id: i64 = token.split(':').next().unwrap_or("0").parse().unwrap_or(0);
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(serde_json::json!({"ok": true, "result": {"id": id, "is_bot": true, "first_name": "Agent", "username": "agent_bot"}})),
                    )
                } else {
                    (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    TelegramStandIn {
        url: format!("http://{addr}"),
        accepted,
        asked,
    }
}

/// A well-formed bot token for bot `n`.
pub fn bot_token(n: u64) -> String {
    format!(
        "{}:AAH{}",
        100_000_000 + n,
        hex::encode(rand::random::<[u8; 16]>())
    )
}

/// Options of a test platform.
#[derive(Clone)]
pub struct Options {
    pub on_unreachable: UnreachablePolicy,
    pub fetch_interval_seconds: u64,
    /// Dev mode with the dev login on.
    pub dev_login: bool,
    pub login_per_minute: u32,
    pub signups_per_hour: u32,
    pub max_tenants_per_customer: u32,
    /// Changes one customer may make per minute.
    pub customer_writes_per_minute: u32,
    pub trusted_proxies: Vec<String>,
    /// Serve the state repo over git's smart HTTP protocol (`git http-backend`) behind basic
    /// auth with a token, as a hosted git service does, instead of as a path on this machine.
    pub http_remote: bool,
    /// `repo.max_packs`: the most pack files in the state repo's pack folders.
    pub max_packs: usize,
    /// `[cluster]`: off, or the stand-in's URL (`kube_api::KubeApi`).
    pub cluster: api::config::ClusterConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            on_unreachable: UnreachablePolicy::Fail,
            fetch_interval_seconds: 1,
            dev_login: false,
            login_per_minute: 1000,
            signups_per_hour: 1000,
            max_tenants_per_customer: 3,
            customer_writes_per_minute: 1000,
            trusted_proxies: Vec::new(),
            http_remote: false,
            max_packs: Config::default().repo.max_packs,
            cluster: api::config::ClusterConfig::default(),
        }
    }
}

/// An RSA signing key for access tokens, made once per test process (PKCS#8 PEM).
pub fn jwt_key_pem() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| api::auth::generate_private_key_pem().expect("generate an RSA key"))
}

/// A second, unrelated RSA key (PKCS#8 PEM): tokens it signs must be refused.
pub fn other_key_pem() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| api::auth::generate_private_key_pem().expect("generate an RSA key"))
}

/// A signed-in customer's tokens.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub customer_id: String,
}

/// A running api with its state repo, database and Telegram stand-in.
pub struct Platform {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub config: Config,
    pub admin_token: String,
    /// The token proxy's credential for /internal/usage and /internal/budget.
    pub proxy_credential: String,
    /// Contents of the dev age identity file (decrypts what the api writes).
    pub identity: String,
    pub telegram: TelegramStandIn,
    /// The platform bot's token: the key of the Telegram Login Widget's signatures.
    pub login_bot_token: String,
    pub base: String,
    pub http: reqwest::Client,
    /// The bare repository Flux would watch, on this machine.
    pub remote_dir: PathBuf,
    /// The smart-HTTP server in front of `remote_dir` (with `Options::http_remote`).
    pub git_server: Option<GitHttpServer>,
    running: Option<api::app::Running>,
}

impl Platform {
    /// Seeds a state repo and starts the api; None when the backend is not available (outside CI).
    pub async fn start(backend: Backend, options: Options) -> Option<Platform> {
        let dir = tempfile::tempdir().unwrap();
        let database_url = database_url(backend, dir.path()).await?;
        let (remote, identity_text) = seed_state_repo(dir.path());
        let admin_token = hex::encode(rand::random::<[u8; 32]>());
        let proxy_credential = hex::encode(rand::random::<[u8; 32]>());
        let telegram = telegram_stand_in().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: database_url.into(),
            ..Config::default()
        };
        config.repo.local_path = dir.path().join("api-clone.git");
        config.repo.remote_url = remote.display().to_string().into();
        let git_server = if options.http_remote {
            let token = hex::encode(rand::random::<[u8; 20]>());
            let server = GitHttpServer::start(dir.path(), "x-access-token", &token).await;
            std::fs::write(dir.path().join("git-token"), format!("{token}\n")).unwrap();
            config.repo.remote_url = format!("{}/state.git", server.url).into();
            config.repo.token_path = Some(dir.path().join("git-token"));
            config.repo.token_username = "x-access-token".into();
            Some(server)
        } else {
            None
        };
        config.repo.age_identity_path = Some(dir.path().join("age.agekey"));
        config.repo.on_unreachable = options.on_unreachable;
        config.repo.fetch_interval_seconds = options.fetch_interval_seconds;
        config.repo.max_packs = options.max_packs;
        config.telegram.base_url = telegram.url.clone();
        config.telegram.verification = TelegramVerification::Getme;
        config.admin_tokens = vec![AdminToken {
            name: "ops-admin".into(),
            email: "ops@example.com".into(),
            sha256: hex::encode(Sha256::digest(admin_token.as_bytes())),
        }];
        config.proxy_credentials = vec![ProxyCredential {
            name: "token-proxy".into(),
            sha256: hex::encode(Sha256::digest(proxy_credential.as_bytes())),
        }];
        let login_bot_token = format!("777000:AAL{}", hex::encode(rand::random::<[u8; 16]>()));
        std::fs::write(dir.path().join("login-bot-token"), &login_bot_token).unwrap();
        std::fs::write(dir.path().join("jwt.pem"), jwt_key_pem()).unwrap();
        config.auth.private_key_path = Some(dir.path().join("jwt.pem"));
        config.auth.key_id = "test-key".into();
        config.auth.telegram_bot_token_path = Some(dir.path().join("login-bot-token"));
        config.auth.dev_login = options.dev_login;
        config.dev_mode = options.dev_login;
        config.auth.login_per_minute = options.login_per_minute;
        config.auth.signups_per_hour = options.signups_per_hour;
        config.auth.max_tenants_per_customer = options.max_tenants_per_customer;
        config.auth.customer_writes_per_minute = options.customer_writes_per_minute;
        config.auth.trusted_proxies = options.trusted_proxies.clone();
        config.cluster = options.cluster.clone();
        config.check().unwrap();
        let mut platform = Platform {
            dir,
            backend,
            config,
            admin_token,
            proxy_credential,
            identity: identity_text,
            telegram,
            login_bot_token,
            base: String::new(),
            http: reqwest::Client::new(),
            remote_dir: remote,
            git_server,
            running: None,
        };
        platform.boot().await;
        Some(platform)
    }

    async fn boot(&mut self) {
        let running = api::app::start(self.config.clone(), std::future::pending())
            .await
            .expect("start the api");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.as_ref().expect("running").addr
    }

    /// Stops the api gracefully and starts it again on the same database and repo.
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
        self.boot().await;
    }

    /// Stops the api and drops the test database.
    pub async fn finish(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
        if self.backend == Backend::Postgres {
            drop_postgres(self.config.database_url.expose_secret()).await;
        }
    }

    /// Makes Telegram accept `token`.
    pub fn accept_token(&self, token: &str) {
        self.telegram
            .accepted
            .lock()
            .unwrap()
            .insert(token.to_owned());
    }

    /// Sends a request with the admin token; returns the status and the JSON body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a request with `token` as the bearer (None: no Authorization header).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The budget feed as a proxy polls it (asserting 200).
    pub async fn budget_feed(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/internal/budget", self.base))
            .bearer_auth(&self.proxy_credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Polls the budget feed until `tenant`'s entry (Null when absent) satisfies `done`: the feed
    /// is rebuilt in the background.
    pub async fn budget_entry_until(&self, tenant: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let body = self.budget_feed().await;
            let entry = body["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["tenant"] == tenant)
                .cloned()
                .unwrap_or(Value::Null);
            if done(&entry) {
                return entry;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "feed entry of {tenant} never matched: {entry}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Telegram Login Widget data for user `id`, signed with the platform bot's token. Login data is
    /// single use, and the widget signs each sign-in anew: when this user's data for `auth_date` was
    /// made before, the data is dated a second earlier, until it differs from every earlier call's.
    pub fn login_data(
        &self,
        id: i64,
        first_name: &str,
        auth_date: i64,
    ) -> std::collections::BTreeMap<String, String> {
        static ISSUED: std::sync::Mutex<std::collections::BTreeSet<(i64, i64)>> =
            std::sync::Mutex::new(std::collections::BTreeSet::new());
        let mut auth_date = auth_date;
        {
            let mut issued = ISSUED.lock().unwrap();
            while !issued.insert((id, auth_date)) {
                auth_date -= 1;
            }
        }
        let mut fields: std::collections::BTreeMap<String, String> = [
            ("id".to_owned(), id.to_string()),
            ("first_name".to_owned(), first_name.to_owned()),
            ("username".to_owned(), first_name.to_lowercase()),
            ("auth_date".to_owned(), auth_date.to_string()),
        ]
        .into();
        let secret = api::auth::telegram_secret(&self.login_bot_token);
        let hash = api::auth::telegram_hash(&fields, &secret);
        fields.insert("hash".to_owned(), hash);
        fields
    }

    /// Signs in through POST /v1/auth/telegram as Telegram user `id`.
    pub async fn login(&self, id: i64, first_name: &str) -> Session {
        let fields = self.login_data(id, first_name, api::auth::now_s());
        let (status, body) = self
            .call_as(
                None,
                reqwest::Method::POST,
                "/v1/auth/telegram",
                Some(serde_json::to_value(&fields).unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Session {
            access: body["accessToken"].as_str().unwrap().to_owned(),
            refresh: body["refreshToken"].as_str().unwrap().to_owned(),
            customer_id: body["customer"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// The provisioning body for tenant `name` with bot token `token`.
    pub fn provision_body(name: &str, token: &str) -> Value {
        serde_json::json!({
            "name": name,
            "owner": {"email": format!("{name}@example.com"), "telegramUserId": 4242},
            "tier": "starter",
            "telegramBotToken": token,
            "reason": format!("signup of {name}"),
        })
    }

    /// Provisions `name` with a fresh accepted token; returns (status, body, token).
    pub async fn provision(&self, name: &str) -> (StatusCode, Value, String) {
        let token = bot_token(rand::random::<u32>() as u64);
        self.accept_token(&token);
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/tenants",
                Some(Self::provision_body(name, &token)),
                None,
            )
            .await;
        (status, body, token)
    }

    pub fn remote_path(&self) -> PathBuf {
        self.remote_dir.clone()
    }

    /// The state repo Flux would watch.
    pub fn remote(&self) -> Repository {
        Repository::open_bare(self.remote_path()).unwrap()
    }

    pub fn head(&self) -> Oid {
        self.remote().refname_to_id("refs/heads/main").unwrap()
    }

    /// Opens the database the api uses.
    pub async fn store(&self) -> api::store::Store {
        api::store::Store::connect(self.config.database_url.expose_secret(), 2)
            .await
            .unwrap()
    }
}

/// The outbox's (pending, pushed) row counts once every pushed commit's row is marked: the
/// writer marks rows after it answers, in its next transaction, so a count read right after an
/// answer can still see them pending. Waits at most 10 s for no row to be pending.
pub async fn settled_outbox(store: &api::store::Store) -> (i64, i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let counts = store.outbox_counts().await.unwrap();
        if counts.0 == 0 || std::time::Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Writes a fresh dev age identity to `dir/age.agekey` and seeds a bare state repo at
/// `dir/state.git` from this checkout, encrypted to it; returns the repo's path and the identity
/// file's contents.
pub fn seed_state_repo(dir: &Path) -> (PathBuf, String) {
    let identity = age::x25519::Identity::generate();
    let identity_text = format!("{}\n", identity.to_string().expose_secret());
    std::fs::write(dir.join("age.agekey"), &identity_text).unwrap();
    let remote = dir.join("state.git");
    api::dev::seed(&remote, &checkout(), &identity.to_public().to_string())
        .expect("seed the state repo");
    (remote, identity_text)
}

/// Builds (if needed) and returns the `openclaw-api` binary of the running test's profile and
/// target folder, for tests that run the api as its own process.
pub fn api_binary() -> PathBuf {
    workspace_binary("api", "openclaw-api")
}

/// Builds (if needed) and returns the token proxy's binary, for tests that kill it.
pub fn proxy_binary() -> PathBuf {
    workspace_binary("proxy", "proxy")
}

/// Builds (if needed) and returns binary `bin` of `package` for the running test's profile and
/// target folder.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut build =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "-q", "-p", package, "--bin", bin, "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.current_dir(checkout()).status().unwrap();
    assert!(status.success(), "building {bin}");
    profile_dir.join(bin)
}

/// Writes `dir/api.toml` for the `openclaw-api` binary: listening on 127.0.0.1:`port`, its clone
/// at `dir/api-clone.git`, the remote given by `repo` (the `remote_url` line and whatever goes
/// with it, in TOML), fetching every second, checking bot tokens against the Telegram stand-in at
/// `telegram_url`, and `admin_token` as its one admin token (stored hashed). Returns its path.
pub fn write_binary_config(
    dir: &Path,
    port: u16,
    database_url: &str,
    repo: &str,
    telegram_url: &str,
    admin_token: &str,
) -> PathBuf {
    let config = dir.join("api.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
database_url = "{database_url}"
[repo]
local_path = "{clone}"
{repo}
fetch_interval_seconds = 1
[telegram]
base_url = "{telegram_url}"
verification = "getme"
[[admin_tokens]]
name = "ops-admin"
email = "ops@example.com"
sha256 = "{hash}"
"#,
            clone = dir.join("api-clone.git").display(),
            hash = hex::encode(Sha256::digest(admin_token.as_bytes())),
        ),
    )
    .unwrap();
    config
}

/// Runs `git -C dir <args>` as an SRE would (their name and email on commits).
pub fn sre_git(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=sre", "-c", "user.email=sre@example.com"])
        .args(args)
        .output()
        .unwrap()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every object id in the repository whose content contains `needle` (all blobs, trees, commits
/// of all history, reachable or not).
pub fn objects_containing(repo: &Repository, needle: &str) -> Vec<Oid> {
    let odb = repo.odb().unwrap();
    let mut ids = Vec::new();
    odb.foreach(|id| {
        ids.push(*id);
        true
    })
    .unwrap();
    ids.into_iter()
        .filter(|id| {
            let object = odb.read(*id).unwrap();
            object
                .data()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .collect()
}

/// Writes the files of `commit` under `dest` (for tools that want a folder).
pub fn export_tree(repo: &Repository, commit: Oid, dest: &Path) {
    let tree = repo.find_commit(commit).unwrap().tree().unwrap();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let path = dest.join(root).join(entry.name().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, repo.find_blob(entry.id()).unwrap().content()).unwrap();
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
}

/// Runs `kubectl kustomize dir`; the rendered YAML or the tool's error.
pub fn kustomize(dir: &Path) -> Result<String, String> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Reads a file of `commit`.
pub fn file_at(repo: &Repository, commit: Oid, path: &str) -> Option<String> {
    let tree = repo.find_commit(commit).ok()?.tree().ok()?;
    let entry = tree.get_path(Path::new(path)).ok()?;
    Some(String::from_utf8_lossy(repo.find_blob(entry.id()).ok()?.content()).into_owned())
}

/// Commits on the first-parent chain of `tip`, newest first; panics on a merge (history must be
/// linear).
pub fn linear_history(repo: &Repository, tip: Oid) -> Vec<git2::Commit<'_>> {
    let mut commits = Vec::new();
    let mut current = Some(repo.find_commit(tip).unwrap());
    while let Some(commit) = current {
        assert!(
            commit.parent_count() <= 1,
            "merge commit {} in the state repo",
            commit.id()
        );
        current = commit.parent(0).ok();
        commits.push(commit);
    }
    commits
}

/// Runs `git fsck --full` in `repo`; Err with the output when it reports a problem. Waits first
/// for background `git repack` runs on it (the api starts them; one may outlive a killed api), as
/// git's fsck itself cannot run beside a repack.
pub fn git_fsck(repo: &Path) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::process::Command::new("pgrep")
        .args(["-f", &format!("{} repack", repo.display())])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        if std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["fsck", "--full", "--strict"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// git's own smart-HTTP server (`git http-backend`, run as CGI per request) serving the bare
/// repositories of a folder, behind HTTP basic auth with one user and token: the protocol and
/// the 401 challenge of a hosted git service, so that the api's HTTPS remote code (credentials
/// callback, network push and fetch, rejected pushes) runs against a real git server.
pub struct GitHttpServer {
    pub url: String,
    /// Requests answered, with and without valid credentials.
    pub authorized: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct GitHttpState {
    root: PathBuf,
    username: String,
    expected: String,
    authorized: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl GitHttpServer {
    pub async fn start(root: &Path, username: &str, token: &str) -> GitHttpServer {
        use base64::Engine;
        let authorized = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let state = GitHttpState {
            root: root.to_path_buf(),
            username: username.to_owned(),
            expected: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{token}"))
            ),
            authorized: authorized.clone(),
            refused: refused.clone(),
        };
        let app = axum::Router::new()
            .fallback(git_http_backend)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        GitHttpServer {
            url,
            authorized,
            refused,
            task,
        }
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn git_http_backend(
    axum::extract::State(state): axum::extract::State<GitHttpState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    if given != state.expected.as_bytes() {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            [(
                axum::http::header::WWW_AUTHENTICATE,
                "Basic realm=\"state\"",
            )],
            "authentication required\n",
        )
            .into_response();
    }
    state.authorized.fetch_add(1, Ordering::Relaxed);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut command = std::process::Command::new("git");
    command
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", &state.username)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("git http-backend runs");
        let mut stdin = child.stdin.take().expect("piped");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&body);
        });
        let output = child.wait_with_output().expect("git http-backend finishes");
        writer.join().unwrap();
        output
    })
    .await
    .unwrap();
    // CGI output: header lines, an empty line, the body.
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)));
    let Some((at, gap)) = split else {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
            .into_response();
    };
    let mut response =
        axum::response::Response::new(axum::body::Body::from(out[at + gap..].to_vec()));
    for line in String::from_utf8_lossy(&out[..at]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split(' ')
                .next()
                .unwrap_or("500")
                .parse()
                .unwrap_or(500);
            *response.status_mut() = axum::http::StatusCode::from_u16(code).unwrap();
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            axum::http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// A tenant's proxy token, decrypted from the secrets file the api committed at the head.
pub fn proxy_token(p: &Platform, tenant: &str) -> String {
    let text = file_at(
        &p.remote(),
        p.head(),
        &compiler::layout::secrets_path(tenant),
    )
    .unwrap();
    let secret = compiler::sops::decrypt(&text, &p.identity).unwrap();
    secret.string_data()["proxy-token"].clone()
}

/// An OpenAI chat-completions stand-in (any model) that answers "hello from the stand-in" with 120
/// prompt and 30 completion tokens. Returns its address.
pub async fn openai_stand_in() -> SocketAddr {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|axum::Json(request): axum::Json<Value>| async move {
            axum::Json(serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the stand-in"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
