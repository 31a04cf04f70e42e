//! What each tenant action does, without HTTP: the functions the route modules call after
//! parsing a request, and that any other front end (a Telegram bot, a dashboard) calls the same
//! way. Each takes the [`AppState`], an [`AuthorizedTenant`] (or, to provision, the [`Caller`])
//! and typed input, checks everything it can before anything is written, and returns the
//! [`Prepared`] change for the writer (or, for reads, the answer); [`apply`] hands a prepared
//! change to the writer and waits for its commit.
//!
//! A change is prepared with a request id (the commit's `Request-Id` trailer). Route modules run
//! it through [`crate::idempotency::submit`], which also takes the caller's write budget; another
//! front end calls [`check_write_limit`](crate::http::check_write_limit), the preparing function
//! and [`apply`]. Rules that depend on the tenant's current state (reactivation, tier moves, the
//! per-customer cap) are checked again by the writer on the head ([`crate::lifecycle`]).
//!
//! This module must not know HTTP: no headers, no responses, no extractors.

use std::collections::BTreeMap;
use std::sync::Arc;

use compiler::spec::{
    Agent, Email, Language, Metadata, Owner, ProxyToken, Spec, TelegramId, TenantName, TenantSpec,
    TenantState, TenantUid, Thinking, TokenSha256,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::config::TelegramVerification;
use crate::http::{
    free_text, role, ApiError, AppState, AuthorizedIncarnation, AuthorizedTenant, Caller, Shared,
};
use crate::lifecycle::{
    check_allow_from, check_model, check_tier, Change, ChangeError, Compiled, Operation,
};
use crate::reader::{HistoryEntry, TenantView};
use crate::store::Customer;
use crate::telegram::{BotToken, TelegramError};
use crate::writer::{ChangeResponse, IdempotencyKey};

/// A change ready for the writer, with the customer it creates: a provision for an owner the api
/// does not know yet records the new account in the batch's transaction, flushed with it.
pub struct Prepared {
    pub change: Change,
    pub new_owner: Option<Customer>,
}

impl From<Change> for Prepared {
    fn from(change: Change) -> Prepared {
        Prepared {
            change,
            new_owner: None,
        }
    }
}

/// Hands a prepared change to the writer and waits until it is committed (and pushed, or queued
/// in the outbox when the remote cannot be reached). `key` records the answer for an
/// Idempotency-Key in the same transaction.
pub async fn apply(
    state: &AppState,
    prepared: Prepared,
    key: Option<IdempotencyKey>,
) -> Result<ChangeResponse, ApiError> {
    let Prepared { change, new_owner } = prepared;
    Ok(state.writer.submit(change, new_owner, key).await?)
}

/// The platform config and templates at the head (cached per templates/ tree).
pub async fn compiled(state: &Shared) -> Result<Arc<Compiled>, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        state
            .head
            .compiled(&state.config.repo.local_path, &state.tracking_ref())
            .map_err(|e| match e {
                crate::reader::HeadError::Git(e) => ApiError::Internal(e.message().to_owned()),
                crate::reader::HeadError::Change(e) => ApiError::from(e),
            })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

// Request bodies (typed input of the functions below; the route modules deserialize them).

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProvisionRequest {
    /// DNS-1123 label, at most 40 characters.
    pub name: String,
    /// Required from admins; a customer provisions for themselves (their Telegram id, and this
    /// email or the one of their account).
    #[serde(default)]
    pub owner: Option<OwnerBody>,
    /// A tier of templates/platform.yaml.
    pub tier: String,
    /// The token BotFather issued; checked with Telegram's getMe, stored only encrypted.
    pub telegram_bot_token: String,
    #[serde(default)]
    pub agent: Option<SettingsBody>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnerBody {
    pub email: Option<String>,
    pub telegram_user_id: Option<i64>,
}

/// Agent settings; absent fields keep their value (or the platform default on provisioning).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsBody {
    pub model: Option<String>,
    #[schema(value_type = Option<String>, example = "medium")]
    pub thinking: Option<Thinking>,
    pub language: Option<String>,
    pub allow_from: Option<Vec<i64>>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResizeBody {
    pub tier: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Provision a tenant for `caller`: checks the request (name, owner, tier, model, language,
/// allowFrom, the customer's cap) and the bot token with Telegram, makes a proxy token, encrypts
/// the secrets and writes the spec. Customers provision for themselves; admins name the owner.
pub async fn provision(
    state: &Shared,
    caller: &Caller,
    body: ProvisionRequest,
    request_id: String,
) -> Result<Prepared, ApiError> {
    let name = TenantName::parse(&body.name).map_err(|m| ApiError::field("name", m))?;
    let (email, owner_telegram) = requested_owner(caller, body.owner.as_ref())?;
    free_text("owner.email", &email)?;
    let email = Email::parse(email).map_err(|m| ApiError::field("owner.email", m))?;
    let owner_id = TelegramId::parse(owner_telegram)
        .map_err(|m| ApiError::field("owner.telegramUserId", m))?;
    let token = BotToken::parse(&body.telegram_bot_token)
        .map_err(|m| ApiError::field("telegramBotToken", m))?;
    let compiled = compiled(state).await?;
    let platform = &compiled.platform;
    let tier = check_tier(platform, &body.tier)?;
    let settings = body.agent.unwrap_or_default();
    let model = match &settings.model {
        Some(m) => check_model(platform, m).map_err(|e| prefix(e, "agent."))?,
        None => platform.models.default.clone(),
    };
    let language = Language::parse(settings.language.clone().unwrap_or_else(|| "en".into()))
        .map_err(|m| ApiError::field("agent.language", m))?;
    let allow_from = match &settings.allow_from {
        Some(ids) => check_allow_from(ids).map_err(|e| prefix(e, "agent."))?,
        None => vec![owner_id],
    };
    if state
        .store
        .tenant(name.as_str())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "tenant {:?} already exists",
            name.as_str()
        )));
    }
    if let (false, Some(customer)) = (caller.admin, &caller.customer) {
        let owned = state
            .store
            .tenants_of(&customer.id)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .len();
        let cap = state.config.auth.max_tenants_per_customer as usize;
        if owned >= cap {
            return Err(ApiError::Forbidden(format!(
                "you own {owned} agents, the most one account may have ({cap}); destroy one or ask support"
            )));
        }
    }
    if state.config.telegram.verification == TelegramVerification::Getme {
        match state.telegram.get_me(&token).await {
            Ok(_) => {}
            Err(e @ TelegramError::Rejected(_)) => {
                return Err(ApiError::field("telegramBotToken", e.to_string()))
            }
            Err(e @ TelegramError::Unavailable(_)) => {
                return Err(ApiError::Unavailable(e.to_string()))
            }
        }
    }
    let proxy_token = random_token();
    let uid = TenantUid::parse(uuid::Uuid::new_v4().to_string()).map_err(ApiError::Internal)?;
    let spec = TenantSpec {
        api_version: compiler::spec::API_VERSION.to_owned(),
        kind: compiler::spec::KIND.to_owned(),
        metadata: Metadata {
            name: name.clone(),
            uid: Some(uid),
        },
        spec: Spec {
            owner: Owner {
                email,
                telegram_user_id: owner_id,
            },
            tier,
            state: TenantState::Active,
            suspended_by: None,
            agent: Agent {
                model,
                thinking: settings.thinking.unwrap_or(Thinking::Medium),
                language,
                allow_from,
            },
            connections: Vec::new(),
            proxy_token: ProxyToken {
                sha256: TokenSha256::of_token(&proxy_token),
            },
            overrides: Default::default(),
        },
    };
    let values = BTreeMap::from([
        ("telegram-bot-token".to_owned(), token.expose().to_owned()),
        ("proxy-token".to_owned(), proxy_token),
        ("gateway-token".to_owned(), random_token()),
    ]);
    let secrets_yaml = encrypt_secrets(&compiled, &name, values).await?;
    let (owner, new_owner) = owner_account(state, caller, &spec.spec.owner).await?;
    let owner_cap = (!caller.admin && caller.customer.is_some())
        .then_some(state.config.auth.max_tenants_per_customer);
    Ok(Prepared {
        change: Change {
            tenant: name.to_string(),
            operation: Operation::Provision {
                spec_yaml: spec.to_yaml(),
                secrets_yaml,
                owner_id: Some(owner),
                owner_cap,
            },
            actor: caller.actor.clone(),
            reason: reason(body.reason.or(settings.reason))?,
            request_id,
        },
        new_owner,
    })
}

