//! The platform bot: customers sign up, look after their agent and hear from the platform inside
//! Telegram (docs/bot.md).
//!
//! - [`webhook`]: `POST /telegram/webhook`, secret-checked, stores each update once and answers;
//!   [`intake`]: the group commit that stores the webhook's updates, one transaction per batch.
//! - [`update`]: Telegram's update format, parsed into the conversation's [`update::Input`];
//!   bot tokens in messages sealed ([`seal`]) or dropped.
//! - [`conversation`]: the conversation as a pure state machine; [`i18n`]: its words (en, pt-BR).
//! - [`worker`]: runs the conversation for stored updates, one chat at a time under a lease, and
//!   its actions through the api's own provisioning, suspend, reactivate and settings functions.
//! - [`outbox`]: sends the queued Bot API calls, surviving 429s and outages; [`client`]: the Bot
//!   API client; [`notify`]: notices to owners; [`db`]: the bot's tables.
//!
//! The bot must not touch git or the writer except through `crate::http`'s functions, and no
//! plaintext bot token reaches its tables, logs or error messages.

pub mod client;
pub mod conversation;
pub mod db;
pub mod i18n;
pub mod intake;
pub mod notify;
pub mod outbox;
pub mod seal;
pub mod update;
pub mod webhook;
pub mod worker;

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::http::AppState;
use crate::telegram::BotToken;

/// The key of a tenant incarnation's "live" notice.
pub fn live_key(tenant: &str, uid: &str) -> String {
    format!("live:{tenant}:{uid}")
}

/// Connections of the webhook's own pool: the group committer ([`intake`]) uses one, so an
/// acknowledgement never waits for a connection the worker holds.
pub const WEBHOOK_CONNECTIONS: u32 = 1;

/// The running bot, shared by the webhook and the background tasks.
pub struct Bot {
    pub state: Arc<AppState>,
    pub db: db::BotDb,
    /// Stores the webhook's updates (group commit on the webhook's own connection).
    pub intake: intake::Intake,
    pub api: client::BotApi,
    pub sealer: seal::Sealer,
    token: BotToken,
    secret_sha256: [u8; 32],
    /// This process's name in leases.
    pub replica: String,
    pub worker_wake: Arc<Notify>,
    pub sender_wake: Arc<Notify>,
}

/// The bot's routes; the webhook answers 404 on an api without a bot.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/telegram/webhook", post(webhook::webhook))
}

fn read_secret_file(path: &Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} from {}: {e}", path.display()))?;
    Ok(text.trim().to_owned())
}

impl Bot {
    /// Reads the bot's token and webhook secret; None when no bot is configured.
    pub async fn load(state: &Arc<AppState>) -> Result<Option<Arc<Bot>>, String> {
        let config = &state.config.bot;
        let Some(token_path) = &config.token_path else {
            return Ok(None);
        };
        let token_text = read_secret_file(token_path, "bot.token_path")?;
        let token = BotToken::parse(&token_text).map_err(|m| {
            format!(
                "bot.token_path ({}) does not hold a bot token: {m}",
                token_path.display()
            )
        })?;
        let secret_path = config
            .webhook_secret_path
            .as_ref()
            .ok_or("bot.webhook_secret_path is not set")?;
        let secret = read_secret_file(secret_path, "bot.webhook_secret_path")?;
        if secret.is_empty()
            || secret.len() > 256
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "bot.webhook_secret_path ({}) must hold 1 to 256 characters of A-Z, a-z, 0-9, '_' and '-' (Telegram's rule for secret_token); openssl rand -hex 32 makes one",
                secret_path.display()
            ));
        }
        let api = client::BotApi::new(
            &config.api_base_url,
            token.clone(),
            Duration::from_secs(config.timeout_seconds),
        );
        let sqlite =
            secrecy::ExposeSecret::expose_secret(&state.config.database_url).starts_with("sqlite:");
        let db = db::BotDb::new(state.store.clone(), sqlite);
        let webhook_store = crate::store::Store::connect(
            secrecy::ExposeSecret::expose_secret(&state.config.database_url),
            WEBHOOK_CONNECTIONS,
        )
        .await
        .map_err(|e| format!("cannot open the webhook's connections: {e}"))?;
        let worker_wake = Arc::new(Notify::new());
        Ok(Some(Arc::new(Bot {
            intake: intake::Intake::start(db.with_pool(webhook_store), worker_wake.clone()),
            db,
            sealer: seal::Sealer::new(token.expose()),
            api,
            token,
            secret_sha256: Sha256::digest(secret.as_bytes()).into(),
            replica: format!("api-{}", uuid::Uuid::new_v4().simple()),
            worker_wake,
            sender_wake: Arc::new(Notify::new()),
            state: state.clone(),
        })))
    }

    /// Whether the presented secret is the webhook's, in constant time (hashes of equal length
    /// are compared, so neither content nor length leaks).
    pub fn secret_matches(&self, presented: Option<&[u8]>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(presented).into();
        bool::from(hash.ct_eq(&self.secret_sha256))
    }

    /// Starts the update worker, the outbox sender, the notifier and (when configured) the
    /// `setWebhook` call, retried until Telegram accepts it. They stop when the api drops the bot.
    pub fn spawn(self: &Arc<Bot>) {
        spawn_worker(self);
        outbox::spawn_sender(self);
        notify::spawn_notifier(self);
        let config = &self.state.config.bot;
        if config.set_webhook {
            if let Some(public) = &config.public_url {
                let url = format!("{public}/telegram/webhook");
                let weak = Arc::downgrade(self);
                tokio::spawn(async move { set_webhook(weak, url).await });
            }
        }
    }
}

async fn set_webhook(bot: Weak<Bot>, url: String) {
    let mut wait = Duration::from_secs(1);
    loop {
        let Some(b) = bot.upgrade() else { return };
        let secret_path = b.state.config.bot.webhook_secret_path.clone();
        let secret = secret_path
            .as_deref()
            .map(|p| read_secret_file(p, "bot.webhook_secret_path"));
        let result = match secret {
            Some(Ok(secret)) => b
                .api
                .set_webhook(&url, &secret)
                .await
                .map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e),
            None => Err("bot.webhook_secret_path is not set".into()),
        };
        drop(b);
        match result {
            Ok(()) => {
                tracing::info!(%url, "platform bot: webhook registered with Telegram");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "platform bot: setWebhook failed")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(300));
    }
}

fn spawn_worker(bot: &Arc<Bot>) {
    let weak: Weak<Bot> = Arc::downgrade(bot);
    let wake = bot.worker_wake.clone();
    tokio::spawn(async move {
        let mut last_prune = 0_i64;
        loop {
            let Some(bot) = weak.upgrade() else { return };
            let worked = match bot.work_once().await {
                Ok(worked) => worked,
                Err(e) => {
                    tracing::warn!(error = %e, "platform bot: cannot read updates; retrying");
                    false
                }
            };
            let now = worker::now_ms();
            if now - last_prune > 3_600_000 {
                last_prune = now;
                if let Err(e) = bot.db.prune(now - 7 * 86_400_000).await {
                    tracing::warn!(error = %e, "platform bot: cannot prune old updates");
                }
            }
            drop(bot);
            if !worked {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = wake.notified() => {}
                }
            }
        }
    });
}
