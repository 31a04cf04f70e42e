//! What a test does when an outside tool it needs is absent: the one rule for every test in the
//! workspace (the crates' tests include this file by path, so that it depends on nothing).
//!
//! Under `CI=true` an absent tool fails the test, naming the tool and how to install it. Elsewhere the
//! test returns early and says so on stderr, in a line that starts with `SKIP` and names the test and the
//! tool, so that a skipped test is never mistaken for a passing one.
//!
//! Tools are looked up on `PATH`, then in the folder `.ci/install-tools` fills
//! (`$OPENCLAW_TOOLS_DIR/bin`, default `/opt/openclaw-cloud-tools/bin`).
#![allow(dead_code)]

use std::path::PathBuf;

/// The default install hint: the script that installs every outside tool the tests use.
pub const INSTALL_TOOLS: &str =
    "run `bash .ci/install-tools` (tools land in /opt/openclaw-cloud-tools/bin)";

/// Whether an absent tool fails the test (`CI=true`) rather than skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The running test's name (libtest runs each test on a thread named after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("this test")
        .to_owned()
}

/// Decides for an outside requirement: `true` when `available`; otherwise fails the test under
/// `CI=true` with `tool` and `install` (how to get it), or prints a `SKIP` line and returns `false`.
pub fn require(tool: &str, install: &str, available: bool) -> bool {
    if available {
        return true;
    }
    let test = test_name();
    if in_ci() {
        panic!("{test}: {tool} is required under CI=true but is not available; to install it, {install}");
    }
    eprintln!("SKIP {test}: {tool} is not available; to install it, {install} (CI=true makes this a failure)");
    false
}

/// The folder `.ci/install-tools` installs into.
pub fn tools_bin() -> PathBuf {
    PathBuf::from(
        std::env::var("OPENCLAW_TOOLS_DIR").unwrap_or_else(|_| "/opt/openclaw-cloud-tools".into()),
    )
    .join("bin")
}

/// The executable `name` on `PATH` or in [`tools_bin`], if there is one (no decision taken).
pub fn locate(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::iter::once(tools_bin()))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The executable `name`, installed by `.ci/install-tools`: found, or absent and decided by
/// [`require`] (a failure under `CI=true`, a `SKIP` line otherwise).
pub fn find(name: &str) -> Option<PathBuf> {
    let found = locate(name);
    require(name, INSTALL_TOOLS, found.is_some());
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_present_tool_is_found_and_an_absent_one_is_not() {
        assert!(super::require("sh", super::INSTALL_TOOLS, true));
        assert!(super::locate("sh").is_some());
        assert!(super::locate("no-such-tool-anywhere-3f9c").is_none());
    }

    #[test]
    fn an_absent_tool_skips_outside_ci_and_fails_in_ci() {
        // The decision is taken on this process's environment; both branches are checked in a child.
        let exe = std::env::current_exe().unwrap();
        // The test's path in this binary (this file is included in several crates at different places).
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let child = format!("{module}::decide_for_an_absent_tool");
        for (ci, want_success) in [("false", true), ("true", false)] {
            let out = std::process::Command::new(&exe)
                .args(["--exact", &child, "--include-ignored", "--nocapture"])
                .env("CI", ci)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.success(),
                want_success,
                "CI={ci}: {stdout}{stderr}"
            );
            if want_success {
                assert!(
                    stderr.contains(&format!(
                        "SKIP {child}: no-such-tool-anywhere-3f9c is not available"
                    )),
                    "{stderr}"
                );
            } else {
                assert!(
                    stdout.contains("no-such-tool-anywhere-3f9c is required under CI=true")
                        || stderr.contains("no-such-tool-anywhere-3f9c is required under CI=true"),
                    "{stdout}{stderr}"
                );
                assert!((stdout.to_string() + &stderr).contains(".ci/install-tools"));
            }
        }
    }

    /// Run only by the test above, in a child process with `CI` set.
    #[test]
    #[ignore = "run by an_absent_tool_skips_outside_ci_and_fails_in_ci with CI set"]
    fn decide_for_an_absent_tool() {
        assert!(super::find("no-such-tool-anywhere-3f9c").is_none());
    }
}