/// Change a tenant's agent settings (model, thinking level, language, allowFrom); absent fields
/// keep their value. At least one must be set.
pub async fn update_settings(
    state: &Shared,
    tenant: &AuthorizedTenant,
    body: SettingsBody,
    request_id: String,
) -> Result<Prepared, ApiError> {
    let compiled = compiled(state).await?;
    if let Some(model) = &body.model {
        check_model(&compiled.platform, model)?;
    }
    if let Some(language) = &body.language {
        Language::parse(language.clone()).map_err(|m| ApiError::field("language", m))?;
    }
    if let Some(ids) = &body.allow_from {
        check_allow_from(ids)?;
    }
    if body.model.is_none()
        && body.thinking.is_none()
        && body.language.is_none()
        && body.allow_from.is_none()
    {
        return Err(ApiError::field(
            "body",
            "set at least one of model, thinking, language, allowFrom",
        ));
    }
    change(
        tenant,
        Operation::UpdateSettings {
            model: body.model,
            thinking: body.thinking,
            language: body.language,
            allow_from: body.allow_from,
        },
        body.reason,
        request_id,
    )
}

/// Suspend a tenant: the agent scales to zero and the proxy refuses its token. Who suspended it
/// (the customer or the platform) is recorded in the spec.
pub fn suspend(
    tenant: &AuthorizedTenant,
    reason: Option<String>,
    request_id: String,
) -> Result<Prepared, ApiError> {
    let by = role(tenant.caller());
    change(tenant, Operation::Suspend { by }, reason, request_id)
}

