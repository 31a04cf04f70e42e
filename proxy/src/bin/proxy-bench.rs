//! The proxy's benchmark harness: a mock upstream with fixed latency, a load generator, and the real proxy
//! binary in between, compared against calling the mock directly.
//!
//! Three measurements, each printed as a table:
//! - idle: resident memory of a freshly started proxy holding an N-tenant table;
//! - latency: open-loop non-streaming load at a fixed rate, direct versus through the proxy, and the
//!   latency the proxy adds at p50/p90/p99;
//! - streams: C concurrent streaming requests held open, time to first byte direct versus through the
//!   proxy, and the proxy's peak resident memory.
//!
//! Build in release mode and run `proxy-bench --proxy-bin target/release/proxy`; see docs/BENCHMARKS.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sha2::Digest;

#[derive(Parser, Clone)]
#[command(about = "Benchmark the token proxy against a fixed-latency mock upstream")]
struct Args {
    /// The proxy binary to run (build it with `cargo build --release -p proxy`).
    #[arg(long, default_value = "target/release/proxy")]
    proxy_bin: PathBuf,
    /// Which measurements to run.
    #[arg(long, value_delimiter = ',', default_value = "idle,latency,streams")]
    run: Vec<String>,
    /// Tenants in the table.
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Requests per second for the latency run.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of measured load per side in the latency run (after a warm-up of the same length / 2).
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// The mock upstream's fixed latency before its response headers, in milliseconds.
    #[arg(long, default_value_t = 5)]
    upstream_latency_ms: u64,
    /// Concurrent streams in the streams run.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Worker threads of the proxy's runtime (TOKIO_WORKER_THREADS); default: one per core.
    #[arg(long)]
    proxy_worker_threads: Option<usize>,
    /// How long each stream stays open, in seconds.
    #[arg(long, default_value_t = 5)]
    stream_seconds: u64,
    /// Run the proxy with a usage journal synced every this many milliseconds (0: every event);
    /// without it, no journal. The journal lives in a temporary folder under $TMPDIR: point that at
    /// the disk to measure.
    #[arg(long)]
    journal_fsync_ms: Option<u64>,
}

fn token(i: usize) -> String {
    format!("bench-token-{i}")
}

fn write_table(dir: &Path, tenants: usize) -> Result<()> {
    // 256 shards by the first byte of sha256(name), as the compiler writes them (docs/tenant-table.md).
    let mut shards: Vec<Vec<Value>> = vec![Vec::new(); 256];
    for i in 0..tenants {
        let name = format!("tenant-{i:05}");
        let shard = sha2::Sha256::digest(name.as_bytes())[0] as usize;
        shards[shard].push(json!({
            "name": name,
            "tokenSha256": hex::encode(sha2::Sha256::digest(token(i).as_bytes())),
            "state": "active",
            "tier": "bench",
            "limits": {"requestsPerMinute": 1_000_000, "tokensPerMinute": 1_000_000_000,
                       "monthlyTokenBudget": 1_000_000_000_000u64, "concurrentRequests": 10_000},
            "connections": [{"provider": "github", "connectionId": format!("conn-{i}"), "providerConfigKey": "github"}]
        }));
    }
    for (i, mut tenants) in shards.into_iter().enumerate() {
        tenants.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let body = json!({"version": 1, "tenants": tenants});
        std::fs::write(
            dir.join(format!("tenants-{i:02x}.json")),
            serde_json::to_vec(&body)?,
        )?;
    }
    Ok(())
}

#[derive(Clone)]
struct Mock {
    latency: Duration,
    stream_for: Duration,
    delay: PreciseDelay,
}

/// Waits with the kernel's high-resolution timers instead of tokio's millisecond timer wheel.
///
/// The mock's fixed latency must be the same for every request, whoever sends it. A tokio sleep ends on
/// the next millisecond tick of the mock's runtime after its deadline, and the load generator's ticker
/// sends on the ticks of the same runtime: a request arriving 0.1 ms or 0.9 ms after a send then gets its
/// answer at the same instant, which would hide whatever the proxy adds before the mock sees the request.
/// One thread keeps the deadlines and sleeps until the next one (futex wait with a timeout, which the
/// kernel's hrtimers end within tens of microseconds).
#[derive(Clone)]
struct PreciseDelay {
    tx: std::sync::mpsc::Sender<Due>,
}

