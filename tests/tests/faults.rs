//! Bad input and faults: refused requests write nothing; an unreachable remote fails fast or
//! queues; a second writer pushing to the same repo loses nothing and history stays linear.

use std::time::{Duration, Instant};

use api::config::UnreachablePolicy;
use e2e::{file_at, linear_history, Backend, Options, Platform};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn bad_inputs(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let (status, body, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let head = p.head();
    let store = p.store().await;
    let before = (
        store.tenant_count().await.unwrap(),
        e2e::settled_outbox(&store).await,
    );

    let rejected_token = e2e::bot_token(99); // well-formed, but the stand-in does not accept it
    let good = |name: &str| Platform::provision_body(name, &rejected_token);
    let with = |name: &str, pointer: &str, value: Value| {
        let mut body = good(name);
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let big = "x".repeat(70 * 1024);
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "bad token format",
            with("t1", "/telegramBotToken", json!("not-a-token")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "telegramBotToken",
        ),
        (
            "token Telegram refuses",
            good("t2"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "telegramBotToken",
        ),
        (
            "unknown tier",
            with("t3", "/tier", json!("platinum")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tier",
        ),
        (
            "bad name",
            with("t4", "/name", json!("Bad_Name")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "bad owner id",
            with("t5", "/owner/telegramUserId", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "owner.telegramUserId",
        ),
        (
            "owner id of the wrong type",
            with("t6", "/owner/telegramUserId", json!("abc")),
            StatusCode::BAD_REQUEST,
            "owner.telegramUserId",
        ),
        (
            "bad email",
            with("t7", "/owner/email", json!("nobody")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "owner.email",
        ),
        (
            "bad allowFrom id",
            json!({"name": "t8", "owner": {"email": "a@example.com", "telegramUserId": 5}, "tier": "starter", "telegramBotToken": rejected_token, "agent": {"allowFrom": [5, -1]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent.allowFrom[1]",
        ),
        (
            "unknown model",
            json!({"name": "t9", "owner": {"email": "a@example.com", "telegramUserId": 5}, "tier": "starter", "telegramBotToken": rejected_token, "agent": {"model": "openai/gpt-2"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent.model",
        ),
        (
            "missing field",
            json!({"name": "t10", "owner": {"email": "a@example.com", "telegramUserId": 5}, "telegramBotToken": rejected_token}),
            StatusCode::BAD_REQUEST,
            "tier",
        ),
        (
            "unknown field",
            with("t11", "/reason", json!("x"))
                .as_object()
                .cloned()
                .map(|mut o| {
                    o.insert("tire".into(), json!("pro"));
                    Value::Object(o)
                })
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "tire",
        ),
        (
            "body over 64 KiB",
            with("t12", "/reason", json!(big)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            "existing tenant",
            {
                let token = e2e::bot_token(5);
                p.accept_token(&token);
                Platform::provision_body("acme", &token)
            },
            StatusCode::CONFLICT,
            "",
        ),
    ];
    for (what, body, expected, field) in cases {
        let (status, answer) = p.call(Method::POST, "/v1/tenants", Some(body), None).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(
            answer["error"]["message"].is_string(),
            "{what}: JSON error body: {answer}"
        );
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], field, "{what}: {answer}");
        }
        assert!(
            !answer.to_string().contains(&rejected_token[10..]),
            "{what}: the error echoes the token"
        );
    }

    // Malformed JSON, wrong content type, no or wrong credentials.
    let raw = |body: &'static str, content_type: &'static str, token: Option<&str>| {
        let mut request = p
            .http
            .post(format!("{}/v1/tenants", p.base))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = raw("{\"name\": ", "application/json", Some(&p.admin_token))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["field"],
        "body"
    );
    let response = raw("{}", "text/plain", Some(&p.admin_token)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = raw("{}", "application/json", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    let response = raw("{}", "application/json", Some("wrong-token"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Other actions.
    let other: Vec<(Method, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/v1/tenants/nobody/suspend",
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::DELETE,
            "/v1/tenants/nobody",
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::POST,
            "/v1/tenants/Bad_Name/suspend",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/resize",
            Some(json!({"tier": "platinum"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tier",
        ),
        (
            Method::PATCH,
            "/v1/tenants/acme/settings",
            Some(json!({"model": "openai/gpt-2"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "model",
        ),
        (
            Method::PATCH,
            "/v1/tenants/acme/settings",
            Some(json!({"allowFrom": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "allowFrom",
        ),
        (
            Method::PATCH,
            "/v1/tenants/acme/settings",
            Some(json!({"thinking": "extreme"})),
            StatusCode::BAD_REQUEST,
            "thinking",
        ),
        (
            Method::PATCH,
            "/v1/tenants/acme/settings",
            Some(json!({"language": "klingon"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "language",
        ),
        (
            Method::PATCH,
            "/v1/tenants/acme/settings",
            Some(json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "body",
        ),
        (
            Method::PATCH,
            "/v1/tenants/nobody/settings",
            Some(json!({"thinking": "low"})),
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::GET,
            "/v1/tenants/nobody",
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/history?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/v1/nothing-here",
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
    ];
    for (method, path, body, expected, field) in other {
        let (status, answer) = p.call(method.clone(), path, body, None).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        assert!(
            answer["error"]["message"].is_string(),
            "{method} {path}: {answer}"
        );
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], field, "{method} {path}: {answer}");
        }
    }

    assert_eq!(p.head(), head, "nothing was committed");
    let after = (
        store.tenant_count().await.unwrap(),
        e2e::settled_outbox(&store).await,
    );
    assert_eq!(after, before, "nothing was written to the database");
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_inputs_on_sqlite() {
    bad_inputs(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_inputs_on_postgres() {
    bad_inputs(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_remote_fails_fast_and_writes_nothing() {
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let (status, _, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED);
    let head = p.head();
    let moved = p.dir.path().join("moved.git");
    std::fs::rename(p.remote_path(), &moved).unwrap();

    let started = Instant::now();
    let (status, body, _) = p.provision("globex").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "fails fast: {:?}",
        started.elapsed()
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{body}"
    );
    let (status, _) = p
        .call(Method::POST, "/v1/tenants/acme/suspend", None, None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let response = p
        .http
        .get(format!("{}/readyz", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready without the remote"
    );

    let store = p.store().await;
    assert!(
        store.tenant("globex").await.unwrap().is_none(),
        "nothing in the database"
    );
    assert_eq!(e2e::settled_outbox(&store).await, (0, 1));

    std::fs::rename(&moved, p.remote_path()).unwrap();
    assert_eq!(p.head(), head, "nothing in git");
    let (status, body, _) = p.provision("globex").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "works again once the remote is back: {body}"
    );
    let (status, view) = p.call(Method::GET, "/v1/tenants/acme", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view["spec"]["spec"]["state"], "active",
        "the refused suspend did not land"
    );
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_remote_queues_when_configured() {
    let options = Options {
        on_unreachable: UnreachablePolicy::Queue,
        fetch_interval_seconds: 1,
        ..Options::default()
    };
    let Some(mut p) = Platform::start(Backend::Sqlite, options).await else {
        return;
    };
    let moved = p.dir.path().join("moved.git");
    std::fs::rename(p.remote_path(), &moved).unwrap();
    let (status, body, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["pushed"], false);
    let (status, body) = p
        .call(Method::POST, "/v1/tenants/acme/suspend", None, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let store = p.store().await;
    assert_eq!(store.outbox_counts().await.unwrap(), (2, 0));

    // A restart while queued keeps the changes (they are in the outbox).
    p.restart().await;
    std::fs::rename(&moved, p.remote_path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.outbox_counts().await.unwrap() != (0, 2) {
        assert!(
            Instant::now() < deadline,
            "the outbox drains once the remote is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repo = p.remote();
    let spec = file_at(&repo, p.head(), &compiler::layout::spec_path("acme")).unwrap();
    assert!(spec.contains("state: suspended"), "{spec}");
    assert_eq!(linear_history(&repo, p.head()).len(), 3);
    p.finish().await;
}

/// An SRE pushes commits to the same repo while the api provisions: nothing is lost, history is
/// linear, and the generated output is exactly what a full compile of the specs produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_from_a_second_clone() {
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let (status, _, _) = p.provision("sre-managed").await;
    assert_eq!(status, StatusCode::CREATED);
    let remote = p.remote_path();
    let work = p.dir.path().join("sre-clone");
    let git = e2e::sre_git;
    let out = std::process::Command::new("git")
        .arg("clone")
        .arg("-q")
        .arg(&remote)
        .arg(&work)
        .output()
        .unwrap();
    assert!(out.status.success());
    let sre_commits = 15;
    let (first_landed, on_first_landed) = std::sync::mpsc::channel();
    let sre = std::thread::spawn(move || {
        for i in 0..sre_commits {
            let notes = work.join("docs");
            std::fs::create_dir_all(&notes).unwrap();
            std::fs::write(notes.join(format!("runbook-{i}.md")), format!("note {i}\n")).unwrap();
            // An SRE change to a tenant's spec as well: the api must keep it.
            if i == 0 {
                let spec = work.join(compiler::layout::spec_path("sre-managed"));
                let text = std::fs::read_to_string(&spec)
                    .unwrap()
                    .replace("thinking: medium", "thinking: low");
                std::fs::write(&spec, text).unwrap();
            }
            assert!(git(&work, &["add", "-A"]).status.success());
            assert!(
                git(&work, &["commit", "-q", "-m", &format!("SRE note {i}")])
                    .status
                    .success()
            );
            let mut tries = 0;
            while !git(&work, &["push", "-q", "origin", "HEAD:main"])
                .status
                .success()
            {
                tries += 1;
                assert!(tries < 50, "the SRE could not push");
                assert!(git(&work, &["pull", "-q", "--rebase", "origin", "main"])
                    .status
                    .success());
            }
            if i == 0 {
                let _ = first_landed.send(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // The api edits the tenant the SRE edits in its first commit only once that commit is on the
    // remote (git cannot merge two edits of neighbouring lines); the provisions run in waves while
    // the SRE keeps pushing, so that pushes from both sides race.
    let names: Vec<String> = (0..40).map(|i| format!("tenant-{i}")).collect();
    let mut results = Vec::new();
    for wave in names.chunks(5) {
        results.extend(futures::future::join_all(wave.iter().map(|n| p.provision(n))).await);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for (name, (status, body, _)) in names.iter().zip(&results) {
        assert_eq!(*status, StatusCode::CREATED, "{name}: {body}");
    }
    tokio::task::spawn_blocking(move || on_first_landed.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the SRE's first commit lands");
    // The api also changes the tenant the SRE edits.
    let (status, body) = p
        .call(
            Method::PATCH,
            "/v1/tenants/sre-managed/settings",
            Some(json!({"language": "fr"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sre.join().unwrap();
    // Let the api pick up the SRE's last pushes.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let repo = p.remote();
    let head = p.head();
    let history = linear_history(&repo, head);
    let sre_seen = history
        .iter()
        .filter(|c| c.summary().unwrap_or_default().starts_with("SRE note"))
        .count();
    assert_eq!(sre_seen, sre_commits, "every SRE commit is in history");
    for i in 0..sre_commits {
        assert!(file_at(&repo, head, &format!("docs/runbook-{i}.md")).is_some());
    }
    let store = p.store().await;
    for name in &names {
        assert!(
            file_at(&repo, head, &compiler::layout::spec_path(name)).is_some(),
            "{name} in git"
        );
        let row = store.tenant(name).await.unwrap().expect("in the database");
        let commit = git2::Oid::from_str(&row.last_commit).unwrap();
        assert!(
            repo.graph_descendant_of(head, commit).unwrap() || head == commit,
            "{name}: recorded commit is on the branch"
        );
        let provisions = history
            .iter()
            .filter(|c| {
                c.message()
                    .unwrap_or_default()
                    .contains(&format!("Tenant: {name}\n"))
            })
            .count();
        assert_eq!(provisions, 1, "{name} provisioned exactly once");
    }
    let spec = file_at(&repo, head, &compiler::layout::spec_path("sre-managed")).unwrap();
    assert!(
        spec.contains("thinking: low") && spec.contains("language: fr"),
        "both sides' changes survive: {spec}"
    );

    // The generated output is exactly what a full compile of the specs at the head produces.
    let tree = repo.find_commit(head).unwrap().tree().unwrap();
    let inputs = compiler::source::from_git_tree(&repo, &tree).unwrap();
    let output = compiler::compile(&inputs.platform, &inputs.templates, &inputs.tenants).unwrap();
    for (path, contents) in &output.files {
        assert_eq!(
            file_at(&repo, head, path).as_deref(),
            Some(contents.as_str()),
            "{path} matches a full compile"
        );
    }
    let (status, view) = p
        .call(Method::GET, "/v1/tenants/sre-managed", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view["spec"]["spec"]["agent"]["thinking"], "low",
        "reads show merged SRE changes"
    );
    p.finish().await;
}
