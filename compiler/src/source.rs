//! Reading the compiler's inputs (templates/platform.yaml, templates/**/*.j2, tenants/<shard>/<name>/) from a working tree
//! or from a git tree, into memory. This is the only module of the library that touches the filesystem or git
//! for inputs; [`crate::compile`] itself is pure.

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::layout::{self, SECRETS_FILE, SPECS_DIR, SPEC_FILE};
use crate::platform::{Platform, PLATFORM_PATH};
use crate::templates::Templates;
use crate::validate::TenantFiles;
use std::collections::BTreeMap;
use std::path::Path;

/// Everything `compile` needs.
#[derive(Debug)]
pub struct Inputs {
    pub platform: Platform,
    pub templates: Templates,
    pub tenants: Vec<TenantFiles>,
}

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

fn io_problem(path: &str, e: std::io::Error) -> Diagnostic {
    Diagnostic::file(path, format!("cannot read: {e}"))
}

/// Reads the tenant folders of a checkout (tenants/<shard>/<name>/), sorted by folder name. Anything else
/// under tenants/, and a tenant folder in another shard than its name's, is an error.
pub fn tenants_from_dir(root: &Path) -> Result<Vec<TenantFiles>, Diagnostics> {
    use rayon::prelude::*;
    let dir = root.join(SPECS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_problem(SPECS_DIR, e).into()),
    };
    let mut problems = Diagnostics::new();
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_problem(SPECS_DIR, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type().map_err(|e| io_problem(SPECS_DIR, e))?;
        if file_type.is_symlink() {
            problems.push(
                Diagnostic::file(format!("{SPECS_DIR}/{name}"), "is a symbolic link").with_hint(
                    "shard and tenant folders must be plain folders inside the repository",
                ),
            );
        } else if file_type.is_dir() && layout::is_shard_name(&name) {
            shards.push((name, entry.path()));
        } else if !(file_type.is_file() && layout::SPECS_DIR_FILES.contains(&name.as_str())) {
            problems.push(layout::misplaced_in_specs_dir(&name, file_type.is_dir()));
        }
    }
    // Shards are read in parallel: at 10,000 tenants reading inputs is mostly system calls.
    let per_shard: Vec<(Vec<TenantFiles>, Diagnostics)> = shards
        .par_iter()
        .map(|(shard, path)| read_shard_dir(shard, path))
        .collect();
    let mut tenants = Vec::new();
    for (found, shard_problems) in per_shard {
        tenants.extend(found);
        problems.extend(shard_problems);
    }
    tenants.sort_by(|a, b| a.folder.cmp(&b.folder));
    problems.into_result(tenants)
}

/// The tenant folders of one shard folder tenants/<shard>/.
fn read_shard_dir(shard: &str, path: &Path) -> (Vec<TenantFiles>, Diagnostics) {
    let shown = format!("{SPECS_DIR}/{shard}");
    let mut tenants = Vec::new();
    let mut problems = Diagnostics::new();
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            problems.push(io_problem(&shown, e));
            return (tenants, problems);
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(io_problem(&shown, e));
                continue;
            }
        };
        let folder = entry.file_name().to_string_lossy().into_owned();
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                problems.push(io_problem(&shown, e));
                continue;
            }
        };
        if file_type.is_symlink() {
            problems.push(
                Diagnostic::file(format!("{shown}/{folder}"), "is a symbolic link")
                    .with_hint("tenant folders must be plain folders inside the repository"),
            );
            continue;
        }
        if !file_type.is_dir() {
            problems.push(
                Diagnostic::file(format!("{shown}/{folder}"), format!("unexpected file in {shown}/"))
                    .with_hint("a shard folder holds only tenant folders tenants/<shard>/<name>/ (`openclaw-compiler path <name>` prints them)"),
            );
            continue;
        }
        if let Err(d) = layout::check_spec_folder(shard, &folder) {
            problems.push(d);
            continue;
        }
        let base = entry.path();
        let spec = read_optional(&base.join(SPEC_FILE), &layout::spec_path(&folder));
        let secrets = read_optional(&base.join(SECRETS_FILE), &layout::secrets_path(&folder));
        match (spec, secrets) {
            (Ok(spec), Ok(secrets)) => tenants.push(TenantFiles {
                folder,
                spec,
                secrets,
            }),
            (a, b) => {
                for d in a.err().into_iter().chain(b.err()) {
                    problems.push(d);
                }
            }
        }
    }
    (tenants, problems)
}

/// Reads all inputs from a checkout rooted at `root`.
pub fn from_dir(root: &Path) -> Result<Inputs, Diagnostics> {
    let platform = platform_from_dir(root);
    let templates = templates_from_dir(&root.join("templates"));
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
    let spec = blob_text(repo, tree, &layout::spec_path(name))?;
    let secrets = blob_text(repo, tree, &layout::secrets_path(name))?;
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
    let templates = templates_from_git_tree(repo, &templates_tree)?;
    Ok((platform, templates))
}

