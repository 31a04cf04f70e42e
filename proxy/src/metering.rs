//! Metering: reading token counts out of upstream responses without holding them back.
//!
//! This module owns the wire knowledge of where usage appears: OpenAI's `usage` object (in the body, or in
//! the extra streaming chunk that `stream_options.include_usage` asks for), Moonshot's `choices[i].usage` in
//! the last chunk, and Anthropic's `message_start` plus cumulative `message_delta` events, of which the last
//! value counts. [`StreamMeter`] is fed the bytes of a server-sent-event stream as they arrive and hands them
//! back for forwarding, dropping only the usage-only chunk when the proxy asked for it on the client's behalf.
//! It does no I/O.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// Which API family a request speaks; decides the wire format of bodies, streams and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKind {
    OpenAi,
    Anthropic,
}

impl ApiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::OpenAi => "openai",
            ApiKind::Anthropic => "anthropic",
        }
    }
}

/// Token counts of one request. For OpenAI `input` includes cached prompt tokens (as the API reports it);
/// for Anthropic `input` excludes cache reads and writes (as that API reports it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl TokenCounts {
    /// Tokens charged against limits and budgets: every token the upstream processed, each counted once.
    pub fn billable(&self, api: ApiKind) -> u64 {
        match api {
            ApiKind::OpenAi => self.input + self.output,
            ApiKind::Anthropic => self.input + self.cache_read + self.cache_write + self.output,
        }
    }
}

/// What a finished (or abandoned) response yielded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub counts: TokenCounts,
    /// The response ended the way the protocol says a complete one ends.
    pub complete: bool,
}

/// Longest SSE line kept for parsing; a longer line is forwarded but not metered, which bounds memory.
const MAX_LINE: usize = 1 << 20;

fn u(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn openai_usage(usage: &Value, counts: &mut TokenCounts) -> bool {
    if !usage.is_object() {
        return false;
    }
    counts.input = u(usage, "prompt_tokens").unwrap_or(0);
    counts.output = u(usage, "completion_tokens").unwrap_or(0);
    // OpenAI nests cached tokens; Moonshot reports them at the top level of usage.
    counts.cache_read = usage
        .get("prompt_tokens_details")
        .and_then(|d| u(d, "cached_tokens"))
        .or_else(|| u(usage, "cached_tokens"))
        .unwrap_or(0);
    counts.cache_write = 0;
    true
}

/// Applies one OpenAI-format JSON object (a body or a chunk). Returns whether it carried usage.
fn apply_openai(v: &Value, counts: &mut TokenCounts) -> bool {
    let mut found = v.get("usage").is_some_and(|u| openai_usage(u, counts));
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for c in choices {
            if let Some(usage) = c.get("usage") {
                found |= openai_usage(usage, counts);
            }
        }
    }
    found
}

fn anthropic_usage(usage: &Value, counts: &mut TokenCounts) {
    // Every field is a running total: the last value seen replaces the earlier one.
    if let Some(v) = u(usage, "input_tokens") {
        counts.input = v;
    }
    if let Some(v) = u(usage, "output_tokens") {
        counts.output = v;
    }
    if let Some(v) = u(usage, "cache_read_input_tokens") {
        counts.cache_read = v;
    }
    if let Some(v) = u(usage, "cache_creation_input_tokens") {
        counts.cache_write = v;
    }
}

/// The only parts of a non-streaming body that carry usage. Everything else (the message text above all)
/// is skipped while parsing, without being materialized.
#[derive(serde::Deserialize)]
struct BodyUsage {
    usage: Option<Value>,
    choices: Option<Vec<ChoiceUsage>>,
}

#[derive(serde::Deserialize)]
struct ChoiceUsage {
    usage: Option<Value>,
}

/// Reads usage from a complete, non-streaming response body.
pub fn read_body(api: ApiKind, body: &[u8]) -> Reading {
    // The common shapes parse into the few fields above; anything unusual (a duplicated key, `choices`
    // that is not a list of objects) goes through the general path, which reads what it can.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        if let Ok(b) = serde_json::from_slice::<BodyUsage>(body) {
            let mut counts = TokenCounts::default();
            let complete = match api {
                ApiKind::OpenAi => {
                    let mut found = b
                        .usage
                        .as_ref()
                        .is_some_and(|u| openai_usage(u, &mut counts));
                    for c in b.choices.iter().flatten() {
                        if let Some(usage) = &c.usage {
                            found |= openai_usage(usage, &mut counts);
                        }
                    }
                    found
                }
                ApiKind::Anthropic => match &b.usage {
                    Some(usage) if usage.is_object() => {
                        anthropic_usage(usage, &mut counts);
                        true
                    }
                    _ => false,
                },
            };
            return Reading { counts, complete };
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Reading::default();
    };
    let mut counts = TokenCounts::default();
    let complete = match api {
        ApiKind::OpenAi => apply_openai(&v, &mut counts),
        ApiKind::Anthropic => match v.get("usage") {
            Some(usage) if usage.is_object() => {
                anthropic_usage(usage, &mut counts);
                true
            }
            _ => false,
        },
    };
    Reading { counts, complete }
}

