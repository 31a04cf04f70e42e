//! Tenant lifecycle actions as changes to a git tree.
//!
//! A [`Change`] is what a caller asked for (provision, settings, suspend, ...), stored as JSON in the
//! outbox so that it can be re-applied on any later head. [`plan`] applies it to a tree: it reads
//! the tenant's current files from that tree, edits the spec, and asks the compiler for the
//! generated files of that one tenant. The same function serves the first attempt, the re-apply
//! after a rejected push and the replay after a crash, so all three produce the same result.

use std::sync::Arc;

use compiler::incremental::{tenant_change, FileChange};
use compiler::spec::{
    Language, ModelRef, Suspender, TelegramId, TenantSpec, TenantState, Thinking, TierName,
    TokenSha256,
};
use compiler::{Platform, Templates, TenantFiles};
use git2::{Oid, Repository, Tree};
use serde::{Deserialize, Serialize};

use crate::state_repo::{entry_id, Edit, Snapshot};

/// The actor a change is made for: the commit author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub email: String,
}

/// One requested change of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub tenant: String,
    pub operation: Operation,
    pub actor: Actor,
    pub reason: String,
    pub request_id: String,
}

/// In which role a caller asks for a change whose rules depend on it. Rules that read the
/// tenant's current spec (who suspended it, which tier it is on) are checked when the change is
/// applied to the head, so two requests cannot race past them. Outbox rows written before the
/// role existed were checked by the rules of their day: they replay as `admin`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The tenant's owner.
    Customer,
    /// An admin (admin API token, or a customer listed in `auth.admin_telegram_ids`).
    #[default]
    Admin,
}

/// What a change does. Values were checked at the HTTP boundary and are checked again when applied
/// (the platform may have changed in between).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Operation {
    Provision {
        spec_yaml: String,
        secrets_yaml: String,
        /// The customer who owns the new tenant (recorded in the tenants index).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner_id: Option<String>,
        /// For a customer's own sign-up: the most tenants the owner may have, checked by the
        /// writer against the tenants index when it applies the change (so concurrent sign-ups
        /// cannot race past it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner_cap: Option<u32>,
    },
    UpdateSettings {
        model: Option<String>,
        thinking: Option<Thinking>,
        language: Option<String>,
        allow_from: Option<Vec<i64>>,
    },
    Suspend {
        #[serde(default)]
        by: Role,
    },
    Reactivate {
        #[serde(default)]
        by: Role,
    },
    Resize {
        tier: String,
        #[serde(default)]
        by: Role,
    },
    RotateProxyToken {
        sha256: String,
        secrets_yaml: String,
    },
    Destroy,
}

impl Operation {
    /// The owner a change records in the tenants index (provisioning only).
    pub fn owner_id(&self) -> Option<String> {
        match self {
            Operation::Provision { owner_id, .. } => owner_id.clone(),
            _ => None,
        }
    }

    /// The owner and their tenant cap, for a customer's own sign-up.
    pub fn owner_cap(&self) -> Option<(&str, u32)> {
        match self {
            Operation::Provision {
                owner_id: Some(owner),
                owner_cap: Some(cap),
                ..
            } => Some((owner, *cap)),
            _ => None,
        }
    }

    /// The `Action:` trailer.
    pub fn action(&self) -> &'static str {
        match self {
            Operation::Provision { .. } => "provision",
            Operation::UpdateSettings { .. } => "update-settings",
            Operation::Suspend { .. } => "suspend",
            Operation::Reactivate { .. } => "reactivate",
            Operation::Resize { .. } => "resize",
            Operation::RotateProxyToken { .. } => "rotate-proxy-token",
            Operation::Destroy => "destroy",
        }
    }
}

/// Why a change cannot be applied to a tree. Never carries secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    #[error("tenant {0:?} does not exist")]
    NotFound(String),
    #[error("tenant {0:?} already exists")]
    AlreadyExists(String),
    /// A value the platform does not accept; `field` names the request field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The caller may not make this change in their role (a customer lifting the platform's
    /// suspension, moving up a tier, going over their tenant cap).
    #[error("{0}")]
    Forbidden(String),
    /// The repository holds something the api cannot work with (a broken spec merged by hand).
    #[error("the state repo cannot take this change: {0}")]
    Repo(String),
}

/// The platform config and templates of one commit, parsed once and shared.
pub struct Compiled {
    pub platform: Platform,
    pub templates: Templates,
    /// Id of the templates/ tree they were read from (the cache key).
    pub templates_tree: Oid,
}