fn subtree<'r>(
    repo: &'r git2::Repository,
    entry: &git2::TreeEntry<'_>,
    shown: &str,
) -> Result<git2::Tree<'r>, Diagnostic> {
    entry
        .to_object(repo)
        .and_then(|o| o.peel_to_tree())
        .map_err(|e| Diagnostic::file(shown, format!("is not a folder in git: {e}")))
}

/// Reads all inputs from a commit's tree, with the same checks of tenants/ as [`tenants_from_dir`].
pub fn from_git_tree(repo: &git2::Repository, tree: &git2::Tree) -> Result<Inputs, Diagnostics> {
    let (platform, templates) = platform_and_templates_from_git_tree(repo, tree)?;
    let mut tenants = Vec::new();
    let mut problems = Diagnostics::new();
    if let Ok(entry) = tree.get_path(Path::new(SPECS_DIR)) {
        let tenants_tree = subtree(repo, &entry, SPECS_DIR)?;
        for entry in tenants_tree.iter() {
            let name = entry.name().unwrap_or_default().to_string();
            let is_dir = entry.kind() == Some(git2::ObjectType::Tree);
            if !is_dir || !layout::is_shard_name(&name) {
                if is_dir || !layout::SPECS_DIR_FILES.contains(&name.as_str()) {
                    problems.push(layout::misplaced_in_specs_dir(&name, is_dir));
                }
                continue;
            }
            let shown = format!("{SPECS_DIR}/{name}");
            let shard_tree = subtree(repo, &entry, &shown)?;
            for tenant in shard_tree.iter() {
                let folder = tenant.name().unwrap_or_default().to_string();
                if tenant.kind() != Some(git2::ObjectType::Tree) {
                    problems.push(
                        Diagnostic::file(format!("{shown}/{folder}"), format!("unexpected file in {shown}/"))
                            .with_hint("a shard folder holds only tenant folders tenants/<shard>/<name>/ (`openclaw-compiler path <name>` prints them)"),
                    );
                    continue;
                }
                if let Err(d) = layout::check_spec_folder(&name, &folder) {
                    problems.push(d);
                    continue;
                }
                match tenant_from_git_tree(repo, tree, &folder)? {
                    Some(files) => tenants.push(files),
                    None => tenants.push(TenantFiles {
                        folder,
                        spec: None,
                        secrets: None,
                    }),
                }
            }
        }
    }
    tenants.sort_by(|a, b| a.folder.cmp(&b.folder));
    problems.into_result(Inputs {
        platform,
        templates,
        tenants,
    })
}

/// Reads every `*.j2` file under `dir` (the templates/ folder of a checkout).
pub fn templates_from_dir(dir: &Path) -> Result<Templates, Diagnostics> {
    let mut sources = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| {
            Diagnostic::file(
                d.display().to_string(),
                format!("cannot read template folder: {e}"),
            )
        })?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Diagnostic::file(d.display().to_string(), e.to_string()))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "j2") {
                let rel = path
                    .strip_prefix(dir)
                    .expect("walked below dir")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Diagnostic::file(
                        format!("templates/{rel}"),
                        format!("cannot read template: {e}"),
                    )
                })?;
                sources.insert(rel, text);
            }
        }
    }
    Templates::from_sources(sources)
}

/// Reads every `*.j2` blob under `tree` (the templates/ tree of a commit).
pub fn templates_from_git_tree(
    repo: &git2::Repository,
    tree: &git2::Tree,
) -> Result<Templates, Diagnostics> {
    let mut sources = BTreeMap::new();
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        let name = entry.name().unwrap_or_default();
        if entry.kind() == Some(git2::ObjectType::Blob) && name.ends_with(".j2") {
            let rel = format!("{root}{name}");
            match entry.to_object(repo).and_then(|o| o.peel_to_blob()) {
                Ok(blob) => match std::str::from_utf8(blob.content()) {
                    Ok(text) => {
                        sources.insert(rel, text.to_string());
                    }
                    Err(_) => {
                        failure = Some(Diagnostic::file(
                            format!("templates/{rel}"),
                            "template is not UTF-8",
                        ));
                        return git2::TreeWalkResult::Abort;
                    }
                },
                Err(e) => {
                    failure = Some(Diagnostic::file(
                        format!("templates/{rel}"),
                        format!("cannot read blob: {e}"),
                    ));
                    return git2::TreeWalkResult::Abort;
                }
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| Diagnostic::file("templates", format!("cannot walk the templates tree: {e}")))?;
    if let Some(d) = failure {
        return Err(d.into());
    }
    Templates::from_sources(sources)
}
