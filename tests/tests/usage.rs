//! The usage ledger and the budget feed through HTTP against the real api, on SQLite and on
//! PostgreSQL: the proxy's credential and nothing else opens the internal endpoints; a batch with
//! one bad event is refused whole; duplicates, replays, out-of-order and concurrent batches are
//! counted exactly once; events fall into UTC days and months; the customer endpoints report by
//! day and by model; the feed follows usage and the tenant's tier.

use std::collections::BTreeMap;

use e2e::{Backend, Options, Platform};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

struct Ev {
    tenant: &'static str,
    model: &'static str,
    at: String,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    api: &'static str,
    partial: bool,
}

impl Ev {
    fn openai(tenant: &'static str, model: &'static str, at: &str, input: u64, output: u64) -> Ev {
        Ev {
            tenant,
            model,
            at: at.to_owned(),
            input,
            output,
            cache_read: 0,
            cache_write: 0,
            api: "openai",
            partial: false,
        }
    }

    fn json(&self, id: &str) -> Value {
        json!({
            "id": id, "tenant": self.tenant, "model": self.model,
            "inputTokens": self.input, "outputTokens": self.output,
            "cacheReadTokens": self.cache_read, "cacheWriteTokens": self.cache_write,
            "latencyMs": 120, "status": 200, "partial": self.partial, "api": self.api,
            "startedAt": self.at,
        })
    }

    fn billable(&self) -> u64 {
        match self.api {
            "openai" => self.input + self.output,
            _ => self.input + self.cache_read + self.cache_write + self.output,
        }
    }
}

