//! Webhook acknowledgement latency of the platform bot (not a timed test): Telegram posts
//! updates at a steady rate and the api must answer each quickly (Telegram retries slow answers).
//!
//! It runs the dev platform's api in process (SQLite with `synchronous = FULL`, or PostgreSQL
//! with `--backend postgres`) with the platform bot configured against a local Bot API sink that
//! answers every call as Telegram does, and posts updates open-loop at `--rate` per second for
//! `--seconds` (commands from 500 different users, so the update worker and the outbox sender run
//! beside the webhook as in production). Each update's latency is from sending the request to
//! the end of the answer.
//!
//! The webhook stores updates by group commit (`api::bot::intake`): what is measured is the
//! acknowledgement of a durably stored update, as Telegram sees it.
//!
//! Run: `cargo bench -p api --bench bot_webhook --profile dev -- --rate 100 --seconds 20`
//! (add `--backend postgres` for PostgreSQL at `BENCH_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`).
//! It prints one line with p50/p90/p99/max and the machine's load average before and
//! after the run, so that a figure from a loaded machine reads as one.

// The database and percentile helpers; this bench needs no generated tenants.
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::dev::{self, DevPaths};
use serde_json::json;

fn arg(name: &str, default: &str) -> String {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == name {
            return it.next().unwrap_or_else(|| panic!("{name} VALUE"));
        }
    }
    default.to_owned()
}

/// A Bot API that accepts every call, as Telegram answers a good one.
async fn sink() -> String {
    let app = axum::Router::new().fallback(|| async {
        axum::Json(json!({"ok": true, "result": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}}}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The 1-minute load average (Linux), to print beside the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let rate: u64 = arg("--rate", "100").parse().expect("--rate N");
    let seconds: u64 = arg("--seconds", "30").parse().expect("--seconds N");
    let backend = arg("--backend", "sqlite");
    let dir = tempfile::tempdir().unwrap();
    let paths = DevPaths {
        root: dir.path().join("dev"),
    };
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let (admin, _) = dev::prepare(&paths, checkout).unwrap();
    let mut config = dev::config(&paths, &admin, None, "127.0.0.1:0".parse().unwrap());
    config.database_url = support::database(&backend, &paths.root).await.into();
    let token = "888000:AABbenchbenchbenchbenchbenchbenchbe";
    let secret = "bench-webhook-secret";
    std::fs::write(paths.root.join("bot-token"), token).unwrap();
    std::fs::write(paths.root.join("webhook-secret"), secret).unwrap();
    config.bot.token_path = Some(paths.root.join("bot-token"));
    config.bot.webhook_secret_path = Some(paths.root.join("webhook-secret"));
    config.bot.api_base_url = sink().await;
    let database_url = config.database_url.clone();
    let running = api::app::start(config, std::future::pending())
        .await
        .unwrap();
    let url = format!("http://{}/telegram/webhook", running.addr);
    let http = reqwest::Client::new();

    // Warm up the connection pool and the code paths.
    for i in 0..50 {
        let update = json!({"update_id": 1_000_000 + i, "message": {"message_id": 1, "date": 0, "text": "/help",
            "from": {"id": 1, "is_bot": false, "first_name": "W"}, "chat": {"id": 1, "type": "private"}}});
        http.post(&url)
            .header("X-Telegram-Bot-Api-Secret-Token", secret)
            .json(&update)
            .send()
            .await
            .unwrap();
    }

    let load_before = load_average();
    let total = rate * seconds;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let texts = ["/help", "/status", "/usage", "/start", "hello"];
    for i in 0..total {
        ticker.tick().await;
        let user = 10_000 + (i % 500) as i64;
        let update = json!({"update_id": i as i64 + 1, "message": {"message_id": i, "date": 0,
            "text": texts[i as usize % texts.len()],
            "from": {"id": user, "is_bot": false, "first_name": "Ada"},
            "chat": {"id": user, "type": "private"}}});
        let (http, url, latencies) = (http.clone(), url.clone(), latencies.clone());
        tasks.spawn(async move {
            let start = Instant::now();
            let response = http
                .post(&url)
                .header("X-Telegram-Bot-Api-Secret-Token", secret)
                .json(&update)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let _ = response.bytes().await;
            latencies.lock().unwrap().push(start.elapsed());
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut v = latencies.lock().unwrap().clone();
    v.sort();
    let p99 = support::percentile(&v, 0.99);
    println!(
        "backend {backend}: {} updates at {rate}/s for {seconds} s: p50 {:.2} ms, p90 {:.2} ms, p99 {p99:.2} ms, max {:.2} ms; target p99 <= 20 ms: {}; load average {load_before} before, {} after",
        v.len(),
        support::percentile(&v, 0.5),
        support::percentile(&v, 0.9),
        v.last().unwrap().as_secs_f64() * 1000.0,
        if p99 <= 20.0 { "met" } else { "NOT met" },
        load_average(),
    );
    running.shutdown().await.unwrap();
    support::drop_database(
        &backend,
        secrecy::ExposeSecret::expose_secret(&database_url),
    )
    .await;
}
