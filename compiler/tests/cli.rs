//! The command-line interface end to end on copies of this repository: build, check, diff, validate.

mod support;

use compiler::layout;
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
    std::fs::remove_file(p.join(layout::manifests_path("acme"))).unwrap();
    std::fs::write(p.join(layout::manifests_path("globex")), "edited by hand\n").unwrap();
    let ghost = layout::flux_kustomization_path("ghost");
    std::fs::create_dir_all(p.join(&ghost).parent().unwrap()).unwrap();
    std::fs::write(p.join(&ghost), "stale\n").unwrap();
    let o = cli(p, &["check"]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains(&format!("missing: {}", layout::manifests_path("acme"))),
        "{t}"
    );
    assert!(
        t.contains(&format!("differs: {}", layout::manifests_path("globex"))),
        "{t}"
    );
    assert!(t.contains(&format!("stale:   {ghost}")), "{t}");
    assert!(t.contains("1 missing, 1 differing, 1 stale"), "{t}");
}

#[test]
fn build_removes_the_output_of_deleted_tenants() {
    let repo = support::copy_repo();
    let p = repo.path();
    std::fs::remove_dir_all(p.join(layout::spec_dir("globex"))).unwrap();
    let o = cli(p, &["build"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!p.join(layout::output_dir("globex")).exists());
    assert!(!p.join(layout::flux_kustomization_path("globex")).exists());
    // globex was alone in its shard: the shard's folder and its line in the index go too.
    let globex_shard = layout::shard_of("globex");
    assert!(!p.join(layout::output_shard_dir(&globex_shard)).exists());
    let index = std::fs::read_to_string(p.join(layout::INDEX_PATH)).unwrap();
    assert!(
        !index.contains(&format!("- {globex_shard}"))
            && index.contains(&format!("- \"{}\"", layout::shard_of("acme"))),
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
    let spec = p.join(layout::spec_path("acme"));
    let s = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("tier: starter", "tier: pro");
    std::fs::write(&spec, s).unwrap();
    let o = cli(p, &["diff", "--color", "never"]);
    assert_eq!(o.status.code(), Some(1), "diff exits 1 when output differs");
    let t = String::from_utf8_lossy(&o.stdout);
    let manifests = layout::manifests_path("acme");
    assert!(
        t.contains(&format!("--- a/{manifests}\n+++ b/{manifests}")),
        "{t}"
    );
    assert!(
        t.contains("-    openclaw.cloud/tier: starter\n+    openclaw.cloud/tier: pro"),
        "{t}"
    );
    // The Deployment's CPU limit follows the tier.
    assert!(
        t.contains("\n-            cpu: \"1\"\n") && t.contains("\n+            cpu: \"2\"\n"),
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
    let spec = p.join(layout::spec_path("initech"));
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
    let spec = repo.path().join(layout::spec_path("acme"));
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
        text(&o).contains(&format!(
            "{}:10:9: error: unknown tier \"gold\"",
            layout::spec_path("acme")
        )),
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

#[test]
fn path_prints_a_tenants_paths() {
    let repo = support::copy_repo();
    let o = cli(repo.path(), &["path", "acme"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out, layout::describe("acme"));
    for line in [
        "shard: 82\n".to_string(),
        format!("spec: {}\n", layout::spec_path("acme")),
        format!("secrets: {}\n", layout::secrets_path("acme")),
        format!("output: {}/\n", layout::output_dir("acme")),
        format!(
            "flux-kustomization: {}\n",
            layout::flux_kustomization_path("acme")
        ),
        "history: git log -- 'tenants/*/acme'\n".to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
    // The paths it prints are where the example tenant is.
    assert!(repo.path().join(layout::spec_path("acme")).is_file());
    let o = cli(repo.path(), &["path", "Not_A_Name"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("\"Not_A_Name\" is not a valid tenant name"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_tenant_in_the_wrong_shard_folder_is_an_error_naming_the_right_path() {
    let repo = support::copy_repo();
    let p = repo.path();
    std::fs::create_dir_all(p.join("tenants/00")).unwrap();
    std::fs::rename(p.join(layout::spec_dir("acme")), p.join("tenants/00/acme")).unwrap();
    let before = compiler::sink::generated_on_disk(p).unwrap();
    let o = cli(p, &["build"]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains(
            "tenants/00/acme: error: tenant folder is in the wrong shard: acme belongs in tenants/82/acme/"
        ),
        "{t}"
    );
    assert!(t.contains("git mv tenants/00/acme tenants/82/acme"), "{t}");
    assert_eq!(before, compiler::sink::generated_on_disk(p).unwrap());
}

#[test]
fn a_tenant_folder_in_the_old_flat_layout_is_an_error_with_the_move_to_make() {
    let repo = support::copy_repo();
    let p = repo.path();
    std::fs::rename(p.join(layout::spec_dir("acme")), p.join("tenants/acme")).unwrap();
    let o = cli(p, &["validate"]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("tenants/acme: error: folder is not a shard folder of tenants/"),
        "{t}"
    );
    assert!(t.contains("git mv tenants/acme tenants/82/acme"), "{t}");
}
