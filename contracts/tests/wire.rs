//! Pins each contract's JSON byte for byte against the documented examples (docs/tenant-table.md,
//! docs/usage-events.md, docs/budget-feed.md): field names, field order and encodings.

use contracts::budget::{Access, BudgetFeed, FeedState, TenantBudget};
use contracts::tenant_table::{Limits, TableConnection, TableEntry, TableFile, TenantState};
use contracts::usage::{ApiName, UsageBatch, UsageEvent};
use contracts::Provider;

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `text` without the whitespace between JSON tokens (field order kept, unlike `serde_json::Value`).
fn minified(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Parses `text` as `T`, writes it back compactly and checks that the bytes equal the input without
/// its whitespace (same fields, same order, same values).
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) -> T {
    let value: T = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&value).unwrap(), minified(text));
    value
}

#[test]
fn tenant_table_example_reads_and_writes_unchanged() {
    let text = repo_file("docs/tenant-table.example.json");
    let file: TableFile = round_trip(&text);
    assert_eq!(file.version, contracts::tenant_table::FORMAT_VERSION);
    assert_eq!(
        file.tenants[0],
        TableEntry {
            name: "acme".into(),
            token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            state: TenantState::Active,
            tier: "starter".into(),
            limits: Limits {
                requests_per_minute: 30,
                tokens_per_minute: 60000,
                monthly_token_budget: 5000000,
                concurrent_requests: 2,
            },
            connections: vec![
                TableConnection {
                    provider: Provider::Github,
                    connection_id: "0b6c2f4e-6a1d-4c53-9d55-5c0b8f3a2e11".into(),
                    provider_config_key: "github".into(),
                },
                TableConnection {
                    provider: Provider::Google,
                    connection_id: "7d0e1c2a-93b4-4f7e-8a61-2f5b9c4d1e02".into(),
                    provider_config_key: "google".into(),
                },
            ],
        }
    );
    assert_eq!(file.tenants[1].state, TenantState::Suspended);
    // The compiler writes shards pretty-printed; this is the text of the second tenant.
    let pretty = serde_json::to_string_pretty(&file.tenants[1]).unwrap();
    assert_eq!(
        pretty,
        r#"{
  "name": "globex",
  "tokenSha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
  "state": "suspended",
  "tier": "pro",
  "limits": {
    "requestsPerMinute": 120,
    "tokensPerMinute": 300000,
    "monthlyTokenBudget": 30000000,
    "concurrentRequests": 6
  },
  "connections": []
}"#
    );
}

#[test]
fn tenant_table_refuses_unknown_fields_and_states() {
    let text = repo_file("docs/tenant-table.example.json");
    let extra = text.replacen(
        "\"tier\": \"starter\",",
        "\"tier\": \"starter\", \"admin\": true,",
        1,
    );
    assert!(serde_json::from_str::<TableFile>(&extra).is_err());
    let state = text.replacen("\"state\": \"active\"", "\"state\": \"paused\"", 1);
    assert!(serde_json::from_str::<TableFile>(&state).is_err());
    let provider = text.replacen("\"provider\": \"github\"", "\"provider\": \"gitlab\"", 1);
    assert!(serde_json::from_str::<TableFile>(&provider).is_err());
}

const USAGE_EXAMPLE: &str = r#"{"events":[{"id":"0193a1b2-7c4e-7d21-9a3f-5e1c2b3a4d5f","tenant":"acme","model":"k2p5","inputTokens":21,"outputTokens":9,"cacheReadTokens":6,"cacheWriteTokens":4,"latencyMs":840,"status":200,"partial":false,"api":"anthropic","startedAt":"2026-11-25T12:00:00.123456Z"}]}"#;

