//! Recompiling one tenant inside a commit, for the api: the tenant's own files plus its shard's index and the
//! one shard of the tenant table it appears in (and the top index of shard folders, of at most 256 lines,
//! when the shard gains its first tenant or loses its last). It reads nothing whose size grows with the
//! number of tenants beyond a shard (about N/256 tenants), and the result is byte-identical to what a full
//! [`crate::compile`] produces.

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::layout;
use crate::platform::Platform;
use crate::render;
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
    let shard_number = tenant_table::shard_of(name);
    let shard = layout::shard_name(shard_number);
    let table_path = tenant_table::shard_path(shard_number);
    let shard_index_path = layout::shard_index_path(&shard);
    let current_names = match read_current(&shard_index_path) {
        Some(text) => render::parse_shard_index(&text).map_err(|e| {
            Diagnostic::file(
                &shard_index_path,
                format!("cannot read the shard index: {e}"),
            )
        })?,
        None => Vec::new(),
    };
    let mut entries = match read_current(&table_path) {
        Some(text) => render::parse_table_shard(&text).map_err(|e| {
            Diagnostic::file(&table_path, format!("cannot read the tenant table: {e}"))
        })?,
        None => Vec::new(),
    };
    let was_occupied = !current_names.is_empty();
    entries.retain(|e| e.name != name);
    let mut names: Vec<String> = current_names.into_iter().filter(|n| n != name).collect();
    let mut changes = Vec::new();
    // Files the tenant no longer renders (templates may drop one) go with the folder.
    changes.push(FileChange::Remove {
        path: layout::output_dir(name),
    });
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
            for (path, contents) in rendered.files {
                changes.push(FileChange::Write { path, contents });
            }
            entries.push(rendered.table_entry);
            names.push(name.to_string());
        }
        None => {
            changes.push(FileChange::Remove {
                path: layout::flux_kustomization_path(name),
            });
        }
    }
    if names.is_empty() {
        changes.push(FileChange::Remove {
            path: layout::output_shard_dir(&shard),
        });
    } else {
        changes.push(FileChange::Write {
            path: shard_index_path,
            contents: render::render_shard_index(names.iter().map(String::as_str)),
        });
    }
    // The top index only changes when the shard's folder appears or disappears.
    if was_occupied == names.is_empty() {
        let mut shards = match read_current(layout::INDEX_PATH) {
            Some(text) => render::parse_index(&text).map_err(|e| {
                Diagnostic::file(layout::INDEX_PATH, format!("cannot read the index: {e}"))
            })?,
            None => Vec::new(),
        };
        shards.retain(|s| *s != shard);
        if !names.is_empty() {
            shards.push(shard);
        }
        changes.push(FileChange::Write {
            path: layout::INDEX_PATH.to_string(),
            contents: render::render_index(shards.iter().map(String::as_str)),
        });
    }
    changes.push(FileChange::Write {
        path: table_path,
        contents: render::render_table_shard(platform, templates, shard_number, entries)?,
    });
    Ok(changes)
}
