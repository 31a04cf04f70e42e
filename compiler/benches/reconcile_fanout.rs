//! The reconcile fan-out of a commit, simulated over real git history: a 10,000-tenant state repository and a
//! stream of 1,000 api changes (settings, suspensions, provisions, destructions), each made the way the api
//! makes it (`compiler::incremental::tenant_change`) and committed with libgit2. For every commit it counts
//! the tenant Kustomizations whose source revision changes:
//!
//! - one GitRepository for every tenant: its revision is the commit, so every tenant's Kustomization;
//! - per-shard artifacts (an ArtifactGenerator `pathPattern` over `flux/tenants/{shard}`): an ExternalArtifact's
//!   revision is the digest of its content, which changes exactly when the shard folder's git tree does, so
//!   the tenants of the shards whose tree changed.
//!
//! It also prints the repository's size and its growth per change.
//! `cargo bench -p compiler --bench reconcile_fanout` (TENANTS=N and CHANGES=M for other sizes); results in
//! docs/BENCHMARKS.md and docs/SCALE.md.

#[path = "../tests/support/mod.rs"]
mod support;

use compiler::incremental::{tenant_change, FileChange};
use compiler::layout;
use compiler::TenantFiles;
use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Oid, Repository, Signature};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// The tree id of every shard folder of flux/tenants/ in `tree` (None when the shard holds no tenant).
fn shard_trees(repo: &Repository, tree: Oid) -> Vec<Option<Oid>> {
    let tree = repo.find_tree(tree).unwrap();
    (0..layout::SHARDS)
        .map(|s| {
            tree.get_path(Path::new(&layout::output_shard_dir(&layout::shard_name(s))))
                .ok()
                .map(|e| e.id())
        })
        .collect()
}

