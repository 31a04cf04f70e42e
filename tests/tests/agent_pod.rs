//! The agent pod actually runs: the real OpenClaw gateway (the npm package at the version the Deployment pins,
//! on Node 26) started from a tenant's rendered manifests the way the kubelet would start it, with no network
//! but loopback, from a Telegram user's message to the agent's reply through the token proxy. The scenario
//! and what it checks: `e2e::agent_pod`.
//!
//! Needs root, bubblewrap, setpriv, ip and tini (apt) and Node 26 with the openclaw package
//! (`.ci/install-tools`); fails when CI=true and one is missing, skips otherwise.

use e2e::{agent_pod, pod};

#[test]
fn the_rendered_agent_pod_runs_the_real_gateway_from_telegram_message_to_reply() {
    let image = agent_pod::prerequisites();
    if !e2e::require(
        image.as_ref().err().map_or("", |e| e.as_str()),
        image.is_ok(),
    ) {
        return;
    }
    // Everything from here on lives in a network with loopback only: the runtime's threads, the proxy, the
    // stand-ins and the gateway's sandbox inherit it from this thread.
    pod::isolate_network(&[agent_pod::PROXY_CLUSTER_IP]).expect("an isolated network namespace");
    let figures = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(agent_pod::run(image.expect("checked above")));
    eprintln!("{figures:#?}");
}
