//! The command-line interface end to end on copies of this repository: build, check, diff, validate.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn cli(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_openclaw-compiler"))
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_passes_on_the_repository_and_build_changes_nothing() {
    let repo = support::copy_repo();
    let o = cli(repo.path(), &["check"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(repo.path(), &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 files written"), "{}", text(&o));
}

#[test]
fn check_lists_missing_differing_and_stale_files() {
    let repo = support::copy_repo();
    let p = repo.path();
    std::fs::remove_file(p.join("flux/tenants/acme/deployment.yaml")).unwrap();
    std::fs::write(
        p.join("flux/tenants/globex/configmap.yaml"),
        "edited by hand\n",
    )
    .unwrap();
    std::fs::write(p.join("flux/tenants/ghost.yaml"), "stale\n").unwrap();
    let o = cli(p, &["check"]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("missing: flux/tenants/acme/deployment.yaml"),
        "{t}"
    );
    assert!(
        t.contains("differs: flux/tenants/globex/configmap.yaml"),
        "{t}"
    );
    assert!(t.contains("stale:   flux/tenants/ghost.yaml"), "{t}");
    assert!(t.contains("1 missing, 1 differing, 1 stale"), "{t}");
}

#[test]
fn build_removes_the_output_of_deleted_tenants() {
    let repo = support::copy_repo();
    let p = repo.path();
    std::fs::remove_dir_all(p.join("tenants/globex")).unwrap();
    let o = cli(p, &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!p.join("flux/tenants/globex").exists());
    assert!(!p.join("flux/tenants/globex.yaml").exists());
    let index = std::fs::read_to_string(p.join("flux/tenants/kustomization.yaml")).unwrap();
    assert!(
        !index.contains("globex") && index.contains("acme.yaml"),
        "{index}"
    );
    let table = compiler::sink::generated_on_disk(p).unwrap();
    assert!(table
        .iter()
        .filter(|(k, _)| k.contains("tenant-table-"))
        .all(|(_, v)| !String::from_utf8_lossy(v).contains("\"globex\"")));
    assert!(cli(p, &["check"]).status.success());
}

#[test]
fn diff_shows_what_a_spec_change_renders() {
    let repo = support::copy_repo();
    let p = repo.path();
    let spec = p.join("tenants/acme/tenant.yaml");
    let s = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("tier: starter", "tier: pro");
    std::fs::write(&spec, s).unwrap();
    let o = cli(p, &["diff", "--color", "never"]);
    assert_eq!(o.status.code(), Some(1), "diff exits 1 when output differs");
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains(
            "--- a/flux/tenants/acme/deployment.yaml\n+++ b/flux/tenants/acme/deployment.yaml"
        ),
        "{t}"
    );
    assert!(
        t.contains("-    openclaw.cloud/tier: starter\n+    openclaw.cloud/tier: pro"),
        "{t}"
    );
    assert!(
        t.contains("-            cpu: \"1\"\n+            cpu: \"2\""),
        "{t}"
    );
    let coloured = cli(p, &["diff", "--color", "always"]);
    assert!(String::from_utf8_lossy(&coloured.stdout).contains("\u{1b}["));
    // After a build there is nothing left to show.
    assert!(cli(p, &["build"]).status.success());
    let o = cli(p, &["diff"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn diff_against_a_git_revision() {
    let repo = support::copy_repo();
    let p = repo.path();
    let git = git2::Repository::init(p).unwrap();
    let mut index = git.index().unwrap();
    index
        .add_all(["."], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = git.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("ci", "ci@example.com").unwrap();
    git.commit(Some("HEAD"), &sig, &sig, "base", &tree, &[])
        .unwrap();
    // Change a spec and rebuild the working tree: the diff against HEAD shows the change.
    let spec = p.join("tenants/initech/tenant.yaml");
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("state: suspended", "state: active"),
    )
    .unwrap();
    assert!(cli(p, &["build"]).status.success());
    let o = cli(p, &["diff", "--rev", "HEAD", "--color", "never"]);
    assert_eq!(o.status.code(), Some(1));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("-  replicas: 0\n+  replicas: 1"), "{t}");
    assert!(
        t.contains("-          \"state\": \"suspended\",\n+          \"state\": \"active\","),
        "{t}"
    );
    let o = cli(p, &["diff", "--rev", "no-such-rev"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unknown revision \"no-such-rev\""));
}

#[test]
fn validate_checks_specs_without_rendering() {
    let repo = support::copy_repo();
    let o = cli(repo.path(), &["validate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 tenant specs are valid"));
    let spec = repo.path().join("tenants/acme/tenant.yaml");
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("tier: starter", "tier: gold"),
    )
    .unwrap();
    let o = cli(repo.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("tenants/acme/tenant.yaml:10:9: error: unknown tier \"gold\""),
        "{}",
        text(&o)
    );
}

#[test]
fn a_folder_that_is_not_a_repository_gets_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let o = cli(empty.path(), &["build"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("has no templates/ folder: run from the repository root or pass --repo")
    );
}
