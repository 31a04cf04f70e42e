//! The agent pod's start-up time and memory: runs the agent-pod scenario (`e2e::agent_pod`: the real gateway
//! in its rendered pod, one Telegram message answered through the token proxy) several times and prints, per
//! run, the time from the container's start to its startup probe's first success, from the owner's message
//! to the reply, the container's memory after the turn against the tier's request and limit, and the time
//! from SIGTERM to exit. Needs what the test needs (root, bubblewrap, tini, the tools of .ci/install-tools).
//!
//! `cargo bench -p e2e --bench agent_pod` (AGENT_POD_RUNS runs, default 3). The figures are the gateway's;
//! the harness's own build profile does not change them.

use e2e::{agent_pod, pod};

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

fn main() {
    let image = agent_pod::prerequisites().unwrap_or_else(|e| panic!("cannot run: {e}"));
    pod::isolate_network(&[agent_pod::PROXY_CLUSTER_IP]).expect("an isolated network namespace");
    let runs: usize = std::env::var("AGENT_POD_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| run | start to ready | restarts | message to reply | memory after the turn (PSS) | request / limit | SIGTERM to exit |");
    println!("|---|---|---|---|---|---|---|");
    let mut last = None;
    for run in 1..=runs {
        let f = runtime.block_on(agent_pod::run(image.clone()));
        println!(
            "| {run} | {:.1} s | {} | {:.1} s | {} | {} / {} | {:.1} s |",
            f.start_to_ready.as_secs_f64(),
            f.restarts,
            f.message_to_reply.as_secs_f64(),
            mib(f.memory),
            mib(f.memory_request),
            mib(f.memory_limit),
            f.stop.as_secs_f64(),
        );
        last = Some(f);
    }
    if let Some(f) = last {
        println!("\nprocesses after the last run's turn:");
        for p in f.memory_by_process {
            println!(
                "  rss {:>9} pss {:>9}  {}",
                mib(p.rss),
                mib(p.pss),
                p.command
            );
        }
    }
}
