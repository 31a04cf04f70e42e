//! Sealing of the bot tokens customers paste to the platform bot, so that neither the stored
//! update nor the conversation state holds one in plaintext between the message and the
//! provisioning that encrypts it for the cluster.
//!
//! The key is derived from the platform bot's token (HMAC-SHA256 with a fixed label), which every
//! api replica reads from the same file: any replica can open what another sealed, and the
//! database alone opens nothing. A sealed value is XChaCha20-Poly1305 with a random nonce,
//! base64url-encoded; `Debug` never shows the plaintext.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::telegram::BotToken;

const LABEL: &[u8] = b"openclaw-cloud platform bot: sealing key v1";

/// A bot token sealed for the database.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// Seals and opens with the key derived from the platform bot's token.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(platform_bot_token: &str) -> Sealer {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(platform_bot_token.as_bytes()).expect("any key");
        mac.update(LABEL);
        let key = mac.finalize().into_bytes();
        Sealer {
            cipher: XChaCha20Poly1305::new(&key),
        }
    }

    pub fn seal(&self, token: &BotToken) -> Sealed {
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), token.expose().as_bytes())
            .expect("encryption of a short text does not fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Sealed(URL_SAFE_NO_PAD.encode(out))
    }

    /// The token, or None when the value was not sealed with this key (another bot token).
    pub fn open(&self, sealed: &Sealed) -> Option<BotToken> {
        let bytes = URL_SAFE_NO_PAD.decode(&sealed.0).ok()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, body) = bytes.split_at(24);
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), body).ok()?;
        BotToken::parse(std::str::from_utf8(&plain).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let token = BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap();
        let sealer = Sealer::new("777000:AALplatform");
        let sealed = sealer.seal(&token);
        let stored = serde_json::to_string(&sealed).unwrap();
        assert!(
            !stored.contains("AAHdq") && !stored.contains("123456789"),
            "{stored}"
        );
        assert!(!format!("{sealed:?}").contains("AAHdq"));
        assert_eq!(sealer.open(&sealed), Some(token.clone()));
        assert_ne!(sealer.seal(&token), sealed, "a fresh nonce each time");
        assert_eq!(Sealer::new("777000:AALother").open(&sealed), None);
    }
}
