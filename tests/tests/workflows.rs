//! The GitHub Actions workflows (.github/workflows/): linted with actionlint, which also proves that their
//! shell steps interpolate no untrusted event data; and the state repository's pull-request check does what
//! docs/operations.md promises (validate, check, the rendered diff as a comment).

use std::path::PathBuf;
use std::process::Command;

fn actionlint() -> Option<PathBuf> {
    e2e::outside_tool::find("actionlint")
}

fn workflows() -> Vec<PathBuf> {
    let dir = e2e::checkout().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_workflow_passes_actionlint() {
    let Some(actionlint) = actionlint() else {
        return;
    };
    let files = workflows();
    assert_eq!(files.len(), 2, "{files:?}");
    let out = Command::new(actionlint).args(&files).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

#[test]
fn actionlint_refuses_a_workflow_that_runs_untrusted_input() {
    let Some(actionlint) = actionlint() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "on: pull_request\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo \"${{ github.event.pull_request.title }}\"\n",
    )
    .unwrap();
    let out = Command::new(actionlint).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("potentially untrusted"), "{text}");
}

#[test]
fn the_state_repository_check_validates_checks_and_posts_the_diff() {
    let text =
        std::fs::read_to_string(e2e::checkout().join(".github/workflows/state-repo.yml")).unwrap();
    for needle in [
        "pull_request:",
        "openclaw-compiler validate",
        "openclaw-compiler check",
        "openclaw-compiler diff --rev",
        "gh pr comment",
        "pull-requests: write",
    ] {
        assert!(text.contains(needle), "state-repo.yml lacks {needle:?}");
    }
    let ci = std::fs::read_to_string(e2e::checkout().join(".github/workflows/ci.yml")).unwrap();
    assert!(ci.contains("bash .ci/run"));
    for image in ["api-image", "token-proxy-image"] {
        assert!(
            ci.contains(&format!(".#{image}")),
            "ci.yml does not build {image}"
        );
    }
}
