//! The attack suite: each test plays one attack on accounts and ownership against the real api,
//! on SQLite and on PostgreSQL, and checks that it fails and changes nothing. The threat model
//! that names the rule behind each one is docs/security.md.

use std::time::Duration;

use e2e::{bot_token, Backend, Options, Platform, Session};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Runs `$body(backend)` as two tests, one per database.
macro_rules! on_both_databases {
    ($body:ident) => {
        mod $body {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                super::$body(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                super::$body(Backend::Postgres).await;
            }
        }
    };
}

fn signup_body(name: &str, token: &str) -> Value {
    json!({
        "name": name,
        "owner": {"email": format!("{name}@example.com")},
        "tier": "starter",
        "telegramBotToken": token,
    })
}

/// Signs in Telegram user `id` and provisions `name` for them; returns the session.
async fn customer_with_tenant(p: &Platform, id: i64, first_name: &str, name: &str) -> Session {
    let session = p.login(id, first_name).await;
    let token = bot_token(id as u64);
    p.accept_token(&token);
    let mut body = signup_body(name, &token);
    body["owner"]["email"] = json!(format!("{name}-{id}@example.com"));
    let (status, body) = p
        .call_as(
            Some(&session.access),
            Method::POST,
            "/v1/tenants",
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    session
}

/// The tenant's spec at the head of the state repo, as JSON.
async fn spec(p: &Platform, name: &str) -> Value {
    let (status, body) = p
        .call(Method::GET, &format!("/v1/tenants/{name}"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["spec"].clone()
}

/// `text` with every byte but ASCII letters and digits percent-encoded (for a query string).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Alice's reactivation of alice-bot is refused (403) and the tenant stays suspended.
async fn refused_reactivation(p: &Platform, alice: &Session) {
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/tenants/alice-bot/reactivate",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(spec(p, "alice-bot").await["spec"]["state"], "suspended");
}

/// Sends `body` as raw bytes with `content_type`, as `token`.
async fn raw(
    p: &Platform,
    token: &str,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    p.http
        .request(method, format!("{}{path}", p.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

// 1. Owning someone else's tenant by claiming their email.

async fn claiming_an_email_does_not_give_its_tenants(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let mallory = p.login(111, "Mallory").await;
    let (status, body) = p
        .call_as(
            Some(&mallory.access),
            Method::PATCH,
            "/v1/me",
            Some(json!({"email": "victim@corp.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = bot_token(55);
    p.accept_token(&token);
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "victim-bot", "owner": {"email": "victim@corp.example", "telegramUserId": 55555},
                "tier": "starter", "telegramBotToken": token})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, list) = p
        .call_as(Some(&mallory.access), Method::GET, "/v1/tenants", None)
        .await;
    assert_eq!(list, json!([]), "the claimant owns nothing");
    let head = p.head();
    let (status, body) = p
        .call_as(
            Some(&mallory.access),
            Method::PATCH,
            "/v1/tenants/victim-bot/settings",
            Some(json!({"allowFrom": [111]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(p.head(), head);
    // The owner named by Telegram id finds it at their first sign-in.
    let victim = p.login(55555, "Victim").await;
    let (_, list) = p
        .call_as(Some(&victim.access), Method::GET, "/v1/tenants", None)
        .await;
    assert_eq!(list[0]["name"], "victim-bot", "{list}");
    p.finish().await;
}
on_both_databases!(claiming_an_email_does_not_give_its_tenants);

// 2. A customer lifting a platform suspension.

async fn forged_reasons_do_not_lift_a_platform_suspension(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 2001, "Alice", "alice-bot").await;
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/alice-bot/suspend",
            Some(json!({"reason": "abuse"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A reason that ends the commit message early, leaving a forged trailer as its last line.
    let _ = p
        .call_as(
            Some(&alice.access),
            Method::PATCH,
            "/v1/tenants/alice-bot/settings",
            Some(json!({"thinking": "high", "reason": "Action: reactivate\u{0}"})),
        )
        .await;
    refused_reactivation(&p, &alice).await;
    p.finish().await;
}
on_both_databases!(forged_reasons_do_not_lift_a_platform_suspension);

async fn posing_as_the_admin_does_not_lift_a_platform_suspension(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 2101, "Alice", "alice-bot").await;
    let (status, body) = p
        .call(Method::POST, "/v1/tenants/alice-bot/suspend", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, history) = p
        .call(Method::GET, "/v1/tenants/alice-bot/history", None, None)
        .await;
    let admin_email = history[0]["authorEmail"].as_str().unwrap().to_owned();
    let admin_name = history[0]["author"].as_str().unwrap().to_owned();
    let _ = p
        .call_as(
            Some(&alice.access),
            Method::PATCH,
            "/v1/me",
            Some(json!({"email": admin_email, "displayName": admin_name})),
        )
        .await;
    refused_reactivation(&p, &alice).await;
    // Her changes are not authored as the admin either.
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::PATCH,
            "/v1/tenants/alice-bot/settings",
            Some(json!({"thinking": "low"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let commit = p
        .remote()
        .find_commit(git2::Oid::from_str(body["commit"].as_str().unwrap()).unwrap())
        .unwrap()
        .author()
        .to_owned();
    assert_ne!(commit.email(), Some(admin_email.as_str()));
    assert_ne!(commit.name(), Some(admin_name.as_str()));
    p.finish().await;
}
on_both_databases!(posing_as_the_admin_does_not_lift_a_platform_suspension);

async fn many_changes_do_not_bury_a_platform_suspension(backend: Backend) {
    let options = Options {
        customer_writes_per_minute: 100_000,
        ..Options::default()
    };
    let Some(p) = Platform::start(backend, options).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 2201, "Alice", "alice-bot").await;
    let (status, body) = p
        .call(Method::POST, "/v1/tenants/alice-bot/suspend", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // More changes than the 1,000 commits a history read looks at, 64 at a time (the writer commits them in batches).
    let mut changes = Vec::new();
    for i in 0..1010 {
        let thinking = if i % 2 == 0 { "high" } else { "low" };
        changes.push(p.call_as(
            Some(&alice.access),
            Method::PATCH,
            "/v1/tenants/alice-bot/settings",
            Some(json!({"thinking": thinking})),
        ));
        if changes.len() == 64 {
            for (status, body) in futures::future::join_all(changes.drain(..)).await {
                assert!(status.is_success(), "{status} {body}");
            }
        }
    }
    futures::future::join_all(changes).await;
    refused_reactivation(&p, &alice).await;
    p.finish().await;
}
on_both_databases!(many_changes_do_not_bury_a_platform_suspension);

async fn a_suspension_by_hand_counts_as_the_platforms(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 2301, "Alice", "alice-bot").await;
    // Alice suspends herself; then an SRE edits the spec by hand (a pull request), keeping it
    // suspended but dropping who did it.
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/tenants/alice-bot/suspend",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let work = p.dir.path().join("sre-work");
    let remote = p.remote_path();
    let out = std::process::Command::new("git")
        .args(["clone", "-q"])
        .arg(&remote)
        .arg(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = work.join(compiler::layout::spec_path("alice-bot"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("suspendedBy: customer"), "{text}");
    let edited: String = text
        .lines()
        .filter(|l| !l.contains("suspendedBy"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, edited).unwrap();
    for args in [
        &["commit", "-qam", "suspend alice-bot pending review"][..],
        &["push", "-q", "origin", "HEAD:main"][..],
    ] {
        let out = e2e::sre_git(&work, args);
        assert!(out.status.success(), "{out:?}");
    }
    // The api picks the SRE's commit up within a fetch interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let spec = spec(&p, "alice-bot").await;
        if spec["spec"].get("suspendedBy").is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{spec}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    refused_reactivation(&p, &alice).await;
    p.finish().await;
}
on_both_databases!(a_suspension_by_hand_counts_as_the_platforms);

// 3. Forged or broken audit trails.

async fn control_characters_never_reach_git_or_the_database(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 3001, "Alice", "alice-bot").await;
    let head = p.head();
    for bad in [
        "a\u{0}b",
        "line\rbreak",
        "tab\there",
        "esc\u{1b}[31m",
        "next\u{85}line",
        "c1\u{9b}x",
        "sep\u{2028}x",
        "para\u{2029}x",
        "del\u{7f}x",
    ] {
        for (method, path, body) in [
            (
                Method::PATCH,
                "/v1/tenants/alice-bot/settings",
                json!({"thinking": "high", "reason": bad}),
            ),
            (
                Method::POST,
                "/v1/tenants/alice-bot/suspend",
                json!({"reason": bad}),
            ),
            (Method::PATCH, "/v1/me", json!({"displayName": bad})),
            (
                Method::PATCH,
                "/v1/me",
                json!({"email": format!("a{bad}@example.com")}),
            ),
        ] {
            let (status, answer) = p
                .call_as(Some(&alice.access), method.clone(), path, Some(body))
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path} {bad:?}: {answer}"
            );
        }
        let encoded = percent_encode(bad);
        let (status, answer) = p
            .call_as(
                Some(&alice.access),
                Method::DELETE,
                &format!("/v1/tenants/alice-bot?reason={encoded}"),
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad:?}: {answer}"
        );
    }
    // X-Request-Id reaches the commit's trailers: only a short token of safe characters.
    for bad in ["x".repeat(200), "a b".into(), "a\"b".into(), String::new()] {
        let response = p
            .http
            .post(format!("{}/v1/tenants/alice-bot/suspend", p.base))
            .bearer_auth(&alice.access)
            .header("x-request-id", bad.as_str())
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], "X-Request-Id", "{body}");
    }
    let response = raw(
        &p,
        &alice.access,
        Method::POST,
        "/v1/tenants/alice-bot/suspend",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(p.head(), head);
    // Nothing refused landed: the history holds the provision and the one suspension.
    let (_, history) = p
        .call(Method::GET, "/v1/tenants/alice-bot/history", None, None)
        .await;
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    let (_, me) = p
        .call_as(Some(&alice.access), Method::GET, "/v1/me", None)
        .await;
    assert_eq!(me["customer"]["displayName"], "Alice");
    p.finish().await;
}
on_both_databases!(control_characters_never_reach_git_or_the_database);

// 4. Replaying a Telegram login by changing the hash's letter case.

async fn login_data_cannot_be_replayed_in_another_case(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let fields = p.login_data(4001, "Alice", api::auth::now_s());
    let post = |fields: std::collections::BTreeMap<String, String>| {
        let p = &p;
        async move {
            p.call_as(
                None,
                Method::POST,
                "/v1/auth/telegram",
                Some(serde_json::to_value(&fields).unwrap()),
            )
            .await
        }
    };
    let (status, body) = post(fields.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for variant in [fields["hash"].to_uppercase(), {
        let mut h = fields["hash"].clone();
        let upper = h[..1].to_uppercase();
        h.replace_range(..1, &upper);
        h
    }] {
        let mut replay = fields.clone();
        replay.insert("hash".into(), variant);
        let (status, body) = post(replay).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    p.finish().await;
}
on_both_databases!(login_data_cannot_be_replayed_in_another_case);

// 5. Reading a previous owner's data after name reuse.

async fn a_reused_name_shows_nothing_of_the_previous_owner(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 5001, "Alice", "shared").await;
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::PATCH,
            "/v1/tenants/shared/settings",
            Some(json!({"thinking": "high", "reason": "alice private reason"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice_uid = spec(&p, "shared").await["metadata"]["uid"]
        .as_str()
        .expect("an incarnation uid")
        .to_owned();
    let event = json!({"events": [{
        "id": uuid::Uuid::now_v7().to_string(), "tenant": "shared", "model": "kimi-for-coding",
        "inputTokens": 700, "outputTokens": 300, "cacheReadTokens": 0, "cacheWriteTokens": 0,
        "latencyMs": 10, "status": 200, "partial": false, "api": "openai",
        "startedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }]});
    let response = p
        .http
        .post(format!("{}/internal/usage", p.base))
        .bearer_auth(&p.proxy_credential)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::DELETE,
            "/v1/tenants/shared",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let bob = customer_with_tenant(&p, 5002, "Bob", "shared").await;
    let bob_uid = spec(&p, "shared").await["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(bob_uid, alice_uid, "a new incarnation has a new uid");
    let (status, history) = p
        .call_as(
            Some(&bob.access),
            Method::GET,
            "/v1/tenants/shared/history",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let text = history.to_string();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert!(!text.contains("alice private reason"), "{text}");
    assert!(!text.contains(&alice.customer_id), "{text}");
    let (status, usage) = p
        .call_as(
            Some(&bob.access),
            Method::GET,
            "/v1/tenants/shared/usage",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["total"]["billableTokens"], 0, "{usage}");
    // The budget feed counts nothing of Alice's against Bob's budget.
    let entry = p.budget_entry_until("shared", |e| !e.is_null()).await;
    assert_eq!(entry["used"], 0, "{entry}");
    // Alice still reads her own, destroyed incarnation; Bob cannot.
    let path = format!("/v1/tenants/shared/history?incarnation={alice_uid}");
    let (status, history) = p
        .call_as(Some(&alice.access), Method::GET, &path, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert!(history.to_string().contains("alice private reason"));
    assert_eq!(history[0]["action"], "destroy", "{history}");
    let usage_path = format!("/v1/tenants/shared/usage?incarnation={alice_uid}");
    let (status, usage) = p
        .call_as(Some(&alice.access), Method::GET, &usage_path, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["total"]["billableTokens"], 1000, "{usage}");
    for path in [&path, &usage_path] {
        let (status, body) = p.call_as(Some(&bob.access), Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    p.finish().await;
}
on_both_databases!(a_reused_name_shows_nothing_of_the_previous_owner);

// 6. Racing past the per-customer tenant cap.

async fn concurrent_signups_stay_within_the_cap(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = p.login(6001, "Alice").await;
    let requests = (0..6).map(|i| {
        let token = bot_token(600 + i);
        p.accept_token(&token);
        p.call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/tenants",
            Some(signup_body(&format!("race-{i}"), &token)),
        )
    });
    let answers = futures::future::join_all(requests).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 3, "{answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::FORBIDDEN,
            "{status} {body}"
        );
    }
    let (_, list) = p
        .call_as(Some(&alice.access), Method::GET, "/v1/tenants", None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    p.finish().await;
}
on_both_databases!(concurrent_signups_stay_within_the_cap);

// 7. Unlimited customer writes; tier changes.

async fn customer_writes_are_limited(backend: Backend) {
    let options = Options {
        customer_writes_per_minute: 20,
        ..Options::default()
    };
    let Some(p) = Platform::start(backend, options).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 7001, "Alice", "alice-bot").await;
    let mut limited = None;
    for i in 0..40 {
        let thinking = if i % 2 == 0 { "high" } else { "low" };
        let response = p
            .http
            .patch(format!("{}/v1/tenants/alice-bot/settings", p.base))
            .bearer_auth(&alice.access)
            .json(&json!({"thinking": thinking}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = limited.expect("customer writes are limited");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another customer is not held back by Alice's writes; admins are not limited.
    let bob = customer_with_tenant(&p, 7002, "Bob", "bob-bot").await;
    let (status, body) = p
        .call_as(
            Some(&bob.access),
            Method::PATCH,
            "/v1/tenants/bob-bot/settings",
            Some(json!({"thinking": "high"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = p
        .call(
            Method::PATCH,
            "/v1/tenants/alice-bot/settings",
            Some(json!({"thinking": "off"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    p.finish().await;
}
on_both_databases!(customer_writes_are_limited);

async fn customers_move_down_tiers_only(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 7101, "Alice", "alice-bot").await;
    let head = p.head();
    for tier in ["pro", "team"] {
        let (status, body) = p
            .call_as(
                Some(&alice.access),
                Method::POST,
                "/v1/tenants/alice-bot/resize",
                Some(json!({"tier": tier})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{tier}: {body}");
    }
    assert_eq!(p.head(), head);
    assert_eq!(spec(&p, "alice-bot").await["spec"]["tier"], "starter");
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/alice-bot/resize",
            Some(json!({"tier": "team"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "an admin moves her up: {body}");
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/tenants/alice-bot/resize",
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "she moves down: {body}");
    assert_eq!(spec(&p, "alice-bot").await["spec"]["tier"], "pro");
    p.finish().await;
}
on_both_databases!(customers_move_down_tiers_only);

// 8. Dev mode outside `dev`.

async fn serve_refuses_dev_mode(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(database_url) = e2e::database_url(backend, dir.path()).await else {
        return;
    };
    let (remote, _) = e2e::seed_state_repo(dir.path());
    let config = e2e::write_binary_config(
        dir.path(),
        e2e::free_port(),
        &database_url,
        &format!("remote_url = \"{}\"", remote.display()),
        "http://127.0.0.1:9",
        "admin-token",
    );
    let base = std::fs::read_to_string(&config).unwrap();
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("dev_mode = true\n", &[]),
        ("", &[("OPENCLAW_API_DEV_MODE", "true")]),
        ("", &[("OPENCLAW_API_AUTH__DEV_LOGIN", "true")]),
        (
            "",
            &[
                ("OPENCLAW_API_DEV_MODE", "true"),
                ("OPENCLAW_API_TELEGRAM__VERIFICATION", "skip"),
            ],
        ),
    ];
    for (prefix, env) in cases {
        std::fs::write(&config, format!("{prefix}{base}")).unwrap();
        let mut command = std::process::Command::new(e2e::api_binary());
        command.arg("serve").arg("--config").arg(&config);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve started with {prefix:?} {env:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!status.success(), "{prefix:?} {env:?}");
        assert!(
            stderr.contains("openclaw-api dev"),
            "the error says how to get dev mode: {stderr}"
        );
    }
    if backend == Backend::Postgres {
        e2e::drop_postgres(&database_url).await;
    }
}
on_both_databases!(serve_refuses_dev_mode);

// 9. Smaller: language length, media types, JSON errors, CSRF bound to the session.

async fn oversized_and_mistyped_input_is_refused_in_json(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let alice = customer_with_tenant(&p, 9001, "Alice", "alice-bot").await;
    let head = p.head();
    let long = format!("en{}", "-abcdefgh".repeat(6000));
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::PATCH,
            "/v1/tenants/alice-bot/settings",
            Some(json!({"language": long})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "language");
    for path in [
        "/v1/tenants/alice-bot/suspend",
        "/v1/tenants/alice-bot/reactivate",
        "/v1/tenants/alice-bot/rotate-proxy-token",
        "/v1/tenants/alice-bot/settings",
    ] {
        let method = if path.ends_with("settings") {
            Method::PATCH
        } else {
            Method::POST
        };
        for content_type in ["text/plain", "application/jsonx", "application/json-seq"] {
            let response = raw(
                &p,
                &alice.access,
                method.clone(),
                path,
                content_type,
                br#"{"reason": "x"}"#.to_vec(),
            )
            .await;
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_request");
        }
        let response = raw(
            &p,
            &alice.access,
            method.clone(),
            path,
            "application/json",
            vec![b' '; 100 * 1024],
        )
        .await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body: Value = response.json().await.expect("a JSON error body");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // Errors the framework raises (a bad path or query) are JSON too.
    for path in [
        "/v1/tenants/alice-bot/history?limit=many",
        "/v1/tenants/alice-bot/usage?period=x&x=1",
    ] {
        let response = p
            .http
            .get(format!("{}{path}", p.base))
            .bearer_auth(&alice.access)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json().await.expect("a JSON error body");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    assert_eq!(p.head(), head);
    p.finish().await;
}
on_both_databases!(oversized_and_mistyped_input_is_refused_in_json);

async fn a_csrf_token_works_only_with_its_own_session(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let _alice = customer_with_tenant(&p, 9101, "Alice", "alice-bot").await;
    // Browser sign-ins through the widget's redirect: Alice's and Mallory's.
    let browser = |id: i64, name: &'static str| {
        let p = &p;
        async move {
            let fields = p.login_data(id, name, api::auth::now_s());
            let query: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                .collect();
            let query = query.join("&");
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let response = client
                .get(format!("{}/v1/auth/telegram/callback?{query}", p.base))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            let cookies: Vec<(String, String)> = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|c| c.split(';').next())
                .filter_map(|c| c.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let get = |name: &str| {
                cookies
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            (get("oc_access"), get("oc_csrf"))
        }
    };
    let (alice_access, alice_csrf) = browser(9101, "Alice").await;
    let (_, mallory_csrf) = browser(9102, "Mallory").await;
    let write = |csrf: String| {
        let p = &p;
        let access = alice_access.clone();
        async move {
            p.http
                .patch(format!("{}/v1/tenants/alice-bot/settings", p.base))
                .header("cookie", format!("oc_access={access}; oc_csrf={csrf}"))
                .header("x-csrf-token", csrf)
                .json(&json!({"thinking": "high"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let head = p.head();
    // Mallory planted her own CSRF cookie beside Alice's session (a sibling subdomain can set
    // cookies) and sends the matching header from her page.
    assert_eq!(write(mallory_csrf).await, StatusCode::FORBIDDEN);
    assert_eq!(write("forged".into()).await, StatusCode::FORBIDDEN);
    assert_eq!(p.head(), head);
    assert_eq!(write(alice_csrf).await, StatusCode::OK);
    p.finish().await;
}
on_both_databases!(a_csrf_token_works_only_with_its_own_session);
