//! Telling Flux at once: after each push the api calls the state repo's `generic-hmac` Receiver
//! (`flux/clusters/production/receivers.yaml`, `state-repo-api`), so source-controller fetches
//! the new commit now instead of at its next interval. The call carries
//! `X-Signature: sha256=<hex HMAC-SHA256 of the body with the Receiver's token>`; the body names
//! the pushed commit. Pushes that land while a call is out are coalesced into the next call (the
//! last tip is what matters). Off unless `cluster.receiver_url` is set.
//!
//! This asks Flux to look at git; it changes nothing in the cluster. The token is read from a
//! file and never logged; neither is the URL (its path is derived from the token).

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::sync::watch;

use crate::writer::Pushed;

/// The Receiver to call, its token, and the push feed.
pub struct Receiver {
    pub url: String,
    pub token: SecretString,
    pub timeout: Duration,
}

/// `sha256=<hex>` of `body` keyed with `token`: the `X-Signature` Flux's generic-hmac checks.
pub fn signature(token: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Reads the token file (trimmed); an error names the file, never its content.
pub fn read_token(path: &std::path::Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cluster.receiver_token_path {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "cluster.receiver_token_path {} is empty: it must hold the Receiver's token (the Secret's `token` key)",
            path.display()
        ));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Calls the Receiver after each push until `pushes` closes (the writer stopped).
pub fn spawn(
    receiver: Receiver,
    mut pushes: watch::Receiver<Option<Pushed>>,
) -> tokio::task::JoinHandle<()> {
    let client = reqwest::Client::builder()
        .timeout(receiver.timeout)
        .build()
        .expect("a reqwest client with a timeout");
    tokio::spawn(async move {
        pushes.borrow_and_update();
        while pushes.changed().await.is_ok() {
            let Some(pushed) = *pushes.borrow_and_update() else {
                continue;
            };
            let body = serde_json::to_vec(&serde_json::json!({"commit": pushed.tip.to_string()}))
                .expect("JSON of a string");
            let sig = signature(receiver.token.expose_secret(), &body);
            let sent = client
                .post(&receiver.url)
                .header("content-type", "application/json")
                .header("X-Signature", sig)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    record(pushed.at.elapsed());
                    tracing::debug!(commit = %pushed.tip, "flux receiver notified");
                }
                // Flux reconciles at its interval anyway: a failed call is logged, not retried.
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "flux receiver refused the push notice")
                }
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), "flux receiver cannot be reached")
                }
            }
        }
    })
}

/// Push → Flux notified, in seconds (`api_flux_notify_seconds`).
fn record(elapsed: Duration) {
    crate::metrics::get()
        .flux_notify_seconds
        .observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_flux_generic_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231-style vector.
        assert_eq!(
            signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn a_token_file_error_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  \n").unwrap();
        let e = read_token(&path).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&path, "s3cr3t-token\n").unwrap();
        assert_eq!(read_token(&path).unwrap().expose_secret(), "s3cr3t-token");
        assert!(!format!("{:?}", read_token(&path).unwrap()).contains("s3cr3t"));
    }
}
