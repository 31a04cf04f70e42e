//! The state repo behind an SSH server (OpenSSH's sshd on a random port, key authentication only):
//! the real `openclaw-api` binary clones, pushes and fetches over `ssh://` with the key from
//! `repo.ssh_key_path`, and checks the server's host key against `$HOME/.ssh/known_hosts` (libgit2's
//! rule, the same as git's): with the key listed it works; without it, it refuses to start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::ssh::{keygen, list_host_key, Sshd, SSHD};
use e2e::{file_at, git_fsck, linear_history, Platform};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_over_ssh_with_a_key_and_checks_the_host_key() {
    if !e2e::require(
        "OpenSSH's sshd (Debian package openssh-server)",
        Path::new(SSHD).is_file(),
    ) || !e2e::require(
        "ssh-keygen",
        Command::new("ssh-keygen").arg("-?").output().is_ok(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ssh_dir = dir.path().join("sshd");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let host_key = ssh_dir.join("host_ed25519");
    let client_key = dir.path().join("api_ed25519");
    keygen(&host_key);
    keygen(&client_key);
    let port = e2e::free_port();
    let _sshd = Sshd::start(&ssh_dir, port, &host_key, &client_key);

    let (remote, _) = e2e::seed_state_repo(dir.path());
    let telegram = e2e::telegram_stand_in().await;
    let admin_token = hex::encode(rand::random::<[u8; 32]>());
    let api_port = e2e::free_port();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let config = e2e::write_binary_config(
        dir.path(),
        api_port,
        &format!("sqlite://{}?mode=rwc", dir.path().join("api.db").display()),
        &format!(
            "remote_url = \"ssh://{}@127.0.0.1:{port}{}\"\nssh_key_path = \"{}\"",
            user.trim(),
            remote.display(),
            client_key.display()
        ),
        &telegram.url,
        &admin_token,
    );
    let binary = e2e::api_binary();
    let run = |home: &Path, log: &Path| {
        Command::new(&binary)
            .args(["serve", "--config"])
            .arg(&config)
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };

    // A host key nobody listed: the api does not talk to that server.
    let stranger = dir.path().join("home-without-known-hosts");
    std::fs::create_dir_all(stranger.join(".ssh")).unwrap();
    let log = dir.path().join("refused.log");
    let mut child = run(&stranger, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the api should refuse an unknown host key"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let refused = std::fs::read_to_string(&log).unwrap();
    assert!(
        refused.contains("unknown remote ssh hostkey")
            && refused.contains(&format!("{}/.ssh/known_hosts", stranger.display())),
        "the error names the host key and where to list it: {refused}"
    );
    assert!(!dir
        .path()
        .join("api-clone.git/refs/remotes/origin/main")
        .exists());

    // With the server's key in known_hosts: clone, provision, push.
    let home = dir.path().join("home");
    list_host_key(&home, port, &host_key);
    let log = dir.path().join("api.log");
    let mut child = run(&home, &log);
    let base = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the api exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "the api did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = e2e::bot_token(7);
    telegram.accepted.lock().unwrap().insert(token.clone());
    let response = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&admin_token)
        .json(&Platform::provision_body("acme", &token))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let repo = git2::Repository::open_bare(&remote).unwrap();
    let head = repo.refname_to_id("refs/heads/main").unwrap();
    assert_eq!(
        head.to_string(),
        body["commit"].as_str().unwrap(),
        "pushed over SSH"
    );
    assert!(file_at(&repo, head, &compiler::layout::spec_path("acme")).is_some());
    assert_eq!(linear_history(&repo, head).len(), 2);
    git_fsck(&remote).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&token), "no bot token in the log");
    let private = std::fs::read_to_string(&client_key).unwrap();
    let key_body = private.lines().nth(1).unwrap();
    assert!(
        !text.contains(key_body) && !refused.contains(key_body),
        "no key in the logs"
    );
}