/// Reads (or reuses) the platform config and templates of `tree`.
pub fn compiled_for(
    repo: &Repository,
    tree: &Tree<'_>,
    cache: &mut Option<Arc<Compiled>>,
) -> Result<Arc<Compiled>, ChangeError> {
    let key = entry_id(tree, "templates")
        .ok_or_else(|| ChangeError::Repo("templates/ is missing".into()))?;
    if let Some(compiled) = cache.as_ref().filter(|c| c.templates_tree == key) {
        return Ok(compiled.clone());
    }
    let (platform, templates) = compiler::source::platform_and_templates_from_git_tree(repo, tree)
        .map_err(|d| ChangeError::Repo(d.to_string()))?;
    let compiled = Arc::new(Compiled {
        platform,
        templates,
        templates_tree: key,
    });
    *cache = Some(compiled.clone());
    Ok(compiled)
}

/// The result of applying a change to a tree.
#[derive(Debug)]
pub struct Planned {
    pub edits: Vec<Edit>,
    /// The owner's email after the change; None when the tenant is gone.
    pub owner_email: Option<String>,
    /// The incarnation's uid after the change (`metadata.uid`), when the spec has one.
    pub uid: Option<String>,
}

pub fn spec_path(name: &str) -> String {
    compiler::layout::spec_path(name)
}

pub fn secrets_path(name: &str) -> String {
    compiler::layout::secrets_path(name)
}

/// The tenant's input files in `base`; None when it has neither.
fn tenant_files(base: &Snapshot<'_>, name: &str) -> Result<Option<TenantFiles>, ChangeError> {
    let text = |path: String| -> Result<Option<String>, ChangeError> {
        match base.file(&path) {
            Ok(Some(bytes)) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| ChangeError::Repo(format!("{path}: file is not UTF-8 text"))),
            Ok(None) => Ok(None),
            Err(e) => Err(ChangeError::Repo(format!(
                "{path}: cannot read from git: {e}"
            ))),
        }
    };
    let spec = text(spec_path(name))?;
    let secrets = text(secrets_path(name))?;
    if spec.is_none() && secrets.is_none() {
        return Ok(None);
    }
    Ok(Some(TenantFiles {
        folder: name.to_owned(),
        spec,
        secrets,
    }))
}

