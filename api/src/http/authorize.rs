//! Authorization as a type. A tenant handler takes [`AuthorizedTenant`] (or, for the reads of a
//! tenant's past, [`AuthorizedIncarnation`]) instead of the path's `{name}`: the extractor
//! resolves the caller, parses the name and applies THE rule (admins act on every tenant, a
//! customer on the tenants they own, and another customer's tenant answers exactly like a missing
//! one, 404 with the same message), so a handler cannot reach a tenant it was not authorized for.
//! The name parser is private to this module; the work functions of [`crate::tenant_ops`] take an
//! [`AuthorizedTenant`] too, so callers outside HTTP (a bot, a dashboard) go through the same rule
//! with [`AuthorizedTenant::authorize`].
//!
//! Precedence, as every tenant endpoint answers: no or bad credentials (401) before a malformed
//! name (422, field `name`) before a tenant the caller may not see (404).

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use compiler::spec::{TenantName, TenantUid};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, Shared};

/// A tenant the caller may act on: the only way handlers and [`crate::tenant_ops`] get a
/// tenant's name.
#[derive(Debug, Clone)]
pub struct AuthorizedTenant {
    name: TenantName,
    caller: Caller,
}

impl AuthorizedTenant {
    /// THE authorization check of a tenant, used by every endpoint that reads or changes one:
    /// admins may act on any tenant; a customer only on the tenants they own. Another customer's
    /// tenant answers exactly like a missing one (404, same message), so tenant names do not
    /// leak. A malformed `name` is a 422 naming the field `name`.
    pub async fn authorize(
        state: &AppState,
        caller: Caller,
        name: &str,
    ) -> Result<AuthorizedTenant, ApiError> {
        let name = tenant_name(name)?;
        if caller.admin {
            return Ok(AuthorizedTenant { name, caller });
        }
        let owner = state
            .store
            .tenant(name.as_str())
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .and_then(|row| row.owner_id);
        match (owner, caller.customer_id()) {
            (Some(owner), Some(me)) if owner == me => Ok(AuthorizedTenant { name, caller }),
            _ => Err(not_found(&name)),
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &TenantName {
        &self.name
    }

    /// Who was authorized.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl FromRequestParts<Shared> for AuthorizedTenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let (caller, name) = caller_and_name(parts, state).await?;
        AuthorizedTenant::authorize(state, caller, &name)
            .await
            .map_err(IntoResponse::into_response)
    }
}

/// What both extractors start with, in the order every tenant endpoint answers: the caller
/// (401 first), then the route's `{name}` as the framework decodes it (its own rejection
/// otherwise), not yet parsed.
async fn caller_and_name(parts: &mut Parts, state: &Shared) -> Result<(Caller, String), Response> {
    let caller = Caller::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let Path(mut params) = Path::<BTreeMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let name = params.remove("name").ok_or_else(|| {
        ApiError::Internal("a tenant route without a {name} segment".into()).into_response()
    })?;
    Ok((caller, name))
}

/// One incarnation of a tenant (see `metadata.uid` in docs/tenant-spec.md) that a caller may
/// read: the live one, or one that was destroyed.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub name: TenantName,
    /// None for a tenant without a uid (made by hand, or before uids existed).
    pub uid: Option<String>,
    /// The key of its usage in the ledger ([`crate::store::ledger_key`]).
    pub ledger_key: String,
    /// Whether it is the tenant that exists now under this name.
    pub live: bool,
}

/// An incarnation of a tenant the caller may read (the endpoints of a tenant's past: history,
/// usage). The incarnation is the request's `?incarnation=` uid, or the default one (see
/// [`Incarnation`]); a malformed uid is a 400 naming the field `incarnation`.
#[derive(Debug, Clone)]
pub struct AuthorizedIncarnation {
    incarnation: Incarnation,
    caller: Caller,
}

impl AuthorizedIncarnation {
    /// Authorizes `caller` for the incarnation `uid` of `name` (or the default one).
    pub async fn authorize(
        state: &AppState,
        caller: Caller,
        name: &str,
        uid: Option<&str>,
    ) -> Result<AuthorizedIncarnation, ApiError> {
        let incarnation = authorize_incarnation(state, &caller, name, uid).await?;
        Ok(AuthorizedIncarnation {
            incarnation,
            caller,
        })
    }

    /// The incarnation.
    pub fn incarnation(&self) -> &Incarnation {
        &self.incarnation
    }

    /// The tenant's name.
    pub fn name(&self) -> &TenantName {
        &self.incarnation.name
    }

