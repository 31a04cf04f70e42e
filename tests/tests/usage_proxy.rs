//! The token proxy and the api speak the same usage-event and budget-feed formats: the real proxy
//! (in process, with its production shipper and feed poller) sits between a tenant and an
//! OpenAI-compatible stand-in upstream, ships what it meters to the real api, and enforces the
//! budget the api's feed hands back. The proxy reads the tenant table the api committed (the
//! ConfigMap files, exported as the dev platform does), and uses the proxy token the api encrypted
//! for the tenant.

use std::time::Duration;

use e2e::{Backend, Options, Platform};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn chat(http: &reqwest::Client, proxy: &str, token: &str) -> (StatusCode, Value) {
    let response = http
        .post(format!("{proxy}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": "kimi-for-coding", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn proxy_and_api(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    let (status, body, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let table_dir = tempfile::tempdir().unwrap();
    api::dev_proxy::export_tenant_table(&p.remote_path(), "main", table_dir.path()).unwrap();
    let token = e2e::proxy_token(&p, "acme");
    let upstream = e2e::openai_stand_in().await;
    let config = proxy::Config::from_toml(&format!(
        r#"
listen = "127.0.0.1:0"
table_dir = "{dir}"
table_reload_interval_ms = 100

[upstreams.openai]
base_url = "http://{upstream}"
api_key = "sk-platform-key"

[upstreams.anthropic]
base_url = "http://{upstream}"
api_key = "sk-platform-key"

[nango]
base_url = "http://127.0.0.1:9"
secret_key = "nango-key"

[api]
base_url = "{api}/"
credential = "{credential}"
budget_poll_interval_ms = 100

[usage]
flush_interval_ms = 50
initial_backoff_ms = 50
max_backoff_ms = 200
batch_size = 2
"#,
        dir = table_dir.path().display(),
        api = p.base,
        credential = p.proxy_credential,
    ))
    .expect("proxy config");
    let proxy = proxy::start(config).await.expect("the proxy starts");
    let proxy_base = format!("http://{}", proxy.addr);
    let http = reqwest::Client::new();

    // Three requests through the proxy: metered, shipped (two batches), stored once each.
    for _ in 0..3 {
        let (status, body) = chat(&http, &proxy_base, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let path = format!("/v1/tenants/acme/usage?period={period}");
    eventually("the proxy's usage reaches the ledger", || async {
        p.call(Method::GET, &path, None, None).await.1["total"]["requests"] == 3
    })
    .await;
    let (_, report) = p.call(Method::GET, &path, None, None).await;
    assert_eq!(
        report["total"],
        json!({
            "billableTokens": 450, "inputTokens": 360, "outputTokens": 90,
            "cacheReadTokens": 0, "cacheWriteTokens": 0, "requests": 3, "partialRequests": 0,
        })
    );
    assert_eq!(report["byModel"][0]["model"], "kimi-for-coding");

    // Access changes reach the proxy through the feed alone (the table folder is not refreshed
    // here, as in a cluster before Flux and the kubelet catch up): suspension, reactivation, and a
    // rotation that retires the old token; the new token works once the table carries it.
    let change = |path: &'static str, body: Value| {
        let p = &p;
        async move {
            let (status, answer) = p.call(Method::POST, path, Some(body), None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        }
    };
    change("/v1/tenants/acme/suspend", json!({})).await;
    eventually("the suspension reaches the proxy", || async {
        chat(&http, &proxy_base, &token).await.0 == StatusCode::FORBIDDEN
    })
    .await;
    change("/v1/tenants/acme/reactivate", json!({})).await;
    eventually("the reactivation reaches the proxy", || async {
        chat(&http, &proxy_base, &token).await.0 == StatusCode::OK
    })
    .await;
    change("/v1/tenants/acme/rotate-proxy-token", json!({})).await;
    let new_token = e2e::proxy_token(&p, "acme");
    assert_ne!(new_token, token);
    eventually("the rotation reaches the proxy", || async {
        chat(&http, &proxy_base, &token).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(
        chat(&http, &proxy_base, &new_token).await.0,
        StatusCode::UNAUTHORIZED,
        "the feed never widens: the new token waits for the table"
    );
    api::dev_proxy::export_tenant_table(&p.remote_path(), "main", table_dir.path()).unwrap();
    eventually("the new token works with the table", || async {
        chat(&http, &proxy_base, &new_token).await.0 == StatusCode::OK
    })
    .await;
    let token = new_token;
    // At least five requests were answered (and more while the changes were on their way).
    let answered = 5;

    // Another replica's traffic (shipped in the proxy's own event type) spends the budget; the
    // proxy learns it from the feed and refuses the tenant.
    let other_replica = proxy::usage::UsageEvent {
        id: uuid::Uuid::now_v7(),
        tenant: "acme".into(),
        model: "kimi-for-coding".into(),
        input_tokens: 5_000_000,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        latency_ms: 900,
        status: 200,
        partial: false,
        api: proxy::usage::ApiName::Openai,
        started_at: chrono::Utc::now(),
    };
    let batch = proxy::usage::UsageBatch {
        events: vec![other_replica],
    };
    for _ in 0..2 {
        // Sent twice, as after a lost acknowledgement: counted once.
        let response = http
            .post(format!("{}/internal/usage", p.base))
            .bearer_auth(&p.proxy_credential)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let feed_url = format!("{}/internal/budget", p.base);
    eventually("the feed says exhausted", || async {
        let response = http
            .get(&feed_url)
            .bearer_auth(&p.proxy_credential)
            .send()
            .await
            .unwrap();
        let bytes = response.bytes().await.unwrap();
        // The proxy's own reader of the feed accepts the api's body.
        let feed: proxy::budget_feed::BudgetFeed = serde_json::from_slice(&bytes).unwrap();
        feed.tenants.iter().any(|t| {
            // The other replica's batch, sent twice, counts once.
            t.tenant == "acme"
                && (5_000_000 + 150 * answered..10_000_000).contains(&t.used)
                && t.budget == 5_000_000
        })
    })
    .await;
    eventually("the proxy refuses the exhausted tenant", || async {
        let (status, body) = chat(&http, &proxy_base, &token).await;
        status == StatusCode::TOO_MANY_REQUESTS && body["error"]["code"] == "insufficient_quota"
    })
    .await;

    proxy.shutdown().await.unwrap();
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_ships_to_the_api_and_obeys_its_feed_on_sqlite() {
    proxy_and_api(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_ships_to_the_api_and_obeys_its_feed_on_postgres() {
    proxy_and_api(Backend::Postgres).await;
}
