//! The state repo behind a hosted git service: the api pushes to and fetches from git's own
//! smart-HTTP server (`git http-backend`) with a token from configuration, as it does with
//! GitHub or GitLab over HTTPS. The server answers 401 without the token, so every operation
//! goes through the api's credentials callback.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use e2e::{file_at, git_fsck, linear_history, objects_containing, Backend, Options, Platform};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::json;

fn token_file(p: &Platform) -> std::path::PathBuf {
    p.config.repo.token_path.clone().expect("a token file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_and_fetches_over_smart_http_with_a_token() {
    let options = Options {
        http_remote: true,
        ..Options::default()
    };
    let Some(p) = Platform::start(Backend::Sqlite, options).await else {
        return;
    };
    let server = p.git_server.as_ref().expect("an HTTP remote");
    assert!(p
        .config
        .repo
        .remote_url
        .expose_secret()
        .starts_with("http://"));
    let git_token = std::fs::read_to_string(token_file(&p)).unwrap();
    let git_token = git_token.trim().to_owned();

    // The clone was made over HTTP at start; a provision is pushed over HTTP.
    let (status, body, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let provisioned = body["commit"].as_str().unwrap().to_owned();
    assert_eq!(
        p.head().to_string(),
        provisioned,
        "the remote holds the commit"
    );
    assert!(
        server.authorized.load(Ordering::Relaxed) >= 2,
        "fetch and push went through the server"
    );
    assert!(
        server.refused.load(Ordering::Relaxed) >= 1,
        "the server asked for credentials"
    );
    git_fsck(&p.remote_path()).unwrap();

    // An SRE pushes to the repository meanwhile: the api's next push is rejected, it fetches
    // over HTTP, re-applies its change on the new head and pushes again.
    let work = p.dir.path().join("sre-clone");
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = e2e::sre_git(dir, args);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(
        p.dir.path(),
        &[
            "clone",
            "-q",
            p.remote_path().to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    std::fs::create_dir_all(work.join("docs")).unwrap();
    std::fs::write(work.join("docs/runbook.md"), "page the on-call SRE\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "SRE runbook"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/acme/suspend",
            Some(json!({"reason": "unpaid"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let repo = p.remote();
    let head = p.head();
    assert_eq!(head.to_string(), body["commit"].as_str().unwrap());
    let history = linear_history(&repo, head);
    let summaries: Vec<String> = history
        .iter()
        .map(|c| c.summary().unwrap_or_default().to_owned())
        .collect();
    assert!(
        summaries.iter().any(|s| s == "SRE runbook"),
        "{summaries:?}"
    );
    assert!(file_at(&repo, head, "docs/runbook.md").is_some());
    let spec = file_at(&repo, head, &compiler::layout::spec_path("acme")).unwrap();
    assert!(spec.contains("state: suspended"), "{spec}");

    // A revoked token: the server refuses, the request fails fast with 503 and a clear message
    // that carries no token, and nothing is written.
    std::fs::write(token_file(&p), "revoked-token\n").unwrap();
    let before = p.head();
    let started = Instant::now();
    let (status, body, bot_token) = p.provision("globex").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot be reached"), "{message}");
    for secret in [git_token.as_str(), "revoked-token", bot_token.as_str()] {
        assert!(
            !body.to_string().contains(secret),
            "no secret in the error: {body}"
        );
    }
    assert_eq!(p.head(), before, "nothing in git");
    let store = p.store().await;
    assert!(
        store.tenant("globex").await.unwrap().is_none(),
        "nothing in the database"
    );

    // The token file is read at each connection: a rotated token works without a restart.
    std::fs::write(token_file(&p), format!("{git_token}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body, _) = p.provision("globex").await;
        if status == StatusCode::CREATED {
            break body;
        }
        // The api reports not ready until its next fetch reaches the remote again.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "the api recovers: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(p.head().to_string(), body["commit"].as_str().unwrap());
    assert_eq!(e2e::settled_outbox(&store).await, (0, 3));

    // Neither token is in the repository (any object, any commit).
    let repo = p.remote();
    assert!(objects_containing(&repo, &git_token).is_empty());
    assert_eq!(linear_history(&repo, p.head()).len(), summaries.len() + 1);
    git_fsck(&p.remote_path()).unwrap();
    p.finish().await;
}