struct Due {
    at: Instant,
    seq: u64,
    wake: tokio::sync::oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PreciseDelay {
    fn start() -> Result<Self> {
        use std::cmp::Reverse;
        use std::sync::mpsc::RecvTimeoutError;
        let (tx, rx) = std::sync::mpsc::channel::<Due>();
        std::thread::Builder::new()
            .name("mock-delay".into())
            .spawn(move || {
                let mut due = std::collections::BinaryHeap::<Reverse<Due>>::new();
                loop {
                    let now = Instant::now();
                    while due.peek().is_some_and(|d| d.0.at <= now) {
                        let Reverse(d) = due.pop().expect("peeked");
                        let _ = d.wake.send(());
                    }
                    let next = match due.peek() {
                        Some(d) => rx.recv_timeout(d.0.at - now),
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match next {
                        Ok(d) => due.push(Reverse(d)),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .context("starting the mock's delay thread")?;
        Ok(Self { tx })
    }

    /// Returns `latency` after it was called, to within the kernel's timer slack.
    async fn wait(&self, latency: Duration) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let (wake, woken) = tokio::sync::oneshot::channel();
        let due = Due {
            at: Instant::now() + latency,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            wake,
        };
        if self.tx.send(due).is_ok() {
            let _ = woken.await;
        }
    }
}

async fn mock_chat(
    axum::extract::State(m): axum::extract::State<Mock>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    m.delay.wait(m.latency).await;
    if body["stream"].as_bool() != Some(true) {
        return Json(json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock upstream."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let ticks = (m.stream_for.as_millis() / 250).max(1) as u64;
    let s = futures_util::stream::unfold(0u64, move |n| async move {
        let chunk = if n == 0 {
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n".to_owned()
        } else if n <= ticks {
            tokio::time::sleep(Duration::from_millis(250)).await;
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n".to_owned()
        } else if n == ticks + 1 {
            let mut s = String::from("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
            if include_usage {
                s.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":8,\"total_tokens\":28}}\n\n");
            }
            s.push_str("data: [DONE]\n\n");
            s
        } else {
            return None;
        };
        Some((Ok::<_, std::io::Error>(chunk), n + 1))
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(s),
    )
        .into_response()
}

async fn serve(router: Router) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Real upstreams and the proxy itself send small writes without Nagle's delay; so does the mock.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

struct ProxyProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    async fn start(
        bin: &Path,
        upstream: SocketAddr,
        api: SocketAddr,
        tenants: usize,
        workers: Option<usize>,
        journal_fsync_ms: Option<u64>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let journal = match journal_fsync_ms {
            Some(ms) => format!(
                "[usage]\njournal_dir = \"{}\"\njournal_fsync_interval_ms = {ms}\n",
                dir.path().join("journal").display()
            ),
            None => String::new(),
        };
        let table = dir.path().join("table");
        std::fs::create_dir(&table)?;
        write_table(&table, tenants)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.path().join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
table_dir = "{table}"
[upstreams.openai]
base_url = "http://{upstream}"
api_key = "sk-bench"
[api]
base_url = "http://{api}"
credential = "bench"
budget_poll_interval_ms = 0
[limits]
pool_max_idle_per_host = 2048
{journal}"#,
                table = table.display()
            ),
        )?;
        let mut cmd = tokio::process::Command::new(bin);
        if let Some(n) = workers {
            cmd.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("proxy did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            addr,
            _dir: dir,
        })
    }

    /// CPU time (user + system) the proxy process has used so far, from /proc/<pid>/stat.
    fn cpu(&self) -> Duration {
        let Some(pid) = self.child.id() else {
            return Duration::ZERO;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th of those.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(fields.iter().sum::<u64>() * 10)
    }

    fn rss_kib(&self, field: &str) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .build()
        .expect("client")
}

struct LoadResult {
    hist: Histogram<u64>,
    errors: u64,
    sent: u64,
}

impl LoadResult {
    fn empty() -> Self {
        Self {
            hist: Histogram::new(3).expect("histogram"),
            errors: 0,
            sent: 0,
        }
    }

    fn merge(&mut self, other: LoadResult) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.errors += other.errors;
        self.sent += other.sent;
    }
}

/// Open-loop load: one request every 1/rate seconds, whatever the responses do.
async fn load(
    client: &reqwest::Client,
    url: &str,
    rate: u64,
    seconds: u64,
    tenants: usize,
) -> LoadResult {
    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new(3).expect("histogram"),
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate * seconds;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticker.tick().await;
        let (client, url, hist, errors) =
            (client.clone(), url.to_owned(), hist.clone(), errors.clone());
        let tok = token(i as usize % tenants.min(100));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(&url)
                .bearer_auth(tok)
                .json(&json!({"model": "kimi-k2", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 64}))
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            if ok {
                let us = started.elapsed().as_micros() as u64;
                hist.lock().unwrap().record(us.max(1)).ok();
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let hist = hist.lock().unwrap().clone();
    LoadResult {
        hist,
        errors: errors.load(Ordering::Relaxed),
        sent: total,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn run_latency(args: &Args, upstream: SocketAddr, proxy: &ProxyProcess) {
    let c = client(4096);
    let direct = format!("http://{upstream}/v1/chat/completions");
    let via = format!("http://{}/v1/chat/completions", proxy.addr);
    let warm = (args.seconds / 2).max(1);
    load(&c, &direct, args.rate, warm, args.tenants).await;
    load(&c, &via, args.rate, warm, args.tenants).await;
    // Alternate one-second blocks so that both sides see the same background load on a shared machine.
    let mut d = LoadResult::empty();
    let mut p = LoadResult::empty();
    let mut proxy_cpu = Duration::ZERO;
    for _ in 0..args.seconds {
        d.merge(load(&c, &direct, args.rate, 1, args.tenants).await);
        let before = proxy.cpu();
        p.merge(load(&c, &via, args.rate, 1, args.tenants).await);
        proxy_cpu += proxy.cpu().saturating_sub(before);
    }
    let journal = match args.journal_fsync_ms {
        None => "no usage journal".to_owned(),
        Some(0) => "usage journal synced every event".to_owned(),
        Some(ms) => format!("usage journal synced every {ms} ms"),
    };
    println!(
        "\n## latency: {} req/s, {} s per side in alternating 1 s blocks, non-streaming, mock latency {} ms, {journal}",
        args.rate, args.seconds, args.upstream_latency_ms
    );
    println!("| path | requests | errors | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in [("direct", &d), ("via proxy", &p)] {
        println!(
            "| {name} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.sent,
            r.errors,
            ms(r.hist.value_at_quantile(0.5)),
            ms(r.hist.value_at_quantile(0.9)),
            ms(r.hist.value_at_quantile(0.99)),
            ms(r.hist.max())
        );
    }
    let added = |q: f64| ms(p.hist.value_at_quantile(q)) - ms(d.hist.value_at_quantile(q));
    println!(
        "| added by the proxy | | | {:.3} | {:.3} | {:.3} | |",
        added(0.5),
        added(0.9),
        added(0.99)
    );
    println!(
        "proxy CPU time per proxied request: {:.0} µs (user + system over {} requests)",
        proxy_cpu.as_secs_f64() * 1e6 / p.sent.max(1) as f64,
        p.sent
    );
    println!(
        "proxy resident memory after the run: {} KiB",
        proxy.rss_kib("VmRSS:")
    );
}

/// `n` streams started evenly over `ramp` (so that opening connections is not a SYN flood), all open at once
/// once the last one started, as long as each lasts longer than the ramp.
async fn streams(
    c: &reqwest::Client,
    url: &str,
    n: usize,
    tenants: usize,
    ramp: Duration,
) -> (Histogram<u64>, u64) {
    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new(3).expect("histogram"),
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let begin = tokio::time::Instant::now();
    for i in 0..n {
        let (c, url, hist, errors) = (c.clone(), url.to_owned(), hist.clone(), errors.clone());
        let tok = token(i % tenants);
        let at = begin + ramp.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let started = Instant::now();
            let r = c
                .post(&url)
                .bearer_auth(tok)
                .json(&json!({"model": "kimi-k2", "stream": true, "messages": [{"role": "user", "content": "hello"}]}))
                .send()
                .await;
            let Ok(r) = r else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if !r.status().is_success() {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut s = r.bytes_stream();
            match s.next().await {
                Some(Ok(_)) => {
                    hist.lock().unwrap().record((started.elapsed().as_micros() as u64).max(1)).ok();
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            let mut done = false;
            while let Some(c) = s.next().await {
                match c {
                    Ok(c) => done |= c.ends_with(b"data: [DONE]\n\n"),
                    Err(_) => break,
                }
            }
            if !done {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let h = hist.lock().unwrap().clone();
    (h, errors.load(Ordering::Relaxed))
}

async fn run_streams(args: &Args, upstream: SocketAddr, proxy: &ProxyProcess) {
    let direct = format!("http://{upstream}/v1/chat/completions");
    let via = format!("http://{}/v1/chat/completions", proxy.addr);
    let ramp = Duration::from_secs(args.stream_seconds).mul_f64(0.4);
    let c = client(args.streams + 16);
    // A first pass of each warms the connection pools on both sides; the second is measured.
    streams(&c, &direct, args.streams, args.tenants, ramp).await;
    let (d, de) = streams(&c, &direct, args.streams, args.tenants, ramp).await;
    streams(&c, &via, args.streams, args.tenants, ramp).await;
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        let pid = proxy.child.id();
        tokio::spawn(async move {
            loop {
                if let Some(pid) = pid {
                    let s =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    if let Some(kib) = s
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (p, pe) = streams(&c, &via, args.streams, args.tenants, ramp).await;
    sampler.abort();
    println!(
        "\n## streams: {} concurrent streaming requests (started over {:.1} s, each open {} s), mock latency {} ms",
        args.streams, ramp.as_secs_f64(), args.stream_seconds, args.upstream_latency_ms
    );
    println!("| path | errors | TTFB p50 ms | TTFB p90 ms | TTFB p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, h, e) in [("direct", &d, de), ("via proxy", &p, pe)] {
        println!(
            "| {name} | {e} | {:.3} | {:.3} | {:.3} |",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99))
        );
    }
    let added = |q: f64| ms(p.value_at_quantile(q)) - ms(d.value_at_quantile(q));
    println!(
        "| added by the proxy | | {:.3} | {:.3} | {:.3} |",
        added(0.5),
        added(0.9),
        added(0.99)
    );
    println!(
        "proxy peak resident memory during the streams: {:.1} MiB (VmHWM {:.1} MiB)",
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        proxy.rss_kib("VmHWM:") as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.proxy_bin.is_file() {
        bail!(
            "{} not found; build it with `cargo build --release -p proxy`",
            args.proxy_bin.display()
        );
    }
    let mock = Mock {
        latency: Duration::from_millis(args.upstream_latency_ms),
        stream_for: Duration::from_secs(args.stream_seconds),
        delay: PreciseDelay::start()?,
    };
    let upstream = serve(
        Router::new()
            .route("/v1/chat/completions", post(mock_chat))
            .with_state(mock),
    )
    .await?;
    let api = serve(Router::new().route(
        "/internal/usage",
        post(|| async { axum::http::StatusCode::NO_CONTENT }),
    ))
    .await?;

    if args.run.iter().any(|r| r == "idle") {
        let proxy = ProxyProcess::start(
            &args.proxy_bin,
            upstream,
            api,
            args.tenants,
            args.proxy_worker_threads,
            args.journal_fsync_ms,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("\n## idle: {} tenants loaded", args.tenants);
        println!(
            "proxy resident memory: {:.1} MiB (VmHWM {:.1} MiB)",
            proxy.rss_kib("VmRSS:") as f64 / 1024.0,
            proxy.rss_kib("VmHWM:") as f64 / 1024.0
        );
    }
    if args.run.iter().any(|r| r == "latency") {
        let proxy = ProxyProcess::start(
            &args.proxy_bin,
            upstream,
            api,
            args.tenants,
            args.proxy_worker_threads,
            args.journal_fsync_ms,
        )
        .await?;
        run_latency(&args, upstream, &proxy).await;
    }
    if args.run.iter().any(|r| r == "streams") {
        let proxy = ProxyProcess::start(
            &args.proxy_bin,
            upstream,
            api,
            args.tenants,
            args.proxy_worker_threads,
            args.journal_fsync_ms,
        )
        .await?;
        run_streams(&args, upstream, &proxy).await;
    }
    Ok(())
}
