//! Shared by the compiler's integration tests and benchmarks: the repository's own inputs, and generated
//! tenants for scale.
#![allow(dead_code)]

use compiler::layout;
use compiler::source::{self, Inputs};
use compiler::TenantFiles;
use std::path::{Path, PathBuf};

/// The repository root (the workspace holding tenants/, templates/, flux/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compiler/ has a parent")
        .to_path_buf()
}

/// The repository's own inputs.
pub fn repo_inputs() -> Inputs {
    source::from_dir(&repo_root())
        .unwrap_or_else(|d| panic!("the repository's inputs are valid:\n{d}"))
}

/// `n` generated tenants, varied over tiers, states, connections and settings. Their secrets files are the
/// example tenant acme's, re-addressed: metadata is neither encrypted nor covered by the SOPS MAC.
pub fn generated_tenants(n: usize) -> Vec<TenantFiles> {
    let root = repo_root();
    let secrets =
        std::fs::read_to_string(root.join(layout::secrets_path("acme"))).expect("example secrets");
    let tiers = ["starter", "pro", "team"];
    let thinking = ["off", "minimal", "low", "medium", "high"];
    let providers = ["google", "github", "slack", "linear", "notion", "jira"];
    (0..n)
        .map(|i| {
            let name = format!("t{i:05}");
            let mut connections = String::new();
            if i % 3 != 0 {
                connections.push_str("  connections:\n");
                for p in providers.iter().skip(i % 6).take(1 + i % 3) {
                    connections.push_str(&format!("    - provider: {p}\n      connectionId: conn-{i}-{p}\n"));
                }
            }
            let spec = format!(
                "apiVersion: openclaw.cloud/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  owner:\n    email: owner{i}@example.com\n    telegramUserId: {uid}\n  tier: {tier}\n  state: {state}\n  agent:\n    model: kimi/kimi-for-coding\n    thinking: {think}\n    language: en\n    allowFrom: [{uid}]\n{connections}  proxyToken:\n    sha256: {hash}\n",
                uid = 100_000 + i,
                tier = tiers[i % 3],
                state = if i % 10 == 9 { "suspended" } else { "active" },
                think = thinking[i % 5],
                hash = compiler::spec::TokenSha256::of_token(&format!("token-{i}")),
            );
            TenantFiles {
                folder: name.clone(),
                spec: Some(spec),
                secrets: Some(secrets.replace("namespace: customer-acme", &format!("namespace: customer-{name}"))),
            }
        })
        .collect()
}

/// Writes `tenants` into a copy of the repository's platform config and templates at `dir`.
pub fn write_repo(dir: &Path, tenants: &[TenantFiles]) {
    let root = repo_root();
    copy_dir(&root.join("templates"), &dir.join("templates"));
    for t in tenants {
        let d = dir.join(layout::spec_dir(&t.folder));
        std::fs::create_dir_all(&d).unwrap();
        if let Some(s) = &t.spec {
            std::fs::write(dir.join(layout::spec_path(&t.folder)), s).unwrap();
        }
        if let Some(s) = &t.secrets {
            std::fs::write(dir.join(layout::secrets_path(&t.folder)), s).unwrap();
        }
    }
}

/// A temporary copy of the repository's inputs and output (templates/, tenants/, flux/).
pub fn copy_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    for d in ["templates", "tenants", "flux"] {
        copy_dir(&root.join(d), &dir.path().join(d));
    }
    dir
}

/// The document of kind `kind` in a tenant's multi-document manifests file.
pub fn manifest(manifests: &str, kind: &str) -> String {
    let wanted = format!("kind: {kind}");
    manifests
        .split("\n---\n")
        .find(|doc| doc.lines().any(|l| l == wanted))
        .unwrap_or_else(|| panic!("no {kind} in the manifests:\n{manifests}"))
        .to_string()
}

/// Copies a folder recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[path = "../../../tests/src/outside_tool.rs"]
pub mod outside_tool;

/// Resolves an outside tool: on PATH or in the tools folder .ci/install-tools fills. Under CI=true a
/// missing tool fails the test; elsewhere the test is skipped with a `SKIP` line ([`outside_tool`]).
pub fn tool(name: &str) -> Option<PathBuf> {
    outside_tool::find(name)
}
