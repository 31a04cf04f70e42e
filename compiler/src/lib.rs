//! openclaw-cloud's GitOps compiler: tenant specs in, Flux-ready manifests out.
//!
//! [`compile`] is a pure function over in-memory inputs (the platform config, the templates, and each tenant's
//! files) that returns every generated file. [`source`] reads those inputs from a working tree or a git tree;
//! [`incremental`] recompiles a single tenant inside a commit for the api; [`sops`] writes, reads and checks
//! the encrypted secrets files. The binary (`openclaw-compiler`) is a thin shell over these.
//!
//! Invariants: the library does no I/O outside [`source`] (reading inputs) and [`sink`] (writing output); output is a function of the inputs alone and is
//! byte-identical across runs, thread counts and machines; nothing is written when any input is invalid.

// Diagnostics carry file, position, snippet and hint by value: errors are the cold path, and boxing every
// one would only add noise at each construction site.
#![allow(clippy::result_large_err)]

pub mod canonical;
pub mod diagnostics;
pub mod flux;
pub mod incremental;
pub mod layout;
pub mod platform;
pub mod quantity;
pub mod render;
pub mod sink;
pub mod sops;
pub mod source;
pub mod spec;
pub mod templates;
pub mod tenant_table;
pub mod validate;
mod yaml;
pub mod yaml_position;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use platform::Platform;
pub use render::Tenant;
pub use templates::Templates;
pub use validate::TenantFiles;

use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The folders (relative to the repository root) the compiler owns entirely: `build` removes anything in them
/// it did not generate, and `check` reports it.
pub const GENERATED_ROOTS: &[&str] = &[layout::OUTPUT_DIR, tenant_table::DIR];

/// Every generated file, keyed by its path relative to the repository root ('/'-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub files: BTreeMap<String, String>,
}

/// Compiles the whole repository: every tenant's folder, the per-tenant Flux Kustomizations and their index,
/// and the token proxy's tenant table. Reports every problem in every input at once.
pub fn compile(
    platform: &Platform,
    templates: &Templates,
    tenants: &[TenantFiles],
) -> Result<Output, Diagnostics> {
    let valid = validate::tenants(platform, tenants)?;
    compile_valid(platform, templates, &valid)
}

/// [`compile`] for tenants that already passed validation.
pub fn compile_valid(
    platform: &Platform,
    templates: &Templates,
    tenants: &[Tenant],
) -> Result<Output, Diagnostics> {
    compile_filtered(platform, templates, tenants, None).map(|(files, _)| Output { files })
}

/// What a build into a working tree must write: [`compile_changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The generated files whose contents differ from what the tree holds (or that it lacks), by path.
    pub files: BTreeMap<String, String>,
    /// The path of every generated file, changed or not.
    pub paths: BTreeSet<String>,
}

/// [`compile`] for a build into a tree that may already hold most of the output. `unchanged(path, contents)`
/// is asked about each file as soon as its tenant is rendered (on the rendering threads, so reads of the old
/// files overlap with rendering), and only the files it does not report unchanged are kept: a build where
/// little changed never holds the whole output in memory.
pub fn compile_changes(
    platform: &Platform,
    templates: &Templates,
    tenants: &[TenantFiles],
    unchanged: &(dyn Fn(&str, &str) -> bool + Sync),
) -> Result<Changes, Diagnostics> {
    let valid = validate::tenants(platform, tenants)?;
    let (files, paths) = compile_filtered(platform, templates, &valid, Some(unchanged))?;
    Ok(Changes {
        files,
        paths: paths.into_iter().collect(),
    })
}

type Filter<'a> = Option<&'a (dyn Fn(&str, &str) -> bool + Sync)>;

/// Renders everything; with `unchanged`, leaves out the files it accepts and also returns every path.
fn compile_filtered(
    platform: &Platform,
    templates: &Templates,
    tenants: &[Tenant],
    unchanged: Filter<'_>,
) -> Result<(BTreeMap<String, String>, Vec<String>), Diagnostics> {
    // Each tenant's files are filtered on the thread that rendered them.
    let keep = |files: Vec<(String, String)>, paths: &mut Vec<String>| match unchanged {
        None => files,
        Some(unchanged) => files
            .into_iter()
            .filter(|(path, contents)| {
                paths.push(path.clone());
                !unchanged(path, contents)
            })
            .collect(),
    };
    type Rendered = (
        String,
        Vec<(String, String)>,
        Vec<String>,
        tenant_table::TableEntry,
    );
    let rendered: Vec<Result<Rendered, Diagnostics>> = tenants
        .par_iter()
        .map(|t| {
            render::render_tenant(platform, templates, t).map(|t| {
                let mut paths = Vec::new();
                let files = keep(t.files, &mut paths);
                (t.name, files, paths, t.table_entry)
            })
        })
        .collect();
    let mut problems = Diagnostics::new();
    let mut files = BTreeMap::new();
    let mut all_paths = Vec::new();
    let shards = layout::SHARDS as usize;
    let mut table: Vec<Vec<tenant_table::TableEntry>> = vec![Vec::new(); shards];
    let mut names: Vec<Vec<String>> = vec![Vec::new(); shards];
    for r in rendered {
        match r {
            Ok((name, tenant_files, paths, table_entry)) => {
                let shard = layout::shard_number(&name) as usize;
                table[shard].push(table_entry);
                files.extend(tenant_files);
                all_paths.extend(paths);
                names[shard].push(name);
            }
            Err(d) => problems.extend(d),
        }
    }
    std::mem::take(&mut problems).into_result(())?;
    let mut shared: Vec<(String, String)> = Vec::new();
    // Only shards that hold tenants get an output folder; the index lists those.
    let mut occupied = Vec::new();
    for (shard, names) in names.iter().enumerate() {
        if names.is_empty() {
            continue;
        }
        let shard = layout::shard_name(shard as u32);
        shared.push((
            layout::shard_index_path(&shard),
            render::render_shard_index(names.iter().map(String::as_str)),
        ));
        occupied.push(shard);
    }
    shared.push((
        layout::INDEX_PATH.to_string(),
        render::render_index(occupied.iter().map(String::as_str)),
    ));
    let shard_files: Vec<Result<(String, String), Diagnostic>> = table
        .into_par_iter()
        .enumerate()
        .map(|(shard, entries)| {
            let shard = shard as u32;
            render::render_table_shard(platform, templates, shard, entries)
                .map(|text| (tenant_table::shard_path(shard), text))
        })
        .collect();
    for r in shard_files {
        match r {
            Ok(file) => shared.push(file),
            Err(d) => problems.push(d),
        }
    }
    shared.push((
        format!("{}/kustomization.yaml", tenant_table::DIR),
        render::render_table_kustomization(platform),
    ));
    files.extend(keep(shared, &mut all_paths));
    problems.into_result((files, all_paths))
}

/// Whether `path` lies in a folder the compiler owns.
pub fn is_generated_path(path: &str) -> bool {
    GENERATED_ROOTS.iter().any(|root| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}
