//! Checks a tenant's files against the platform: the rules that need more than the spec itself (does the
//! folder match the name, does the tier exist, is the model offered, are overrides within the tier, is the
//! secrets file encrypted for exactly the cluster's recipients).

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::layout;
use crate::platform::Platform;
use crate::render::{Tenant, SECRET_NAME};
use crate::spec::{TenantName, TenantSpec};
use crate::yaml_position::Positions;
use std::collections::{BTreeMap, BTreeSet};

/// The largest secrets file accepted.
pub const MAX_SECRETS_BYTES: usize = 64 * 1024;

/// A tenant's files as read from a working tree or a git tree, before any parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFiles {
    /// The tenant's folder name, under its shard folder of tenants/ ([`crate::layout`]).
    pub folder: String,
    /// tenants/<shard>/<folder>/tenant.yaml, or None when missing.
    pub spec: Option<String>,
    /// tenants/<shard>/<folder>/secrets.sops.yaml, or None when missing.
    pub secrets: Option<String>,
}

impl TenantFiles {
    pub fn spec_path(&self) -> String {
        layout::spec_path(&self.folder)
    }
    pub fn secrets_path(&self) -> String {
        layout::secrets_path(&self.folder)
    }
}

/// Parses and checks one tenant.
pub fn tenant(platform: &Platform, files: &TenantFiles) -> Result<Tenant, Diagnostics> {
    let spec_path = files.spec_path();
    if let Err(why) = TenantName::parse(files.folder.clone()) {
        return Err(Diagnostic::file(layout::spec_dir(&files.folder), format!("folder name is not a valid tenant name: {why}"))
            .with_hint("rename the folder to the tenant's name (lowercase letters, digits, '-'; at most 40 characters)")
            .into());
    }
    let Some(source) = files.spec.as_deref() else {
        return Err(Diagnostic::file(&spec_path, "tenant.yaml is missing")
            .with_hint("every tenant folder under tenants/<shard>/ holds tenant.yaml and secrets.sops.yaml; remove the folder to delete the tenant")
            .into());
    };
    let spec = TenantSpec::parse(&spec_path, source)?;
    // Positions are only needed to report a problem: index the file lazily.
    let positions = std::cell::OnceCell::new();
    let mut problems = Diagnostics::new();
    let mut bad = |at: &str, message: String, hint: String| {
        problems.push(
            Diagnostic::file(&spec_path, message)
                .located(
                    source,
                    positions.get_or_init(|| Positions::of(source)).find(at),
                )
                .with_hint(hint),
        );
    };
    if spec.name().as_str() != files.folder {
        bad(
            "metadata.name",
            format!(
                "metadata.name is {:?} but the file is in {}/",
                spec.name().as_str(),
                layout::spec_dir(&files.folder)
            ),
            format!(
                "set metadata.name to {:?} or move the file to {}/",
                files.folder,
                layout::spec_dir(spec.name().as_str())
            ),
        );
    }
    let tier = platform.tier(&spec.spec.tier);
    if tier.is_none() {
        bad(
            "spec.tier",
            format!("unknown tier {:?}", spec.spec.tier.as_str()),
            format!(
                "use one of the tiers in templates/platform.yaml: {}",
                platform.tier_names()
            ),
        );
    }
    if platform.offered_model(&spec.spec.agent.model).is_none() {
        let offered: Vec<&str> = platform
            .models
            .offered
            .iter()
            .map(|m| m.model_ref.as_str())
            .collect();
        bad(
            "spec.agent.model",
            format!("model {:?} is not offered", spec.spec.agent.model.as_str()),
            format!("use one of: {}", offered.join(", ")),
        );
    }
    let allow = &spec.spec.agent.allow_from;
    if allow.is_empty() || allow.len() > 32 {
        bad(
            "spec.agent.allowFrom",
            format!("allowFrom has {} entries; 1 to 32 are allowed", allow.len()),
            "list the Telegram user ids that may talk to the agent, at least the owner's".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, id) in allow.iter().enumerate() {
        if !seen.insert(*id) {
            bad(
                &format!("spec.agent.allowFrom.{i}"),
                format!("Telegram id {id} is listed twice in allowFrom"),
                "remove the duplicate".into(),
            );
        }
    }
    let mut providers = BTreeMap::new();
    for (i, c) in spec.spec.connections.iter().enumerate() {
        if providers.insert(c.provider, i).is_some() {
            bad(
                &format!("spec.connections.{i}.provider"),
                format!("a second {} connection", c.provider.as_str()),
                "keep one connection per provider".into(),
            );
        }
    }
    if let Some(image) = &spec.spec.overrides.image {
        if !platform.gateway.allowed_images.contains(image) {
            bad(
                "spec.overrides.image",
                format!("image {image} is not in gateway.allowedImages"),
                "pin one of the images templates/platform.yaml allows".into(),
            );
        }
    }
    if let (Some(r), Some(tier)) = (&spec.spec.overrides.resources, tier) {
        if let Some(cpu) = &r.cpu_request {
            if cpu.millis() > tier.cpu_limit.millis() {
                bad(
                    "spec.overrides.resources.cpuRequest",
                    format!(
                        "cpuRequest {cpu} exceeds the {} tier's CPU limit {}",
                        spec.spec.tier, tier.cpu_limit
                    ),
                    "stay within the tier or move the tenant to a larger tier".into(),
                );
            }
        }
        if let Some(mem) = &r.memory_request {
            if mem.bytes() > tier.memory_limit.bytes() {
                bad(
                    "spec.overrides.resources.memoryRequest",
                    format!(
                        "memoryRequest {mem} exceeds the {} tier's memory limit {}",
                        spec.spec.tier, tier.memory_limit
                    ),
                    "stay within the tier or move the tenant to a larger tier".into(),
                );
            }
        }
    }
    let secrets = match files.secrets.as_deref() {
        None => {
            problems.push(
                Diagnostic::file(files.secrets_path(), "secrets.sops.yaml is missing").with_hint(
                    format!(
                        "create it with `openclaw-compiler secrets set {}` (values on stdin)",
                        files.folder
                    ),
                ),
            );
            None
        }
        Some(text) if text.len() > MAX_SECRETS_BYTES => {
            problems.push(Diagnostic::file(
                files.secrets_path(),
                format!(
                    "file is {} bytes; at most {MAX_SECRETS_BYTES} are allowed",
                    text.len()
                ),
            ));
            None
        }
        Some(text) => {
            match crate::sops::verify_without_keys(
                text,
                SECRET_NAME,
                &spec.name().namespace(),
                &platform.sops.age_recipients,
            ) {
                Ok(()) => Some(text.to_string()),
                Err(e) => {
                    let hint = format!(
                        "re-create the file with `openclaw-compiler secrets set {}` (values on stdin); never commit plaintext",
                        files.folder
                    );
                    match e {
                        // One diagnostic per problem, at the value it concerns. Problems never carry a value.
                        crate::sops::SopsError::Verification(found) => {
                            let positions = Positions::of(text);
                            for p in found {
                                let at = p
                                    .path()
                                    .and_then(|path| positions.find(&path.replace(':', ".")));
                                let mut d = Diagnostic::file(files.secrets_path(), p.to_string())
                                    .located(text, at)
                                    .with_hint(hint.clone());
                                // The offending line may hold a plaintext secret: show its key only.
                                d.snippet = d.snippet.map(|line| match line.split_once(':') {
                                    Some((key, _)) => format!("{key}: <value hidden>"),
                                    None => "<line hidden>".to_string(),
                                });
                                problems.push(d);
                            }
                        }
                        other => problems.push(
                            Diagnostic::file(files.secrets_path(), other.to_string())
                                .with_hint(hint),
                        ),
                    }
                    None
                }
            }
        }
    };
    problems.into_result(())?;
    Ok(Tenant {
        spec,
        secrets: secrets.expect("no problems means the secrets file was read"),
    })
}

/// Checks every tenant and the rules across tenants (unique token hashes).
pub fn tenants(platform: &Platform, files: &[TenantFiles]) -> Result<Vec<Tenant>, Diagnostics> {
    use rayon::prelude::*;
    let results: Vec<Result<Tenant, Diagnostics>> =
        files.par_iter().map(|f| tenant(platform, f)).collect();
    let mut problems = Diagnostics::new();
    let mut ok = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(t) => ok.push(t),
            Err(d) => problems.extend(d),
        }
    }
    let mut hashes: BTreeMap<&str, &str> = BTreeMap::new();
    for t in &ok {
        let hash = t.spec.spec.proxy_token.sha256.as_str();
        if let Some(other) = hashes.insert(hash, t.spec.name().as_str()) {
            let name = t.spec.name().as_str();
            let path = layout::spec_path(name);
            let source = files
                .iter()
                .find(|f| f.folder == name)
                .and_then(|f| f.spec.as_deref())
                .unwrap_or_default();
            problems.push(
                Diagnostic::file(&path, format!("proxy token hash is also used by tenant {other:?}"))
                    .located(source, Positions::of(source).find("spec.proxyToken.sha256"))
                    .with_hint("every tenant needs its own proxy token: rotate it with the api or `openclaw-compiler secrets set`"),
            );
        }
    }
    problems.into_result(ok)
}