/// Meters one server-sent-event stream while it passes through.
#[derive(Debug)]
pub struct StreamMeter {
    api: ApiKind,
    /// Drop the usage-only chunk (the client did not ask for include_usage; the proxy did).
    strip_usage_chunk: bool,
    line: BytesMut,
    line_overflow: bool,
    /// In strip mode: the current event, held until its blank line decides whether it is forwarded.
    event: BytesMut,
    drop_event: bool,
    counts: TokenCounts,
    complete: bool,
}

impl StreamMeter {
    pub fn new(api: ApiKind, strip_usage_chunk: bool) -> Self {
        Self {
            api,
            strip_usage_chunk,
            line: BytesMut::new(),
            line_overflow: false,
            event: BytesMut::new(),
            drop_event: false,
            counts: TokenCounts::default(),
            complete: false,
        }
    }

    /// Takes one chunk from upstream and returns what to send to the client. Without stripping that is the
    /// chunk itself, unchanged and undelayed.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        let mut out = BytesMut::new();
        let mut rest: &[u8] = &chunk;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let (head, tail) = rest.split_at(pos + 1);
            rest = tail;
            if self.line_overflow {
                self.line_overflow = false;
                self.line.clear();
                if self.strip_usage_chunk {
                    self.event.extend_from_slice(head);
                }
                continue;
            }
            if self.line.is_empty() {
                self.on_line(head, &mut out);
            } else {
                self.line.extend_from_slice(head);
                let mut line = std::mem::take(&mut self.line);
                self.on_line(&line, &mut out);
                line.clear();
                self.line = line;
            }
        }
        if !rest.is_empty() {
            if self.line.len() + rest.len() > MAX_LINE {
                // Too long to meter: forward it (in strip mode as part of the event) and skip to the newline.
                if self.strip_usage_chunk {
                    self.event.extend_from_slice(&self.line);
                    self.event.extend_from_slice(rest);
                }
                self.line.clear();
                self.line_overflow = true;
            } else {
                self.line.extend_from_slice(rest);
            }
        }
        if self.strip_usage_chunk {
            out.freeze()
        } else {
            chunk
        }
    }

    fn on_line(&mut self, line: &[u8], out: &mut BytesMut) {
        let text = trim_eol(line);
        if self.strip_usage_chunk {
            self.event.extend_from_slice(line);
            if text.is_empty() {
                if !self.drop_event {
                    out.extend_from_slice(&self.event);
                }
                self.event.clear();
                self.drop_event = false;
                return;
            }
        }
        let Some(data) = text.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        match self.api {
            ApiKind::OpenAi => {
                if data == b"[DONE]" {
                    self.complete = true;
                    return;
                }
                if memchr::memmem::find(data, b"\"usage\"").is_none() {
                    return;
                }
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    return;
                };
                apply_openai(&v, &mut self.counts);
                let usage_only = v
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.is_empty())
                    && v.get("usage").is_some_and(Value::is_object);
                if self.strip_usage_chunk && usage_only {
                    self.drop_event = true;
                }
            }
            ApiKind::Anthropic => {
                let has_usage = memchr::memmem::find(data, b"\"usage\"").is_some();
                let is_stop = memchr::memmem::find(data, b"message_stop").is_some();
                if !has_usage && !is_stop {
                    return;
                }
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    return;
                };
                match v.get("type").and_then(Value::as_str) {
                    Some("message_start") => {
                        if let Some(usage) = v.get("message").and_then(|m| m.get("usage")) {
                            anthropic_usage(usage, &mut self.counts);
                        }
                    }
                    Some("message_delta") => {
                        if let Some(usage) = v.get("usage") {
                            anthropic_usage(usage, &mut self.counts);
                        }
                    }
                    Some("message_stop") => self.complete = true,
                    _ => {}
                }
            }
        }
    }

    /// Called when the upstream body ends; returns any held-back bytes to forward.
    pub fn finish(&mut self) -> Bytes {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line).to_vec();
            let mut out = BytesMut::new();
            self.on_line(&line, &mut out);
        }
        if self.strip_usage_chunk && !self.drop_event {
            std::mem::take(&mut self.event).freeze()
        } else {
            Bytes::new()
        }
    }

    pub fn reading(&self) -> Reading {
        Reading {
            counts: self.counts,
            complete: self.complete,
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(meter: &mut StreamMeter, stream: &str, split: usize) -> String {
        let mut out = Vec::new();
        for piece in stream.as_bytes().chunks(split) {
            out.extend_from_slice(&meter.feed(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&meter.finish());
        String::from_utf8(out).unwrap()
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"kimi-k2\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"kimi-k2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"kimi-k2\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn openai_stream_usage_is_read_and_passed_through() {
        for split in [1, 7, 64, 10_000] {
            let mut m = StreamMeter::new(ApiKind::OpenAi, false);
            let out = run(&mut m, OPENAI_STREAM, split);
            assert_eq!(out, OPENAI_STREAM);
            let r = m.reading();
            assert!(r.complete);
            assert_eq!(
                r.counts,
                TokenCounts {
                    input: 12,
                    output: 5,
                    cache_read: 4,
                    cache_write: 0
                }
            );
        }
    }

    #[test]
    fn injected_usage_chunk_is_stripped() {
        for split in [1, 5, 10_000] {
            let mut m = StreamMeter::new(ApiKind::OpenAi, true);
            let out = run(&mut m, OPENAI_STREAM, split);
            assert!(!out.contains("prompt_tokens"), "{out}");
            assert!(out.contains("\"content\":\"Hi\""));
            assert!(out.ends_with("data: [DONE]\n\n"));
            assert_eq!(out.matches("\n\n").count(), 3);
            assert_eq!(m.reading().counts.output, 5);
        }
    }

    #[test]
    fn moonshot_usage_inside_the_last_choice() {
        let stream = concat!(
            "data: {\"id\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
            "data: {\"id\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9,\"total_tokens\":39,\"cached_tokens\":20}}]}\n\n",
            "data: [DONE]\n\n"
        );
        let mut m = StreamMeter::new(ApiKind::OpenAi, true);
        let out = run(&mut m, stream, 3);
        // Moonshot's usage chunk also carries the final choice: it is not usage-only and must be kept.
        assert_eq!(out, stream);
        assert_eq!(
            m.reading().counts,
            TokenCounts {
                input: 30,
                output: 9,
                cache_read: 20,
                cache_write: 0
            }
        );
    }

    #[test]
    fn anthropic_takes_the_last_cumulative_value() {
        let stream = concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"k2\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\r\n\r\n",
            "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello\"}}\r\n\r\n",
            "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":10}}\r\n\r\n",
            "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\r\n\r\n",
            "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
        );
        let mut m = StreamMeter::new(ApiKind::Anthropic, false);
        assert_eq!(run(&mut m, stream, 11), stream);
        let r = m.reading();
        assert!(r.complete);
        assert_eq!(
            r.counts,
            TokenCounts {
                input: 25,
                output: 15,
                cache_read: 7,
                cache_write: 3
            }
        );
        assert_eq!(r.counts.billable(ApiKind::Anthropic), 50);
    }

    #[test]
    fn a_stream_cut_short_keeps_what_was_seen() {
        let cut = &OPENAI_STREAM[..OPENAI_STREAM.find("data: [DONE]").unwrap() - 10];
        let mut m = StreamMeter::new(ApiKind::OpenAi, false);
        run(&mut m, cut, 50);
        let r = m.reading();
        assert!(!r.complete);
        assert_eq!(r.counts, TokenCounts::default());

        let mut m = StreamMeter::new(ApiKind::Anthropic, false);
        run(
            &mut m,
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n",
            4,
        );
        let r = m.reading();
        assert!(!r.complete);
        assert_eq!(r.counts.input, 9);
        assert_eq!(r.counts.output, 4);
    }

    #[test]
    fn bodies() {
        let r = read_body(
            ApiKind::OpenAi,
            br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        );
        assert!(r.complete);
        assert_eq!(r.counts.billable(ApiKind::OpenAi), 7);
        let r = read_body(
            ApiKind::Anthropic,
            br#"{"id":"m","type":"message","usage":{"input_tokens":5,"output_tokens":6,"cache_read_input_tokens":2}}"#,
        );
        assert_eq!(
            r.counts,
            TokenCounts {
                input: 5,
                output: 6,
                cache_read: 2,
                cache_write: 0
            }
        );
        assert!(!read_body(ApiKind::OpenAi, b"not json").complete);
    }

    /// The general reading of a body, on a fully materialized value: what the skipping parse must match.
    fn read_value(api: ApiKind, body: &[u8]) -> Reading {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Reading::default();
        };
        let mut counts = TokenCounts::default();
        let complete = match api {
            ApiKind::OpenAi => apply_openai(&v, &mut counts),
            ApiKind::Anthropic => match v.get("usage") {
                Some(usage) if usage.is_object() => {
                    anthropic_usage(usage, &mut counts);
                    true
                }
                _ => false,
            },
        };
        Reading { counts, complete }
    }

    #[test]
    fn bodies_of_every_shape_read_as_the_general_path_reads_them() {
        let bodies: &[&str] = &[
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\""}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            // Moonshot: usage inside a choice.
            r#"{"choices":[{"index":0,"message":{"content":"x"},"usage":{"prompt_tokens":8,"completion_tokens":2,"cached_tokens":5}}]}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            r#"{"usage":null,"choices":null}"#,
            r#"{"usage":"lots","choices":[{"usage":null}]}"#,
            // Shapes the skipping parse refuses; the general path still reads them.
            r#"{"choices":"none","usage":{"prompt_tokens":4,"completion_tokens":4}}"#,
            r#"{"choices":[1,2],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":9,"completion_tokens":3}}"#,
            r#"{"type":"message","usage":{"input_tokens":5,"output_tokens":6,"cache_creation_input_tokens":7}}"#,
            r#"{}"#,
            r#"[]"#,
            r#"  {"usage":{"input_tokens":2,"output_tokens":1}}  "#,
            r#"{"usage":{"input_tokens":2"#,
        ];
        for body in bodies {
            for api in [ApiKind::OpenAi, ApiKind::Anthropic] {
                assert_eq!(
                    read_body(api, body.as_bytes()),
                    read_value(api, body.as_bytes()),
                    "{api:?} {body}"
                );
            }
        }
    }

    fn run_split(api: ApiKind, strip: bool, stream: &str, cuts: &[usize]) -> (String, Reading) {
        let mut m = StreamMeter::new(api, strip);
        let bytes = stream.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            out.extend_from_slice(&m.feed(Bytes::copy_from_slice(&bytes[from..p])));
            from = p;
        }
        out.extend_from_slice(&m.finish());
        (String::from_utf8(out).unwrap(), m.reading())
    }

    proptest::proptest! {
        // However the network splits a stream, the client gets the same bytes and the meter the same counts.
        #[test]
        fn chunking_never_changes_output_or_counts(
            cuts in proptest::collection::vec(0usize..2000, 0..40),
            strip: bool,
        ) {
            let whole = run_split(ApiKind::OpenAi, strip, OPENAI_STREAM, &[]);
            let split = run_split(ApiKind::OpenAi, strip, OPENAI_STREAM, &cuts);
            proptest::prop_assert_eq!(&whole, &split);
            if !strip {
                proptest::prop_assert_eq!(split.0.as_str(), OPENAI_STREAM);
            }
        }

        #[test]
        fn anthropic_counts_are_the_last_values_seen(
            deltas in proptest::collection::vec(0u64..100_000, 1..20),
            cuts in proptest::collection::vec(0usize..4000, 0..20),
        ) {
            let mut stream = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n");
            for d in &deltas {
                stream.push_str(&format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":{d}}}}}\n\n"));
            }
            stream.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            let (out, reading) = run_split(ApiKind::Anthropic, false, &stream, &cuts);
            proptest::prop_assert_eq!(out, stream);
            proptest::prop_assert!(reading.complete);
            proptest::prop_assert_eq!(reading.counts.output, *deltas.last().unwrap());
            proptest::prop_assert_eq!(reading.counts.input, 7);
        }
    }

    #[test]
    fn overlong_lines_are_forwarded_not_buffered() {
        let long = format!("data: {}\n\ndata: [DONE]\n\n", "x".repeat(MAX_LINE + 10));
        let mut m = StreamMeter::new(ApiKind::OpenAi, false);
        let out = run(&mut m, &long, 4096);
        assert_eq!(out.len(), long.len());
        assert!(m.reading().complete);
        assert!(m.line.capacity() <= 2 * MAX_LINE);
    }
}
