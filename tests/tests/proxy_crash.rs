//! Usage survives a kill of the token proxy: the real proxy binary, with its usage journal, serves
//! a tenant under load and is killed with SIGKILL (as an OOM kill would) while events wait for
//! their next flush; restarted on the same journal, it ships them, and every request the tenant got
//! an answer for is in the api's ledger exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Json;
use e2e::{Backend, Options, Platform};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

/// An OpenAI stand-in that reports the number in the request's message as its prompt tokens, so
/// that each request's usage event can be told apart in the ledger.
async fn numbering_upstream() -> SocketAddr {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|Json(request): Json<Value>| async move {
            let n: u64 = request["messages"][0]["content"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Json(json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1},
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn start_proxy(config: &Path) -> Child {
    Command::new(e2e::proxy_binary())
        .arg("--config")
        .arg(config)
        .env("PROXY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the proxy starts")
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the proxy never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ledger's usage events of `tenant`'s live incarnation, counted per prompt-token number.
async fn ledger(store: &api::store::Store, tenant: &str) -> BTreeMap<i64, i64> {
    let key = store.ledger_keys(&[tenant]).await.unwrap().remove(tenant);
    let rows = sqlx::query(
        "SELECT input_tokens, COUNT(*) AS n FROM usage_events WHERE tenant = $1 GROUP BY input_tokens",
    )
    .bind(key.expect("the tenant is in the index"))
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| (r.get::<i64, _>("input_tokens"), r.get::<i64, _>("n")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answered_usage_survives_a_sigkill_of_the_proxy() {
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let token = e2e::bot_token(7);
    p.accept_token(&token);
    let mut body = Platform::provision_body("acme", &token);
    body["tier"] = json!("team"); // 600 requests per minute: room for load
    let (status, answer) = p
        .call(reqwest::Method::POST, "/v1/tenants", Some(body), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    api::dev_proxy::export_tenant_table(&p.remote_path(), "main", &table).unwrap();
    let proxy_token = e2e::proxy_token(&p, "acme");
    let upstream = numbering_upstream().await;
    let port = e2e::free_port();
    let config = dir.path().join("proxy.toml");
    // The default flush interval (1 s) and batch size (500): answered events wait in memory.
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
table_dir = "{table}"
[upstreams.openai]
base_url = "http://{upstream}"
api_key = "sk-platform-key"
[api]
base_url = "{api}"
credential = "{credential}"
[usage]
journal_dir = "{journal}"
"#,
            table = table.display(),
            api = p.base,
            credential = p.proxy_credential,
            journal = dir.path().join("journal").display(),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut proxy = start_proxy(&config);
    wait_ready(&http, &base).await;

    // Eight clients send numbered requests until the proxy dies.
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (http, base, token) = (http.clone(), base.clone(), proxy_token.clone());
        let (answered, next) = (answered.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let sent = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&json!({"model": "kimi-k2", "max_tokens": 1,
                                  "messages": [{"role": "user", "content": n.to_string()}]}))
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                let ok = response.status() == StatusCode::OK;
                // Answered: the whole body arrived.
                if let Ok(body) = response.json::<Value>().await {
                    if ok && body["usage"]["prompt_tokens"] == n {
                        answered.lock().unwrap().insert(n as i64);
                    }
                } else {
                    return;
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.kill().unwrap(); // SIGKILL
    proxy.wait().unwrap();
    for c in clients {
        let _ = c.await;
    }
    let answered: BTreeSet<i64> = answered.lock().unwrap().clone();
    let store = p.store().await;
    let before = ledger(&store, "acme").await;
    assert!(
        answered.iter().any(|n| !before.contains_key(n)),
        "the kill came after every event was shipped: the test proves nothing ({} answered)",
        answered.len()
    );

    // Restarted on the same journal: it ships what the api never acknowledged.
    let mut proxy = start_proxy(&config);
    wait_ready(&http, &base).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let after = ledger(&store, "acme").await;
        if answered.iter().all(|n| after.contains_key(n)) {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "answered requests missing from the ledger: {:?}",
            answered
                .iter()
                .filter(|n| !after.contains_key(n))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Exactly once: no request recorded twice (a replayed event the api had already stored is
    // deduplicated by its id), and nothing recorded that was never sent.
    let twice: Vec<_> = after.iter().filter(|(_, &c)| c != 1).collect();
    assert!(twice.is_empty(), "recorded more than once: {twice:?}");
    let sent = next.load(std::sync::atomic::Ordering::SeqCst) as i64;
    assert!(after.keys().all(|n| (1..sent).contains(n)));
    // Requests in flight at the kill may be recorded without an answer; never more than those.
    assert!(
        after.len() - answered.len() <= 8,
        "{} {}",
        after.len(),
        answered.len()
    );

    let _ = proxy.kill();
    let _ = proxy.wait();
    p.finish().await;
}