/// Reactivate a suspended tenant (a customer cannot lift the platform's suspension).
pub fn reactivate(
    tenant: &AuthorizedTenant,
    reason: Option<String>,
    request_id: String,
) -> Result<Prepared, ApiError> {
    let by = role(tenant.caller());
    change(tenant, Operation::Reactivate { by }, reason, request_id)
}

/// Refuses (422, field `tier`) a tier that templates/platform.yaml at the head does not offer.
pub async fn check_tier_offered(state: &Shared, tier: &str) -> Result<(), ApiError> {
    let compiled = compiled(state).await?;
    check_tier(&compiled.platform, tier)?;
    Ok(())
}

/// Move a tenant to another tier (customers may not move up; the writer checks on the head).
pub async fn resize(
    state: &Shared,
    tenant: &AuthorizedTenant,
    body: ResizeBody,
    request_id: String,
) -> Result<Prepared, ApiError> {
    check_tier_offered(state, &body.tier).await?;
    let by = role(tenant.caller());
    change(
        tenant,
        Operation::Resize {
            tier: body.tier,
            by,
        },
        body.reason,
        request_id,
    )
}

/// Replace the tenant's proxy token; the other secrets stay as they are (read from the head,
/// which needs `repo.age_identity_path`). The old token stops working once Flux applies the
/// commit.
pub async fn rotate_proxy_token(
    state: &Shared,
    tenant: &AuthorizedTenant,
    reason: Option<String>,
    request_id: String,
) -> Result<Prepared, ApiError> {
    let secrets = current_secrets(state, tenant).await?;
    let compiled = compiled(state).await?;
    let proxy_token = random_token();
    let mut values = secrets;
    let sha256 = TokenSha256::of_token(&proxy_token).to_string();
    values.insert("proxy-token".to_owned(), proxy_token);
    let secrets_yaml = encrypt_secrets(&compiled, tenant.name(), values).await?;
    change(
        tenant,
        Operation::RotateProxyToken {
            sha256,
            secrets_yaml,
        },
        reason,
        request_id,
    )
}