fn percentile(sorted: &[usize], p: f64) -> usize {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n = env_usize("TENANTS", 10_000);
    let changes = env_usize("CHANGES", 1_000);
    let inputs = support::repo_inputs();
    let (platform, templates) = (&inputs.platform, &inputs.templates);
    let mut tenants: BTreeMap<String, TenantFiles> = support::generated_tenants(n)
        .into_iter()
        .map(|t| (t.folder.clone(), t))
        .collect();

    // The initial repository: every input and every generated file, in one commit.
    let started = Instant::now();
    let list: Vec<TenantFiles> = tenants.values().cloned().collect();
    let output =
        compiler::compile(platform, templates, &list).expect("generated tenants are valid");
    let dir = tempfile::Builder::new()
        .prefix("reconcile-fanout-")
        .tempdir()
        .unwrap();
    let repo = Repository::init_bare(dir.path()).unwrap();
    let mut files: BTreeMap<String, String> = output.files;
    for t in tenants.values() {
        files.insert(layout::spec_path(&t.folder), t.spec.clone().unwrap());
        files.insert(layout::secrets_path(&t.folder), t.secrets.clone().unwrap());
    }
    let empty = repo.treebuilder(None).unwrap().write().unwrap();
    let mut update = TreeUpdateBuilder::new();
    for (path, contents) in &files {
        let blob = repo.blob(contents.as_bytes()).unwrap();
        update.upsert(path.as_str(), blob, FileMode::Blob);
    }
    let mut tree = update
        .create_updated(&repo, &repo.find_tree(empty).unwrap())
        .unwrap();
    let sig = Signature::new("openclaw-api", "api@openclaw.cloud", &git2::Time::new(0, 0)).unwrap();
    let mut parent = repo
        .commit(
            None,
            &sig,
            &sig,
            "Seed",
            &repo.find_tree(tree).unwrap(),
            &[],
        )
        .unwrap();
    let seeded = started.elapsed();
    let initial_bytes = dir_bytes(dir.path());

    let mut rng = StdRng::seed_from_u64(17);
    let mut next_new = n;
    let mut before = Vec::with_capacity(changes);
    let mut after = Vec::with_capacity(changes);
    let mut shards_changed = Vec::with_capacity(changes);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..changes {
        let roll: f64 = rng.gen();
        let names: Vec<&String> = tenants.keys().collect();
        let pick = names[rng.gen_range(0..names.len())].clone();
        // 80% settings and suspensions, 10% provisions, 10% destructions: the api's mix of actions.
        let (kind, name, new_files) = if roll < 0.8 {
            let mut t = tenants[&pick].clone();
            let spec = t.spec.take().unwrap();
            let spec = if i % 4 == 0 {
                if spec.contains("state: active") {
                    spec.replace("state: active", "state: suspended")
                } else {
                    spec.replace("state: suspended", "state: active")
                }
            } else {
                let language = ["en", "de", "fr", "es", "pt-BR"][i % 5];
                let (head, rest) = spec.split_once("    language: ").unwrap();
                let rest = rest.split_once('\n').unwrap().1;
                format!("{head}    language: {language}\n{rest}")
            };
            t.spec = Some(spec);
            ("update", pick, Some(t))
        } else if roll < 0.9 {
            let mut t = support::generated_tenants(1).remove(0);
            let name = format!("n{next_new:05}");
            next_new += 1;
            // The generated tenant t00000 renamed, with a token hash of its own.
            let spec = t
                .spec
                .take()
                .unwrap()
                .replace("name: t00000", &format!("name: {name}"));
            let hash = compiler::spec::TokenSha256::of_token(&format!("token-{name}"));
            let (head, _) = spec.split_once("    sha256: ").unwrap();
            t.spec = Some(format!("{head}    sha256: {hash}\n"));
            t.secrets = Some(t.secrets.unwrap().replace(
                "namespace: customer-t00000",
                &format!("namespace: customer-{name}"),
            ));
            t.folder = name.clone();
            ("provision", name, Some(t))
        } else {
            ("destroy", pick, None)
        };
        *kinds.entry(kind).or_default() += 1;
        let read = |path: &str| files.get(path).cloned();
        let generated = tenant_change(platform, templates, &name, new_files.as_ref(), &read)
            .unwrap_or_else(|d| panic!("change {i} ({kind} {name}): {d}"));
        let mut update = TreeUpdateBuilder::new();
        let mut apply = |change: FileChange, files: &mut BTreeMap<String, String>| match change {
            FileChange::Write { path, contents } => {
                let blob = repo.blob(contents.as_bytes()).unwrap();
                update.upsert(path.as_str(), blob, FileMode::Blob);
                files.insert(path, contents);
            }
            FileChange::Remove { path } => {
                let prefix = format!("{path}/");
                let gone: Vec<String> = files
                    .range(path.clone()..)
                    .take_while(|(p, _)| **p == path || p.starts_with(&prefix))
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in gone {
                    update.remove(p.as_str());
                    files.remove(&p);
                }
            }
        };
        // The tenant's inputs, as the api writes them.
        match &new_files {
            Some(t) => {
                apply(
                    FileChange::Write {
                        path: layout::spec_path(&name),
                        contents: t.spec.clone().unwrap(),
                    },
                    &mut files,
                );
                apply(
                    FileChange::Write {
                        path: layout::secrets_path(&name),
                        contents: t.secrets.clone().unwrap(),
                    },
                    &mut files,
                );
                tenants.insert(name.clone(), t.clone());
            }
            None => {
                apply(
                    FileChange::Remove {
                        path: layout::spec_dir(&name),
                    },
                    &mut files,
                );
                tenants.remove(&name);
            }
        }
        for change in generated {
            apply(change, &mut files);
        }
        let old_shards = shard_trees(&repo, tree);
        let new_tree = update
            .create_updated(&repo, &repo.find_tree(tree).unwrap())
            .unwrap();
        let new_shards = shard_trees(&repo, new_tree);
        parent = repo
            .commit(
                None,
                &sig,
                &sig,
                &format!("{kind} {name}"),
                &repo.find_tree(new_tree).unwrap(),
                &[&repo.find_commit(parent).unwrap()],
            )
            .unwrap();
        tree = new_tree;
        // Before: every tenant's Kustomization follows the GitRepository, whose revision is the commit.
        before.push(tenants.len());
        // After: the tenants (as of this commit) of each shard whose folder changed.
        let mut changed = 0;
        let mut count = 0;
        for s in 0..layout::SHARDS as usize {
            if old_shards[s] != new_shards[s] {
                changed += 1;
                let index = layout::shard_index_path(&layout::shard_name(s as u32));
                count += files
                    .get(&index)
                    .map(|t| compiler::render::parse_shard_index(t).unwrap().len())
                    .unwrap_or(0);
            }
        }
        shards_changed.push(changed);
        after.push(count);
    }
    let committed = started.elapsed();
    let final_bytes = dir_bytes(dir.path());

    before.sort_unstable();
    after.sort_unstable();
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    println!(
        "reconcile fan-out over {changes} commits on {n} tenants ({kinds:?}; {} tenants at the end)",
        tenants.len()
    );
    println!(
        "  Kustomizations whose source revision changes per commit, one GitRepository: mean {:.0}, p50 {}, max {}",
        mean(&before),
        percentile(&before, 0.5),
        before[before.len() - 1]
    );
    println!(
        "  the same with per-shard ExternalArtifacts:                      mean {:.1}, p50 {}, p99 {}, max {}",
        mean(&after),
        percentile(&after, 0.5),
        percentile(&after, 0.99),
        after[after.len() - 1]
    );
    println!(
        "  shard folders changed per commit: mean {:.2}, max {}",
        mean(&shards_changed),
        shards_changed.iter().max().unwrap()
    );
    println!(
        "  repository: {} files; loose objects {:.1} MB after the seed ({:.1} s), {:.1} MB after {changes} changes ({:.1} s): {:.1} KB per change",
        files.len(),
        initial_bytes as f64 / 1e6,
        seeded.as_secs_f64(),
        final_bytes as f64 / 1e6,
        committed.as_secs_f64(),
        (final_bytes - initial_bytes) as f64 / changes as f64 / 1e3
    );
    // What Flux's artifacts hold: the GitRepository's (flux/ only, by its ignore rules) and a shard's.
    let flux_bytes: usize = files
        .iter()
        .filter(|(p, _)| p.starts_with("flux/"))
        .map(|(_, c)| c.len())
        .sum();
    let shard_bytes: usize = files
        .iter()
        .filter(|(p, _)| p.starts_with(layout::OUTPUT_DIR) && p.matches('/').count() >= 3)
        .map(|(_, c)| c.len())
        .sum();
    println!(
        "  artifact content: flux/ {:.1} MB (what the GitRepository's artifact holds); a shard folder {:.0} KB on average",
        flux_bytes as f64 / 1e6,
        shard_bytes as f64 / f64::from(layout::SHARDS) / 1e3
    );
    // Packed, as a clone or Flux's fetch transfers it (needs the git CLI).
    let gc = std::process::Command::new("git")
        .args(["gc", "--quiet"])
        .current_dir(dir.path())
        .status();
    if gc.is_ok_and(|s| s.success()) {
        println!(
            "  repository packed (git gc): {:.1} MB",
            dir_bytes(dir.path()) as f64 / 1e6
        );
    }
}