/// Applies `change` to `base`: the edits of the tenant's inputs plus the compiler's output for it.
pub fn plan(
    base: &Snapshot<'_>,
    compiled: &Compiled,
    change: &Change,
) -> Result<Planned, ChangeError> {
    let name = change.tenant.as_str();
    let current = tenant_files(base, name)?;
    let platform = &compiled.platform;
    let next: Option<TenantFiles> = match &change.operation {
        Operation::Provision {
            spec_yaml,
            secrets_yaml,
            ..
        } => {
            if current.is_some() {
                return Err(ChangeError::AlreadyExists(name.to_owned()));
            }
            Some(TenantFiles {
                folder: name.to_owned(),
                spec: Some(spec_yaml.clone()),
                secrets: Some(secrets_yaml.clone()),
            })
        }
        Operation::Destroy => {
            if current.is_none() {
                return Err(ChangeError::NotFound(name.to_owned()));
            }
            None
        }
        operation => {
            let current = current.ok_or_else(|| ChangeError::NotFound(name.to_owned()))?;
            let text = current
                .spec
                .as_deref()
                .ok_or_else(|| ChangeError::Repo(format!("{} is missing", spec_path(name))))?;
            let mut spec = TenantSpec::parse(&spec_path(name), text)
                .map_err(|d| ChangeError::Repo(d.to_string()))?;
            let mut secrets = current.secrets.clone();
            edit_spec(platform, &mut spec, &mut secrets, operation)?;
            Some(TenantFiles {
                folder: name.to_owned(),
                spec: Some(spec.to_yaml()),
                secrets,
            })
        }
    };

    let read_current = |path: &str| {
        base.file(path)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let generated = tenant_change(
        platform,
        &compiled.templates,
        name,
        next.as_ref(),
        &read_current,
    )
    .map_err(|d| ChangeError::Invalid {
        field: "spec".into(),
        message: d.to_string(),
    })?;

    let mut edits = Vec::with_capacity(generated.len() + 2);
    let mut uid = None;
    let owner_email = match &next {
        Some(files) => {
            let spec_yaml = files.spec.clone().unwrap_or_default();
            let spec = TenantSpec::parse(&spec_path(name), &spec_yaml).map_err(|d| {
                ChangeError::Invalid {
                    field: "spec".into(),
                    message: d.to_string(),
                }
            })?;
            uid = spec.metadata.uid.as_ref().map(ToString::to_string);
            let owner = spec.spec.owner.email.to_string();
            edits.push(Edit::Write {
                path: spec_path(name),
                contents: spec_yaml.into_bytes(),
            });
            if let Some(secrets) = &files.secrets {
                edits.push(Edit::Write {
                    path: secrets_path(name),
                    contents: secrets.clone().into_bytes(),
                });
            }
            Some(owner)
        }
        None => {
            edits.push(Edit::Remove {
                path: compiler::layout::spec_dir(name),
            });
            None
        }
    };
    for change in generated {
        edits.push(match change {
            FileChange::Write { path, contents } => Edit::Write {
                path,
                contents: contents.into_bytes(),
            },
            FileChange::Remove { path } => Edit::Remove { path },
        });
    }
    Ok(Planned {
        edits,
        owner_email,
        uid,
    })
}

fn invalid(field: &str, message: impl Into<String>) -> ChangeError {
    ChangeError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Checks a tier name against the platform.
pub fn check_tier(platform: &Platform, tier: &str) -> Result<TierName, ChangeError> {
    let tier = TierName::parse(tier).map_err(|m| invalid("tier", m))?;
    if platform.tier(&tier).is_none() {
        return Err(invalid(
            "tier",
            format!(
                "unknown tier {tier:?}; the platform offers: {}",
                platform.tier_names()
            ),
        ));
    }
    Ok(tier)
}

/// Checks a model reference against the platform's offered models.
pub fn check_model(platform: &Platform, model: &str) -> Result<ModelRef, ChangeError> {
    let model = ModelRef::parse(model).map_err(|m| invalid("model", m))?;
    if platform.offered_model(&model).is_none() {
        let offered: Vec<String> = platform
            .models
            .offered
            .iter()
            .map(|m| m.model_ref.to_string())
            .collect();
        return Err(invalid(
            "model",
            format!(
                "model {model:?} is not offered; choose one of: {}",
                offered.join(", ")
            ),
        ));
    }
    Ok(model)
}

/// Parses an allowFrom list (1 to 32 distinct Telegram user ids).
pub fn check_allow_from(ids: &[i64]) -> Result<Vec<TelegramId>, ChangeError> {
    if ids.is_empty() || ids.len() > 32 {
        return Err(invalid("allowFrom", "must list 1 to 32 Telegram user ids"));
    }
    let mut parsed = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let id = TelegramId::parse(*id).map_err(|m| invalid(&format!("allowFrom[{i}]"), m))?;
        if parsed.contains(&id) {
            return Err(invalid(
                &format!("allowFrom[{i}]"),
                format!("{id} is listed twice"),
            ));
        }
        parsed.push(id);
    }
    Ok(parsed)
}

fn edit_spec(
    platform: &Platform,
    spec: &mut TenantSpec,
    secrets: &mut Option<String>,
    operation: &Operation,
) -> Result<(), ChangeError> {
    match operation {
        Operation::UpdateSettings {
            model,
            thinking,
            language,
            allow_from,
        } => {
            if let Some(model) = model {
                spec.spec.agent.model = check_model(platform, model)?;
            }
            if let Some(thinking) = thinking {
                spec.spec.agent.thinking = *thinking;
            }
            if let Some(language) = language {
                spec.spec.agent.language =
                    Language::parse(language.clone()).map_err(|m| invalid("language", m))?;
            }
            if let Some(ids) = allow_from {
                spec.spec.agent.allow_from = check_allow_from(ids)?;
            }
        }
        Operation::Suspend { by } => {
            let by = match by {
                Role::Customer => Suspender::Customer,
                Role::Admin => Suspender::Platform,
            };
            // A suspension is never weakened: the platform's stays the platform's when the
            // customer suspends too.
            let kept = match spec.spec.state {
                TenantState::Suspended => {
                    Some(spec.spec.suspended_by.unwrap_or(Suspender::Platform))
                }
                TenantState::Active => None,
            };
            spec.spec.state = TenantState::Suspended;
            spec.spec.suspended_by = Some(match kept {
                Some(Suspender::Customer) | None => by,
                Some(other) => other,
            });
        }
        Operation::Reactivate { by } => {
            if *by == Role::Customer
                && spec.spec.state == TenantState::Suspended
                && spec.spec.suspended_by != Some(Suspender::Customer)
            {
                let who = spec.spec.suspended_by.unwrap_or(Suspender::Platform);
                return Err(ChangeError::Forbidden(format!(
                    "tenant {:?} was suspended by {}; only an admin can reactivate it (contact support)",
                    spec.metadata.name.as_str(),
                    match who {
                        Suspender::Billing => "billing",
                        _ => "the platform",
                    }
                )));
            }
            spec.spec.state = TenantState::Active;
            spec.spec.suspended_by = None;
        }
        Operation::Resize { tier, by } => {
            let tier = check_tier(platform, tier)?;
            if *by == Role::Customer {
                check_move_down(platform, &spec.spec.tier, &tier)?;
            }
            spec.spec.tier = tier;
        }
        Operation::RotateProxyToken {
            sha256,
            secrets_yaml,
        } => {
            spec.spec.proxy_token.sha256 =
                TokenSha256::parse(sha256.clone()).map_err(|m| invalid("proxyToken", m))?;
            *secrets = Some(secrets_yaml.clone());
        }
        Operation::Provision { .. } | Operation::Destroy => unreachable!("handled by plan"),
    }
    Ok(())
}

/// Until billing exists, a customer may only move a tenant down: to a tier none of whose limits
/// (monthly token budget, tokens and requests per minute, concurrent requests, CPU, memory,
/// storage) exceeds the current tier's. Moving up needs an admin.
pub fn check_move_down(
    platform: &Platform,
    current: &TierName,
    next: &TierName,
) -> Result<(), ChangeError> {
    let (Some(from), Some(to)) = (platform.tier(current), platform.tier(next)) else {
        // An unknown current tier (a spec merged by hand) cannot be compared: refuse.
        return Err(ChangeError::Forbidden(format!(
            "tier {current:?} cannot be compared with {next:?}; ask support to change the tier"
        )));
    };
    let down = to.monthly_token_budget <= from.monthly_token_budget
        && to.tokens_per_minute <= from.tokens_per_minute
        && to.requests_per_minute <= from.requests_per_minute
        && to.concurrent_requests <= from.concurrent_requests
        && to.cpu_limit <= from.cpu_limit
        && to.memory_limit <= from.memory_limit
        && to.storage <= from.storage;
    if down {
        Ok(())
    } else {
        Err(ChangeError::Forbidden(format!(
            "moving from tier {current:?} to {next:?} is a move up, which needs an admin (contact support)"
        )))
    }
}

/// The commit message: a subject, the reason, and the trailers auditors filter on.
pub fn commit_message(change: &Change) -> String {
    let reason = one_line(&change.reason);
    let subject = format!("{} tenant {}", change.operation.action(), change.tenant);
    let body = if reason.is_empty() {
        String::new()
    } else {
        format!("{reason}\n\n")
    };
    format!(
        "{subject}\n\n{body}Tenant: {}\nAction: {}\nReason: {}\nRequest-Id: {}\n",
        change.tenant,
        change.operation.action(),
        if reason.is_empty() { "-" } else { &reason },
        one_line(&change.request_id),
    )
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The value of trailer `key` in a commit message.
pub fn trailer<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .rev()
        .find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(": "))
        })
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_the_trailers() {
        let change = Change {
            tenant: "acme".into(),
            operation: Operation::Suspend { by: Role::Admin },
            actor: Actor {
                name: "ops".into(),
                email: "ops@example.com".into(),
            },
            reason: "unpaid\ninvoice".into(),
            request_id: "r-1".into(),
        };
        let message = commit_message(&change);
        assert!(message.starts_with("suspend tenant acme\n\nunpaid invoice\n\n"));
        assert_eq!(trailer(&message, "Tenant"), Some("acme"));
        assert_eq!(trailer(&message, "Action"), Some("suspend"));
        assert_eq!(trailer(&message, "Reason"), Some("unpaid invoice"));
        assert_eq!(trailer(&message, "Request-Id"), Some("r-1"));
    }

    #[test]
    fn changes_round_trip_through_json() {
        let change = Change {
            tenant: "acme".into(),
            operation: Operation::UpdateSettings {
                model: None,
                thinking: Some(Thinking::High),
                language: None,
                allow_from: Some(vec![1]),
            },
            actor: Actor {
                name: "ops".into(),
                email: "ops@example.com".into(),
            },
            reason: String::new(),
            request_id: "r".into(),
        };
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change);
    }

    #[test]
    fn outbox_rows_from_before_roles_replay_as_admin() {
        let old: Operation = serde_json::from_str(r#"{"action":"reactivate"}"#).unwrap();
        assert_eq!(old, Operation::Reactivate { by: Role::Admin });
        let old: Operation = serde_json::from_str(r#"{"action":"resize","tier":"pro"}"#).unwrap();
        assert_eq!(
            old,
            Operation::Resize {
                tier: "pro".into(),
                by: Role::Admin
            }
        );
    }

    #[test]
    fn allow_from_rules() {
        assert!(check_allow_from(&[]).is_err());
        assert!(check_allow_from(&[1, 1]).is_err());
        assert!(check_allow_from(&[0]).is_err());
        assert_eq!(check_allow_from(&[5, 6]).unwrap().len(), 2);
    }
}
