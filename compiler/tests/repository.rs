//! The repository itself is a valid GitOps repo: its committed output is exactly what its specs produce, its
//! committed JSON Schema is what the types generate, and compiling is deterministic.

mod support;

use compiler::Output;

#[test]
fn committed_schema_is_generated_from_the_types() {
    let committed =
        std::fs::read_to_string(support::repo_root().join(compiler::layout::SCHEMA_PATH)).unwrap();
    assert!(
        committed == compiler::spec::json_schema(),
        "tenants/tenant.schema.json is stale: run `cargo run -p compiler -- schema > tenants/tenant.schema.json`"
    );
}

#[test]
fn committed_flux_output_is_what_the_specs_produce() {
    let inputs = support::repo_inputs();
    assert_eq!(inputs.tenants.len(), 3, "three example tenants");
    let output = compiler::compile(&inputs.platform, &inputs.templates, &inputs.tenants).unwrap();
    let on_disk = compiler::sink::generated_on_disk(&support::repo_root()).unwrap();
    let expected: Vec<&String> = output.files.keys().collect();
    let actual: Vec<&String> = on_disk.keys().collect();
    assert_eq!(expected, actual, "run `cargo run -p compiler -- build`");
    for (path, text) in &output.files {
        assert_eq!(
            on_disk[path],
            text.as_bytes(),
            "{path} is stale: run `cargo run -p compiler -- build`"
        );
    }
}

#[test]
fn examples_cover_every_tier_and_a_suspended_tenant() {
    let inputs = support::repo_inputs();
    let valid = compiler::validate::tenants(&inputs.platform, &inputs.tenants).unwrap();
    let tiers: std::collections::BTreeSet<&str> =
        valid.iter().map(|t| t.spec.spec.tier.as_str()).collect();
    assert_eq!(
        tiers.into_iter().collect::<Vec<_>>(),
        ["pro", "starter", "team"]
    );
    assert!(valid
        .iter()
        .any(|t| t.spec.spec.state == compiler::spec::TenantState::Suspended));
}

fn compile_with_threads(threads: usize, reverse: bool) -> Output {
    let inputs = support::repo_inputs();
    let mut tenants = support::generated_tenants(300);
    tenants.extend(inputs.tenants.clone());
    if reverse {
        tenants.reverse();
    } else {
        tenants.rotate_left(117);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| compiler::compile(&inputs.platform, &inputs.templates, &tenants).unwrap())
}

#[test]
fn output_is_byte_identical_across_input_order_and_thread_counts() {
    let a = compile_with_threads(1, false);
    let b = compile_with_threads(4, true);
    let c = compile_with_threads(2, false);
    assert_eq!(a.files.len(), b.files.len());
    assert!(
        a == b,
        "output differs between 1 and 4 threads / input orders"
    );
    assert!(a == c);
}

#[test]
fn single_tenant_change_equals_full_compile() {
    let inputs = support::repo_inputs();
    let mut tenants = support::generated_tenants(40);
    let full_before = compiler::compile(&inputs.platform, &inputs.templates, &tenants).unwrap();
    // Change one tenant's tier, add one, remove one, each incrementally against the previous full output.
    let mut changed = tenants[7].clone();
    changed.spec = Some(changed.spec.unwrap().replace("tier: pro", "tier: team"));
    let added = support::generated_tenants(41).pop().unwrap();
    let removed = tenants[3].folder.clone();

    let mut files = full_before.files.clone();
    let steps: Vec<(String, Option<compiler::TenantFiles>)> = vec![
        (changed.folder.clone(), Some(changed.clone())),
        (added.folder.clone(), Some(added.clone())),
        (removed.clone(), None),
    ];
    for (name, tenant) in &steps {
        let changes = {
            let read = |p: &str| files.get(p).cloned();
            compiler::incremental::tenant_change(
                &inputs.platform,
                &inputs.templates,
                name,
                tenant.as_ref(),
                &read,
            )
            .unwrap()
        };
        apply(&mut files, changes);
    }
    tenants[7] = changed;
    tenants.push(added);
    tenants.retain(|t| t.folder != removed);
    let full_after = compiler::compile(&inputs.platform, &inputs.templates, &tenants).unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        full_after.files.keys().collect::<Vec<_>>()
    );
    for (path, text) in &full_after.files {
        assert_eq!(
            &files[path], text,
            "{path} differs between incremental and full compile"
        );
    }
}

