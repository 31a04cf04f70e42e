//! Recompiling one tenant inside a commit, for the api: the tenant's own files plus the one line of the index
//! and the one shard of the tenant table it appears in. The cost does not depend on how many other tenants
//! the repository holds, and the result is byte-identical to what a full [`crate::compile`] produces.

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::platform::Platform;
use crate::render::{self, INDEX_PATH, TENANTS_DIR};
use crate::templates::Templates;
use crate::tenant_table;
use crate::validate::{self, TenantFiles};

/// One change to the state repository's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Create or replace the file at `path` (relative to the repository root).
    Write { path: String, contents: String },
    /// Remove the file or folder at `path`, whatever it holds.
    Remove { path: String },
}

impl FileChange {
    pub fn path(&self) -> &str {
        match self {
            FileChange::Write { path, .. } | FileChange::Remove { path } => path,
        }
    }
}

/// The changes to the generated files when tenant `name` now has `files` (None: the tenant was destroyed).
/// `read_current` reads a file of the tree the change applies to (None when absent). The tenant's own inputs
/// (tenants/<name>/) are the caller's to write; this returns only generated files.
pub fn tenant_change(
    platform: &Platform,
    templates: &Templates,
    name: &str,
    files: Option<&TenantFiles>,
    read_current: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<FileChange>, Diagnostics> {
    let shards = platform.token_proxy.tenant_table_shards;
    let shard = tenant_table::shard_of(name, shards);
    let shard_path = tenant_table::shard_path(shard);
    let current_index = match read_current(INDEX_PATH) {
        Some(text) => render::parse_index(&text)
            .map_err(|e| Diagnostic::file(INDEX_PATH, format!("cannot read the index: {e}")))?,
        None => Vec::new(),
    };
    let mut entries = match read_current(&shard_path) {
        Some(text) => render::parse_table_shard(&text).map_err(|e| {
            Diagnostic::file(&shard_path, format!("cannot read the tenant table: {e}"))
        })?,
        None => Vec::new(),
    };
    entries.retain(|e| e.name != name);
    let mut names: Vec<String> = current_index.into_iter().filter(|n| n != name).collect();
    let mut changes = Vec::new();
    match files {
        Some(files) => {
            if files.folder != name {
                return Err(Diagnostic::file(
                    files.spec_path(),
                    format!("tenant files for {:?} given for {name:?}", files.folder),
                )
                .into());
            }
            let tenant = validate::tenant(platform, files)?;
            let rendered = render::render_tenant(platform, templates, &tenant)?;
            // Files the tenant no longer renders (none today, but templates may drop one) go with the folder.
            changes.push(FileChange::Remove {
                path: format!("{TENANTS_DIR}/{name}"),
            });
            for (path, contents) in rendered.files {
                changes.push(FileChange::Write { path, contents });
            }
            entries.push(rendered.table_entry);
            names.push(name.to_string());
        }
        None => {
            changes.push(FileChange::Remove {
                path: format!("{TENANTS_DIR}/{name}"),
            });
            changes.push(FileChange::Remove {
                path: format!("{TENANTS_DIR}/{name}.yaml"),
            });
        }
    }
    changes.push(FileChange::Write {
        path: INDEX_PATH.to_string(),
        contents: render::render_index(names.iter().map(String::as_str)),
    });
    changes.push(FileChange::Write {
        path: shard_path,
        contents: render::render_table_shard(platform, templates, shard, entries)?,
    });
    Ok(changes)
}
