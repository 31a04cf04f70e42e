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
use std::collections::BTreeMap;

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
    let rendered: Vec<Result<render::RenderedTenant, Diagnostics>> = tenants
        .par_iter()
        .map(|t| render::render_tenant(platform, templates, t))
        .collect();
    let mut problems = Diagnostics::new();
    let mut files = BTreeMap::new();
    let shards = layout::SHARDS as usize;
    let mut table: Vec<Vec<tenant_table::TableEntry>> = vec![Vec::new(); shards];
    let mut names: Vec<Vec<String>> = vec![Vec::new(); shards];
    for r in rendered {
        match r {
            Ok(t) => {
                let shard = layout::shard_number(&t.name) as usize;
                table[shard].push(t.table_entry);
                files.extend(t.files);
                names[shard].push(t.name);
            }
            Err(d) => problems.extend(d),
        }
    }
    std::mem::take(&mut problems).into_result(())?;
    // Only shards that hold tenants get an output folder; the index lists those.
    let mut occupied = Vec::new();
    for (shard, names) in names.iter().enumerate() {
        if names.is_empty() {
            continue;
        }
        let shard = layout::shard_name(shard as u32);
        files.insert(
            layout::shard_index_path(&shard),
            render::render_shard_index(names.iter().map(String::as_str)),
        );
        occupied.push(shard);
    }
    files.insert(
        layout::INDEX_PATH.to_string(),
        render::render_index(occupied.iter().map(String::as_str)),
    );
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
            Ok((path, text)) => {
                files.insert(path, text);
            }
            Err(d) => problems.push(d),
        }
    }
    files.insert(
        format!("{}/kustomization.yaml", tenant_table::DIR),
        render::render_table_kustomization(platform),
    );
    problems.into_result(Output { files })
}

/// Whether `path` lies in a folder the compiler owns.
pub fn is_generated_path(path: &str) -> bool {
    GENERATED_ROOTS.iter().any(|root| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}
