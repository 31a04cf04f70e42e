//! Harness for openclaw-cloud's end-to-end tests: starts the real api (in process on a random
//! port, or as the `openclaw-api` binary) against SQLite or a fresh PostgreSQL database, a bare
//! state repo seeded from this checkout, a dev age key and a Telegram Bot API stand-in, and reads
//! back what landed in git.
//!
//! Tests that need an outside tool (kubectl, PostgreSQL) fail when `CI=true` and the tool is
//! missing, and are skipped (with a message) otherwise.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether an outside requirement is met; panics in CI when it is not.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{what} is required in CI (CI=true) but is not available");
    }
    eprintln!("skipping: {what} is not available (set CI=true to make this a failure)");
    false
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
            require(&format!("PostgreSQL at {admin} ({e})"), false);
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            on_unreachable: UnreachablePolicy::Fail,
            fetch_interval_seconds: 1,
        }
    }
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
    pub base: String,
    pub http: reqwest::Client,
    running: Option<api::app::Running>,
}

impl Platform {
    /// Seeds a state repo and starts the api; None when the backend is not available (outside CI).
    pub async fn start(backend: Backend, options: Options) -> Option<Platform> {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("api.db").display()),
            Backend::Postgres => fresh_postgres().await?,
        };
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let identity_text = format!("{}\n", identity.to_string().expose_secret());
        std::fs::write(dir.path().join("age.agekey"), &identity_text).unwrap();
        let remote = dir.path().join("state.git");
        api::dev::seed(&remote, &checkout(), &recipient).expect("seed the state repo");
        let admin_token = hex::encode(rand::random::<[u8; 32]>());
        let proxy_credential = hex::encode(rand::random::<[u8; 32]>());
        let telegram = telegram_stand_in().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url,
            ..Config::default()
        };
        config.repo.local_path = dir.path().join("api-clone.git");
        config.repo.remote_url = remote.display().to_string();
        config.repo.age_identity_path = Some(dir.path().join("age.agekey"));
        config.repo.on_unreachable = options.on_unreachable;
        config.repo.fetch_interval_seconds = options.fetch_interval_seconds;
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
        config.check().unwrap();
        let mut platform = Platform {
            dir,
            backend,
            config,
            admin_token,
            proxy_credential,
            identity: identity_text,
            telegram,
            base: String::new(),
            http: reqwest::Client::new(),
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
            drop_postgres(&self.config.database_url).await;
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
        PathBuf::from(&self.config.repo.remote_url)
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
        api::store::Store::connect(&self.config.database_url, 2)
            .await
            .unwrap()
    }
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
