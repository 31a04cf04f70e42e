//! Provisioning benchmark (not a timed test): starts the real api in process on SQLite or
//! PostgreSQL with a state repo that already holds N tenants, then measures
//!
//! - provisions from request to answer (the commit pushed to the local bare state repo) with C
//!   concurrent clients in a closed loop (each sends its next request when the last is
//!   answered): throughput and latency percentiles;
//! - with `--rate R`, provisions offered in an open loop at R per second with at most C in flight:
//!   latency percentiles measured from each request's scheduled time, so that a request held back
//!   because C were in flight counts its wait (by Little's law, C closed-loop clients at a
//!   throughput X see a mean latency of C/X whatever the service does, so the closed loop says
//!   little about latency at a given rate);
//! - a single-tenant change (suspend/reactivate of one tenant, one client): latency percentiles,
//!   to compare across N.
//!
//! Run: `cargo bench -p api --bench provision -- --tenants 10000 --clients 16 --requests 2000 --rate 200 --open-requests 2000 --backend sqlite`
//! (`--backend postgres` uses `BENCH_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test,
//! and creates a fresh database). `--rounds K` runs the open loop K times on the same seeded repo
//! (fresh tenants each round). `RUST_LOG=api::writer=debug` logs every batch's timings to stderr.
//! Results go to stdout as one Markdown table row per measurement.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use api::config::{AdminToken, Config, TelegramVerification};

mod support;
use sha2::{Digest, Sha256};

// The allocator of the `openclaw-api` binary, so that the api in process runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use support::{database, drop_database, percentile};

struct Args {
    tenants: usize,
    clients: usize,
    requests: usize,
    changes: usize,
    backend: String,
    rate: f64,
    open_requests: usize,
    /// How many times the open loop runs (new tenants each time) on the same seeded repo.
    rounds: usize,
}

