//! `POST /telegram/webhook`: Telegram's updates, authenticated by the secret token header and
//! stored before they are acknowledged; the work happens afterwards in the update worker.
//!
//! The answer is fast and final: 200 once the update is stored (or when it is malformed or of a
//! kind the bot ignores: Telegram would otherwise redeliver it forever), 401 for a wrong secret,
//! 503 only when the database cannot store it (Telegram retries later).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::update::{self, Dropped};
use super::Bot;
use crate::http::ApiError;

/// The header Telegram sends the webhook's secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

pub async fn webhook(
    bot: Option<Extension<Arc<Bot>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(Extension(bot)) = bot else {
        return ApiError::NotFound("the platform bot is not configured on this api".into())
            .into_response();
    };
    if !bot.secret_matches(headers.get(SECRET_HEADER).map(|v| v.as_bytes())) {
        crate::metrics::get()
            .bot_updates
            .with_label_values(&["unauthenticated"])
            .inc();
        return ApiError::Unauthenticated(
            "missing or wrong X-Telegram-Bot-Api-Secret-Token: only Telegram, with the secret given to setWebhook, may post updates".into(),
        )
        .into_response();
    }
    match update::parse(&body, &bot.sealer) {
        Ok(input) => match bot.intake.store(input).await {
            Ok(fresh) => {
                let outcome = if fresh { "stored" } else { "duplicate" };
                crate::metrics::get()
                    .bot_updates
                    .with_label_values(&[outcome])
                    .inc();
                StatusCode::OK.into_response()
            }
            Err(e) => {
                tracing::warn!(error = %e, "platform bot: cannot store an update; Telegram will redeliver it");
                ApiError::Unavailable("cannot store the update; deliver it again".into())
                    .into_response()
            }
        },
        Err(reason) => {
            let outcome = match reason {
                Dropped::Malformed => "malformed",
                Dropped::Ignored => "ignored",
            };
            // Only the id is logged: the update may hold a customer's words or a token.
            tracing::debug!(update_id = ?update::update_id(&body), outcome, "platform bot: update dropped");
            crate::metrics::get()
                .bot_updates
                .with_label_values(&[outcome])
                .inc();
            StatusCode::OK.into_response()
        }
    }
}
