//! End-to-end tests of the proxy's request path against stand-ins that speak the real wire formats.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn openai_non_streaming_is_forwarded_with_the_platform_key_and_metered() {
    let h = Harness::start().await;
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello!");

    let seen = h.upstream.last();
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {PLATFORM_OPENAI_KEY}")
    );
    assert_eq!(seen.headers["user-agent"], "openclaw-test/1.0");
    assert_eq!(seen.body["messages"][0]["content"], "say hello");

    let events = h.api.wait_events(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["tenant"], "acme");
    assert_eq!(e["model"], "kimi-k2");
    assert_eq!(e["api"], "openai");
    assert_eq!(e["inputTokens"], 11);
    assert_eq!(e["outputTokens"], 7);
    assert_eq!(e["cacheReadTokens"], 3);
    assert_eq!(e["status"], 200);
    assert_eq!(e["partial"], false);
    assert!(uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(e["startedAt"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn openai_streaming_gets_usage_injected_and_stripped() {
    let h = Harness::start().await;
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.contains("\"content\":\"Hel\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("prompt_tokens"),
        "usage chunk must be stripped: {text}"
    );
    assert_eq!(
        h.upstream.last().body["stream_options"]["include_usage"],
        true
    );
    let e = &h.api.wait_events(1, Duration::from_secs(5)).await[0];
    assert_eq!(
        (e["inputTokens"].as_u64(), e["outputTokens"].as_u64()),
        (Some(11), Some(7))
    );
    assert_eq!(e["partial"], false);

    // A client that asked for usage keeps its usage chunk.
    let mut body = chat("kimi-k2", true);
    body["stream_options"] = json!({"include_usage": true});
    let text = h.openai(ACME_TOKEN, body).await.text().await.unwrap();
    assert!(text.contains("\"prompt_tokens\":11"), "{text}");
}

#[tokio::test]
async fn moonshot_usage_inside_choices_is_metered() {
    let h = Harness::start().await;
    let text = h
        .openai(ACME_TOKEN, chat("kimi-moonshot", true))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\"usage\""),
        "Moonshot's final choice is relayed whole: {text}"
    );
    let e = &h.api.wait_events(1, Duration::from_secs(5)).await[0];
    assert_eq!(e["inputTokens"], 40);
    assert_eq!(e["outputTokens"], 12);
    assert_eq!(e["cacheReadTokens"], 16);
}

#[tokio::test]
async fn anthropic_streaming_takes_the_last_cumulative_usage() {
    let h = Harness::start().await;
    let r = h.anthropic(ACME_TOKEN, message("k2p5", true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(text, anthropic_events("k2p5", "pong").concat());
    let seen = h.upstream.last();
    assert_eq!(seen.headers["x-api-key"], PLATFORM_ANTHROPIC_KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.headers["user-agent"], "claude-cli/1.0");
    assert!(seen.headers.get("authorization").is_none());
    let e = &h.api.wait_events(1, Duration::from_secs(5)).await[0];
    assert_eq!(e["api"], "anthropic");
    assert_eq!(e["inputTokens"], 21);
    assert_eq!(
        e["outputTokens"], 9,
        "last message_delta value, not the sum"
    );
    assert_eq!(e["cacheReadTokens"], 6);
    assert_eq!(e["cacheWriteTokens"], 4);
    assert_eq!(e["partial"], false);

    let body: Value = h
        .anthropic(ACME_TOKEN, message("k2p5", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["content"][0]["text"], "pong");
    assert_eq!(h.api.wait_events(2, Duration::from_secs(5)).await.len(), 2);
}

#[tokio::test]
async fn tokens_unknown_malformed_revoked_and_suspended() {
    let h = Harness::start().await;
    // Unknown token, OpenAI format.
    let r = h.openai("not-a-token", chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_api_key");
    // Malformed Authorization header.
    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("authorization", "Basic dGVzdDp0ZXN0")
        .json(&chat("kimi-k2", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Missing token, Anthropic format.
    let r = h
        .client
        .post(h.url("/v1/messages"))
        .json(&message("k2p5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "authentication_error");
    // Suspended tenant.
    let r = h.anthropic(GLOBEX_TOKEN, message("k2p5", false)).await;
    assert_eq!(r.status(), 403);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "permission_error");
    assert_eq!(
        h.openai(GLOBEX_TOKEN, chat("kimi-k2", false))
            .await
            .status(),
        403
    );
    // Revoked: the token is rotated away in a new table.
    assert_eq!(
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status(),
        200
    );
    std::fs::write(
        h.table_path(),
        table_json(&[("acme", "rotated-token", "active", 30, 60000, 5_000_000, 2)]),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut accepted = 1;
    loop {
        let s = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status();
        if s == 401 {
            break;
        }
        assert_eq!(s, 200);
        accepted += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "old token still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.openai("rotated-token", chat("kimi-k2", false))
            .await
            .status(),
        200
    );
    assert_eq!(
        h.upstream.seen.lock().unwrap().len(),
        accepted + 1,
        "rejected requests never reach the upstream"
    );
}

#[tokio::test]
async fn malformed_json_and_oversized_bodies() {
    let h = Harness::with(Options {
        extra: "[limits]\nmax_body_bytes = 2048\n".into(),
        ..Options::default()
    })
    .await;
    let send = |path: &'static str, body: Vec<u8>| {
        let req = h
            .client
            .post(h.url(path))
            .bearer_auth(ACME_TOKEN)
            .header("x-api-key", ACME_TOKEN);
        async move { req.body(body).send().await.unwrap() }
    };
    let r = send(
        "/v1/chat/completions",
        b"{\"model\": \"kimi-k2\", ".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "invalid_request_error");
    let r = send("/v1/messages", br#"["kimi-k2", true]"#.to_vec()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let r = send("/v1/chat/completions", br#"{"messages": []}"#.to_vec()).await;
    assert_eq!(r.status(), 400);
    let r = send(
        "/v1/chat/completions",
        br#"{"model": "k", "stream": "yes"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);

    let big = serde_json::to_vec(
        &json!({"model": "kimi-k2", "messages": [{"role": "user", "content": "x".repeat(4096)}]}),
    )
    .unwrap();
    let r = send("/v1/chat/completions", big.clone()).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "request_too_large"
    );
    let r = send("/v1/messages", big.clone()).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "request_too_large"
    );
    // Chunked, without Content-Length: the limit holds while reading.
    let stream = futures_util::stream::iter(
        big.chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(ACME_TOKEN)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(h.upstream.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn upstream_errors_come_back_in_the_callers_format() {
    let h = Harness::start().await;
    // An HTML 500 is wrapped.
    let r = h.openai(ACME_TOKEN, chat("fail-500", false)).await;
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"]["message"].as_str().unwrap().contains("500"));
    let r = h.anthropic(ACME_TOKEN, message("fail-500", false)).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "error");
    // Errors already in the caller's format pass through untouched.
    let r = h.openai(ACME_TOKEN, chat("fail-400", false)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["message"],
        "Invalid request: messages must not be empty"
    );
    let r = h.anthropic(ACME_TOKEN, message("overloaded", true)).await;
    assert_eq!(r.status(), 529);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );
    let events = h.api.wait_events(4, Duration::from_secs(5)).await;
    let mut statuses: Vec<u64> = events
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, vec![400, 500, 500, 529]);
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let h = Harness::with(Options {
        extra: "[limits]\nupstream_timeout_ms = 300\n".into(),
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let r = h.openai(ACME_TOKEN, chat("slow", false)).await;
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_timeout"
    );
    let r = h.anthropic(ACME_TOKEN, message("slow", false)).await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "timeout_error"
    );
    let events = h.api.wait_events(2, Duration::from_secs(5)).await;
    assert!(events.iter().all(|e| e["status"] == 504));
}

#[tokio::test]
async fn an_upstream_silent_longer_than_the_read_timeout_is_cut_and_recorded_as_partial() {
    let h = Harness::with(Options {
        extra: "[limits]\nupstream_read_timeout_ms = 400\n".into(),
        ..Options::default()
    })
    .await;
    // Silences of 100 ms add up to more than the read timeout: each event restarts the count.
    let r = h.openai(ACME_TOKEN, chat("drip", true)).await;
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    let started = std::time::Instant::now();
    let r = h.openai(ACME_TOKEN, chat("stall", true)).await;
    assert_eq!(r.status(), 200);
    let (got, failed) = read_until_break(r).await;
    assert!(
        failed,
        "the client must see the stream break, not a clean end"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "cut after {waited:?}"
    );
    assert!(String::from_utf8_lossy(&got).contains("Hel"));
    let events = h.api.wait_events(2, Duration::from_secs(5)).await;
    let stalled: Vec<&Value> = events.iter().filter(|e| e["partial"] == true).collect();
    assert_eq!(stalled.len(), 1, "{events:?}");
    assert_eq!(stalled[0]["status"], 200);
    let metrics = h.metrics().await;
    assert!(
        metrics
            .contains("proxy_upstream_errors_total{kind=\"timeout\",route=\"chat_completions\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_https_upstream_is_called_over_tls_and_a_failed_handshake_is_502() {
    // A server that records the first bytes it receives and hangs up: a TLS client starts with a
    // handshake record (0x16, then version 3.x), a plain HTTP client with "POST".
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 3];
        sock.read_exact(&mut head).await.unwrap();
        let _ = first_tx.send(head.to_vec());
    });
    let h = Harness::with(Options {
        upstream_base: Some(format!("https://{addr}")),
        ..Options::default()
    })
    .await;
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "bad_gateway"
    );
    let head = first_rx.await.unwrap();
    assert_eq!(head[0], 0x16, "a TLS handshake record, got {head:?}");
    assert_eq!(head[1], 0x03, "TLS 1.x record version, got {head:?}");
}

#[tokio::test]
async fn connection_reset_is_502() {
    let reset = resetting_server().await;
    let h = Harness::with(Options {
        upstream: Some(reset),
        ..Options::default()
    })
    .await;
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "bad_gateway"
    );
    let r = h.anthropic(ACME_TOKEN, message("k2p5", true)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "api_error"
    );
}

#[tokio::test]
async fn an_upstream_stream_that_stops_midway_is_recorded_as_partial() {
    let h = Harness::start().await;
    let r = h.anthropic(ACME_TOKEN, message("cut", true)).await;
    assert_eq!(r.status(), 200);
    let (got, failed) = read_until_break(r).await;
    assert!(
        failed,
        "the client must see the stream break, not a clean end"
    );
    assert!(String::from_utf8_lossy(&got).contains("message_start"));
    let e = &h.api.wait_events(1, Duration::from_secs(5)).await[0];
    assert_eq!(e["partial"], true);
    assert_eq!(e["inputTokens"], 21, "what was seen before the cut is kept");
}

#[tokio::test]
async fn a_client_that_disconnects_midstream_still_gets_metered_and_leaks_nothing() {
    let h = Harness::start().await;
    let r = h.anthropic(ACME_TOKEN, message("endless", true)).await;
    let mut s = r.bytes_stream();
    let mut n = 0;
    while n < 5 {
        s.next().await.unwrap().unwrap();
        n += 1;
    }
    drop(s);
    let e = &h.api.wait_events(1, Duration::from_secs(5)).await[0];
    assert_eq!(e["partial"], true);
    assert_eq!(e["inputTokens"], 17);
    assert!(e["outputTokens"].as_u64().unwrap() >= 2);
    // The proxy let go of the upstream stream, and the concurrency slot came back (acme allows 2).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !h.upstream.stream_dropped.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream stream still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    let b = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    assert_eq!(
        (a.status(), b.status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
}

#[tokio::test]
async fn a_slow_client_holds_back_the_upstream() {
    let h = Harness::start().await;
    let r = h.openai(ACME_TOKEN, chat("flood", true)).await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    // The client stops reading; the upstream can only fill socket buffers, not the proxy's memory.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let produced = h.upstream.produced.load(Ordering::SeqCst);
    assert!(
        produced < 32 * 1024 * 1024,
        "upstream produced {produced} bytes for a stalled client"
    );
    let before = produced;
    for _ in 0..50 {
        s.next().await.unwrap().unwrap();
    }
    assert!(
        h.upstream.produced.load(Ordering::SeqCst) >= before,
        "reading resumes the flow"
    );
    drop(s);
}

#[tokio::test]
async fn the_api_down_for_a_while_loses_no_event() {
    let table = table_json(&[(
        "acme",
        ACME_TOKEN,
        "active",
        10_000,
        10_000_000,
        1_000_000_000,
        50,
    )]);
    let h = Harness::with(Options {
        table: Some(table),
        ..Options::default()
    })
    .await;
    h.api.down.store(true, Ordering::SeqCst);
    for i in 0..60 {
        let r = if i % 2 == 0 {
            h.openai(ACME_TOKEN, chat("kimi-k2", i % 4 == 0)).await
        } else {
            h.anthropic(ACME_TOKEN, message("k2p5", i % 3 == 0)).await
        };
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    eventually("all events wait in the buffer", || async {
        h.proxy.app.usage.len() == 60
    })
    .await;
    // Several failed deliveries go by; nothing is lost.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.api.unique_events().is_empty());
    assert_eq!(h.proxy.app.usage.len(), 60);
    h.api.down.store(false, Ordering::SeqCst);
    let events = h.api.wait_events(60, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 60);
    assert_eq!(h.api.bad_auth.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_table_reload_during_traffic_drops_nothing() {
    let limits = |rpm: u32| {
        table_json(&[(
            "acme",
            ACME_TOKEN,
            "active",
            rpm,
            10_000_000,
            1_000_000_000,
            64,
        )])
    };
    let h = Harness::with(Options {
        table: Some(limits(100_000)),
        ..Options::default()
    })
    .await;
    let path = h.table_path();
    let writer = tokio::spawn(async move {
        for i in 0..20 {
            // Write-then-rename, as the kubelet's symlink swap does.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, limits(100_000 + i)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = h.client.clone();
        let url = h.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                let r = client
                    .post(&url)
                    .bearer_auth(ACME_TOKEN)
                    .json(&chat("kimi-k2", false))
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
                r.bytes().await.unwrap();
            }
            statuses
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|s| *s == 200));
    }
    writer.await.unwrap();
    // An invalid table is rejected and the last good one stays.
    std::fs::write(
        h.table_path(),
        "{\"version\": 1, \"tenants\": [{\"name\": \"acme\"}]}",
    )
    .unwrap();
    eventually("the invalid table was rejected", || async {
        let m = h.metrics().await;
        m.contains("proxy_tenant_table_reloads_total{result=\"error\"} 1")
    })
    .await;
    assert_eq!(
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status(),
        200
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("proxy_tenant_table_reloads_total{result=\"error\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn requests_per_minute_answer_429_with_headers_in_the_callers_style() {
    let table = table_json(&[(
        "acme",
        ACME_TOKEN,
        "active",
        2,
        1_000_000,
        1_000_000_000,
        10,
    )]);
    let h = Harness::with(Options {
        table: Some(table),
        ..Options::default()
    })
    .await;
    // Successful responses report the tenant's headroom.
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "1000000");
    assert!(r.headers().contains_key("x-ratelimit-remaining-tokens"));
    assert_eq!(
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status(),
        200
    );
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(r.headers().contains_key("x-ratelimit-reset-requests"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limit_exceeded"
    );
    let r = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["anthropic-ratelimit-requests-limit"], "2");
    assert!(chrono::DateTime::parse_from_rfc3339(
        r.headers()["anthropic-ratelimit-requests-reset"]
            .to_str()
            .unwrap()
    )
    .is_ok());
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "rate_limit_error"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("proxy_limit_rejections_total{reason=\"requests_per_minute\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn tokens_per_minute_and_concurrency() {
    let table = table_json(&[("acme", ACME_TOKEN, "active", 1000, 2000, 1_000_000_000, 1)]);
    let h = Harness::with(Options {
        table: Some(table),
        ..Options::default()
    })
    .await;
    // One request in flight at a time.
    let r = h.anthropic(ACME_TOKEN, message("endless", true)).await;
    assert_eq!(r.status(), 200);
    let second = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    drop(r);
    eventually("the stream is released", || async {
        h.upstream.stream_dropped.load(Ordering::SeqCst)
    })
    .await;
    // A request whose max_tokens exceeds the remaining per-minute tokens.
    let mut body = chat("kimi-k2", false);
    body["max_tokens"] = json!(1900);
    let r = h.openai(ACME_TOKEN, body).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "2000");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "tokens");
}

#[tokio::test]
async fn the_budget_feed_drives_warnings_and_insufficient_quota() {
    let h = Harness::with(Options {
        budget_poll_ms: 50,
        ..Options::default()
    })
    .await;
    assert!(h
        .openai(ACME_TOKEN, chat("kimi-k2", false))
        .await
        .headers()
        .get("x-openclaw-budget-warning")
        .is_none());
    h.api.set_budget("acme", 4_800_000, 5_000_000, "warning");
    eventually("the warning shows", || async {
        let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
        r.status() == 200 && r.headers().contains_key("x-openclaw-budget-warning")
    })
    .await;
    h.api.set_budget("acme", 5_000_000, 5_000_000, "exhausted");
    eventually("the budget is spent", || async {
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status() == 429
    })
    .await;
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "insufficient_quota");
    assert_eq!(b["error"]["code"], "insufficient_quota");
    let r = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    assert_eq!(r.status(), 429);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("insufficient_quota"));
}

#[tokio::test]
async fn the_local_budget_is_reserved_then_reconciled() {
    // Budget 40 tokens; each request is metered at 18 (11 in + 7 out).
    let table = table_json(&[("acme", ACME_TOKEN, "active", 1000, 1_000_000, 40, 10)]);
    let h = Harness::with(Options {
        table: Some(table),
        ..Options::default()
    })
    .await;
    // The reservation (body/4 + max_tokens) is larger than the budget, but nothing is committed yet.
    assert_eq!(
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status(),
        200
    );
    assert_eq!(
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status(),
        200
    );
    // 36 of 40 used: past 90 percent.
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-openclaw-budget-warning"));
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "insufficient_quota"
    );
}

#[tokio::test]
async fn connections_reach_only_the_tenants_own_connections() {
    let h = Harness::start().await;
    let r = h
        .client
        .post(h.url("/connections/github/repos/acme/site/issues?state=open&per_page=5"))
        .bearer_auth(ACME_TOKEN)
        .header("connection-id", "someone-elses-connection")
        .header("content-type", "application/json")
        .body(r#"{"title":"bug"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["path"], "repos/acme/site/issues");
    assert_eq!(b["query"], "state=open&per_page=5");
    assert_eq!(b["connectionId"], "0b6c2f4e-6a1d-4c53-9d55-5c0b8f3a2e11");
    assert_eq!(b["providerConfigKey"], "github");
    assert_eq!(b["body"], r#"{"title":"bug"}"#);
    let (_, headers, _) = h.nango.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(headers["authorization"], format!("Bearer {NANGO_SECRET}"));
    assert_eq!(headers.get_all("connection-id").iter().count(), 1);

    // Not connected, and not a provider at all: 404 with a hint.
    for provider in ["slack", "gitlab"] {
        let r = h
            .client
            .get(h.url(&format!("/connections/{provider}/x")))
            .bearer_auth(ACME_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let msg = r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains(&format!("connect {provider}")), "{msg}");
    }
    let r = h
        .client
        .get(h.url("/connections/github/user"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = h
        .client
        .get(h.url("/connections/github/user"))
        .bearer_auth(GLOBEX_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(h.nango.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn models_health_readiness_and_metrics() {
    let h = Harness::start().await;
    let r = h
        .client
        .get(h.url("/v1/models"))
        .bearer_auth(ACME_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"][0]["id"], "kimi-k2");
    let r = h
        .client
        .get(h.url("/v1/models"))
        .header("x-api-key", ACME_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.client
            .get(h.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        h.client
            .get(h.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = h.client.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("2 tenants"));
    let r = h.client.get(h.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    h.openai(ACME_TOKEN, chat("kimi-k2", false))
        .await
        .bytes()
        .await
        .unwrap();
    h.openai(ACME_TOKEN, chat("fail-500", false))
        .await
        .bytes()
        .await
        .unwrap();
    let m = h.metrics().await;
    for needle in [
        "proxy_requests_total{route=\"chat_completions\",status=\"200\"} 1",
        "proxy_tokens_total{kind=\"input\",model=\"kimi-k2\",tenant=\"acme\"} 11",
        "proxy_tokens_total{kind=\"output\",model=\"kimi-k2\",tenant=\"acme\"} 7",
        "proxy_request_duration_seconds_bucket",
        "proxy_upstream_errors_total{kind=\"status_5xx\",route=\"chat_completions\"} 1",
        "proxy_tenant_table_tenants 2",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
}

#[tokio::test]
async fn not_ready_without_a_table() {
    let h = Harness::with(Options {
        table: None,
        ..Options::default()
    })
    .await;
    assert_eq!(
        h.client
            .get(h.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status(),
        503
    );
    std::fs::write(h.table_path(), EXAMPLE_TABLE).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h
        .client
        .get(h.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.openai(ACME_TOKEN, chat("kimi-k2", false)).await.status(),
        200
    );
}

#[tokio::test]
async fn shutdown_lets_streams_finish_and_flushes_usage() {
    let h = Harness::start().await;
    let r = h.openai(ACME_TOKEN, chat("drip", true)).await;
    let mut s = r.bytes_stream();
    let first = s.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let Harness { proxy, api, .. } = h;
    let addr = proxy.addr;
    let stopping = tokio::spawn(proxy.shutdown());
    // No new connections once shutdown began.
    eventually("the listener is closed", || async {
        reqwest::Client::new()
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
    })
    .await;
    let mut rest = Vec::new();
    while let Some(c) = s.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    stopping.await.unwrap().unwrap();
    let events = api.unique_events();
    assert_eq!(events.len(), 1, "flushed before exit");
    assert_eq!(events[0]["partial"], false);
}

#[tokio::test]
async fn the_upstream_connection_pool_is_bounded() {
    let table = table_json(&[(
        "acme",
        ACME_TOKEN,
        "active",
        1000,
        1_000_000,
        1_000_000_000,
        10,
    )]);
    let h = Harness::with(Options {
        table: Some(table),
        extra: "[limits]\nmax_upstream_connections = 1\nconnect_timeout_ms = 200\n".into(),
        ..Options::default()
    })
    .await;
    let held = h.openai(ACME_TOKEN, chat("endless", true)).await;
    assert_eq!(held.status(), 200);
    let r = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "api_error"
    );
    drop(held);
    eventually("the slot is released", || async {
        h.upstream.stream_dropped.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(
        h.anthropic(ACME_TOKEN, message("k2p5", false))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_the_upstream_answers_is_still_recorded() {
    let h = Harness::start().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(h.url("/v1/messages"))
        .header("x-api-key", ACME_TOKEN)
        .json(&message("slow", false))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up first");
    let events = h.api.wait_events(1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["status"], 499);
    assert_eq!(events[0]["partial"], true);
    // Its concurrency slot came back: acme allows two at once.
    let a = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    let b = h.anthropic(ACME_TOKEN, message("k2p5", false)).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
}

#[tokio::test]
async fn connection_paths_cannot_climb_out_of_the_nango_proxy() {
    let h = Harness::start().await;
    for path in [
        "/connections/github/%2e%2e/connection",
        "/connections/github/..%2F..%2Fconnection",
        "/connections/github/x/%2E%2E/%2E%2E/connection",
    ] {
        // Sent raw over TCP: an HTTP client library would normalize the path before sending it.
        let addr = h.proxy.addr;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ACME_TOKEN}\r\nConnection: close\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut sock, req.as_bytes())
            .await
            .unwrap();
        let mut resp = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut sock, &mut resp)
            .await
            .unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 400") || resp.starts_with("HTTP/1.1 404"),
            "{path}: {resp}"
        );
    }
    assert!(
        h.nango.seen.lock().unwrap().is_empty(),
        "nothing reached Nango"
    );
}

#[tokio::test]
async fn the_feed_narrows_access_between_table_reloads_and_never_widens() {
    use sha2::Digest;
    let h = Harness::with(Options {
        budget_poll_ms: 50,
        ..Options::default()
    })
    .await;
    let hash = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let feed = |state: &str, token: &str, rpm: u32| {
        let period = chrono::Utc::now().format("%Y-%m").to_string();
        json!({"period": period, "tenants": [
            {"tenant": "acme", "used": 0, "budget": 5_000_000, "state": "ok", "access": {
                "state": state, "tokenSha256": hash(token),
                "limits": {"requestsPerMinute": rpm, "tokensPerMinute": 60000,
                           "monthlyTokenBudget": 5_000_000, "concurrentRequests": 2}}},
            // The table has globex suspended: the feed saying active does not reactivate it.
            {"tenant": "globex", "used": 0, "budget": 5_000_000, "state": "ok", "access": {
                "state": "active", "tokenSha256": hash(GLOBEX_TOKEN),
                "limits": {"requestsPerMinute": 1000, "tokensPerMinute": 1_000_000,
                           "monthlyTokenBudget": 50_000_000, "concurrentRequests": 20}}},
        ]})
    };
    let status = |token: &'static str| {
        let h = &h;
        async move { h.openai(token, chat("kimi-k2", false)).await.status() }
    };
    assert_eq!(status(ACME_TOKEN).await, 200);

    // Suspended in the feed: 403 although the table says active.
    *h.api.budget.lock().unwrap() = feed("suspended", ACME_TOKEN, 30);
    eventually("the suspension arrives", || async {
        status(ACME_TOKEN).await == 403
    })
    .await;
    assert_eq!(
        status(GLOBEX_TOKEN).await,
        403,
        "still suspended by the table"
    );

    // Reactivated in the feed before the table ever saw the suspension: back at the next poll.
    *h.api.budget.lock().unwrap() = feed("active", ACME_TOKEN, 30);
    eventually("the reactivation arrives", || async {
        status(ACME_TOKEN).await == 200
    })
    .await;

    // Rotated: the table's token is refused; the new one is not accepted before the table has it.
    *h.api.budget.lock().unwrap() = feed("active", "the-new-token", 30);
    eventually("the rotation arrives", || async {
        status(ACME_TOKEN).await == 401
    })
    .await;
    assert_eq!(status("the-new-token").await, 401);
    let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rotated"));

    // A lowered tier narrows the limits; a raised one leaves the table's.
    let limit = |r: &reqwest::Response| {
        r.headers()["x-ratelimit-limit-requests"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    *h.api.budget.lock().unwrap() = feed("active", ACME_TOKEN, 7);
    eventually("the lowered tier arrives", || async {
        let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
        r.status() == 200 && limit(&r) == "7"
    })
    .await;
    *h.api.budget.lock().unwrap() = feed("active", ACME_TOKEN, 100_000);
    eventually("the raise does not widen", || async {
        let r = h.openai(ACME_TOKEN, chat("kimi-k2", false)).await;
        r.status() == 200 && limit(&r) == "30"
    })
    .await;

    // A feed entry that does not parse fails the whole poll: the narrowing in force stays.
    *h.api.budget.lock().unwrap() = feed("suspended", ACME_TOKEN, 30);
    eventually("suspended again", || async {
        status(ACME_TOKEN).await == 403
    })
    .await;
    let mut bad = feed("active", ACME_TOKEN, 30);
    bad["tenants"][0]["access"]["tokenSha256"] = json!("not-a-hash");
    *h.api.budget.lock().unwrap() = bad;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(status(ACME_TOKEN).await, 403);
}