/// Applies `changes` to `files` as the api applies them to a git tree.
fn apply(
    files: &mut std::collections::BTreeMap<String, String>,
    changes: Vec<compiler::incremental::FileChange>,
) {
    for change in changes {
        match change {
            compiler::incremental::FileChange::Write { path, contents } => {
                files.insert(path, contents);
            }
            compiler::incremental::FileChange::Remove { path } => {
                files.retain(|p, _| p != &path && !p.starts_with(&format!("{path}/")));
            }
        }
    }
}

#[test]
fn emptying_and_refilling_a_shard_incrementally_equals_full_compile() {
    let inputs = support::repo_inputs();
    let mut tenants = support::generated_tenants(600);
    // A shard holding several tenants: remove them one by one (the last removal drops the shard's folder
    // and its line of the top index), then add them back (the first addition brings both back).
    let shard = compiler::layout::shard_of(&tenants[0].folder);
    let mates: Vec<compiler::TenantFiles> = tenants
        .iter()
        .filter(|t| compiler::layout::shard_of(&t.folder) == shard)
        .cloned()
        .collect();
    assert!(mates.len() >= 2, "600 tenants put several in one shard");
    let mut files = compiler::compile(&inputs.platform, &inputs.templates, &tenants)
        .unwrap()
        .files;
    let index_path = compiler::layout::shard_index_path(&shard);
    let steps = mates
        .iter()
        .map(|t| (t.folder.clone(), None))
        .chain(mates.iter().map(|t| (t.folder.clone(), Some(t.clone()))));
    for (i, (name, tenant)) in steps.enumerate() {
        let reads = std::cell::RefCell::new(Vec::new());
        let changes = {
            let read = |p: &str| {
                reads.borrow_mut().push(p.to_string());
                files.get(p).cloned()
            };
            compiler::incremental::tenant_change(
                &inputs.platform,
                &inputs.templates,
                &name,
                tenant.as_ref(),
                &read,
            )
            .unwrap()
        };
        // Only the shard's own files are read, and the top index (at most 256 lines) only when the
        // shard's folder appears or disappears.
        let table = compiler::tenant_table::shard_path(compiler::layout::shard_number(&name));
        for read in reads.borrow().iter() {
            assert!(
                *read == index_path || *read == table || read == compiler::layout::INDEX_PATH,
                "tenant_change read {read}"
            );
        }
        let touches_top = reads
            .borrow()
            .iter()
            .any(|r| r == compiler::layout::INDEX_PATH);
        let boundary = i == mates.len() - 1 || i == mates.len();
        assert_eq!(touches_top, boundary, "step {i}: top index read");
        apply(&mut files, changes);
        match tenant {
            Some(t) => tenants.push(t),
            None => tenants.retain(|t| t.folder != name),
        }
        tenants.sort_by(|a, b| a.folder.cmp(&b.folder));
        if boundary || i == 0 {
            let full = compiler::compile(&inputs.platform, &inputs.templates, &tenants)
                .unwrap()
                .files;
            assert_eq!(
                files.keys().collect::<Vec<_>>(),
                full.keys().collect::<Vec<_>>(),
                "step {i}"
            );
            assert!(
                files == full,
                "step {i}: contents differ from a full compile"
            );
        }
    }
}

