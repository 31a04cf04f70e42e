//! The outbox sender: makes the Bot API calls the worker and the notifier queued, oldest first
//! per chat, under a per-call lease so that two api replicas never make the same call.
//!
//! A 429 puts the call back until its `retry_after` (and pauses this sender as long: Telegram's
//! flood limit is per bot); a 5xx or a network failure retries with a growing delay; any other
//! refusal (the user blocked the bot, the chat is gone) gives the call up and records why.
//! Nothing is lost to an outage. A call Telegram carried out is marked sent right after; only a
//! crash between the two (milliseconds) can repeat it, because the Bot API has no idempotency key.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::client::CallError;
use super::worker::now_ms;
use super::Bot;
use crate::store::StoreError;

/// How long a replica holds a call while it makes it (longer than the Bot API timeout).
pub const SEND_LEASE_MS: i64 = 60_000;
/// Longest pause between retries of an unavailable Telegram.
const MAX_BACKOFF_MS: i64 = 60_000;

/// What one round of sending did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// A call was made (successfully or given up).
    One,
    /// Nothing is due.
    Idle,
    /// Telegram asked to wait this long.
    Pause(Duration),
}

impl Bot {
    /// Makes the oldest due call, if any.
    pub async fn send_once(&self) -> Result<Sent, StoreError> {
        let now = now_ms();
        let Some((message, attempts)) = self
            .db
            .claim_message(&self.replica, now, now + SEND_LEASE_MS)
            .await?
        else {
            return Ok(Sent::Idle);
        };
        match self.api.call(&message.method, &message.payload).await {
            Ok(_) => {
                self.db.mark_sent(&message.id, now_ms()).await?;
                crate::metrics::get()
                    .bot_calls
                    .with_label_values(&[message.method.as_str(), "sent"])
                    .inc();
                Ok(Sent::One)
            }
            Err(CallError::RetryAfter(seconds)) => {
                let wait = Duration::from_secs(seconds.min(3600));
                self.db
                    .retry_at(&message.id, now_ms() + wait.as_millis() as i64)
                    .await?;
                crate::metrics::get()
                    .bot_calls
                    .with_label_values(&[message.method.as_str(), "rate_limited"])
                    .inc();
                tracing::info!(seconds, "platform bot: Telegram asks to slow down");
                Ok(Sent::Pause(wait))
            }
            Err(CallError::Unavailable(why)) => {
                let backoff = (500_i64 << attempts.clamp(0, 7)).min(MAX_BACKOFF_MS);
                self.db.retry_at(&message.id, now_ms() + backoff).await?;
                crate::metrics::get()
                    .bot_calls
                    .with_label_values(&[message.method.as_str(), "retry"])
                    .inc();
                tracing::warn!(error = %why, backoff_ms = backoff, "platform bot: Telegram unavailable; the call waits in the outbox");
                Ok(Sent::Pause(
                    Duration::from_millis(backoff.min(2_000) as u64),
                ))
            }
            Err(CallError::Refused(why)) => {
                self.db.mark_failed(&message.id, &why).await?;
                crate::metrics::get()
                    .bot_calls
                    .with_label_values(&[message.method.as_str(), "refused"])
                    .inc();
                tracing::warn!(error = %why, method = %message.method, "platform bot: Telegram refused a call; given up");
                Ok(Sent::One)
            }
        }
    }
}

/// Sends until the api stops (it holds the bot only weakly).
pub fn spawn_sender(bot: &Arc<Bot>) {
    let weak: Weak<Bot> = Arc::downgrade(bot);
    let wake = bot.sender_wake.clone();
    tokio::spawn(async move {
        loop {
            let Some(bot) = weak.upgrade() else { return };
            let sent = bot.send_once().await;
            let due = match &sent {
                Ok(Sent::Idle) => bot.db.next_due().await.ok().flatten(),
                _ => None,
            };
            drop(bot);
            let pause = match sent {
                Ok(Sent::One) => continue,
                Ok(Sent::Pause(wait)) => {
                    // Telegram asked to wait: new messages wait too.
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(Sent::Idle) => match due {
                    Some(at) => Duration::from_millis((at - now_ms()).clamp(10, 1_000) as u64),
                    None => Duration::from_secs(1),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "platform bot: cannot read the outbox");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
            }
        }
    });
}
