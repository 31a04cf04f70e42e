//! kill -9 in the middle of hundreds of provisions, then restart: every acknowledged change is in
//! git and the database, nothing is duplicated, `git fsck` is clean, and retries with the same
//! Idempotency-Keys finish the rest. Runs the real `openclaw-api` binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{git_fsck, linear_history, Backend, Platform};
use futures::StreamExt;
use reqwest::StatusCode;

fn start(binary: &Path, config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(binary)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "debug,sqlx=warn,hyper=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the api did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn crash_and_recover(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(database_url) = e2e::database_url(backend, dir.path()).await else {
        return;
    };
    let (remote, _) = e2e::seed_state_repo(dir.path());
    let telegram = e2e::telegram_stand_in().await;
    let admin_token = hex::encode(rand::random::<[u8; 32]>());
    let port = e2e::free_port();
    let config = e2e::write_binary_config(
        dir.path(),
        port,
        &database_url,
        &format!("remote_url = \"{}\"", remote.display()),
        &telegram.url,
        &admin_token,
    );
    let binary = e2e::api_binary();
    let log = dir.path().join("api.log");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let total = 300;
    let names: Vec<String> = (0..total).map(|i| format!("tenant-{i:03}")).collect();
    let tokens: Vec<String> = (0..total).map(|i| e2e::bot_token(i as u64)).collect();
    for token in &tokens {
        telegram.accepted.lock().unwrap().insert(token.clone());
    }
    let provision = |i: usize| {
        let http = http.clone();
        let base = base.clone();
        let admin_token = admin_token.clone();
        let body = Platform::provision_body(&names[i], &tokens[i]);
        let key = names[i].clone();
        async move {
            let response = http
                .post(format!("{base}/v1/tenants"))
                .bearer_auth(admin_token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await;
            match response {
                Ok(r) => {
                    let status = r.status();
                    (i, Some(status), r.text().await.unwrap_or_default())
                }
                Err(_) => (i, None, String::new()),
            }
        }
    };

    // Run 1: kill -9 once enough provisions were acknowledged.
    let child = Arc::new(Mutex::new(start(&binary, &config, &log)));
    wait_healthy(&http, &base).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let count = Arc::new(AtomicUsize::new(0));
    futures::stream::iter(0..total)
        .map(&provision)
        .buffer_unordered(16)
        .for_each(|(i, status, body)| {
            let (acked, count, child) = (acked.clone(), count.clone(), child.clone());
            let names = &names;
            async move {
                if status == Some(StatusCode::CREATED) {
                    acked.lock().unwrap().insert(names[i].clone());
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == 120 {
                        child.lock().unwrap().kill().unwrap(); // SIGKILL
                    }
                } else if let Some(status) = status {
                    panic!("{}: {status} {body}", names[i]);
                }
            }
        })
        .await;
    child.lock().unwrap().wait().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 120 && acked.len() < total,
        "killed in the middle: {} acknowledged",
        acked.len()
    );

    // Run 2: restart; the outbox replay makes git and the database agree.
    let mut child = start(&binary, &config, &log);
    wait_healthy(&http, &base).await;
    let repo = git2::Repository::open_bare(&remote).unwrap();
    let store = api::store::Store::connect(&database_url, 2).await.unwrap();
    let head = repo.refname_to_id("refs/heads/main").unwrap();
    let in_git = tenants_in(&repo, head);
    let in_db: BTreeSet<String> = store
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert!(
        acked.is_subset(&in_git),
        "every acknowledged provision is in git"
    );
    assert_eq!(
        in_git, in_db,
        "git and the database agree after the restart"
    );
    assert_eq!(
        e2e::settled_outbox(&store).await.0,
        0,
        "nothing left pending"
    );
    assert_once(&repo, head);
    git_fsck(&remote).expect("git fsck on the state repo");
    git_fsck(&dir.path().join("api-clone.git")).expect("git fsck on the api's clone");

    // Clients retry everything with the same keys: all succeed, nothing is duplicated.
    let results: Vec<_> = futures::stream::iter(0..total)
        .map(&provision)
        .buffer_unordered(16)
        .collect()
        .await;
    for (i, status, body) in results {
        assert_eq!(status, Some(StatusCode::CREATED), "{}: {body}", names[i]);
    }
    let head = repo.refname_to_id("refs/heads/main").unwrap();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(tenants_in(&repo, head), all);
    let in_db: BTreeSet<String> = store
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(in_db, all);
    assert_once(&repo, head);
    let tree = repo.find_commit(head).unwrap().tree().unwrap();
    let inputs = compiler::source::from_git_tree(&repo, &tree).unwrap();
    let output = compiler::compile(&inputs.platform, &inputs.templates, &inputs.tenants).unwrap();
    for (path, contents) in &output.files {
        assert_eq!(
            e2e::file_at(&repo, head, path).as_deref(),
            Some(contents.as_str()),
            "{path} matches a full compile"
        );
    }
    git_fsck(&remote).expect("git fsck at the end");

    // Graceful stop, then: no secret in the logs.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits cleanly: {status}"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("api listening") && logs.contains("request_id="),
        "logs were written"
    );
    for secret in tokens.iter().chain([&admin_token]) {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
    if backend == Backend::Postgres {
        e2e::drop_postgres(&database_url).await;
    }
}

fn tenants_in(repo: &git2::Repository, head: git2::Oid) -> BTreeSet<String> {
    let tree = repo.find_commit(head).unwrap().tree().unwrap();
    let Ok(entry) = tree.get_path(Path::new(compiler::layout::SPECS_DIR)) else {
        return BTreeSet::new();
    };
    let shards = repo.find_tree(entry.id()).unwrap();
    let mut tenants = BTreeSet::new();
    for shard in shards
        .iter()
        .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
    {
        let shard_tree = repo.find_tree(shard.id()).unwrap();
        for tenant in shard_tree
            .iter()
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
        {
            let name = tenant.name().unwrap().to_owned();
            assert_eq!(
                compiler::layout::spec_dir(&name),
                format!(
                    "{}/{}/{name}",
                    compiler::layout::SPECS_DIR,
                    shard.name().unwrap()
                ),
                "{name} is in its shard folder"
            );
            tenants.insert(name);
        }
    }
    tenants
}

/// Each tenant's provision commit appears exactly once in the (linear) history.
fn assert_once(repo: &git2::Repository, head: git2::Oid) {
    let mut seen = BTreeSet::new();
    for commit in linear_history(repo, head) {
        let message = commit.message().unwrap_or_default();
        if message.contains("Action: provision") {
            let tenant = message
                .lines()
                .find_map(|l| l.strip_prefix("Tenant: "))
                .unwrap()
                .to_owned();
            assert!(seen.insert(tenant.clone()), "{tenant} provisioned twice");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_provisions_on_sqlite() {
    crash_and_recover(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_provisions_on_postgres() {
    crash_and_recover(Backend::Postgres).await;
}
