//! A real OpenClaw agent turn through the proxy: `openclaw agent --local` with its kimi provider (Anthropic
//! messages) pointed at the proxy, which forwards to the Anthropic stand-in. The turn must complete and its
//! usage must be metered. Needs the `openclaw` CLI (on PATH or in /opt/openclaw-cloud-tools/bin); without
//! it the test fails when CI=true and is skipped otherwise.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn an_openclaw_agent_turn_goes_through_the_proxy_and_is_metered() {
    let Some(openclaw) = outside_tool::find("openclaw") else {
        return;
    };
    let h = Harness::start().await;
    let home = tempfile::tempdir().unwrap();
    let config_path = home.path().join("openclaw.json");
    let config = json!({
        "models": {
            "providers": {
                "kimi": {
                    "baseUrl": h.base,
                    "apiKey": "${KIMI_API_KEY}",
                    "api": "anthropic-messages",
                    "models": [{"id": "k2p5", "name": "Kimi K2.5"}]
                }
            }
        },
        "agents": {"defaults": {"model": {"primary": "kimi/k2p5"}}}
    });
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let mut cmd = tokio::process::Command::new(&openclaw);
    cmd.args([
        "agent",
        "--local",
        "--session-id",
        "proxy-e2e",
        "-m",
        "Reply with the word pong.",
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", home.path())
    .env("OPENCLAW_CONFIG_PATH", &config_path)
    .env("KIMI_API_KEY", ACME_TOKEN)
    .env("NO_COLOR", "1")
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("openclaw agent finished within 5 minutes")
        .expect("openclaw runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seen: Vec<_> = h
        .upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert!(
        out.status.success(),
        "openclaw failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nupstream saw: {seen:?}",
        out.status
    );
    assert!(
        stdout.contains("pong"),
        "the reply reached the agent:\n{stdout}\n{stderr}"
    );

    let first = h
        .upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.path == "/v1/messages")
        .cloned();
    let first =
        first.unwrap_or_else(|| panic!("no /v1/messages call reached the upstream: {seen:?}"));
    assert_eq!(
        first.headers["x-api-key"], PLATFORM_ANTHROPIC_KEY,
        "the platform key replaced the tenant's"
    );
    assert!(
        first.headers.contains_key("user-agent"),
        "the client's User-Agent is relayed"
    );

    let events = h.api.wait_events(1, Duration::from_secs(10)).await;
    let e = events
        .iter()
        .find(|e| e["api"] == "anthropic" && e["status"] == 200)
        .unwrap_or_else(|| panic!("no metered anthropic call: {events:?}"));
    assert_eq!(e["tenant"], "acme");
    assert_eq!(e["model"], "k2p5");
    assert_eq!(e["inputTokens"], 21);
    assert_eq!(e["outputTokens"], 9);
    assert_eq!(e["partial"], false);
}
