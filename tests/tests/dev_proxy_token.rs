//! A tenant's proxy token over HTTP exists only in dev mode and only for admins: a customer, even
//! the tenant's owner, gets 403; outside dev mode the route does not exist.

use e2e::{Backend, Options, Platform};
use reqwest::{Method, StatusCode};

const PATH: &str = "/v1/dev/tenants/acme/proxy-token";

#[tokio::test]
async fn only_admins_read_a_proxy_token_and_only_in_dev_mode() {
    let Some(p) = Platform::start(
        Backend::Sqlite,
        Options {
            dev_login: true, // dev mode
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    let (status, body, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = p.call(Method::GET, PATH, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["proxyToken"], e2e::proxy_token(&p, "acme"));

    // A signed-in customer is refused; a missing tenant is missing; no token, no answer.
    let customer = p.login(123456789, "Ada").await;
    let (status, _) = p
        .call_as(Some(&customer.access), Method::GET, PATH, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = p
        .call(
            Method::GET,
            "/v1/dev/tenants/nobody/proxy-token",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = p.call_as(None, Method::GET, PATH, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    p.finish().await;

    // Outside dev mode the route does not exist, even for an admin.
    let Some(p) = Platform::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let (status, body, _) = p.provision("acme").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = p.call(Method::GET, PATH, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.to_string().contains(&e2e::proxy_token(&p, "acme")));
    p.finish().await;
}
