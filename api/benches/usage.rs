//! Usage ledger benchmark (not a timed test): starts the real api in process on SQLite or
//! PostgreSQL with a state repo whose tenant table holds N tenants, then measures
//!
//! - **ingest**: C concurrent clients (proxy replicas) POST batches of B fresh usage events to
//!   `/internal/usage` (events spread over the N tenants, three models and the current month):
//!   events per second over the whole run, and the latency of one batch;
//! - **replay**: the same batches sent again (every event a duplicate);
//! - **budget feed**: `GET /internal/budget` one request at a time, to the last byte of the body
//!   (N tenants in it), while idle and while the ingest runs beside it.
//!
//! At the end it checks that the feed's `used` adds up to the billable tokens sent.
//!
//! Run: `cargo bench -p api --bench usage -- --backend sqlite --tenants 10000 --batches 200 --batch-size 500 --clients 4`
//! (`--backend postgres` uses `BENCH_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test,
//! and creates and drops a fresh database).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use api::config::{Config, ProxyCredential, TelegramVerification};

mod support;
use sha2::{Digest, Sha256};
use support::{database, drop_database, percentile};

struct Args {
    backend: String,
    tenants: usize,
    batches: usize,
    batch_size: usize,
    clients: usize,
    feed_requests: usize,
}

fn args() -> Args {
    let mut args = Args {
        backend: "sqlite".into(),
        tenants: 10_000,
        batches: 200,
        batch_size: 500,
        clients: 4,
        feed_requests: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag value");
        match flag.as_str() {
            "--backend" => args.backend = value(),
            "--tenants" => args.tenants = value().parse().expect("--tenants N"),
            "--batches" => args.batches = value().parse().expect("--batches N"),
            "--batch-size" => args.batch_size = value().parse().expect("--batch-size N"),
            "--clients" => args.clients = value().parse().expect("--clients N"),
            "--feed-requests" => args.feed_requests = value().parse().expect("--feed-requests N"),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        latencies.len()
    )
}

/// Batches of fresh events (JSON bodies) and the billable tokens they carry.
fn batches(args: &Args) -> (Vec<Vec<u8>>, u64) {
    let models = ["kimi-for-coding", "kimi-for-coding-highspeed", "k3-256k"];
    let now = time::OffsetDateTime::now_utc();
    let mut billable = 0u64;
    let mut n = 0usize;
    let bodies = (0..args.batches)
        .map(|_| {
            let events: Vec<serde_json::Value> = (0..args.batch_size)
                .map(|_| {
                    n += 1;
                    let anthropic = n % 2 == 0;
                    let (input, output, cache_read, cache_write) =
                        (100 + (n % 900) as u64, 20 + (n % 80) as u64, (n % 7) as u64, (n % 3) as u64);
                    billable += input
                        + output
                        + if anthropic { cache_read + cache_write } else { 0 };
                    // Spread over the days of the month so far.
                    let day = 1 + (n as u8 % now.day());
                    let at = now.replace_day(day).unwrap();
                    serde_json::json!({
                        "id": uuid::Uuid::now_v7().to_string(),
                        "tenant": format!("tenant-{:05}", n % args.tenants),
                        "model": models[n % 3],
                        "inputTokens": input, "outputTokens": output,
                        "cacheReadTokens": cache_read, "cacheWriteTokens": cache_write,
                        "latencyMs": 800, "status": 200, "partial": n % 50 == 0,
                        "api": if anthropic { "anthropic" } else { "openai" },
                        "startedAt": at.format(&time::format_description::well_known::Rfc3339).unwrap(),
                    })
                })
                .collect();
            serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap()
        })
        .collect();
    (bodies, billable)
}

/// Sends every body with `clients` concurrent clients; returns (wall time, batch latencies, accepted).
async fn send_all(
    http: &reqwest::Client,
    url: &str,
    credential: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    clients: usize,
) -> (Duration, Vec<Duration>, u64) {
    let next = Arc::new(AtomicUsize::new(0));
    let wall = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, credential, bodies, next) = (
                http.clone(),
                url.to_owned(),
                credential.to_owned(),
                bodies.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut accepted = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return (latencies, accepted);
                    };
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .bearer_auth(&credential)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    let reply: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(status, 200, "{reply}");
                    latencies.push(t.elapsed());
                    accepted += reply["accepted"].as_u64().unwrap();
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut accepted = 0;
    for w in workers {
        let (l, a) = w.await.unwrap();
        latencies.extend(l);
        accepted += a;
    }
    (wall.elapsed(), latencies, accepted)
}

