//! Sign-in and session primitives, free of HTTP routing: the Telegram Login Widget check, RS256
//! access tokens and their JWKS, refresh tokens, cookies, CSRF, the client address behind
//! proxies and the per-address rate limiters. The handlers live in [`crate::routes::sessions`]; the
//! authorization of a caller on a tenant is [`crate::http::AuthorizedTenant`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{parse_net, AuthConfig, Config};

/// Cookie holding the access token (browsers).
pub const ACCESS_COOKIE: &str = "oc_access";
/// Cookie holding the refresh token; sent only to `/v1/auth`.
pub const REFRESH_COOKIE: &str = "oc_refresh";
/// Cookie holding the CSRF token; readable by the page, echoed in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "oc_csrf";
/// Header that must repeat the CSRF cookie on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Path the refresh cookie is scoped to.
pub const REFRESH_PATH: &str = "/v1/auth";

/// Current Unix time in seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Telegram Login Widget

/// Most seconds an `auth_date` may lie in the future (clock skew between Telegram and us).
pub const TELEGRAM_SKEW_SECONDS: i64 = 60;

/// Why login data was refused. Never carries the data itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The data is not shaped like login data (400).
    #[error("{field}: {message}")]
    Malformed { field: String, message: String },
    /// The hash does not match: forged or tampered data (401).
    #[error(
        "the login data's signature does not match; sign in again through the Telegram widget"
    )]
    BadSignature,
    /// `auth_date` is older than the allowed age (401).
    #[error("the login data is too old (auth_date more than {0} seconds ago); sign in again")]
    Expired(i64),
    /// `auth_date` is in the future (401).
    #[error("the login data's auth_date is in the future; check the clocks and sign in again")]
    FromTheFuture,
}

/// The Telegram user a verified login names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramUser {
    pub id: i64,
    pub display_name: String,
    pub auth_date: i64,
}

/// The HMAC key of the widget's signature: SHA-256 of the platform bot's token.
pub fn telegram_secret(bot_token: &str) -> [u8; 32] {
    Sha256::digest(bot_token.trim().as_bytes()).into()
}

