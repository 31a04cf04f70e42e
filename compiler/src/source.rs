//! Reading the compiler's inputs (templates/platform.yaml, templates/**/*.j2, tenants/*/) from a working tree
//! or from a git tree, into memory. This is the only module of the library that touches the filesystem or git
//! for inputs; [`crate::compile`] itself is pure.

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::platform::{Platform, PLATFORM_PATH};
use crate::templates::Templates;
use crate::validate::TenantFiles;
use std::path::Path;

/// Everything `compile` needs.
#[derive(Debug)]
pub struct Inputs {
    pub platform: Platform,
    pub templates: Templates,
    pub tenants: Vec<TenantFiles>,
}

const SPEC_FILE: &str = "tenant.yaml";
const SECRETS_FILE: &str = "secrets.sops.yaml";
/// Files under tenants/ that are not tenant folders.
const TENANTS_DIR_FILES: &[&str] = &["tenant.schema.json", "README.md"];

fn read_optional(path: &Path, shown: &str) -> Result<Option<String>, Diagnostic> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            Diagnostic::file(shown, "file is not UTF-8 text").with_hint("save it as UTF-8")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Diagnostic::file(shown, format!("cannot read: {e}"))),
    }
}

/// Reads the platform config from a checkout.
pub fn platform_from_dir(root: &Path) -> Result<Platform, Diagnostics> {
    let text = read_optional(&root.join(PLATFORM_PATH), PLATFORM_PATH)?.ok_or_else(|| {
        Diagnostic::file(PLATFORM_PATH, "platform config is missing")
            .with_hint("restore templates/platform.yaml")
    })?;
    Platform::parse(PLATFORM_PATH, &text)
}

/// Reads the tenant folders of a checkout, sorted by folder name.
pub fn tenants_from_dir(root: &Path) -> Result<Vec<TenantFiles>, Diagnostics> {
    let dir = root.join("tenants");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Diagnostic::file("tenants", format!("cannot read: {e}")).into()),
    };
    let mut tenants = Vec::new();
    let mut problems = Diagnostics::new();
    for entry in entries {
        let entry = entry.map_err(|e| Diagnostic::file("tenants", e.to_string()))?;
        let folder = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry
            .file_type()
            .map_err(|e| Diagnostic::file("tenants", e.to_string()))?;
        if file_type.is_symlink() {
            problems.push(
                Diagnostic::file(format!("tenants/{folder}"), "is a symbolic link")
                    .with_hint("tenant folders must be plain folders inside the repository"),
            );
            continue;
        }
        if !file_type.is_dir() {
            if !TENANTS_DIR_FILES.contains(&folder.as_str()) {
                problems.push(Diagnostic::file(format!("tenants/{folder}"), "unexpected file in tenants/").with_hint("each tenant is a folder tenants/<name>/ holding tenant.yaml and secrets.sops.yaml"));
            }
            continue;
        }
        let base = entry.path();
        let spec = read_optional(
            &base.join(SPEC_FILE),
            &format!("tenants/{folder}/{SPEC_FILE}"),
        );
        let secrets = read_optional(
            &base.join(SECRETS_FILE),
            &format!("tenants/{folder}/{SECRETS_FILE}"),
        );
        match (spec, secrets) {
            (Ok(spec), Ok(secrets)) => tenants.push(TenantFiles {
                folder,
                spec,
                secrets,
            }),
            (a, b) => {
                problems.extend(
                    a.err()
                        .into_iter()
                        .chain(b.err())
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
        }
    }
    tenants.sort_by(|a, b| a.folder.cmp(&b.folder));
    problems.into_result(tenants)
}

/// Reads all inputs from a checkout rooted at `root`.
pub fn from_dir(root: &Path) -> Result<Inputs, Diagnostics> {
    let platform = platform_from_dir(root);
    let templates = Templates::from_dir(&root.join("templates"));
    let tenants = tenants_from_dir(root);
    match (platform, templates, tenants) {
        (Ok(platform), Ok(templates), Ok(tenants)) => Ok(Inputs {
            platform,
            templates,
            tenants,
        }),
        (p, t, n) => {
            let mut all = Diagnostics::new();
            for d in [p.err(), t.err(), n.err()].into_iter().flatten() {
                all.extend(d);
            }
            Err(all.sorted())
        }
    }
}

fn blob_text(
    repo: &git2::Repository,
    tree: &git2::Tree,
    path: &str,
) -> Result<Option<String>, Diagnostic> {
    let entry = match tree.get_path(Path::new(path)) {
        Ok(e) => e,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(Diagnostic::file(path, format!("cannot read from git: {e}"))),
    };
    let blob = entry
        .to_object(repo)
        .and_then(|o| o.peel_to_blob())
        .map_err(|e| Diagnostic::file(path, format!("is not a file in git: {e}")))?;
    String::from_utf8(blob.content().to_vec())
        .map(Some)
        .map_err(|_| Diagnostic::file(path, "file is not UTF-8 text"))
}

/// Reads one tenant's files from a git tree (for the api: cost independent of the number of tenants).
pub fn tenant_from_git_tree(
    repo: &git2::Repository,
    tree: &git2::Tree,
    name: &str,
) -> Result<Option<TenantFiles>, Diagnostic> {
    let spec = blob_text(repo, tree, &format!("tenants/{name}/{SPEC_FILE}"))?;
    let secrets = blob_text(repo, tree, &format!("tenants/{name}/{SECRETS_FILE}"))?;
    if spec.is_none() && secrets.is_none() {
        return Ok(None);
    }
    Ok(Some(TenantFiles {
        folder: name.to_string(),
        spec,
        secrets,
    }))
}

/// Reads the platform config and templates of a commit's tree.
pub fn platform_and_templates_from_git_tree(
    repo: &git2::Repository,
    tree: &git2::Tree,
) -> Result<(Platform, Templates), Diagnostics> {
    let text = blob_text(repo, tree, PLATFORM_PATH)?.ok_or_else(|| {
        Diagnostic::file(PLATFORM_PATH, "platform config is missing from the commit")
    })?;
    let platform = Platform::parse(PLATFORM_PATH, &text)?;
    let templates_tree = tree
        .get_path(Path::new("templates"))
        .and_then(|e| e.to_object(repo))
        .and_then(|o| o.peel_to_tree())
        .map_err(|e| {
            Diagnostic::file(
                "templates",
                format!("templates/ is missing from the commit: {e}"),
            )
        })?;
    let templates = Templates::from_git_tree(repo, &templates_tree)?;
    Ok((platform, templates))
}

/// Reads all inputs from a commit's tree.
pub fn from_git_tree(repo: &git2::Repository, tree: &git2::Tree) -> Result<Inputs, Diagnostics> {
    let (platform, templates) = platform_and_templates_from_git_tree(repo, tree)?;
    let mut tenants = Vec::new();
    if let Ok(entry) = tree.get_path(Path::new("tenants")) {
        let tenants_tree = entry
            .to_object(repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|e| Diagnostic::file("tenants", format!("tenants is not a folder: {e}")))?;
        for entry in tenants_tree.iter() {
            if entry.kind() != Some(git2::ObjectType::Tree) {
                continue;
            }
            let folder = entry.name().unwrap_or_default().to_string();
            if let Some(files) = tenant_from_git_tree(repo, tree, &folder)? {
                tenants.push(files);
            } else {
                tenants.push(TenantFiles {
                    folder,
                    spec: None,
                    secrets: None,
                });
            }
        }
    }
    tenants.sort_by(|a, b| a.folder.cmp(&b.folder));
    Ok(Inputs {
        platform,
        templates,
        tenants,
    })
}
