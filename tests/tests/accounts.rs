//! Customer accounts through HTTP against the real api, on SQLite and on PostgreSQL: Telegram
//! sign-in, ownership of tenants (another customer's tenant is a 404), self-service sign-up,
//! refresh rotation and reuse detection, logout, cookies with CSRF, rate limits, the dev login,
//! and the refusal of forged login data and forged access tokens.

use secrecy::ExposeSecret;
use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use e2e::{bot_token, jwt_key_pem, other_key_pem, Backend, Options, Platform};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn signup_body(name: &str, token: &str) -> Value {
    json!({
        "name": name,
        "owner": {"email": format!("{name}@example.com")},
        "tier": "starter",
        "telegramBotToken": token,
    })
}

async fn accounts(backend: Backend) {
    let options = Options {
        max_tenants_per_customer: 1,
        ..Options::default()
    };
    let Some(p) = Platform::start(backend, options).await else {
        return;
    };
    let repo = p.remote();

    // First sign-in creates the customer.
    let alice = p.login(1001, "Alice").await;
    let (status, me) = p
        .call_as(Some(&alice.access), Method::GET, "/v1/me", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["admin"], false);
    assert_eq!(me["customer"]["telegramId"], 1001);
    assert_eq!(me["customer"]["id"], alice.customer_id.as_str());
    let again = p.login(1001, "Alice").await;
    assert_eq!(
        again.customer_id, alice.customer_id,
        "one customer per Telegram id"
    );

    // Self-service sign-up: the owner is the caller.
    let token = bot_token(1);
    p.accept_token(&token);
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/tenants",
            Some(signup_body("alice-bot", &token)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        p.telegram.asked.lock().unwrap().contains(&token),
        "getMe was asked"
    );
    let commit = repo
        .find_commit(git2::Oid::from_str(body["commit"].as_str().unwrap()).unwrap())
        .unwrap();
    // The author is the account, never a name or email the customer typed.
    let author = format!("customer {}", alice.customer_id);
    let author_email = format!("{}@customers.openclaw.invalid", alice.customer_id);
    assert_eq!(commit.author().name(), Some(author.as_str()));
    assert_eq!(commit.author().email(), Some(author_email.as_str()));
    let spec = e2e::file_at(
        &repo,
        commit.id(),
        &compiler::layout::spec_path("alice-bot"),
    )
    .unwrap();
    let spec = compiler::spec::TenantSpec::parse("tenant.yaml", &spec).unwrap();
    assert_eq!(spec.spec.owner.telegram_user_id.get(), 1001);
    assert_eq!(spec.spec.owner.email.to_string(), "alice-bot@example.com");
    // The email was recorded on the account.
    let (_, me) = p
        .call_as(Some(&alice.access), Method::GET, "/v1/me", None)
        .await;
    assert_eq!(me["customer"]["email"], "alice-bot@example.com");

    // The per-customer cap.
    let token2 = bot_token(2);
    p.accept_token(&token2);
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/tenants",
            Some(signup_body("alice-two", &token2)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!p.telegram.asked.lock().unwrap().contains(&token2));

    // Another customer sees nothing of Alice's and can change nothing: 404 like a missing tenant.
    let bob = p.login(1002, "Bob").await;
    let (status, list) = p
        .call_as(Some(&bob.access), Method::GET, "/v1/tenants", None)
        .await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    let head = p.head();
    let (missing_status, missing) = p
        .call_as(
            Some(&bob.access),
            Method::GET,
            "/v1/tenants/nobody-here",
            None,
        )
        .await;
    assert_eq!(missing_status, StatusCode::NOT_FOUND);
    let attempts: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/v1/tenants/alice-bot", None),
        (Method::GET, "/v1/tenants/alice-bot/history", None),
        (Method::GET, "/v1/tenants/alice-bot/usage", None),
        (Method::GET, "/v1/tenants/alice-bot/usage/periods", None),
        (
            Method::PATCH,
            "/v1/tenants/alice-bot/settings",
            Some(json!({"thinking": "high"})),
        ),
        (
            Method::POST,
            "/v1/tenants/alice-bot/suspend",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/tenants/alice-bot/reactivate",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/tenants/alice-bot/resize",
            Some(json!({"tier": "pro"})),
        ),
        (
            Method::POST,
            "/v1/tenants/alice-bot/rotate-proxy-token",
            Some(json!({})),
        ),
        (Method::DELETE, "/v1/tenants/alice-bot", None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = p
            .call_as(Some(&bob.access), method.clone(), path, body)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], missing["error"]["code"]);
        assert_eq!(
            answer["error"]["message"], "tenant \"alice-bot\" does not exist",
            "the same words as a missing tenant"
        );
    }
    assert_eq!(p.head(), head, "nothing was committed");
    // Bob cannot sign up in Alice's name either.
    let token3 = bot_token(3);
    p.accept_token(&token3);
    let mut body = signup_body("bob-bot", &token3);
    body["owner"]["telegramUserId"] = json!(1001);
    let (status, answer) = p
        .call_as(Some(&bob.access), Method::POST, "/v1/tenants", Some(body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "owner.telegramUserId");

    // The owner may act on her tenant.
    let (status, list) = p
        .call_as(Some(&alice.access), Method::GET, "/v1/tenants", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "alice-bot");
    assert_eq!(list[0]["ownerId"], alice.customer_id.as_str());
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/tenants/alice-bot/suspend",
            Some(json!({"reason": "holiday"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = p
        .call_as(
            Some(&alice.access),
            Method::GET,
            "/v1/tenants/alice-bot/history",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The usage endpoints pass the same check for the owner (the ledger may not know the new
    // tenant yet, which it reports in its own words).
    let (_, body) = p
        .call_as(
            Some(&alice.access),
            Method::GET,
            "/v1/tenants/alice-bot/usage",
            None,
        )
        .await;
    assert_ne!(
        body["error"]["message"], "tenant \"alice-bot\" does not exist",
        "{body}"
    );

    // A customer may undo her own suspension, but not one the platform made.
    let reactivate = |token: Option<String>| {
        let p = &p;
        async move {
            match token {
                Some(t) => {
                    p.call_as(
                        Some(&t),
                        Method::POST,
                        "/v1/tenants/alice-bot/reactivate",
                        Some(json!({})),
                    )
                    .await
                }
                None => {
                    p.call(
                        Method::POST,
                        "/v1/tenants/alice-bot/reactivate",
                        Some(json!({})),
                        None,
                    )
                    .await
                }
            }
        }
    };
    let (status, body) = reactivate(Some(alice.access.clone())).await;
    assert_eq!(status, StatusCode::OK, "her own suspension: {body}");
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/alice-bot/suspend",
            Some(json!({"reason": "unpaid invoice"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let head = p.head();
    let (status, body) = reactivate(Some(alice.access.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("suspended by the platform"),
        "{body}"
    );
    assert_eq!(p.head(), head, "a refused reactivation commits nothing");
    let (status, body) = reactivate(None).await;
    assert_eq!(status, StatusCode::OK, "an admin lifts it: {body}");

    // Admins see everything; a tenant they provision belongs to the named owner's account.
    let (status, list) = p.call(Method::GET, "/v1/tenants", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, _) = p
        .call(Method::GET, "/v1/tenants/alice-bot", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let carol_token = bot_token(4);
    p.accept_token(&carol_token);
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "carol-bot", "owner": {"email": "carol@example.com", "telegramUserId": 1003},
                "tier": "starter", "telegramBotToken": carol_token})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let carol = p.login(1003, "Carol").await;
    let (_, list) = p
        .call_as(Some(&carol.access), Method::GET, "/v1/tenants", None)
        .await;
    assert_eq!(
        list[0]["name"], "carol-bot",
        "Carol's first sign-in finds her account"
    );

    // Refresh rotation: each use gives a new pair; reusing a used token revokes the family.
    let (status, first) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refreshToken": alice.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let rotated = first["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(rotated, alice.refresh);
    let (status, _) = p
        .call_as(
            Some(first["accessToken"].as_str().unwrap()),
            Method::GET,
            "/v1/me",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, reused) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refreshToken": alice.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reused}");
    let (status, _) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refreshToken": rotated})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the whole family is revoked"
    );
    // Another sign-in of Alice (`again`) is a separate family and still works.
    let (status, body) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refreshToken": again.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again_refresh = body["refreshToken"].as_str().unwrap().to_owned();

    // Logout ends one family.
    let bob_again = p.login(1002, "Bob").await;
    let (status, _) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/logout",
            Some(json!({"refreshToken": bob.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refreshToken": bob.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refreshToken": bob_again.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the other sign-in lives on");

    // Log out everywhere: every refresh token and every access token issued so far.
    let (status, _) = p
        .call_as(
            Some(&alice.access),
            Method::POST,
            "/v1/auth/logout-all",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [&alice.access, &again.access] {
        let (status, body) = p.call_as(Some(token), Method::GET, "/v1/me", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, _) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refreshToken": again_refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let fresh = p.login(1001, "Alice").await;
    let (status, _) = p
        .call_as(Some(&fresh.access), Method::GET, "/v1/me", None)
        .await;
    assert_eq!(status, StatusCode::OK, "signing in again works");

    // Refresh tokens are stored hashed only.
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(p.config.database_url.expose_secret())
            .await
            .unwrap();
        let count = |value: String| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(value)
        };
        let plain = count(fresh.refresh.clone())
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let hashed = count(api::auth::refresh_hash(&fresh.refresh))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!((plain, hashed), (0, 1));
        conn.close().await.unwrap();
    }
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_on_sqlite() {
    accounts(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_on_postgres() {
    accounts(Backend::Postgres).await;
}

async fn post_login(p: &Platform, fields: &BTreeMap<String, String>) -> (StatusCode, Value) {
    p.call_as(
        None,
        Method::POST,
        "/v1/auth/telegram",
        Some(serde_json::to_value(fields).unwrap()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_tampered_and_old_login_data_is_refused() {
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let now = api::auth::now_s();
    let good = p.login_data(2001, "Dana", now);

    let mut tampered = good.clone();
    tampered.insert("id".into(), "2002".into());
    let mut forged: BTreeMap<String, String> = good.clone();
    forged.remove("hash");
    let hash = api::auth::telegram_hash(&forged, &api::auth::telegram_secret("1:another-bot"));
    forged.insert("hash".into(), hash);
    let old = p.login_data(2001, "Dana", now - 3601);
    let future = p.login_data(2001, "Dana", now + 3600);
    for (what, fields) in [
        ("tampered", &tampered),
        ("forged", &forged),
        ("too old", &old),
        ("from the future", &future),
    ] {
        let (status, body) = post_login(&p, fields).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(
            !body.to_string().contains(&fields["hash"]),
            "{what}: the hash is not echoed"
        );
    }
    let mut no_hash = good.clone();
    no_hash.remove("hash");
    let (status, body) = post_login(&p, &no_hash).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "hash");
    let (status, _) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/telegram",
            Some(json!({"id": 1, "hash": ["x"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let store = p.store().await;
    assert!(
        store.customer_by_telegram(2001).await.unwrap().is_none()
            && store.customer_by_telegram(2002).await.unwrap().is_none(),
        "refused logins create no customer"
    );
    // The genuine data signs in, with numbers as the JS widget sends them.
    let mut as_json = serde_json::to_value(&good).unwrap();
    as_json["id"] = json!(2001);
    as_json["auth_date"] = json!(now);
    let (status, body) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/telegram",
            Some(as_json.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 900);
    // Login data is single use: the same data again is a replay.
    let (status, body) = p
        .call_as(None, Method::POST, "/v1/auth/telegram", Some(as_json))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    p.finish().await;
}

fn forge(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_access_tokens_are_refused() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let dana = p.login(3001, "Dana").await;
    let now = api::auth::now_s();
    let claims = |aud: &str, iss: &str, exp: i64| json!({"iss": iss, "aud": aud, "sub": dana.customer_id, "exp": exp, "iat": now - 10, "jti": "j", "sep": 0});
    let good = claims("openclaw-cloud", "openclaw-api", now + 600);
    let rs256 = |pem: &str, claims: &Value| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-key".into());
        encode(
            &header,
            claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    // The platform's key signs a good token: the harness is right.
    let (status, body) = p
        .call_as(
            Some(&rs256(jwt_key_pem(), &good)),
            Method::GET,
            "/v1/me",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let public_pem = {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        rsa::RsaPrivateKey::from_pkcs8_pem(jwt_key_pem())
            .unwrap()
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("test-key".into());
    let confused = encode(
        &hs_header,
        &good,
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let cases = [
        ("another key", rs256(other_key_pem(), &good)),
        (
            "alg none",
            forge(
                json!({"alg": "none", "typ": "JWT", "kid": "test-key"}),
                &good,
                b"",
            ),
        ),
        ("HS256 keyed with the public key", confused),
        (
            "expired",
            rs256(
                jwt_key_pem(),
                &claims("openclaw-cloud", "openclaw-api", now - 300),
            ),
        ),
        (
            "wrong audience",
            rs256(jwt_key_pem(), &claims("billing", "openclaw-api", now + 600)),
        ),
        (
            "wrong issuer",
            rs256(
                jwt_key_pem(),
                &claims("openclaw-cloud", "elsewhere", now + 600),
            ),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (what, token) in cases {
        let (status, body) = p.call_as(Some(&token), Method::GET, "/v1/me", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        let (status, _) = p
            .call_as(
                Some(&token),
                Method::POST,
                "/v1/tenants/x/suspend",
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
    }
    // The OpenAPI document lists the sign-in endpoints.
    let (_, openapi) = p.call_as(None, Method::GET, "/openapi.json", None).await;
    for path in [
        "/v1/auth/telegram",
        "/v1/auth/telegram/callback",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/logout-all",
        "/v1/me",
        "/.well-known/jwks.json",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} is in /openapi.json"
        );
    }
    assert!(openapi["paths"]["/v1/tenants"].get("get").is_some());
    // The JWKS publishes the verifying key.
    let (status, jwks) = p
        .call_as(None, Method::GET, "/.well-known/jwks.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks["keys"][0]["kid"], "test-key");
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    let e = jwks["keys"][0]["e"].as_str().unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_components(n, e).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["openclaw-cloud"]);
    jsonwebtoken::decode::<Value>(&dana.access, &key, &validation).expect("verifies with the JWKS");
    p.finish().await;
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browser_sessions_use_cookies_and_refuse_writes_without_csrf() {
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The widget's redirect.
    let fields = p.login_data(4001, "Erin", api::auth::now_s());
    let response = http
        .get(format!("{}/v1/auth/telegram/callback", p.base))
        .query(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/");
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    for cookie in &cookies {
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(cookie.contains("SameSite="), "{cookie}");
    }
    let access_cookie = cookies
        .iter()
        .find(|c| c.starts_with("oc_access="))
        .unwrap();
    assert!(access_cookie.contains("HttpOnly") && access_cookie.contains("SameSite=Lax"));
    let refresh_cookie = cookies
        .iter()
        .find(|c| c.starts_with("oc_refresh="))
        .unwrap();
    assert!(
        refresh_cookie.contains("HttpOnly")
            && refresh_cookie.contains("Path=/v1/auth")
            && refresh_cookie.contains("SameSite=Strict")
    );
    let csrf_cookie = cookies.iter().find(|c| c.starts_with("oc_csrf=")).unwrap();
    assert!(
        !csrf_cookie.contains("HttpOnly"),
        "the page reads the CSRF token"
    );
    let access = cookie_value(&cookies, "oc_access");
    let refresh = cookie_value(&cookies, "oc_refresh");
    let csrf = cookie_value(&cookies, "oc_csrf");
    let jar = format!("oc_access={access}; oc_refresh={refresh}; oc_csrf={csrf}");

    // Reads need only the cookie.
    let response = http
        .get(format!("{}/v1/me", p.base))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Give Erin a tenant (through the admin) to write to.
    let token = bot_token(5);
    p.accept_token(&token);
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "erin-bot", "owner": {"email": "erin@example.com", "telegramUserId": 4001},
                "tier": "starter", "telegramBotToken": token})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let head = p.head();

    // A cross-site form post carries the cookie but cannot set the header.
    let response = http
        .post(format!("{}/v1/tenants/erin-bot/suspend", p.base))
        .header("cookie", &jar)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .body("reason=gotcha")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = http
        .post(format!("{}/v1/tenants/erin-bot/suspend", p.base))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "no X-CSRF-Token");
    let response = http
        .post(format!("{}/v1/tenants/erin-bot/suspend", p.base))
        .header("cookie", &jar)
        .header("x-csrf-token", "not-the-cookie")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a wrong X-CSRF-Token"
    );
    let response = http
        .post(format!("{}/v1/tenants/erin-bot/suspend", p.base))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a foreign Origin");
    assert_eq!(p.head(), head, "nothing was committed");
    let response = http
        .post(format!("{}/v1/tenants/erin-bot/suspend", p.base))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .header("origin", p.base.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );

    // Cookie refresh needs the CSRF header too, and rotates the cookies.
    let response = http
        .post(format!("{}/v1/auth/refresh", p.base))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = http
        .post(format!("{}/v1/auth/refresh", p.base))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cookies = set_cookies(&response);
    let refresh2 = cookie_value(&cookies, "oc_refresh");
    let csrf2 = cookie_value(&cookies, "oc_csrf");
    assert_ne!(refresh2, refresh);
    let jar2 = format!(
        "oc_access={}; oc_refresh={refresh2}; oc_csrf={csrf2}",
        cookie_value(&cookies, "oc_access")
    );

    // Logout clears the cookies and ends the family.
    let response = http
        .post(format!("{}/v1/auth/logout", p.base))
        .header("cookie", &jar2)
        .header("x-csrf-token", &csrf2)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&response);
    assert!(
        cleared.iter().all(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let response = http
        .post(format!("{}/v1/auth/refresh", p.base))
        .json(&json!({"refreshToken": refresh2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_and_signups_are_rate_limited_per_address() {
    let options = Options {
        login_per_minute: 3,
        signups_per_hour: 1,
        ..Options::default()
    };
    let Some(p) = Platform::start(Backend::Sqlite, options).await else {
        return;
    };
    let bad = {
        let mut f = p.login_data(5001, "Finn", api::auth::now_s());
        f.insert("id".into(), "5002".into());
        f
    };
    for _ in 0..3 {
        let (status, _) = post_login(&p, &bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let response = p
        .http
        .post(format!("{}/v1/auth/telegram", p.base))
        .json(&p.login_data(5001, "Finn", api::auth::now_s()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // X-Forwarded-For from an untrusted peer changes nothing.
    let response = p
        .http
        .post(format!("{}/v1/auth/telegram", p.base))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&p.login_data(5001, "Finn", api::auth::now_s()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    p.finish().await;

    // Behind a trusted proxy, each forwarded client has its own budget.
    let options = Options {
        login_per_minute: 1,
        signups_per_hour: 1,
        trusted_proxies: vec!["127.0.0.1/32".into()],
        ..Options::default()
    };
    let Some(p) = Platform::start(Backend::Sqlite, options).await else {
        return;
    };
    let login_from = |client: &'static str, id: i64| {
        let request = p
            .http
            .post(format!("{}/v1/auth/telegram", p.base))
            .header("x-forwarded-for", format!("{client}, 127.0.0.1"))
            .json(&p.login_data(id, "Gus", api::auth::now_s()));
        async move { request.send().await.unwrap() }
    };
    let first = login_from("198.51.100.1", 6001).await;
    assert_eq!(first.status(), StatusCode::OK);
    let session: Value = first.json().await.unwrap();
    assert_eq!(
        login_from("198.51.100.1", 6001).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_from("198.51.100.2", 6001).await.status(),
        StatusCode::OK
    );

    // Sign-ups: one per address and hour.
    let access = session["accessToken"].as_str().unwrap();
    let signup = |name: &'static str| {
        let token = bot_token(rand_id());
        p.accept_token(&token);
        let request = p
            .http
            .post(format!("{}/v1/tenants", p.base))
            .bearer_auth(access)
            .header("x-forwarded-for", "198.51.100.1")
            .json(&signup_body(name, &token));
        async move { request.send().await.unwrap() }
    };
    let first = signup("gus-one").await;
    assert_eq!(
        first.status(),
        StatusCode::CREATED,
        "{}",
        first.text().await.unwrap()
    );
    let second = signup("gus-two").await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    p.finish().await;
}

fn rand_id() -> u64 {
    rand::random::<u32>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_login_works_only_in_dev_mode_on_loopback() {
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let (status, _) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/dev-login",
            Some(json!({"telegramId": 7001})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "off unless configured");
    p.finish().await;

    let options = Options {
        dev_login: true,
        ..Options::default()
    };
    let Some(p) = Platform::start(Backend::Sqlite, options).await else {
        return;
    };
    let (status, body) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/dev-login",
            Some(json!({"telegramId": 7001, "displayName": "Hana"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["accessToken"].as_str().unwrap();
    let (status, me) = p.call_as(Some(access), Method::GET, "/v1/me", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["customer"]["displayName"], "Hana");
    let (status, body) = p
        .call_as(
            None,
            Method::POST,
            "/v1/auth/dev-login",
            Some(json!({"telegramId": -5})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // The same configuration on a non-loopback address does not start.
    let mut config = p.config.clone();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = match api::app::start(config, std::future::pending()).await {
        Ok(_) => panic!("the api started with the dev login on 0.0.0.0"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("not a loopback address"), "{err}");
    p.finish().await;
}

/// Tenants created before accounts existed get one customer per owner email.
async fn owner_emails_become_customers(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
        Backend::Postgres => match e2e::fresh_postgres().await {
            Some(url) => url,
            None => return,
        },
    };
    sqlx::any::install_default_drivers();
    {
        use sqlx::Connection;
        let migrations = e2e::checkout().join("api/migrations");
        let mut migrator = sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap();
        let first: Vec<_> = migrator.migrations.iter().take(1).cloned().collect();
        migrator.migrations = first.into();
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
        for (name, email) in [
            ("a1", "ann@example.com"),
            ("a2", "ann@example.com"),
            ("b1", "ben@example.com"),
        ] {
            sqlx::query("INSERT INTO tenants (name, owner_email, created_at, updated_at, last_commit) VALUES ($1, $2, 1, 1, 'c')")
                .bind(name)
                .bind(email)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = api::store::Store::connect(&url, 2).await.unwrap();
    let ann = store
        .customer_by_email("ann@example.com")
        .await
        .unwrap()
        .expect("ann");
    let ben = store
        .customer_by_email("ben@example.com")
        .await
        .unwrap()
        .expect("ben");
    assert_ne!(ann.id, ben.id);
    let names: Vec<String> = store
        .tenants_of(&ann.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a1", "a2"]);
    assert_eq!(store.tenants_of(&ben.id).await.unwrap().len(), 1);
    assert_eq!(ann.telegram_id, None);
    store.link_telegram(&ann.id, 8001).await.unwrap();
    let linked = store
        .customer_by_telegram(8001)
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(linked.id, ann.id);
    store.link_telegram(&ann.id, 8002).await.unwrap();
    assert_eq!(
        store.customer(&ann.id).await.unwrap().unwrap().telegram_id,
        Some(8001),
        "an account's Telegram id is set once"
    );
    drop(store);
    if backend == Backend::Postgres {
        e2e::drop_postgres(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_emails_become_customers_on_sqlite() {
    owner_emails_become_customers(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_emails_become_customers_on_postgres() {
    owner_emails_become_customers(Backend::Postgres).await;
}
