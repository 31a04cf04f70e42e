//! The token proxy: the only way tenant pods reach an LLM or a connected service.
//!
//! Pods hold a per-tenant proxy token; the proxy holds the platform's real keys. It authenticates the token
//! against the tenant table the compiler renders ([`table`], kept current by [`reload`]), enforces the
//! tenant's limits ([`limits`], fed by the api's [`budget_feed`]), forwards LLM calls ([`llm`]) and
//! connection calls ([`connections`]) with the platform's credentials, meters tokens as responses stream
//! through ([`metering`]) and ships usage events to the api ([`usage`]), journaling them on the pod's volume
//! until the api acknowledged them ([`journal`]). The feed's access entries narrow the table between reloads
//! ([`narrowing`]). It links neither the api nor the compiler; the journal is its only state on disk, and
//! any replica can serve any request.
//!
//! Invariant: tokens, platform keys and request contents never reach a log line, a metric label or an
//! error message.

pub mod api_error;
pub mod app;
pub mod budget_feed;
pub mod config;
pub mod connections;
pub mod journal;
pub mod limits;
pub mod llm;
pub mod logging;
pub mod metering;
pub mod metrics;
pub mod narrowing;
pub mod reload;
pub mod routes;
pub mod server;
pub mod table;
pub mod upstream;
pub mod usage;

pub use config::Config;
pub use server::{start, Running, ServeError};