#[test]
fn reading_inputs_from_a_git_tree_equals_reading_the_working_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = support::repo_root();
    for d in ["templates", "tenants"] {
        support::copy_dir(&root.join(d), &dir.path().join(d));
    }
    let git = git2::Repository::init_bare(dir.path().join("state.git")).unwrap();
    // Write the checkout's inputs into the object database without any working tree.
    fn add_dir(git: &git2::Repository, path: &std::path::Path) -> git2::Oid {
        let mut builder = git.treebuilder(None).unwrap();
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if entry.file_type().unwrap().is_dir() {
                builder
                    .insert(&name, add_dir(git, &entry.path()), 0o040000)
                    .unwrap();
            } else {
                let blob = git.blob(&std::fs::read(entry.path()).unwrap()).unwrap();
                builder.insert(&name, blob, 0o100644).unwrap();
            }
        }
        builder.write().unwrap()
    }
    let mut top = git.treebuilder(None).unwrap();
    for d in ["templates", "tenants"] {
        top.insert(d, add_dir(&git, &dir.path().join(d)), 0o040000)
            .unwrap();
    }
    let tree = git.find_tree(top.write().unwrap()).unwrap();
    let from_git = compiler::source::from_git_tree(&git, &tree).unwrap();
    let from_dir = compiler::source::from_dir(dir.path()).unwrap();
    assert_eq!(from_git.tenants, from_dir.tenants);
    assert_eq!(from_git.platform, from_dir.platform);
    assert_eq!(from_git.templates.sources(), from_dir.templates.sources());
    let a = compiler::compile(&from_git.platform, &from_git.templates, &from_git.tenants).unwrap();
    let b = compiler::compile(&from_dir.platform, &from_dir.templates, &from_dir.tenants).unwrap();
    assert!(a == b);
    let acme = compiler::source::tenant_from_git_tree(&git, &tree, "acme")
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(&acme),
        from_dir.tenants.iter().find(|t| t.folder == "acme")
    );
    assert!(
        compiler::source::tenant_from_git_tree(&git, &tree, "nobody")
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_documented_tenant_table_example_is_the_format_the_compiler_writes() {
    let example =
        std::fs::read_to_string(support::repo_root().join("docs/tenant-table.example.json"))
            .unwrap();
    let parsed = compiler::tenant_table::parse_shard_json(&example).unwrap();
    assert_eq!(parsed.tenants.len(), 2);
    // Written back by the compiler's own writer, the example is unchanged but for whitespace.
    let rewritten = compiler::tenant_table::shard_json(parsed.tenants.clone());
    let a: serde_json::Value = serde_json::from_str(&example).unwrap();
    let b: serde_json::Value = serde_json::from_str(&rewritten).unwrap();
    assert_eq!(a, b);
    // And every shard the compiler renders for this repository parses in that format.
    let inputs = support::repo_inputs();
    let output = compiler::compile(&inputs.platform, &inputs.templates, &inputs.tenants).unwrap();
    let mut tenants = 0;
    for (path, text) in output
        .files
        .iter()
        .filter(|(p, _)| p.contains("/tenant-table-"))
    {
        tenants += compiler::render::parse_table_shard(text)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .len();
    }
    assert_eq!(tenants, inputs.tenants.len());
}

#[test]
fn the_pinned_gateway_image_is_the_openclaw_version_ci_validates_with() {
    let root = support::repo_root();
    let install = std::fs::read_to_string(root.join(".ci/install-tools")).unwrap();
    let version = install
        .lines()
        .find_map(|l| l.strip_prefix("OPENCLAW_VERSION=\""))
        .and_then(|l| l.split('"').next())
        .expect(".ci/install-tools pins OPENCLAW_VERSION");
    let platform = support::repo_inputs().platform;
    assert_eq!(
        platform.gateway.image.as_str().rsplit_once(':').map(|(_, tag)| tag),
        Some(version),
        "templates/platform.yaml gateway.image and .ci/install-tools OPENCLAW_VERSION must name the same release"
    );
}