async fn post_usage(p: &Platform, credential: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut request = p.http.post(format!("{}/internal/usage", p.base)).json(body);
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn usage(p: &Platform, tenant: &str, period: &str) -> Value {
    let (status, body) = p
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/usage?period={period}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn current_period() -> String {
    chrono::Utc::now().format("%Y-%m").to_string()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn refusals(p: &Platform) {
    let good = Ev::openai("ledger-a", "k2p5", "2026-10-05T10:00:00Z", 10, 5);
    let body = json!({"events": [good.json(&new_id())]});

    // Only the proxy's credential opens the internal endpoints: not an admin token, not nothing.
    for credential in [None, Some(p.admin_token.as_str()), Some("wrong")] {
        let (status, reply) = post_usage(p, credential, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
        assert_eq!(reply["error"]["code"], "unauthorized");
        assert!(!reply.to_string().contains(&p.proxy_credential));
        let mut request = p.http.get(format!("{}/internal/budget", p.base));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The proxy's credential does not open the customer endpoints.
    let response = p
        .http
        .get(format!("{}/v1/tenants/ledger-a/usage", p.base))
        .bearer_auth(&p.proxy_credential)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A batch with one bad event is refused whole, naming the field; nothing is written.
    let first = new_id();
    let spoiled = |key: &str, value: Value| {
        let mut second = good.json(&new_id());
        if value.is_null() {
            second.as_object_mut().unwrap().remove(key);
        } else {
            second[key] = value;
        }
        json!({"events": [good.json(&first), second]})
    };
    let cases = [
        (
            spoiled("inputTokens", json!(-1)),
            StatusCode::BAD_REQUEST,
            "events[1].inputTokens",
        ),
        (
            spoiled("outputTokens", json!("9")),
            StatusCode::BAD_REQUEST,
            "events[1].outputTokens",
        ),
        (
            spoiled("extra", json!(1)),
            StatusCode::BAD_REQUEST,
            "events[1].extra",
        ),
        (
            spoiled("startedAt", Value::Null),
            StatusCode::BAD_REQUEST,
            "events[1].startedAt",
        ),
        (
            spoiled("api", json!("gemini")),
            StatusCode::BAD_REQUEST,
            "events[1].api",
        ),
        (
            spoiled("id", json!("not-a-uuid")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[1].id",
        ),
        (
            spoiled("id", json!(uuid::Uuid::new_v4().to_string())),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[1].id",
        ),
        (
            spoiled("tenant", json!("Not_A_Tenant")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[1].tenant",
        ),
        (
            spoiled("model", json!("")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[1].model",
        ),
        (
            spoiled("startedAt", json!("yesterday")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[1].startedAt",
        ),
        (
            json!({"events": [good.json(&first)], "more": true}),
            StatusCode::BAD_REQUEST,
            "more",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "events"),
    ];
    for (body, expected, field) in cases {
        let (status, reply) = post_usage(p, Some(&p.proxy_credential), &body).await;
        assert_eq!(status, expected, "{reply}");
        assert_eq!(reply["error"]["field"], field, "{reply}");
    }
    let response = p
        .http
        .post(format!("{}/internal/usage", p.base))
        .bearer_auth(&p.proxy_credential)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing of the refused batches was stored: the good event counts as new now.
    let (status, reply) = post_usage(
        p,
        Some(&p.proxy_credential),
        &json!({"events": [good.json(&first)]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, json!({"accepted": 1, "duplicates": 0}));

    // Customer endpoints: bad and future periods, unknown tenants.
    let (status, reply) = p
        .call(
            Method::GET,
            "/v1/tenants/ledger-a/usage?period=2026-13",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reply["error"]["field"], "period");
    let (status, reply) = p
        .call(
            Method::GET,
            "/v1/tenants/ledger-a/usage?period=9999-01",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply["error"]["field"], "period");
    let (status, _) = p
        .call(Method::GET, "/v1/tenants/nobody/usage", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = p
        .call(Method::GET, "/v1/tenants/nobody/usage/periods", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn exactly_once(p: &Platform) {
    // Across the turn of a year, in UTC: the last millisecond of December, an instant given in
    // +01:00 that is still December in UTC, and the first millisecond of January.
    let events = [
        Ev::openai("ledger-b", "k2p5", "2025-12-31T23:59:59.999Z", 100, 10),
        Ev::openai("ledger-b", "k2p5", "2026-01-01T00:30:00+01:00", 200, 20),
        Ev {
            cache_read: 7,
            cache_write: 3,
            api: "anthropic",
            partial: true,
            ..Ev::openai(
                "ledger-b",
                "kimi-for-coding",
                "2026-01-01T00:00:00.000Z",
                300,
                30,
            )
        },
        Ev::openai("ledger-b", "k2p5", "2026-01-02T12:00:00Z", 400, 40),
        Ev::openai("ledger-c", "k2p5", "2026-01-02T12:00:00Z", 1, 1),
    ];
    let ids: Vec<String> = events.iter().map(|_| new_id()).collect();
    let batch = |which: &[usize]| json!({"events": which.iter().map(|&i| events[i].json(&ids[i])).collect::<Vec<_>>()});
    let credential = Some(p.proxy_credential.as_str());
    // Newer events first, then a resend, then an overlapping batch out of order.
    let (status, reply) = post_usage(p, credential, &batch(&[3, 1])).await;
    assert_eq!(
        (status, reply),
        (StatusCode::OK, json!({"accepted": 2, "duplicates": 0}))
    );
    let (_, reply) = post_usage(p, credential, &batch(&[3, 1])).await;
    assert_eq!(reply, json!({"accepted": 0, "duplicates": 2}));
    let (_, reply) = post_usage(p, credential, &batch(&[4, 2, 1, 0, 3, 0])).await;
    assert_eq!(reply, json!({"accepted": 3, "duplicates": 3}));

    let december = usage(p, "ledger-b", "2025-12").await;
    assert_eq!(december["current"], false);
    assert_eq!(december["from"], "2025-12-01");
    assert_eq!(december["to"], "2025-12-31");
    assert!(december.get("budget").is_none());
    assert_eq!(december["total"]["requests"], 2);
    assert_eq!(december["total"]["billableTokens"], 110 + 220);
    let days = december["byDay"].as_array().unwrap();
    assert_eq!(days.len(), 31, "every day of a past month");
    assert_eq!(days[30]["day"], "2025-12-31");
    assert_eq!(days[30]["requests"], 2);
    assert_eq!(days[0]["requests"], 0);

    let january = usage(p, "ledger-b", "2026-01").await;
    assert_eq!(
        january["total"],
        json!({
            "billableTokens": 340 + 440, "inputTokens": 700, "outputTokens": 70,
            "cacheReadTokens": 7, "cacheWriteTokens": 3, "requests": 2, "partialRequests": 1,
        })
    );
    let models: BTreeMap<String, Value> = january["byModel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["model"].as_str().unwrap().to_owned(), m.clone()))
        .collect();
    assert_eq!(models["kimi-for-coding"]["billableTokens"], 340);
    assert_eq!(models["kimi-for-coding"]["partialRequests"], 1);
    assert_eq!(models["k2p5"]["billableTokens"], 440);
    let days = january["byDay"].as_array().unwrap();
    assert_eq!(days[0]["billableTokens"], 340);
    assert_eq!(days[1]["billableTokens"], 440);
    assert_eq!(
        usage(p, "ledger-c", "2026-01").await["total"]["requests"],
        1
    );

    let (status, list) = p
        .call(
            Method::GET,
            "/v1/tenants/ledger-b/usage/periods",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let periods: Vec<(&str, i64)> = list["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["period"].as_str().unwrap(),
                p["billableTokens"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(periods, vec![("2026-01", 780), ("2025-12", 330)]);

    // Concurrent batches that overlap: every event counted once.
    let many: Vec<Ev> = (0..400)
        .map(|i| {
            Ev::openai(
                "ledger-d",
                if i % 2 == 0 { "k2p5" } else { "k3" },
                &format!("2026-02-{:02}T08:00:00Z", 1 + i % 28),
                1 + i as u64,
                1,
            )
        })
        .collect();
    let many_ids: Vec<String> = many.iter().map(|_| new_id()).collect();
    let posts = (0..8).map(|k| {
        // Batch k holds events [50k, 50k + 150): each event is in up to three batches.
        let body = json!({"events": (50 * k..(50 * k + 150).min(400))
            .map(|i| many[i].json(&many_ids[i]))
            .collect::<Vec<_>>()});
        async move { post_usage(p, Some(&p.proxy_credential), &body).await }
    });
    let replies = futures::future::join_all(posts).await;
    let mut accepted = 0;
    for (status, reply) in &replies {
        assert_eq!(*status, StatusCode::OK, "{reply}");
        accepted += reply["accepted"].as_i64().unwrap();
    }
    assert_eq!(accepted, 400, "each event accepted by exactly one batch");
    let february = usage(p, "ledger-d", "2026-02").await;
    let expected: u64 = many.iter().map(Ev::billable).sum();
    assert_eq!(february["total"]["billableTokens"], expected);
    assert_eq!(february["total"]["requests"], 400);
    let by_day: i64 = february["byDay"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["billableTokens"].as_i64().unwrap())
        .sum();
    assert_eq!(by_day as u64, expected);
}

async fn budget_feed(p: &Platform) {
    let (status, body, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The feed picks the new tenant up from the tenant table at the head, with its tier's budget.
    let entry = p.budget_entry_until("acme", |e| !e.is_null()).await;
    // With its access at the head: what the proxies narrow their table with.
    let token_sha256 = hex::encode(sha2::Sha256::digest(e2e::proxy_token(p, "acme").as_bytes()));
    assert_eq!(
        entry,
        json!({"tenant": "acme", "used": 0, "budget": 5_000_000, "state": "ok",
               "access": {"state": "active", "tokenSha256": token_sha256, "limits": {
                   "requestsPerMinute": 30, "tokensPerMinute": 60000,
                   "monthlyTokenBudget": 5_000_000, "concurrentRequests": 2}}})
    );
    assert_eq!(p.budget_feed().await["period"], current_period());

    let now = now_rfc3339();
    let spend = |input: u64| {
        let ev = Ev::openai("acme", "k2p5", &now, input, 0);
        json!({"events": [ev.json(&new_id())]})
    };
    let credential = Some(p.proxy_credential.as_str());
    assert_eq!(
        post_usage(p, credential, &spend(4_500_000)).await.0,
        StatusCode::OK
    );
    p.budget_entry_until("acme", |e| {
        e["state"] == "warning" && e["used"] == 4_500_000
    })
    .await;
    // Usage of another month does not count.
    let old = Ev::openai("acme", "k2p5", "2020-01-15T00:00:00Z", 9_000_000, 0);
    let (status, _) = post_usage(p, credential, &json!({"events": [old.json(&new_id())]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        post_usage(p, credential, &spend(500_000)).await.0,
        StatusCode::OK
    );
    p.budget_entry_until("acme", |e| {
        e["state"] == "exhausted" && e["used"] == 5_000_000
    })
    .await;
    let report = usage(p, "acme", &current_period()).await;
    assert_eq!(report["current"], true);
    assert_eq!(report["budget"], 5_000_000);
    assert_eq!(report["state"], "exhausted");
    assert_eq!(report["total"]["billableTokens"], 5_000_000);

    // A resize to a bigger tier raises the budget in the feed.
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/acme/resize",
            Some(json!({"tier": "pro"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    p.budget_entry_until("acme", |e| e["budget"] == 30_000_000 && e["state"] == "ok")
        .await;

    // Pollers that send the ETag back get 304 while nothing changed.
    let response = p
        .http
        .get(format!("{}/internal/budget", p.base))
        .bearer_auth(&p.proxy_credential)
        .send()
        .await
        .unwrap();
    let etag = response.headers()["etag"].clone();
    let response = p
        .http
        .get(format!("{}/internal/budget", p.base))
        .bearer_auth(&p.proxy_credential)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
}

async fn ledger(backend: Backend) {
    let Some(p) = Platform::start(backend, Options::default()).await else {
        return;
    };
    refusals(&p).await;
    exactly_once(&p).await;
    budget_feed(&p).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_on_sqlite() {
    ledger(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_on_postgres() {
    ledger(Backend::Postgres).await;
}
