//! The tenant lifecycle through HTTP against the real api, on SQLite and on PostgreSQL: every
//! action lands as one commit with the right author and trailers, the rendered output builds with
//! kustomize, reads come from git, and no plaintext token is anywhere in the repository's history.

use compiler::layout;
use e2e::{
    export_tree, file_at, kubectl_available, kustomize, linear_history, objects_containing,
    Backend, Options, Platform,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn trailer(message: &str, key: &str) -> Option<String> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
}

async fn lifecycle(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let repo = p.remote();
    let seed = p.head();

    // Provision.
    let (status, body, bot_token) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let provisioned = git2::Oid::from_str(body["commit"].as_str().unwrap()).unwrap();
    assert_eq!(body["pushed"], true);
    assert_eq!(
        p.head(),
        provisioned,
        "the commit is on the remote when the api answers"
    );
    let commit = repo.find_commit(provisioned).unwrap();
    assert_eq!(commit.parent_id(0).unwrap(), seed);
    assert_eq!(commit.author().name(), Some("ops-admin"));
    assert_eq!(commit.author().email(), Some("ops@example.com"));
    let message = commit.message().unwrap();
    assert_eq!(trailer(message, "Tenant").as_deref(), Some("acme"));
    assert_eq!(trailer(message, "Action").as_deref(), Some("provision"));
    assert_eq!(
        trailer(message, "Reason").as_deref(),
        Some("signup of acme")
    );
    assert_eq!(
        trailer(message, "Request-Id").as_deref(),
        body["requestId"].as_str()
    );
    assert!(
        p.telegram.asked.lock().unwrap().contains(&bot_token),
        "getMe was asked"
    );

    let spec = file_at(&repo, provisioned, &layout::spec_path("acme")).expect("spec committed");
    let spec = compiler::spec::TenantSpec::parse("tenant.yaml", &spec).unwrap();
    assert_eq!(spec.spec.tier.as_str(), "starter");
    assert_eq!(
        spec.spec
            .agent
            .allow_from
            .iter()
            .map(|i| i.get())
            .collect::<Vec<_>>(),
        vec![4242]
    );
    let secrets =
        file_at(&repo, provisioned, &layout::secrets_path("acme")).expect("secrets committed");
    let decrypted = compiler::sops::decrypt(&secrets, &p.identity).unwrap();
    let data = decrypted.string_data().clone();
    assert_eq!(data["telegram-bot-token"], bot_token);
    let proxy_token = data["proxy-token"].clone();
    assert_eq!(proxy_token.len(), 64, "256-bit token as hex");
    assert_eq!(
        compiler::spec::TokenSha256::of_token(&proxy_token),
        spec.spec.proxy_token.sha256
    );
    for path in [
        layout::output_kustomization_path("acme"),
        layout::flux_kustomization_path("acme"),
        layout::manifests_path("acme"),
        layout::output_secret_path("acme"),
    ] {
        assert!(
            file_at(&repo, provisioned, &path).is_some(),
            "{path} rendered"
        );
    }
    let shard_index = file_at(
        &repo,
        provisioned,
        &layout::shard_index_path(&layout::shard_of("acme")),
    )
    .unwrap();
    assert!(shard_index.contains("acme.yaml"), "{shard_index}");
    let index = file_at(&repo, provisioned, layout::INDEX_PATH).unwrap();
    assert_eq!(
        compiler::render::parse_index(&index).unwrap(),
        [layout::shard_of("acme")]
    );

    // Reads come from git.
    let (status, view) = p.call(Method::GET, "/v1/tenants/acme", None, None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["spec"]["spec"]["state"], "active");
    assert_eq!(view["lastCommit"]["commit"], provisioned.to_string());

    // Settings, suspend (twice), reactivate, resize, rotate.
    let (status, body) = p
        .call(Method::PATCH, "/v1/tenants/acme/settings", Some(json!({"thinking": "high", "allowFrom": [4242, 77], "language": "de", "reason": "customer asked"})), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/acme/suspend",
            Some(json!({"reason": "unpaid invoice"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let suspended = body["commit"].as_str().unwrap().to_owned();
    let (status, body) = p
        .call(Method::POST, "/v1/tenants/acme/suspend", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unchanged"], true);
    assert_eq!(p.head().to_string(), suspended, "a no-op makes no commit");
    let (status, view) = p.call(Method::GET, "/v1/tenants/acme", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["spec"]["spec"]["state"], "suspended");
    assert_eq!(view["spec"]["spec"]["agent"]["thinking"], "high");
    let table = file_at(
        &repo,
        p.head(),
        &compiler::tenant_table::shard_path(layout::shard_number("acme")),
    )
    .unwrap();
    assert!(
        table.contains("suspended"),
        "the proxy's tenant table follows the state"
    );

    let (status, body) = p
        .call(Method::POST, "/v1/tenants/acme/reactivate", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/acme/resize",
            Some(json!({"tier": "pro"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/acme/rotate-proxy-token",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rotated = git2::Oid::from_str(body["commit"].as_str().unwrap()).unwrap();
    let secrets = file_at(&repo, rotated, &layout::secrets_path("acme")).unwrap();
    let data2 = compiler::sops::decrypt(&secrets, &p.identity)
        .unwrap()
        .string_data()
        .clone();
    assert_eq!(
        data2["telegram-bot-token"], bot_token,
        "rotation keeps the bot token"
    );
    assert_ne!(
        data2["proxy-token"], proxy_token,
        "rotation changes the proxy token"
    );
    let spec = compiler::spec::TenantSpec::parse(
        "t",
        &file_at(&repo, rotated, &layout::spec_path("acme")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec.spec.tier.as_str(), "pro");
    assert_eq!(
        compiler::spec::TokenSha256::of_token(&data2["proxy-token"]),
        spec.spec.proxy_token.sha256
    );

    // The rendered output builds.
    if kubectl_available() {
        let out = p.dir.path().join("export");
        export_tree(&repo, p.head(), &out);
        let built = kustomize(&out.join(layout::output_dir("acme"))).expect("tenant folder builds");
        assert!(
            built.contains("kind: Deployment") && built.contains("namespace: customer-acme"),
            "{built}"
        );
        let index = kustomize(&out.join(layout::OUTPUT_DIR)).expect("the index builds");
        assert!(index.contains("name: tenant-acme"), "{index}");
        kustomize(&out.join("flux/platform/tenant-table")).expect("the tenant table builds");
    }

    // History from git, newest first, for auditors.
    let (status, history) = p
        .call(Method::GET, "/v1/tenants/acme/history", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "rotate-proxy-token",
            "resize",
            "reactivate",
            "suspend",
            "update-settings",
            "provision"
        ]
    );
    assert_eq!(history[2]["reason"], "-");
    assert_eq!(history[3]["reason"], "unpaid invoice");
    assert_eq!(history[5]["author"], "ops-admin");

    // A second tenant, then destroy the first.
    let (status, body, other_token) = p.provision("globex").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = p
        .call(
            Method::DELETE,
            "/v1/tenants/acme?reason=churned",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let destroyed = git2::Oid::from_str(body["commit"].as_str().unwrap()).unwrap();
    for path in [
        layout::spec_path("acme"),
        layout::output_kustomization_path("acme"),
        layout::flux_kustomization_path("acme"),
        // acme was alone in its shard: the shard's index goes with it.
        layout::shard_index_path(&layout::shard_of("acme")),
    ] {
        assert!(file_at(&repo, destroyed, &path).is_none(), "{path} removed");
    }
    assert!(file_at(&repo, destroyed, &layout::spec_path("globex")).is_some());
    assert_eq!(
        compiler::render::parse_index(&file_at(&repo, destroyed, layout::INDEX_PATH).unwrap())
            .unwrap(),
        [layout::shard_of("globex")]
    );
    let (status, _) = p.call(Method::GET, "/v1/tenants/acme", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, history) = p
        .call(Method::GET, "/v1/tenants/acme/history", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history[0]["action"], "destroy");
    assert_eq!(history[0]["reason"], "churned");

    // One commit per change, linear.
    let commits = linear_history(&repo, p.head());
    assert_eq!(commits.len(), 1 + 8, "seed + 8 changes");

    // The database agrees with git.
    let store = p.store().await;
    let rows = store.tenants().await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["globex"]
    );
    assert_eq!(e2e::settled_outbox(&store).await, (0, 8));

    // No plaintext token anywhere in either repository, reachable or not.
    let secrets = [
        bot_token.as_str(),
        other_token.as_str(),
        proxy_token.as_str(),
        data2["proxy-token"].as_str(),
        data["gateway-token"].as_str(),
    ];
    for repo_path in [p.remote_path(), p.config.repo.local_path.clone()] {
        let repo = git2::Repository::open_bare(&repo_path).unwrap();
        for secret in secrets {
            assert!(
                objects_containing(&repo, secret).is_empty(),
                "a plaintext token is in {}",
                repo_path.display()
            );
        }
    }
    // Nor in the database files (SQLite keeps them in the data folder).
    if backend == Backend::Sqlite {
        for entry in std::fs::read_dir(p.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("api.db")
            {
                let bytes = std::fs::read(&path).unwrap();
                for secret in secrets {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                        "a plaintext token is in {}",
                        path.display()
                    );
                }
            }
        }
    }
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_on_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_on_postgres() {
    lifecycle(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_make_retries_safe() {
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let token = e2e::bot_token(7);
    p.accept_token(&token);
    let body = Platform::provision_body("initech", &token);
    let (s1, b1) = p
        .call(
            Method::POST,
            "/v1/tenants",
            Some(body.clone()),
            Some("signup-1"),
        )
        .await;
    assert_eq!(s1, StatusCode::CREATED, "{b1}");
    let head = p.head();
    let (s2, b2) = p
        .call(
            Method::POST,
            "/v1/tenants",
            Some(body.clone()),
            Some("signup-1"),
        )
        .await;
    assert_eq!((s2, &b2), (s1, &b1), "the retry gets the first answer");
    assert_eq!(p.head(), head, "and makes no commit");
    let mut other = body.clone();
    other["tier"] = json!("pro");
    let (s3, b3) = p
        .call(Method::POST, "/v1/tenants", Some(other), Some("signup-1"))
        .await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{b3}");
    assert_eq!(b3["error"]["field"], "Idempotency-Key");
    // Keys survive a restart (they are in the database).
    let mut p = p;
    p.restart().await;
    let (s4, b4) = p
        .call(Method::POST, "/v1/tenants", Some(body), Some("signup-1"))
        .await;
    assert_eq!((s4, &b4), (s1, &b1));
    p.finish().await;
}
