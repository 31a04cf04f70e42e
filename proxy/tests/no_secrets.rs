//! Secrets never reach logs or responses: platform keys, the Nango key, the api credential, tenant tokens
//! and prompt contents are planted as canaries, every kind of request and fault is exercised with logging
//! at its most verbose, and the captured output is searched for them.

mod support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const TOKEN: &str = "tok-acme-canary-7f3a9c";
const SUSPENDED_TOKEN: &str = "tok-globex-canary-51d2";
const PROMPT: &str = "prompt-canary-93b1 tell me a secret";

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_a_response() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let table = table_json(&[
        ("acme", TOKEN, "active", 5, 1_000_000, 1_000_000_000, 2),
        (
            "globex",
            SUSPENDED_TOKEN,
            "suspended",
            5,
            1_000_000,
            1_000_000_000,
            2,
        ),
    ]);
    let h = Harness::with(Options {
        table: Some(table),
        extra:
            "[limits]\nmax_body_bytes = 4096\nupstream_timeout_ms = 300\nshutdown_grace_ms = 300\n"
                .into(),
        budget_poll_ms: 50,
        ..Options::default()
    })
    .await;
    h.api.down.store(true, Ordering::SeqCst);
    let mut bodies = Vec::new();
    let chat_body = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]});
    let msg_body = |model: &str, stream: bool| json!({"model": model, "stream": stream, "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]});
    for (token, body) in [
        (TOKEN, chat_body("kimi-k2", false)),
        (TOKEN, chat_body("kimi-k2", true)),
        (TOKEN, chat_body("fail-500", false)),
        (TOKEN, chat_body("slow", false)),
        (SUSPENDED_TOKEN, chat_body("kimi-k2", false)),
        ("tok-unknown-canary-0000", chat_body("kimi-k2", false)),
        (
            TOKEN,
            json!({"model": "kimi-k2", "messages": [{"role": "user", "content": format!("{PROMPT} {}", "x".repeat(5000))}]}),
        ),
        // Rate limit (5 per minute) reached by now.
        (TOKEN, chat_body("kimi-k2", false)),
    ] {
        bodies.push(h.openai(token, body).await.text().await.unwrap());
    }
    for body in [msg_body("cut", true), msg_body("fail-400", false)] {
        bodies.push(h.anthropic(TOKEN, body).await.text().await.unwrap());
    }
    // Malformed JSON that contains the prompt.
    bodies.push(
        h.client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(TOKEN)
            .body(format!("{{\"model\": \"k\", \"messages\": \"{PROMPT}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    bodies.push(
        h.client
            .get(h.url("/connections/slack/x"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    // Let the shipper fail against the api at least once, then shut down with events undelivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bodies.push(h.metrics().await);
    let Harness { proxy, .. } = h;
    proxy.shutdown().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request done"), "logging was captured");
    assert!(
        logs.contains("usage batch not delivered"),
        "the shipper's failures were logged"
    );
    assert!(
        logs.contains("usage event not shipped"),
        "undelivered events were logged"
    );
    let responses = bodies.join("\n");
    assert!(
        responses.contains("invalid proxy token"),
        "error responses were captured"
    );
    for secret in [
        PLATFORM_OPENAI_KEY,
        PLATFORM_ANTHROPIC_KEY,
        NANGO_SECRET,
        API_CREDENTIAL,
        TOKEN,
        SUSPENDED_TOKEN,
        "tok-unknown-canary-0000",
        "prompt-canary-93b1",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
        assert!(
            !responses.contains(secret),
            "{secret} leaked into a response"
        );
    }
}