fn args() -> Args {
    let mut args = Args {
        tenants: 10_000,
        clients: 16,
        requests: 2000,
        changes: 200,
        backend: "sqlite".into(),
        rate: 0.0,
        open_requests: 0,
        rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag value");
        match flag.as_str() {
            "--tenants" => args.tenants = value().parse().expect("--tenants N"),
            "--clients" => args.clients = value().parse().expect("--clients N"),
            "--requests" => args.requests = value().parse().expect("--requests N"),
            "--changes" => args.changes = value().parse().expect("--changes N"),
            "--backend" => args.backend = value(),
            "--rate" => args.rate = value().parse().expect("--rate PER_SECOND"),
            "--open-requests" => args.open_requests = value().parse().expect("--open-requests N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

async fn telegram_stand_in() -> String {
    let app = axum::Router::new().route(
        "/{bot}/getMe",
        axum::routing::get(|axum::extract::Path(bot): axum::extract::Path<String>| async move {
            let id: i64 = bot.trim_start_matches("bot").split(':').next().unwrap_or("1").parse().unwrap_or(1);
            axum::Json(serde_json::json!({"ok": true, "result": {"id": id, "is_bot": true, "username": "bench_bot"}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    format!(
        "p50 {:.1} ms | p95 {:.1} ms | p99 {:.1} ms | max {:.1} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // RUST_LOG=api::writer=debug shows each batch's apply, record and push times on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
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
    let tenants = support::tenants(args.tenants, "existing", |_| "starter", &recipient);
    let remote = dir.path().join("state.git");
    api::dev::seed_with_tenants(&remote, checkout, &recipient, &tenants).unwrap();
    eprintln!(
        "seeded {} tenants in {:.1} s",
        args.tenants,
        started.elapsed().as_secs_f64()
    );

    let database_url = database(&args.backend, dir.path()).await;
    {
        // The tenants index holds the existing tenants too.
        let store = api::store::Store::connect(&database_url, 1).await.unwrap();
        drop(store);
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&database_url).await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        for t in &tenants {
            sqlx::query("INSERT INTO tenants (name, owner_id, created_at, updated_at, last_commit) VALUES ($1, NULL, 0, 0, $2)")
                .bind(&t.folder)
                .bind("0000000000000000000000000000000000000000")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    let admin_token = hex::encode(rand::random::<[u8; 32]>());
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.clone().into(),
        database_max_connections: 16,
        ..Config::default()
    };
    config.repo.local_path = dir.path().join("api-clone.git");
    config.repo.remote_url = remote.display().to_string().into();
    config.telegram.base_url = telegram_stand_in().await;
    config.telegram.verification = TelegramVerification::Getme;
    config.admin_tokens = vec![AdminToken {
        name: "bench".into(),
        email: "bench@example.com".into(),
        sha256: hex::encode(Sha256::digest(admin_token.as_bytes())),
    }];
    let running = api::app::start(config, std::future::pending())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // A single-tenant change, one client.
    let mut latencies = Vec::new();
    for i in 0..args.changes {
        let action = if i % 2 == 0 { "suspend" } else { "reactivate" };
        let t = Instant::now();
        let r = http
            .post(format!("{base}/v1/tenants/existing-00000/{action}"))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        latencies.push(t.elapsed());
    }
    println!(
        "| single-tenant change | {} | {} | 1 client | {} requests | | {} |",
        args.backend,
        args.tenants,
        args.changes,
        summary(latencies)
    );
    // Provisions with C concurrent clients.
    if args.requests > 0 {
        closed_loop(&args, &http, &base, &admin_token).await;
    }
    if args.rate > 0.0 {
        let requests = if args.open_requests > 0 {
            args.open_requests
        } else {
            (args.rate * 10.0) as usize
        };
        for round in 0..args.rounds {
            open_loop(&args, round, requests, &http, &base, &admin_token).await;
        }
    }
    running.shutdown().await.unwrap();
    drop_database(&args.backend, &database_url).await;
}

fn provision_body(prefix: &str, i: usize) -> serde_json::Value {
    serde_json::json!({
        "name": format!("{prefix}-{i:05}"),
        "owner": {"email": format!("{prefix}-{i}@example.com"), "telegramUserId": 5000 + i},
        "tier": "starter",
        "telegramBotToken": format!("{}:AAH{}", 200_000 + i, hex::encode(rand::random::<[u8; 16]>())),
    })
}

async fn provision_once(http: &reqwest::Client, base: &str, token: &str, body: &serde_json::Value) {
    let r = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
}

/// Offers `requests` provisions at `args.rate` per second, at most `args.clients` in flight.
async fn open_loop(
    args: &Args,
    round: usize,
    requests: usize,
    http: &reqwest::Client,
    base: &str,
    token: &str,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(args.clients));
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(requests);
    let mut held_back = 0usize;
    for i in 0..requests {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let slot = slots.clone().acquire_owned().await.unwrap();
        if scheduled.elapsed() > Duration::from_millis(1) {
            held_back += 1;
        }
        let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
        let body = provision_body(&format!("open{round}"), 50_000 + i);
        tasks.push(tokio::spawn(async move {
            provision_once(&http, &base, &token, &body).await;
            drop(slot);
            scheduled.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "| provision, open loop at {:.0}/s | {} | {} | at most {} in flight | {} requests ({} held back) | {:.0} /s | {} |",
        args.rate,
        args.backend,
        args.tenants,
        args.clients,
        requests,
        held_back,
        requests as f64 / elapsed,
        summary(latencies)
    );
}

/// `args.clients` clients, each sending its next provision when the last is answered.
async fn closed_loop(args: &Args, http: &reqwest::Client, base: &str, admin_token: &str) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let wall = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|_| {
            let (http, base, token, next) = (
                http.clone(),
                base.to_owned(),
                admin_token.to_owned(),
                next.clone(),
            );
            let requests = args.requests;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        return latencies;
                    }
                    let body = provision_body("new", i);
                    let t = Instant::now();
                    provision_once(&http, &base, &token, &body).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = wall.elapsed().as_secs_f64();
    println!(
        "| provision | {} | {} | {} clients | {} requests | {:.0} /s | {} |",
        args.backend,
        args.tenants,
        args.clients,
        args.requests,
        args.requests as f64 / elapsed,
        summary(latencies)
    );
}
