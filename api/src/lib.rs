//! openclaw-cloud's api: every tenant lifecycle action becomes one git commit of the tenant's spec
//! and its compiled output, pushed to the GitOps state repo that Flux watches.
//!
//! Code map (dependencies point down; `tests/tests/module_graph.rs` refuses a module circle):
//! - [`routes`]: every route, one module per area (`tenants`, `sessions`, `usage`, `budget`,
//!   `ops`, `dev`), each with its own `routes()`, merged in [`routes::router`]; thin handlers.
//! - [`idempotency`]: `Idempotency-Key` and [`idempotency::submit`], how a route hands a change
//!   to the writer.
//! - [`tenant_ops`]: what each tenant action does, without HTTP, for every front end: typed input
//!   and an [`http::AuthorizedTenant`] in, a prepared change (for [`tenant_ops::apply`]) or an
//!   answer out.
//! - [`http`]: the leaf kernel: [`http::AppState`], [`http::ApiError`], extractors, callers and
//!   authorization as a type ([`http::AuthorizedTenant`], [`http::AuthorizedIncarnation`]).
//! - [`auth`]: sign-in primitives: Telegram login check, RS256 access tokens and JWKS, refresh
//!   tokens, cookies, CSRF, client addresses, rate limits.
//! - [`usage`]: the usage ledger (batch checks, storage, aggregates); [`budget`]: the budget feed
//!   the proxies poll, kept current by [`feed_refresher`]; [`period`]: their UTC months.
//! - [`metrics`]: every Prometheus metric of the api and the text /metrics serves.
//! - The write path: [`lifecycle`] (what each action does to a tenant's files; links the
//!   compiler), [`writer`] (the single writer thread: batching, outbox, push retries, crash
//!   replay), [`state_repo`] (git plumbing: in-memory trees, packs and refs written and flushed
//!   by hand, fetch and push; knows no tenants), [`reader`] (tenant state, history and platform
//!   config read at the head).
//! - [`store`]: the database (tenants index, customers, sessions, outbox, idempotency keys);
//!   SQLite or PostgreSQL. [`placeholders`]: the SQL placeholders of statements built at run time.
//! - [`config`]: layered configuration; [`telegram`]: bot token format and getMe; [`bot`]: the
//!   platform bot (webhook, conversation, outbox of Bot API calls, notices to owners).
//! - [`cluster`]: hearing back from the cluster, read-only: reflectors over the tenants' Flux
//!   Kustomizations, Deployments and Pods, the pipeline committed → applied → running with
//!   health reasons, the sweep behind the gauges and the admin view.
//! - [`app`]: wiring and graceful shutdown. [`dev`]: the one-command local platform;
//!   [`dev_proxy`]: its token proxy (in process, fed from the state repo's table).
//!
//! Invariants: only the writer thread moves the state repo's branch; a batch's outbox rows,
//! index rows and idempotency answers are committed in one transaction while its pack is flushed,
//! and the branch moves only once both are durable, so a replay after a crash neither loses nor
//! repeats an acknowledged change; every tenant handler gets its tenant from an authorization
//! extractor; no plaintext secret reaches git, the database, a log line or an error message.

pub mod app;
pub mod auth;
pub mod bot;
pub mod budget;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod dev_proxy;
pub mod feed_refresher;
pub mod http;
pub mod idempotency;
pub mod lifecycle;
pub mod metrics;
pub mod period;
pub mod placeholders;
pub mod reader;
pub mod routes;
pub mod state_repo;
pub mod store;
pub mod telegram;
pub mod tenant_ops;
pub mod usage;
pub mod writer;
