//! Access-change latency benchmark (not a timed test): how long a suspension, a reactivation, a
//! token rotation and a lowered tier take from the api's answer to the change to the moment every
//! one of two token proxy replicas decides accordingly, through the budget feed alone.
//!
//! It runs the dev platform's api in process (SQLite, a seeded state repo) and two real proxies in
//! process with the default budget-feed poll, sharing a tenant table that is exported only when a
//! change needs the table (a new token, a raised tier), as Flux and the kubelet would deliver it
//! minutes later. Each replica's decision is read by polling its `authenticate` (the check every
//! request makes, narrowing included) every 10 ms, so that rate limits do not blur the figure.
//!
//! Run: `cargo bench -p api --bench access_latency -- --cycles 20`

use std::path::Path;
use std::time::{Duration, Instant};

use api::dev::{self, DevPaths};
use api::dev_proxy::{self, DevProxyOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TENANT: &str = "acme";

fn cycles() -> usize {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--cycles" {
            return it.next().and_then(|v| v.parse().ok()).expect("--cycles N");
        }
    }
    20
}

struct Bench {
    http: reqwest::Client,
    base: String,
    admin: String,
    paths: DevPaths,
    replicas: Vec<proxy::Running>,
}

/// What a replica would answer a request with `token` (200 for admitted), and the tenant's
/// requests-per-minute limit then.
fn decision(replica: &proxy::Running, token: &str) -> (StatusCode, Option<u32>) {
    match replica.app.authenticate(Some(token)) {
        Ok(t) => (StatusCode::OK, Some(t.limits.requests_per_minute)),
        Err(e) => (e.status(), None),
    }
}

impl Bench {
    async fn change(&self, action: &str, body: Value) {
        let r = self
            .http
            .post(format!("{}/v1/tenants/{TENANT}/{action}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{action}");
    }

    async fn token(&self) -> String {
        let r: Value = self
            .http
            .get(format!("{}/v1/dev/tenants/{TENANT}/proxy-token", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["proxyToken"].as_str().unwrap().to_owned()
    }

    /// Time from `start` until every replica's decision satisfies `done`.
    async fn until(
        &self,
        start: Instant,
        what: &str,
        done: impl Fn(&proxy::Running) -> bool,
    ) -> Duration {
        let mut pending: Vec<usize> = (0..self.replicas.len()).collect();
        let mut last = Duration::ZERO;
        while !pending.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
            pending.retain(|&i| {
                let ok = done(&self.replicas[i]);
                if ok {
                    last = start.elapsed();
                }
                !ok
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        last
    }

    /// Delivers the table at the head to the replicas (Flux and the kubelet, minutes later in a
    /// cluster) and waits until they have it.
    async fn deliver_table(&self, token: &str, rpm: u32) {
        dev_proxy::export_tenant_table(
            &self.paths.state_repo(),
            "main",
            &self.paths.tenant_table(),
        )
        .unwrap();
        self.until(Instant::now(), "the table arrives", |r| {
            decision(r, token) == (StatusCode::OK, Some(rpm))
        })
        .await;
    }
}

fn summary(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} |",
        v.len(),
        q(0.5).as_secs_f64(),
        q(0.99).as_secs_f64(),
        v.last().unwrap().as_secs_f64()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let cycles = cycles();
    let dir = tempfile::tempdir().unwrap();
    let paths = DevPaths {
        root: dir.path().join("dev"),
    };
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let (admin, _) = dev::prepare(&paths, checkout).unwrap();
    let config = dev::config(&paths, &admin, None, "127.0.0.1:0".parse().unwrap());
    let running = api::app::start(config, std::future::pending())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&admin)
        .json(&json!({"name": TENANT, "owner": {"email": "ada@example.com", "telegramUserId": 123456789}, "tier": "pro",
                      "telegramBotToken": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawx"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    let mut replicas = Vec::new();
    for i in 0..2 {
        let options = DevProxyOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            openai_base_url: Some("http://127.0.0.1:9".into()),
            anthropic_base_url: None,
            upstream_api_key: "k".into(),
        };
        dev_proxy::export_tenant_table(&paths.state_repo(), "main", &paths.tenant_table()).unwrap();
        let mut config = dev_proxy::proxy_config(&paths, running.addr, &options).unwrap();
        config.usage.journal_dir = Some(dir.path().join(format!("journal-{i}")));
        let poll = config.api.as_ref().unwrap().budget_poll_interval_ms;
        if i == 0 {
            println!(
                "budget feed poll: {poll} ms (the proxy's default); 2 replicas; {cycles} cycles"
            );
        }
        replicas.push(proxy::start(config).await.unwrap());
    }
    let bench = Bench {
        http,
        base,
        admin,
        paths,
        replicas,
    };
    let mut token = bench.token().await;
    bench.deliver_table(&token, 120).await;

    let (mut suspend, mut reactivate, mut rotate, mut lower) = (vec![], vec![], vec![], vec![]);
    for cycle in 0..cycles {
        // Spread the changes over the poll's phase.
        tokio::time::sleep(Duration::from_millis(fastrand_ms(cycle))).await;
        bench.change("suspend", json!({})).await;
        let t = Instant::now();
        suspend.push(
            bench
                .until(t, "suspended", |r| {
                    decision(r, &token).0 == StatusCode::FORBIDDEN
                })
                .await,
        );
        bench.change("reactivate", json!({})).await;
        let t = Instant::now();
        reactivate.push(
            bench
                .until(t, "reactivated", |r| {
                    decision(r, &token).0 == StatusCode::OK
                })
                .await,
        );

        tokio::time::sleep(Duration::from_millis(fastrand_ms(cycle + 7))).await;
        bench.change("resize", json!({"tier": "starter"})).await;
        let t = Instant::now();
        lower.push(
            bench
                .until(t, "lowered", |r| decision(r, &token).1 == Some(30))
                .await,
        );
        bench.change("resize", json!({"tier": "pro"})).await;
        bench.deliver_table(&token, 120).await;

        tokio::time::sleep(Duration::from_millis(fastrand_ms(cycle + 13))).await;
        bench.change("rotate-proxy-token", json!({})).await;
        let t = Instant::now();
        let old = token.clone();
        rotate.push(
            bench
                .until(t, "rotated", |r| {
                    decision(r, &old).0 == StatusCode::UNAUTHORIZED
                })
                .await,
        );
        token = bench.token().await;
        bench.deliver_table(&token, 120).await;
        eprintln!("cycle {} of {cycles} done", cycle + 1);
    }
    println!("\n| change (api answered → both replicas decide) | n | p50 s | p99 s | max s |");
    println!("|---|---|---|---|---|");
    println!("{}", summary("suspend → 403", suspend));
    println!(
        "{}",
        summary("reactivate (suspension only in the feed) → 200", reactivate)
    );
    println!("{}", summary("rotate → old token 401", rotate));
    println!("{}", summary("tier lowered → lower limits", lower));
}

/// A pseudo-random pause under 2 s, fixed per cycle so that runs are comparable.
fn fastrand_ms(seed: usize) -> u64 {
    (seed as u64).wrapping_mul(2_654_435_761) % 2_000
}
