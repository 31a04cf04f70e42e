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
pub mod crd;
pub mod diagnostics;
pub mod flux;
pub mod incremental;
pub mod layout;
pub mod platform;
pub mod platform_render;
pub mod quantity;
pub mod render;
pub mod services;
pub mod sink;
pub mod sops;
pub mod source;
pub mod spec;
pub mod templates;
pub mod tenant_table;
pub mod validate;
pub mod yaml;
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
pub const GENERATED_ROOTS: &[&str] = &[
    layout::OUTPUT_DIR,
    tenant_table::DIR,
    platform_render::OPERATORS_DIR,
    platform_render::SERVICES_DIR,
];

/// Every generated file, keyed by its path relative to the repository root ('/'-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub files: BTreeMap<String, String>,
}

/// Compiles the whole repository: every tenant's folder, the per-tenant Flux Kustomizations and their index,
/// the token proxy's tenant table, and the platform's own manifests ([`platform_render`]). Reports every
/// problem in every input at once.
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
    let (files, mut paths) = compile_filtered(platform, templates, &valid, Some(unchanged))?;
    // Sorted in parallel first, so that building the set is a single pass.
    paths.par_sort_unstable();
    Ok(Changes {
        files,
        paths: paths.into_iter().collect(),
    })
}

type Filter<'a> = Option<&'a (dyn Fn(&str, &str) -> bool + Sync)>;

/// What one shard folder's share of a build came to: see [`compile_filtered`].
#[derive(Default)]
struct ShardOutput {
    /// The files kept (all of them without a filter).
    files: Vec<(String, String)>,
    /// With a filter, the path of every file rendered, kept or not.
    paths: Vec<String>,
    /// Whether the shard holds any tenant (and so has an output folder).
    occupied: bool,
    /// Problems with the shard's tenants.
    problems: Diagnostics,
    /// A problem rendering the shard's part of the tenant table; only reported when no tenant has one.
    table_problem: Option<Diagnostic>,
}

/// Renders everything; with `unchanged`, leaves out the files it accepts and also returns every path.
///
/// The work is split by shard: each shard's tenants, its index and its tenant-table shard are rendered (and
/// filtered) on one thread, so that what remains serial is gathering the shards' files.
fn compile_filtered(
    platform: &Platform,
    templates: &Templates,
    tenants: &[Tenant],
    unchanged: Filter<'_>,
) -> Result<(BTreeMap<String, String>, Vec<String>), Diagnostics> {
    let keep = |files: Vec<(String, String)>, out: &mut ShardOutput| match unchanged {
        None => out.files.extend(files),
        Some(unchanged) => {
            for (path, contents) in files {
                let same = unchanged(&path, &contents);
                out.paths.push(path.clone());
                if !same {
                    out.files.push((path, contents));
                }
            }
        }
    };
    // Tenants keep their order (by name) within each shard.
    let shard_numbers: Vec<usize> = tenants
        .par_iter()
        .map(|t| layout::shard_number(t.spec.name().as_str()) as usize)
        .collect();
    let mut by_shard: Vec<Vec<&Tenant>> = vec![Vec::new(); layout::SHARDS as usize];
    for (tenant, shard) in tenants.iter().zip(shard_numbers) {
        by_shard[shard].push(tenant);
    }
    let shards: Vec<ShardOutput> = by_shard
        .into_par_iter()
        .enumerate()
        .map(|(shard, tenants)| {
            let mut out = ShardOutput {
                occupied: !tenants.is_empty(),
                ..ShardOutput::default()
            };
            let mut entries = Vec::with_capacity(tenants.len());
            let mut names = Vec::with_capacity(tenants.len());
            for tenant in tenants {
                match render::render_tenant(platform, templates, tenant) {
                    Ok(rendered) => {
                        keep(rendered.files, &mut out);
                        entries.push(rendered.table_entry);
                        names.push(rendered.name);
                    }
                    Err(d) => out.problems.extend(d),
                }
            }
            if !out.problems.is_empty() {
                // The build fails: the shard's own files would not be used.
                return out;
            }
            let shard = shard as u32;
            let mut shared = Vec::with_capacity(2);
            // Only shards that hold tenants get an output folder; the index lists those.
            if out.occupied {
                shared.push((
                    layout::shard_index_path(&layout::shard_name(shard)),
                    render::render_shard_index(names.iter().map(String::as_str)),
                ));
            }
            match render::render_table_shard(platform, templates, shard, entries) {
                Ok(text) => shared.push((tenant_table::shard_path(shard), text)),
                Err(d) => out.table_problem = Some(d),
            }
            keep(shared, &mut out);
            out
        })
        .collect();
    let mut problems = Diagnostics::new();
    let mut table_problems = Diagnostics::new();
    let mut occupied = Vec::new();
    let mut all = ShardOutput {
        files: Vec::with_capacity(shards.iter().map(|s| s.files.len()).sum::<usize>() + 2),
        paths: Vec::with_capacity(shards.iter().map(|s| s.paths.len()).sum::<usize>() + 2),
        ..ShardOutput::default()
    };
    for (shard, out) in shards.into_iter().enumerate() {
        problems.extend(out.problems);
        if let Some(d) = out.table_problem {
            table_problems.push(d);
        }
        if out.occupied {
            occupied.push(layout::shard_name(shard as u32));
        }
        all.files.extend(out.files);
        all.paths.extend(out.paths);
    }
    problems.into_result(())?;
    table_problems.into_result(())?;
    keep(
        platform_render::render_platform(platform, templates)?,
        &mut all,
    );
    keep(
        vec![
            (
                layout::INDEX_PATH.to_string(),
                render::render_index(occupied.iter().map(String::as_str)),
            ),
            (
                layout::table_index_path(),
                render::render_table_kustomization(platform),
            ),
        ],
        &mut all,
    );
    // Sorted in parallel first, so that building the map is a single pass.
    all.files.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok((all.files.into_iter().collect(), all.paths))
}

/// Whether `path` lies in a folder the compiler owns.
pub fn is_generated_path(path: &str) -> bool {
    GENERATED_ROOTS.iter().any(|root| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}
