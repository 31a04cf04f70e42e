//! Usage events (docs/usage-events.md): the proxy meters each answered request and ships the events in
//! batches to `POST /internal/usage`; the api stores each once, by id.
//!
//! The id and the start time are text on the wire. Each side picks how it holds them: the proxy makes
//! them as a `uuid::Uuid` and a `chrono::DateTime<Utc>` (whose serde forms are the hyphenated UUID and
//! RFC 3339 with `Z`), the api reads them as the text (the defaults) so that it can refuse a bad one with
//! an error naming the event and the field.

use serde::{Deserialize, Serialize};

/// One metered request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = UsageEventBody))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UsageEvent<Id = String, Time = String> {
    /// UUID v7, the idempotency key: unique, and sorts by time.
    pub id: Id,
    pub tenant: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub latency_ms: u64,
    /// HTTP status the client received (0 when the upstream could not be reached before any status).
    pub status: u16,
    /// The response was cut short (by either side) and the counts are what was seen until then.
    pub partial: bool,
    pub api: ApiName,
    /// RFC 3339; the event counts in the UTC day and month of this instant.
    pub started_at: Time,
}

/// Which upstream API shape the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ApiKind))]
#[serde(rename_all = "lowercase")]
pub enum ApiName {
    Openai,
    Anthropic,
}

impl ApiName {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiName::Openai => "openai",
            ApiName::Anthropic => "anthropic",
        }
    }
}

/// The body of `POST /internal/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageBatch<Event = UsageEvent> {
    pub events: Vec<Event>,
}