    /// Who was authorized.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// The one query parameter the extractor reads; the handler's own query type checks the rest.
#[derive(Deserialize)]
struct IncarnationParam {
    incarnation: Option<String>,
}

impl FromRequestParts<Shared> for AuthorizedIncarnation {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let (caller, name) = caller_and_name(parts, state).await?;
        let Query(param) = Query::<IncarnationParam>::try_from_uri(&parts.uri)
            .map_err(IntoResponse::into_response)?;
        AuthorizedIncarnation::authorize(state, caller, &name, param.incarnation.as_deref())
            .await
            .map_err(IntoResponse::into_response)
    }
}

/// The authorization check of the endpoints that read a tenant's past (history, usage), by the
/// rule of [`AuthorizedTenant::authorize`] applied to incarnations: admins read every incarnation; a
/// customer reads the incarnations they owned, live or destroyed, and nothing of anyone else's
/// under the same name. `uid` picks one (`?incarnation=`); without it, the live incarnation when
/// the caller may read it, else the caller's most recently destroyed one. Anything else answers
/// like a missing tenant (404).
async fn authorize_incarnation(
    state: &AppState,
    caller: &Caller,
    name: &str,
    uid: Option<&str>,
) -> Result<Incarnation, ApiError> {
    let name = tenant_name(name)?;
    if let Some(uid) = uid {
        TenantUid::parse(uid).map_err(|m| ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some("incarnation".into()),
            message: m,
        })?;
    }
    let unavailable = |e: crate::store::StoreError| ApiError::Unavailable(e.to_string());
    let live = state
        .store
        .tenant(name.as_str())
        .await
        .map_err(unavailable)?;
    let me = caller.customer_id();
    if let Some(row) = &live {
        let mine = caller.admin || (row.owner_id.is_some() && row.owner_id.as_deref() == me);
        if mine && (uid.is_none() || row.uid.as_deref() == uid) {
            return Ok(Incarnation {
                ledger_key: crate::store::ledger_key(name.as_str(), row.uid.as_deref()),
                uid: row.uid.clone(),
                name,
                live: true,
            });
        }
    }
    let owner = match (caller.admin, me) {
        (true, _) => None,
        (false, Some(me)) => Some(me),
        (false, None) => return Err(not_found(&name)),
    };
    if let Some(past) = state
        .store
        .past_incarnation(name.as_str(), uid, owner)
        .await
        .map_err(unavailable)?
    {
        return Ok(Incarnation {
            name,
            uid: past.uid,
            ledger_key: past.ledger_key,
            live: false,
        });
    }
    if caller.admin && uid.is_none() {
        // A tenant the index does not know (made by hand in the state repo): by its name.
        return Ok(Incarnation {
            ledger_key: name.to_string(),
            name,
            uid: None,
            live: live.is_some(),
        });
    }
    Err(not_found(&name))
}