/// The data-check-string: every received field except `hash`, sorted by key, `key=value`
/// joined by newlines.
pub fn data_check_string(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .filter(|(k, _)| k.as_str() != "hash")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The widget's hash of `fields` under `secret` (hex); tests and stand-ins sign with it.
pub fn telegram_hash(fields: &BTreeMap<String, String>, secret: &[u8; 32]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(data_check_string(fields).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies Telegram Login Widget data exactly as Telegram specifies, then its age.
pub fn verify_telegram_login(
    fields: &BTreeMap<String, String>,
    secret: &[u8; 32],
    now: i64,
    max_age: i64,
) -> Result<TelegramUser, LoginError> {
    let malformed = |field: &str, message: &str| LoginError::Malformed {
        field: field.to_owned(),
        message: message.to_owned(),
    };
    if fields.len() > 16 {
        return Err(malformed("body", "too many fields for Telegram login data"));
    }
    for (key, value) in fields {
        let key_ok = !key.is_empty()
            && key.len() <= 32
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !key_ok {
            return Err(malformed("body", "field names are lowercase letters and _"));
        }
        if value.len() > 2048 || value.contains('\n') {
            return Err(malformed(key, "at most 2048 characters, one line"));
        }
    }
    let hash = fields
        .get("hash")
        .ok_or_else(|| malformed("hash", "missing"))?;
    let mut presented = [0u8; 32];
    hex::decode_to_slice(hash, &mut presented)
        .map_err(|_| malformed("hash", "must be 64 hex characters"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(data_check_string(fields).as_bytes());
    let expected: [u8; 32] = mac.finalize().into_bytes().into();
    if !bool::from(expected.ct_eq(&presented)) {
        return Err(LoginError::BadSignature);
    }
    let id: i64 = fields
        .get("id")
        .ok_or_else(|| malformed("id", "missing"))?
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| malformed("id", "must be a positive integer"))?;
    let auth_date: i64 = fields
        .get("auth_date")
        .ok_or_else(|| malformed("auth_date", "missing"))?
        .parse()
        .map_err(|_| malformed("auth_date", "must be a Unix time in seconds"))?;
    if auth_date > now + TELEGRAM_SKEW_SECONDS {
        return Err(LoginError::FromTheFuture);
    }
    if now - auth_date > max_age {
        return Err(LoginError::Expired(max_age));
    }
    let name = [fields.get("first_name"), fields.get("last_name")]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let display_name = if !name.trim().is_empty() {
        name.trim().to_owned()
    } else if let Some(username) = fields.get("username") {
        username.clone()
    } else {
        format!("Telegram user {id}")
    };
    Ok(TelegramUser {
        id,
        display_name: clean_name(&display_name),
        auth_date,
    })
}

/// A display name fit to show: no angle brackets, control characters, line separators or
/// bidirectional overrides, at most 100 characters.
pub fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !compiler::spec::refused_char(*c) && *c != '<' && *c != '>')
        .take(100)
        .collect();
    cleaned.trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Access tokens

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The customer id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The customer's session epoch when issued ("log out everywhere" moves it on).
    pub sep: i64,
}

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token must be signed with RS256")]
    Algorithm,
    #[error("the access token was signed by a key this api does not know")]
    UnknownKey,
    #[error("the access token's signature is invalid")]
    Signature,
    #[error("the access token expired; refresh it or sign in again")]
    Expired,
    #[error("the access token is not meant for this api (issuer or audience)")]
    WrongAudience,
}

/// The signing key, the keys accepted for verification and the JWKS that publishes them.
pub struct Keys {
    kid: String,
    encoding: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    issuer: String,
    audience: String,
    ttl: i64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Parses an RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY` PEM).
pub fn parse_private_key(pem: &str) -> Result<RsaPrivateKey, String> {
    let key = RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            "not an RSA private key in PEM (PKCS#8 \"PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")"
                .to_owned()
        })?;
    if key.size() < 256 {
        return Err(format!(
            "the RSA key has {} bits; at least 2048 are needed",
            key.size() * 8
        ));
    }
    Ok(key)
}

/// Parses an RSA public key (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM).
pub fn parse_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            "not an RSA public key in PEM (\"PUBLIC KEY\" or \"RSA PUBLIC KEY\")".to_owned()
        })
}

fn jwk(kid: &str, key: &RsaPublicKey) -> serde_json::Value {
    serde_json::json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

fn decoding(key: &RsaPublicKey) -> DecodingKey {
    DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be())
}

impl Keys {
    /// The signing key `private` (with id `kid`) plus earlier public keys still accepted.
    pub fn new(
        kid: &str,
        private: &RsaPrivateKey,
        previous: &[(String, RsaPublicKey)],
        auth: &AuthConfig,
    ) -> Result<Keys, String> {
        let der = private
            .to_pkcs1_der()
            .map_err(|e| format!("cannot encode the signing key: {e}"))?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let public = private.to_public_key();
        let mut verifying = HashMap::from([(kid.to_owned(), decoding(&public))]);
        let mut jwks = vec![jwk(kid, &public)];
        for (id, key) in previous {
            verifying.insert(id.clone(), decoding(key));
            jwks.push(jwk(id, key));
        }
        Ok(Keys {
            kid: kid.to_owned(),
            encoding,
            verifying,
            jwks: serde_json::json!({ "keys": jwks }),
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            ttl: auth.access_ttl_seconds as i64,
        })
    }

    /// Loads the keys the configuration names; None when no signing key is configured.
    pub fn load(auth: &AuthConfig) -> Result<Option<Keys>, String> {
        let pem = match (&auth.private_key_path, &auth.private_key_pem) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                format!("auth.private_key_path: cannot read {}: {e}", path.display())
            })?,
            (None, Some(pem)) => pem.expose_secret().to_owned(),
            (None, None) => return Ok(None),
        };
        let private = parse_private_key(&pem).map_err(|m| format!("auth signing key: {m}"))?;
        let mut previous = Vec::new();
        for (i, key) in auth.previous_keys.iter().enumerate() {
            let pem = match (&key.public_key_path, &key.public_key_pem) {
                (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "auth.previous_keys[{i}].public_key_path: cannot read {}: {e}",
                        path.display()
                    )
                })?,
                (None, Some(pem)) => pem.clone(),
                (None, None) => {
                    return Err(format!(
                        "auth.previous_keys[{i}] needs public_key_path or public_key_pem"
                    ))
                }
            };
            let public =
                parse_public_key(&pem).map_err(|m| format!("auth.previous_keys[{i}]: {m}"))?;
            previous.push((key.key_id.clone(), public));
        }
        Keys::new(&auth.key_id, &private, &previous, auth).map(Some)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// Lifetime of an access token in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Issues an access token for `customer_id` in session epoch `epoch`.
    pub fn issue(&self, customer_id: &str, epoch: i64, now: i64) -> String {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: customer_id.to_owned(),
            exp: now + self.ttl,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            sep: epoch,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("RS256 signing with a checked key")
    }

    /// Verifies an access token: RS256 only, a known `kid`, signature, `exp`, `iss`, `aud`.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        // `alg: none` and unknown algorithms fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.verifying.get(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 30;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidSignature => TokenError::Signature,
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        TokenError::WrongAudience
                    }
                    ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                    _ => TokenError::Malformed,
                }
            })
    }
}

/// Generates a 2048-bit RSA key as PKCS#8 PEM (dev mode, tests).
pub fn generate_private_key_pem() -> Result<String, String> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
    key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens, cookies, CSRF

/// A new refresh token (256 random bits, base64url) and the SHA-256 hex that is stored.
pub fn new_refresh_token() -> (String, String) {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = refresh_hash(&token);
    (token, hash)
}

/// What the database keeps of a refresh token.
pub fn refresh_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: always Secure; HttpOnly unless the page must read it.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
    http_only: bool,
    same_site: &str,
) -> HeaderValue {
    let mut text =
        format!("{name}={value}; Path={path}; Max-Age={max_age}; Secure; SameSite={same_site}");
    if http_only {
        text.push_str("; HttpOnly");
    }
    HeaderValue::from_str(&text).expect("cookie values are base64url or JWT text")
}

/// The cookies of a browser session: access token (HttpOnly, Lax, whole api), refresh token
/// (HttpOnly, Strict, `/v1/auth` only) and CSRF token (readable, Strict).
pub fn session_cookies(
    access: &str,
    refresh: &str,
    csrf: &str,
    auth: &AuthConfig,
) -> Vec<HeaderValue> {
    vec![
        set_cookie(
            ACCESS_COOKIE,
            access,
            "/",
            auth.access_ttl_seconds as i64,
            true,
            "Lax",
        ),
        set_cookie(
            REFRESH_COOKIE,
            refresh,
            REFRESH_PATH,
            auth.refresh_ttl_seconds as i64,
            true,
            "Strict",
        ),
        set_cookie(
            CSRF_COOKIE,
            csrf,
            "/",
            auth.refresh_ttl_seconds as i64,
            false,
            "Strict",
        ),
    ]
}

/// `Set-Cookie` values that delete the session cookies.
pub fn clear_cookies() -> Vec<HeaderValue> {
    vec![
        set_cookie(ACCESS_COOKIE, "", "/", 0, true, "Lax"),
        set_cookie(REFRESH_COOKIE, "", REFRESH_PATH, 0, true, "Strict"),
        set_cookie(CSRF_COOKIE, "", "/", 0, false, "Strict"),
    ]
}

/// Why a cookie-authenticated write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("the request's Origin {0:?} may not send cookie-authenticated writes")]
    Origin(String),
    #[error(
        "cookie-authenticated writes must repeat the oc_csrf cookie in the X-CSRF-Token header"
    )]
    Token,
    #[error("the X-CSRF-Token belongs to another session; reload the page and sign in again")]
    Session,
}

/// The CSRF token of a customer's browser sessions: an HMAC of their account id and session
/// epoch under a key only the api holds, so that a token works only with that customer's session
/// cookie (a token planted from another session is refused), and "log out everywhere" retires it.
pub fn csrf_token_for(key: &[u8; 32], customer_id: &str, epoch: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"openclaw-api csrf v1\0");
    mac.update(customer_id.as_bytes());
    mac.update(b"\0");
    mac.update(epoch.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The double-submit check of a cookie-authenticated write: an `Origin`, when sent, must be
/// allowed (configured origins, else the api's own host), and `X-CSRF-Token` must equal the
/// `oc_csrf` cookie. A plain HTML form can do neither.
pub fn check_csrf(headers: &HeaderMap, auth: &AuthConfig) -> Result<(), CsrfError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").to_owned();
        let allowed = if auth.allowed_origins.is_empty() {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let origin_host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            !host.is_empty() && origin_host == Some(host)
        } else {
            auth.allowed_origins.contains(&origin)
        };
        if !allowed {
            return Err(CsrfError::Origin(origin));
        }
    }
    let cookie = cookie(headers, CSRF_COOKIE).ok_or(CsrfError::Token)?;
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(CsrfError::Token)?;
    if cookie.len() != sent.len() || !bool::from(cookie.as_bytes().ct_eq(sent.as_bytes())) {
        return Err(CsrfError::Token);
    }
    Ok(())
}

impl Auth {
    /// The CSRF token of `customer_id`'s browser sessions in `epoch`.
    pub fn csrf_token(&self, customer_id: &str, epoch: i64) -> String {
        csrf_token_for(&self.csrf_key, customer_id, epoch)
    }

    /// A cookie-authenticated write's `X-CSRF-Token` must be the token of the signed-in
    /// customer's sessions ([`csrf_token_for`]), not only equal to the cookie.
    pub fn check_csrf_binding(
        &self,
        headers: &HeaderMap,
        customer_id: &str,
        epoch: i64,
    ) -> Result<(), CsrfError> {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(CsrfError::Token)?;
        let expected = self.csrf_token(customer_id, epoch);
        if sent.len() != expected.len() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(CsrfError::Session);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Client addresses and rate limits

/// Which address a request comes from: the peer, unless the peer is a trusted proxy; then the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy (entries to its left can be
/// forged by the client). Without trusted proxies `X-Forwarded-For` is ignored.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    let mut client = peer;
    for ip in forwarded.iter().rev() {
        client = *ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// A keyed limiter (per client address, per customer): a refusal says how long to wait.
pub struct Limiter<K: std::hash::Hash + Eq + Clone = IpAddr> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    pub fn new(quota: Quota) -> Limiter<K> {
        Limiter {
            inner: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// Takes one attempt for `key`; Err(wait) when the key is over its limit.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        use governor::clock::{Clock, DefaultClock};
        if self.inner.len() > 100_000 {
            self.inner.retain_recent();
        }
        self.inner
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Everything sign-in needs at run time, loaded from the configuration.
pub struct Auth {
    pub keys: Option<Keys>,
    /// SHA-256 of the platform bot's token (the widget's HMAC key); None: Telegram login is off.
    pub telegram_secret: Option<[u8; 32]>,
    pub login_limiter: Limiter,
    pub signup_limiter: Limiter,
    /// Changes per customer (`auth.customer_writes_per_minute`), keyed by customer id.
    pub write_limiter: Limiter<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Key of the customers' CSRF tokens ([`csrf_token_for`]): derived from the signing key, so
    /// that every replica agrees; random without one (no customer sessions then).
    csrf_key: [u8; 32],
}

impl Auth {
    /// Limiters and proxies only: no keys, no Telegram login (until [`Auth::load`]).
    pub fn without_keys(config: &Config) -> Auth {
        let auth = &config.auth;
        let per_minute = NonZeroU32::new(auth.login_per_minute).unwrap_or(NonZeroU32::MIN);
        let per_hour = NonZeroU32::new(auth.signups_per_hour).unwrap_or(NonZeroU32::MIN);
        let writes = NonZeroU32::new(auth.customer_writes_per_minute).unwrap_or(NonZeroU32::MIN);
        Auth {
            keys: None,
            telegram_secret: None,
            login_limiter: Limiter::new(Quota::per_minute(per_minute)),
            signup_limiter: Limiter::new(Quota::per_hour(per_hour)),
            write_limiter: Limiter::new(Quota::per_minute(writes)),
            csrf_key: rand::random(),
            trusted_proxies: auth
                .trusted_proxies
                .iter()
                .filter_map(|n| parse_net(n).ok())
                .collect(),
        }
    }

    /// Everything, reading the key files the configuration names.
    pub fn load(config: &Config) -> Result<Auth, String> {
        let mut auth = Auth::without_keys(config);
        auth.keys = Keys::load(&config.auth)?;
        let pem = match (&config.auth.private_key_path, &config.auth.private_key_pem) {
            (Some(path), _) => std::fs::read_to_string(path).ok(),
            (None, Some(pem)) => Some(pem.expose_secret().to_owned()),
            (None, None) => None,
        };
        if let Some(pem) = pem {
            let mut hasher = Sha256::new();
            hasher.update(b"openclaw-api csrf key v1\0");
            hasher.update(pem.trim().as_bytes());
            auth.csrf_key = hasher.finalize().into();
        }
        if let Some(path) = &config.auth.telegram_bot_token_path {
            let token = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "auth.telegram_bot_token_path: cannot read {}: {e}",
                    path.display()
                )
            })?;
            if token.trim().is_empty() {
                return Err(format!(
                    "auth.telegram_bot_token_path: {} is empty",
                    path.display()
                ));
            }
            auth.telegram_secret = Some(telegram_secret(&token));
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &[u8; 32], pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut fields: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let hash = telegram_hash(&fields, secret);
        fields.insert("hash".into(), hash);
        fields
    }

    #[test]
    fn data_check_string_is_sorted_without_hash() {
        let fields: BTreeMap<String, String> = [
            ("username", "ada"),
            ("id", "42"),
            ("hash", "ff"),
            ("auth_date", "1700000000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            data_check_string(&fields),
            "auth_date=1700000000\nid=42\nusername=ada"
        );
    }

    #[test]
    fn telegram_login_is_verified_as_telegram_specifies() {
        let secret = telegram_secret("123:platform-bot-token");
        // The reference computation, written out: HMAC-SHA256(key = SHA-256(bot token),
        // data-check-string), hex.
        let dcs = "auth_date=1700000000\nfirst_name=Ada\nid=42";
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&Sha256::digest(b"123:platform-bot-token")).unwrap();
        mac.update(dcs.as_bytes());
        let reference = hex::encode(mac.finalize().into_bytes());
        let fields = signed(
            &secret,
            &[
                ("id", "42"),
                ("first_name", "Ada"),
                ("auth_date", "1700000000"),
            ],
        );
        assert_eq!(fields["hash"], reference);
        let user = verify_telegram_login(&fields, &secret, 1_700_000_100, 3600).unwrap();
        assert_eq!(user.id, 42);
        assert_eq!(user.display_name, "Ada");
    }

    #[test]
    fn forged_tampered_old_and_future_logins_are_refused() {
        let secret = telegram_secret("123:platform-bot-token");
        let now = 1_700_000_000;
        let good = signed(
            &secret,
            &[
                ("id", "42"),
                ("first_name", "Ada"),
                ("auth_date", &now.to_string()),
            ],
        );
        verify_telegram_login(&good, &secret, now, 3600).unwrap();

        let mut tampered = good.clone();
        tampered.insert("id".into(), "43".into());
        assert_eq!(
            verify_telegram_login(&tampered, &secret, now, 3600),
            Err(LoginError::BadSignature)
        );
        let mut added = good.clone();
        added.insert("username".into(), "mallory".into());
        assert_eq!(
            verify_telegram_login(&added, &secret, now, 3600),
            Err(LoginError::BadSignature)
        );
        let forged = signed(
            &telegram_secret("999:another-bot"),
            &[("id", "42"), ("auth_date", &now.to_string())],
        );
        assert_eq!(
            verify_telegram_login(&forged, &secret, now, 3600),
            Err(LoginError::BadSignature)
        );
        assert_eq!(
            verify_telegram_login(&good, &secret, now + 3601, 3600),
            Err(LoginError::Expired(3600))
        );
        assert_eq!(
            verify_telegram_login(&good, &secret, now - TELEGRAM_SKEW_SECONDS - 1, 3600),
            Err(LoginError::FromTheFuture)
        );
        let mut no_hash = good.clone();
        no_hash.remove("hash");
        assert!(matches!(
            verify_telegram_login(&no_hash, &secret, now, 3600),
            Err(LoginError::Malformed { field, .. }) if field == "hash"
        ));
    }

    #[test]
    fn client_address_trusts_only_configured_proxies() {
        let proxies = vec![parse_net("10.0.0.0/8").unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.0.0.7".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "5.5.5.5".parse().unwrap();
        assert_eq!(
            client_address(proxy, &headers, &proxies),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "the right-most untrusted hop, not the client-supplied left-most"
        );
        assert_eq!(client_address(stranger, &headers, &proxies), stranger);
        assert_eq!(client_address(proxy, &headers, &[]), proxy);
    }

    #[test]
    fn csrf_needs_the_header_and_an_allowed_origin() {
        let auth = AuthConfig::default();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "api.example.com".parse().unwrap());
        headers.insert(header::COOKIE, "oc_access=x; oc_csrf=abc".parse().unwrap());
        assert_eq!(check_csrf(&headers, &auth), Err(CsrfError::Token));
        headers.insert(CSRF_HEADER, "abd".parse().unwrap());
        assert_eq!(check_csrf(&headers, &auth), Err(CsrfError::Token));
        headers.insert(CSRF_HEADER, "abc".parse().unwrap());
        assert_eq!(check_csrf(&headers, &auth), Ok(()));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(matches!(
            check_csrf(&headers, &auth),
            Err(CsrfError::Origin(_))
        ));
        headers.insert(header::ORIGIN, "https://api.example.com".parse().unwrap());
        assert_eq!(check_csrf(&headers, &auth), Ok(()));
    }

    fn test_key(n: usize) -> RsaPrivateKey {
        static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let pems = KEYS.get_or_init(|| {
            (0..2)
                .map(|_| generate_private_key_pem().unwrap())
                .collect()
        });
        parse_private_key(&pems[n]).unwrap()
    }

    fn keys_with(kid: &str, key: &RsaPrivateKey, previous: &[(String, RsaPublicKey)]) -> Keys {
        Keys::new(kid, key, previous, &AuthConfig::default()).unwrap()
    }

    fn forge(header: &serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn access_tokens_verify_and_carry_the_claims() {
        let keys = keys_with("k1", &test_key(0), &[]);
        let now = now_s();
        let token = keys.issue("cus_1", 3, now);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "cus_1");
        assert_eq!(claims.sep, 3);
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        assert_eq!(claims.iss, "openclaw-api");
        assert_eq!(claims.aud, "openclaw-cloud");
        assert_eq!(claims.jti.len(), 32);
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kid"], "k1");
        assert_eq!(jwks["keys"][0]["alg"], "RS256");
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
    }

    #[test]
    fn tokens_of_other_keys_algorithms_and_audiences_are_refused() {
        let keys = keys_with("k1", &test_key(0), &[]);
        let other = keys_with("k1", &test_key(1), &[]);
        let now = now_s();
        // Same kid, another key.
        assert_eq!(
            keys.verify(&other.issue("cus_1", 0, now)),
            Err(TokenError::Signature)
        );
        // Unknown kid.
        let stranger = keys_with("k9", &test_key(1), &[]);
        assert_eq!(
            keys.verify(&stranger.issue("cus_1", 0, now)),
            Err(TokenError::UnknownKey)
        );
        let claims = serde_json::json!({"iss": "openclaw-api", "aud": "openclaw-cloud", "sub": "cus_1",
            "exp": now + 600, "iat": now, "jti": "x", "sep": 0});
        // alg none, unsigned.
        let none = forge(
            &serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k1"}),
            &claims,
            b"",
        );
        assert!(keys.verify(&none).is_err());
        // HS256 keyed with the public key (the classic confusion).
        let public_pem = {
            use rsa::pkcs8::EncodePublicKey;
            test_key(0)
                .to_public_key()
                .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap()
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let confused = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(keys.verify(&confused), Err(TokenError::Algorithm));
        // Expired (beyond the leeway), wrong audience, wrong issuer: signed with the right key.
        let sign = |claims: serde_json::Value| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("k1".into());
            jsonwebtoken::encode(&header, &claims, &keys.encoding).unwrap()
        };
        let mut expired = claims.clone();
        expired["exp"] = (now - 120).into();
        expired["iat"] = (now - 1000).into();
        assert_eq!(keys.verify(&sign(expired)), Err(TokenError::Expired));
        let mut aud = claims.clone();
        aud["aud"] = "another-service".into();
        assert_eq!(keys.verify(&sign(aud)), Err(TokenError::WrongAudience));
        let mut iss = claims.clone();
        iss["iss"] = "someone-else".into();
        assert_eq!(keys.verify(&sign(iss)), Err(TokenError::WrongAudience));
        assert!(keys.verify(&sign(claims.clone())).is_ok());
        // Tampered payload.
        let good = sign(claims);
        let parts: Vec<&str> = good.split('.').collect();
        let mut forged_claims = serde_json::json!({"iss": "openclaw-api", "aud": "openclaw-cloud", "sub": "cus_admin",
            "exp": now + 600, "iat": now, "jti": "x", "sep": 0});
        forged_claims["sub"] = "cus_2".into();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(forged_claims.to_string()),
            parts[2]
        );
        assert_eq!(keys.verify(&tampered), Err(TokenError::Signature));
    }

    #[test]
    fn previous_keys_still_verify_during_rotation() {
        let old = keys_with("old", &test_key(1), &[]);
        let token = old.issue("cus_1", 0, now_s());
        let rotated = keys_with(
            "new",
            &test_key(0),
            &[("old".into(), test_key(1).to_public_key())],
        );
        assert_eq!(rotated.verify(&token).unwrap().sub, "cus_1");
        assert_eq!(rotated.jwks()["keys"].as_array().unwrap().len(), 2);
        let after = keys_with("new", &test_key(0), &[]);
        assert_eq!(after.verify(&token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn limiter_refuses_with_a_wait() {
        let limiter = Limiter::new(Quota::per_minute(NonZeroU32::new(2).unwrap()));
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "2.2.2.2".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(limiter.check(b).is_ok(), "addresses are limited separately");
    }
}