async fn feed_once(http: &reqwest::Client, url: &str, credential: &str) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let r = http.get(url).bearer_auth(credential).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    (t.elapsed(), body.to_vec())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let identity = age::x25519::Identity::generate();
    std::fs::write(
        dir.path().join("age.agekey"),
        format!("{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    let recipient = identity.to_public().to_string();
    let started = Instant::now();
    let remote = dir.path().join("state.git");
    api::dev::seed_with_tenants(
        &remote,
        checkout,
        &recipient,
        &support::tenants(
            args.tenants,
            "tenant",
            |i| ["starter", "pro", "team"][i % 3],
            &recipient,
        ),
    )
    .unwrap();
    eprintln!(
        "seeded {} tenants in {:.1} s",
        args.tenants,
        started.elapsed().as_secs_f64()
    );

    let database_url = database(&args.backend, dir.path()).await;
    let credential = hex::encode(rand::random::<[u8; 32]>());
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.clone().into(),
        database_max_connections: 16,
        ..Config::default()
    };
    config.repo.local_path = dir.path().join("api-clone.git");
    config.repo.remote_url = remote.display().to_string().into();
    config.telegram.verification = TelegramVerification::Getme;
    config.proxy_credentials = vec![ProxyCredential {
        name: "bench".into(),
        sha256: hex::encode(Sha256::digest(credential.as_bytes())),
    }];
    let running = api::app::start(config, std::future::pending())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let feed_url = format!("{base}/internal/budget");
    let usage_url = format!("{base}/internal/usage");

    // Wait until the feed lists every tenant.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(&feed_url)
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let feed: serde_json::Value = r.json().await.unwrap();
            if feed["tenants"].as_array().unwrap().len() == args.tenants {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the feed never listed every tenant"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The feed while idle.
    let mut idle = Vec::new();
    let mut size = 0;
    for _ in 0..args.feed_requests {
        let (t, body) = feed_once(&http, &feed_url, &credential).await;
        idle.push(t);
        size = body.len();
    }
    println!(
        "| budget feed, idle | {} | {} tenants ({} KiB) | {} |",
        args.backend,
        args.tenants,
        size / 1024,
        summary(idle)
    );

    // Ingest, with the feed polled beside it.
    let (bodies, billable) = batches(&args);
    let bodies = Arc::new(bodies);
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let (http, url, credential, polling) = (
            http.clone(),
            feed_url.clone(),
            credential.clone(),
            polling.clone(),
        );
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while polling.load(Ordering::Relaxed) {
                latencies.push(feed_once(&http, &url, &credential).await.0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        })
    };
    let (wall, latencies, accepted) =
        send_all(&http, &usage_url, &credential, &bodies, args.clients).await;
    polling.store(false, Ordering::Relaxed);
    let busy = poller.await.unwrap();
    let events = args.batches * args.batch_size;
    assert_eq!(accepted as usize, events, "every fresh event accepted");
    println!(
        "| ingest | {} | {} events in batches of {}, {} clients | {:.0} events/s | batch {} |",
        args.backend,
        events,
        args.batch_size,
        args.clients,
        events as f64 / wall.as_secs_f64(),
        summary(latencies)
    );
    println!(
        "| budget feed, during ingest | {} | {} tenants | {} |",
        args.backend,
        args.tenants,
        summary(busy)
    );

    // Replay: every event a duplicate.
    let (wall, latencies, accepted) =
        send_all(&http, &usage_url, &credential, &bodies, args.clients).await;
    assert_eq!(accepted, 0, "a replay stores nothing");
    println!(
        "| replay (all duplicates) | {} | {} events in batches of {}, {} clients | {:.0} events/s | batch {} |",
        args.backend,
        events,
        args.batch_size,
        args.clients,
        events as f64 / wall.as_secs_f64(),
        summary(latencies)
    );

    // The feed adds up to what was sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = feed_once(&http, &feed_url, &credential).await;
        let feed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let used: u64 = feed["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["used"].as_u64().unwrap())
            .sum();
        if used == billable {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the feed's used ({used}) never matched the billable tokens sent ({billable})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("checked: the feed's used adds up to the {billable} billable tokens sent");

    running.shutdown().await.unwrap();
    drop_database(&args.backend, &database_url).await;
}
