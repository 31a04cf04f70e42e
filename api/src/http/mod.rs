//! The HTTP kernel: what every route module shares and nothing else. It owns the handlers'
//! shared state ([`AppState`]), the error answer ([`ApiError`], always JSON), the extractors
//! ([`extract`]: JSON bodies, client addresses), the callers ([`caller`]: admin token, access token,
//! session cookie, token proxy) and the one authorization rule for tenants ([`authorize`]).
//!
//! It must not hold handlers, open the state repo or know what a change does: handlers live in
//! [`crate::routes`], the work they call in [`crate::tenant_ops`], and reads of the state repo in
//! [`crate::reader`]. Nothing in it imports a route module.

pub mod authorize;
pub mod caller;
pub mod error;
pub mod extract;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::auth::Auth;
use crate::config::Config;
use crate::lifecycle::Actor;
use crate::reader::HeadConfig;
use crate::store::Store;
use crate::telegram::Telegram;
use crate::writer::WriterHandle;

pub use authorize::{authorize_tenant_list, AuthorizedIncarnation, AuthorizedTenant, Incarnation};
pub use caller::{check_write_limit, customer_actor, role, Caller, ProxyCaller};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use extract::{free_text, parse_json_body, ClientAddr, JsonBody};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared state of the handlers.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub writer: WriterHandle,
    pub telegram: Telegram,
    /// (actor, hash bytes) of each admin token.
    admins: Vec<(Actor, [u8; 32])>,
    /// Platform config and templates at the head, for checks at the boundary.
    pub(crate) head: HeadConfig,
    /// Idempotency keys of requests in progress ([`crate::idempotency`]).
    pub(crate) in_flight: Mutex<HashSet<(String, String)>>,
    /// The usage ledger and the budget feed.
    pub ledger: Arc<crate::usage::Ledger>,
    /// Signing keys, Telegram login secret, limiters.
    pub auth: Auth,
    /// The cluster's status (watch caches), or off.
    pub cluster: crate::cluster::Cluster,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Store, writer: WriterHandle) -> AppState {
        let admins = config
            .admin_tokens
            .iter()
            .map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut hash).expect("checked by Config::check");
                (
                    Actor {
                        name: t.name.clone(),
                        email: t.email.clone(),
                    },
                    hash,
                )
            })
            .collect();
        let telegram = Telegram::new(
            &config.telegram.base_url,
            std::time::Duration::from_secs(config.telegram.timeout_seconds),
        );
        AppState {
            ledger: Arc::new(crate::usage::Ledger::new(&config)),
            store,
            writer,
            telegram,
            admins,
            auth: Auth::without_keys(&config),
            cluster: crate::cluster::Cluster::off(),
            config,
            head: HeadConfig::default(),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the sign-in material (keys, Telegram login secret) with `auth`.
    pub fn with_auth(mut self, auth: Auth) -> AppState {
        self.auth = auth;
        self
    }

    /// Reads the cluster's status from `cluster`.
    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> AppState {
        self.cluster = cluster;
        self
    }

    /// The remote-tracking branch that is the state repo's head for reads.
    pub fn tracking_ref(&self) -> String {
        format!(
            "refs/remotes/{}/{}",
            crate::state_repo::REMOTE,
            self.config.repo.branch
        )
    }
}

/// The state as handlers and extractors hold it.
pub type Shared = Arc<AppState>;

/// An [`AppState`] on a fresh SQLite database, with one admin token (`ADMIN_TOKEN`) and a writer
/// that is gone, for the kernel's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use sha2::{Digest, Sha256};

    pub const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";

    pub async fn state(dir: &std::path::Path) -> Shared {
        let mut config = Config::default();
        config.database_url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display()).into();
        config.admin_tokens = vec![crate::config::AdminToken {
            name: "ops".into(),
            email: "ops@example.com".into(),
            sha256: hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes())),
        }];
        let store = Store::connect(
            secrecy::ExposeSecret::expose_secret(&config.database_url),
            2,
        )
        .await
        .unwrap();
        Arc::new(AppState::new(
            Arc::new(config),
            store,
            WriterHandle::detached(),
        ))
    }
}