/// The tenants `caller` may see, by the same rule as [`AuthorizedTenant::authorize`]: every tenant for
/// admins, their own for customers.
pub async fn authorize_tenant_list(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<crate::store::TenantRow>, ApiError> {
    let rows = if caller.admin {
        state.store.tenants().await
    } else {
        match caller.customer_id() {
            Some(id) => state.store.tenants_of(id).await,
            None => Ok(Vec::new()),
        }
    };
    rows.map_err(|e| ApiError::Unavailable(e.to_string()))
}

fn not_found(name: &TenantName) -> ApiError {
    ApiError::NotFound(format!("tenant {:?} does not exist", name.as_str()))
}

/// Parses a tenant name from a request: private, so that a name reaches a handler only through
/// the extractors above.
fn tenant_name(name: &str) -> Result<TenantName, ApiError> {
    TenantName::parse(name).map_err(|m| ApiError::field("name", m))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::{state, ADMIN_TOKEN};
    use crate::store::{Customer, IndexEffect, Recorded};

    /// Records `tenant` in the index as owned by `owner`.
    async fn own(state: &AppState, tenant: &str, owner: &str, seq: i64) {
        let recorded = Recorded {
            seq,
            tenant: tenant.into(),
            action: "provision".into(),
            request_id: format!("req-{seq}"),
            change_json: "{}".into(),
            commit_id: format!("{seq:040}"),
            index: IndexEffect::Upsert {
                owner_id: Some(owner.into()),
                uid: Some(format!("00000000-0000-4000-8000-{seq:012}")),
            },
            idempotency: None,
            new_owner: None,
            prior: None,
            at: seq,
        };
        state.store.record_batch(&[recorded], &[], 0).await.unwrap();
    }

    /// A customer recorded in the database.
    async fn customer(state: &AppState, telegram_id: i64, name: &str) -> Customer {
        let customer = Customer::new(None, Some(telegram_id), name.into(), 0);
        state.store.insert_customer(&customer).await.unwrap();
        customer
    }

    fn customer_caller(customer: &Customer) -> Caller {
        Caller {
            actor: crate::http::customer_actor(customer),
            admin: false,
            customer: Some(customer.clone()),
        }
    }

    /// A router with one tenant route and one incarnation route, answering the authorized name.
    fn app(state: Shared) -> Router {
        Router::new()
            .route(
                "/t/{name}",
                get(|t: AuthorizedTenant| async move { t.name().to_string() }),
            )
            .route(
                "/i/{name}",
                get(|t: AuthorizedIncarnation| async move {
                    format!("{} {:?}", t.name(), t.incarnation().uid)
                }),
            )
            .with_state(state)
    }

    async fn call(app: &Router, uri: &str, auth: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut request = Request::get(uri);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    #[tokio::test]
    async fn owners_act_on_their_tenants_and_others_see_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let alice = customer(&state, 1, "alice").await;
        let mallory = customer(&state, 2, "mallory").await;
        own(&state, "alice-bot", &alice.id, 1).await;

        let mine = AuthorizedTenant::authorize(&state, customer_caller(&alice), "alice-bot")
            .await
            .unwrap();
        assert_eq!(mine.name().as_str(), "alice-bot");
        assert_eq!(mine.caller().customer_id(), Some(alice.id.as_str()));

        // Another customer's tenant and a missing one answer exactly alike.
        let theirs = AuthorizedTenant::authorize(&state, customer_caller(&mallory), "alice-bot")
            .await
            .unwrap_err();
        let missing = AuthorizedTenant::authorize(&state, customer_caller(&mallory), "no-bot")
            .await
            .unwrap_err();
        for (error, name) in [(theirs, "alice-bot"), (missing, "no-bot")] {
            match error {
                ApiError::NotFound(m) => assert_eq!(m, format!("tenant {name:?} does not exist")),
                other => panic!("expected 404, got {other:?}"),
            }
        }

        // The same rule for incarnations: the owner reads the live one, nobody else any.
        let read =
            AuthorizedIncarnation::authorize(&state, customer_caller(&alice), "alice-bot", None)
                .await
                .unwrap();
        assert!(read.incarnation().live);
        assert_eq!(
            read.incarnation().uid.as_deref(),
            Some("00000000-0000-4000-8000-000000000001")
        );
        let refused =
            AuthorizedIncarnation::authorize(&state, customer_caller(&mallory), "alice-bot", None)
                .await
                .unwrap_err();
        assert!(matches!(refused, ApiError::NotFound(_)), "{refused:?}");
    }

    #[tokio::test]
    async fn the_extractor_orders_401_then_422_then_404_and_admins_pass() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let alice = customer(&state, 1, "alice").await;
        own(&state, "alice-bot", &alice.id, 1).await;
        let app = app(state.clone());
        let admin = format!("Bearer {ADMIN_TOKEN}");

        // An admin acts on any tenant, even one the index does not know.
        assert_eq!(
            call(&app, "/t/alice-bot", Some(&admin)).await,
            (StatusCode::OK, serde_json::json!("alice-bot"))
        );
        assert_eq!(
            call(&app, "/t/unknown", Some(&admin)).await.0,
            StatusCode::OK
        );

        // No credentials, a malformed header, a wrong token: 401 before anything about the name.
        for auth in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer not-a-token"),
        ] {
            let (status, body) = call(&app, "/t/NOT_A_NAME", auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }

        // A malformed name: 422 naming the field, for admins too, before any lookup.
        let (status, body) = call(&app, "/t/NOT_A_NAME", Some(&admin)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["field"], "name");
        assert_eq!(body["error"]["code"], "invalid_request");

        // Incarnations: a malformed uid is a 400 naming `incarnation`; admins read by name.
        let (status, body) = call(&app, "/i/alice-bot?incarnation=x", Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["field"], "incarnation");
        let (status, body) = call(&app, "/i/alice-bot", Some(&admin)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!("alice-bot Some(\"00000000-0000-4000-8000-000000000001\")")
        );
        let (status, _) = call(&app, "/i/alice-bot", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_tenant_list_is_every_tenant_for_admins_and_their_own_for_customers() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let alice = customer(&state, 1, "alice").await;
        let bob = customer(&state, 2, "bob").await;
        own(&state, "alice-bot", &alice.id, 1).await;
        own(&state, "bob-bot", &bob.id, 2).await;
        let names = |rows: Vec<crate::store::TenantRow>| -> Vec<String> {
            rows.into_iter().map(|r| r.name).collect()
        };
        let admin = Caller {
            actor: crate::lifecycle::Actor {
                name: "ops".into(),
                email: "ops@example.com".into(),
            },
            admin: true,
            customer: None,
        };
        assert_eq!(
            names(authorize_tenant_list(&state, &admin).await.unwrap()),
            ["alice-bot", "bob-bot"]
        );
        assert_eq!(
            names(
                authorize_tenant_list(&state, &customer_caller(&alice))
                    .await
                    .unwrap()
            ),
            ["alice-bot"]
        );
    }
}
