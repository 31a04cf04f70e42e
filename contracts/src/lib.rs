//! The wire contracts between openclaw-cloud's processes, each defined once and linked by every side.
//!
//! - [`tenant_table`]: the token proxy's tenant table (docs/tenant-table.md), which the compiler writes,
//!   the proxy reads and the api reads back from the state repo for the budget feed.
//! - [`provider`]: the services a tenant can connect through Nango, named in tenant specs and in the table.
//! - [`usage`]: the usage events the proxy ships to the api (docs/usage-events.md).
//! - [`budget`]: the budget feed the api serves and the proxies poll (docs/budget-feed.md).
//!
//! This crate owns field names, field order and value encodings, nothing else: it does no I/O and holds
//! no validation beyond what serde enforces. Each reader checks values with its own errors (the proxy
//! refuses a zero limit, the api a usage event whose id is not a UUID v7). A change here is a change of
//! a wire format: the tests in `tests/wire.rs` pin each shape byte for byte against the documented
//! examples.

pub mod budget;
pub mod provider;
pub mod tenant_table;
pub mod usage;

pub use provider::Provider;