/// Destroy a tenant: its folder is removed and Flux prunes its resources.
pub fn destroy(
    tenant: &AuthorizedTenant,
    reason: Option<String>,
    request_id: String,
) -> Result<Prepared, ApiError> {
    change(tenant, Operation::Destroy, reason, request_id)
}

/// A change to an existing tenant, made by the authorized caller.
fn change(
    tenant: &AuthorizedTenant,
    operation: Operation,
    reason_text: Option<String>,
    request_id: String,
) -> Result<Prepared, ApiError> {
    Ok(Prepared::from(Change {
        tenant: tenant.name().to_string(),
        operation,
        actor: tenant.caller().actor.clone(),
        reason: reason(reason_text)?,
        request_id,
    }))
}

/// A tenant's spec and last commit, read from the state repo's head.
pub async fn view(state: &Shared, tenant: &AuthorizedTenant) -> Result<TenantView, ApiError> {
    let name = tenant.name();
    let hint = state
        .store
        .tenant(name.as_str())
        .await
        .ok()
        .flatten()
        .map(|r| r.last_commit);
    let st = state.clone();
    let n = name.to_string();
    let view = tokio::task::spawn_blocking(move || {
        crate::reader::tenant(
            &st.config.repo.local_path,
            &st.tracking_ref(),
            &n,
            hint.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    view.ok_or_else(|| ApiError::NotFound(format!("tenant {:?} does not exist", name.as_str())))
}

/// The commits that changed one incarnation of a tenant, newest first, at most `limit` (1 to
/// 1000: a 400 naming `limit` otherwise).
pub async fn history(
    state: &Shared,
    tenant: &AuthorizedIncarnation,
    limit: usize,
) -> Result<Vec<HistoryEntry>, ApiError> {
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit", "must be 1 to 1000"));
    }
    let name = tenant.name().clone();
    let uid = tenant.incarnation().uid.clone();
    let st = state.clone();
    let n = name.to_string();
    let entries = tokio::task::spawn_blocking(move || {
        crate::reader::history(
            &st.config.repo.local_path,
            &st.tracking_ref(),
            &n,
            uid.as_deref(),
            limit,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    if entries.is_empty() {
        return Err(ApiError::NotFound(format!(
            "tenant {:?} has no history",
            name.as_str()
        )));
    }
    Ok(entries)
}

/// The owner's email and Telegram id a provision asks for. Customers provision for themselves:
/// their Telegram id, and the email they send or the one of their account. Admins name the owner
/// (or, signed in through Telegram, may leave it out to own the tenant themselves).
fn requested_owner(caller: &Caller, owner: Option<&OwnerBody>) -> Result<(String, i64), ApiError> {
    let sent_email = owner.and_then(|o| o.email.clone());
    let sent_id = owner.and_then(|o| o.telegram_user_id);
    match (&caller.customer, caller.admin) {
        (Some(customer), admin) if !admin || owner.is_none() => {
            let own_id = customer.telegram_id.ok_or_else(|| {
                ApiError::field(
                    "owner.telegramUserId",
                    "your account has no Telegram id; sign in with Telegram first",
                )
            })?;
            if sent_id.is_some_and(|id| id != own_id) {
                return Err(ApiError::field(
                    "owner.telegramUserId",
                    "must be your own Telegram id: customers provision agents for themselves",
                ));
            }
            let email = sent_email
                .or_else(|| customer.email.clone())
                .ok_or_else(|| {
                    ApiError::field(
                        "owner.email",
                        "required: send owner.email, or set it once with PATCH /v1/me",
                    )
                })?;
            Ok((email, own_id))
        }
        _ => {
            let email = sent_email.ok_or_else(|| ApiError::field("owner.email", "missing"))?;
            let id = sent_id.ok_or_else(|| ApiError::field("owner.telegramUserId", "missing"))?;
            Ok((email, id))
        }
    }
}

/// The customer who will own a new tenant: the calling customer (whose email is recorded if
/// their account had none), or for admins the customer with the owner's Telegram id, the only
/// identity the api verifies. An email never links a tenant to an account that has a Telegram id:
/// anyone may write any address on their account. The one exception is an account made from an
/// owner email before accounts existed (no Telegram id, so nobody signs in to it): it receives the
/// Telegram id. When there is none, a new account is returned too: the writer creates it in the
/// transaction that records the tenant (or, when someone made the same account meanwhile,
/// records the tenant under that one).
async fn owner_account(
    state: &AppState,
    caller: &Caller,
    owner: &Owner,
) -> Result<(String, Option<Customer>), ApiError> {
    let unavailable = |e: crate::store::StoreError| ApiError::Unavailable(e.to_string());
    let email = owner.email.to_string();
    let telegram = owner.telegram_user_id.get();
    if let Some(customer) = &caller.customer {
        if customer.telegram_id == Some(telegram) {
            if customer.email.is_none() {
                record_email(state, &customer.id, &email).await?;
            }
            return Ok((customer.id.clone(), None));
        }
    }
    if let Some(found) = state
        .store
        .customer_by_telegram(telegram)
        .await
        .map_err(unavailable)?
    {
        return Ok((found.id, None));
    }
    if let Some(found) = state
        .store
        .customer_by_email(&email)
        .await
        .map_err(unavailable)?
    {
        if found.telegram_id.is_none() {
            // An account made from an owner email (before accounts existed): the owner's Telegram
            // sign-in finds it from now on.
            state
                .store
                .link_telegram(&found.id, telegram)
                .await
                .map_err(unavailable)?;
            return Ok((found.id, None));
        }
        // Someone else wrote this email on their account: the new owner's account goes without.
        let customer = Customer::new(None, Some(telegram), email, crate::auth::now_s() * 1000);
        return Ok((customer.id.clone(), Some(customer)));
    }
    let customer = Customer::new(
        Some(email.clone()),
        Some(telegram),
        email,
        crate::auth::now_s() * 1000,
    );
    Ok((customer.id.clone(), Some(customer)))
}

/// Records a customer's email; another account holding it is a conflict.
pub async fn record_email(
    state: &AppState,
    customer_id: &str,
    email: &str,
) -> Result<(), ApiError> {
    if let Some(other) = state
        .store
        .customer_by_email(email)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
    {
        if other.id != customer_id {
            return Err(ApiError::Conflict(
                "this email belongs to another account".into(),
            ));
        }
        return Ok(());
    }
    state
        .store
        .update_customer(customer_id, Some(email), None)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

fn prefix(e: ChangeError, prefix: &str) -> ApiError {
    match e {
        ChangeError::Invalid { field, message } => {
            ApiError::field(&format!("{prefix}{field}"), message)
        }
        other => other.into(),
    }
}

fn reason(reason: Option<String>) -> Result<String, ApiError> {
    let reason = reason.unwrap_or_default();
    if reason.len() > 1000 {
        return Err(ApiError::field("reason", "at most 1000 characters"));
    }
    free_text("reason", &reason)?;
    Ok(reason)
}

/// The tenant's current secrets, decrypted with the api's age identity (needed to keep the bot
/// token when only the proxy token changes).
pub async fn current_secrets(
    state: &Shared,
    tenant: &AuthorizedTenant,
) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(identity) = state.config.repo.age_identity_path.clone() else {
        return Err(ApiError::Conflict(
            "rotating a proxy token needs repo.age_identity_path (an age identity among the platform's recipients)".into(),
        ));
    };
    let state = state.clone();
    let name = tenant.name().to_string();
    tokio::task::spawn_blocking(move || {
        let text = crate::reader::secrets_file(
            &state.config.repo.local_path,
            &state.tracking_ref(),
            &name,
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("tenant {name:?} does not exist")))?;
        let identity = std::fs::read_to_string(&identity)
            .map_err(|e| ApiError::Internal(format!("cannot read the age identity: {e}")))?;
        let secret = compiler::sops::decrypt(&String::from_utf8_lossy(&text), &identity)
            .map_err(|e| ApiError::Internal(format!("cannot decrypt the tenant's secrets: {e}")))?;
        Ok(secret.string_data().clone())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Encrypts a tenant's secrets for the platform's age recipients (CPU work, off the runtime).
async fn encrypt_secrets(
    compiled: &Compiled,
    name: &TenantName,
    values: BTreeMap<String, String>,
) -> Result<String, ApiError> {
    let recipients = compiled.platform.sops.age_recipients.clone();
    let namespace = name.namespace();
    tokio::task::spawn_blocking(move || {
        compiler::sops::tenant_secret_file(
            compiler::sops::TENANT_SECRET_NAME,
            &namespace,
            &values,
            &recipients,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("cannot encrypt the tenant's secrets: {e}")))
}

/// The tenant's status from the cluster: our last commit for it (at the head), then applied and
/// running as the watch caches show them. Without a cluster the answer says "no cluster
/// connected" (never an error).
pub async fn status(
    state: &Shared,
    tenant: &AuthorizedTenant,
) -> Result<crate::cluster::status::TenantStatus, ApiError> {
    let view = view(state, tenant).await?;
    let committed = view
        .last_commit
        .map(|c| crate::cluster::pipeline::Committed {
            at: time::OffsetDateTime::parse(
                &c.time,
                &time::format_description::well_known::Rfc3339,
            )
            .map(|t| t.unix_timestamp())
            .unwrap_or_default(),
            commit: c.commit,
        });
    let st = state.clone();
    let name = tenant.name().clone();
    tokio::task::spawn_blocking(move || {
        let clock = crate::cluster::status::Clock::now(st.config.cluster.unhealthy_after_seconds);
        crate::cluster::status::for_tenant(
            &st.cluster,
            &st.config.repo.local_path,
            &name,
            committed,
            clock,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The tenants that should run and do not (suspended ones are not listed), for admins.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotRunning {
    pub connected: bool,
    pub cluster: String,
    pub tenants: Vec<NotRunningTenant>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotRunningTenant {
    pub name: String,
    pub pipeline: crate::cluster::pipeline::PipelineStatus,
}

/// Every tenant of the index that is not running (admins only: 403 otherwise).
pub async fn tenants_not_running(state: &Shared, caller: &Caller) -> Result<NotRunning, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden(
            "only admins list the tenants that are not running; a customer asks /v1/tenants/{name}/status".into(),
        ));
    }
    let (connected, words) = crate::cluster::status::link_text(&state.cluster);
    let rows = state
        .store
        .tenants()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let st = state.clone();
    let swept = tokio::task::spawn_blocking(move || {
        let clock = crate::cluster::status::Clock::now(st.config.cluster.unhealthy_after_seconds);
        crate::cluster::status::sweep(&st.cluster, &st.config.repo.local_path, &rows, clock)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    use crate::cluster::pipeline::{Health, Phase};
    let tenants = swept
        .into_iter()
        .filter(|(_, p)| p.phase != Phase::Running && p.health != Health::Suspended)
        .map(|(name, pipeline)| NotRunningTenant { name, pipeline })
        .collect();
    Ok(NotRunning {
        connected,
        cluster: words.to_owned(),
        tenants,
    })
}