#[test]
fn usage_batch_matches_the_documented_example() {
    let batch: UsageBatch = round_trip(USAGE_EXAMPLE);
    let built = UsageBatch {
        events: vec![UsageEvent {
            id: "0193a1b2-7c4e-7d21-9a3f-5e1c2b3a4d5f".to_owned(),
            tenant: "acme".into(),
            model: "k2p5".into(),
            input_tokens: 21,
            output_tokens: 9,
            cache_read_tokens: 6,
            cache_write_tokens: 4,
            latency_ms: 840,
            status: 200,
            partial: false,
            api: ApiName::Anthropic,
            started_at: "2026-11-25T12:00:00.123456Z".to_owned(),
        }],
    };
    assert_eq!(batch, built);
    assert_eq!(serde_json::to_string(&built).unwrap(), USAGE_EXAMPLE);
    // The documented example (docs/usage-events.md) reads the same.
    let doc = repo_file("docs/usage-events.md");
    let start = doc.find("```json\n").unwrap() + "```json\n".len();
    let end = start + doc[start..].find("```").unwrap();
    assert_eq!(
        serde_json::from_str::<UsageBatch>(&doc[start..end]).unwrap(),
        built
    );
}

#[test]
fn usage_event_refuses_unknown_fields_and_apis() {
    let extra = USAGE_EXAMPLE.replacen("\"partial\":false", "\"partial\":false,\"cost\":1", 1);
    assert!(serde_json::from_str::<UsageBatch>(&extra).is_err());
    let api = USAGE_EXAMPLE.replacen("\"anthropic\"", "\"gemini\"", 1);
    assert!(serde_json::from_str::<UsageBatch>(&api).is_err());
    assert_eq!(ApiName::Openai.as_str(), "openai");
}

const HASH_A: &str = "3b1f0e1c7a0bd7e1f1b6a4c5d2e3f40516273849a5b6c7d8e9f00112233445566";

#[test]
fn budget_feed_matches_the_documented_shape() {
    let text = format!(
        r#"{{"period":"2026-11","tenants":[{{"tenant":"acme","used":4812345,"budget":5000000,"state":"warning","access":{{"state":"active","tokenSha256":"{HASH_A}","limits":{{"requestsPerMinute":30,"tokensPerMinute":60000,"monthlyTokenBudget":5000000,"concurrentRequests":2}}}}}},{{"tenant":"globex","used":120,"budget":30000000,"state":"ok"}}]}}"#
    );
    let feed: BudgetFeed = round_trip(&text);
    let built = BudgetFeed {
        period: "2026-11".into(),
        tenants: vec![
            TenantBudget {
                tenant: "acme".into(),
                used: 4812345,
                budget: 5000000,
                state: FeedState::of(4812345, 5000000),
                access: Some(Access {
                    state: TenantState::Active,
                    token_sha256: HASH_A.into(),
                    limits: Limits {
                        requests_per_minute: 30,
                        tokens_per_minute: 60000,
                        monthly_token_budget: 5000000,
                        concurrent_requests: 2,
                    },
                }),
            },
            // A feed from an api that sends no access entry.
            TenantBudget {
                tenant: "globex".into(),
                used: 120,
                budget: 30000000,
                state: FeedState::Ok,
                access: None,
            },
        ],
    };
    assert_eq!(feed, built);
    assert_eq!(serde_json::to_string(&built).unwrap(), text);
}

#[test]
fn feed_state_thresholds() {
    assert_eq!(FeedState::of(0, 10), FeedState::Ok);
    assert_eq!(FeedState::of(8, 10), FeedState::Ok);
    assert_eq!(FeedState::of(9, 10), FeedState::Warning);
    assert_eq!(FeedState::of(10, 10), FeedState::Exhausted);
    assert_eq!(FeedState::of(u64::MAX, u64::MAX), FeedState::Exhausted);
    assert_eq!(FeedState::of(u64::MAX - 1, u64::MAX), FeedState::Warning);
}

#[test]
fn budget_feed_refuses_unknown_fields() {
    let text = r#"{"period":"2026-11","tenants":[],"extra":1}"#;
    assert!(serde_json::from_str::<BudgetFeed>(text).is_err());
    let text = r#"{"period":"2026-11","tenants":[{"tenant":"a","used":1,"budget":2,"state":"ok","bonus":1}]}"#;
    assert!(serde_json::from_str::<BudgetFeed>(text).is_err());
}
