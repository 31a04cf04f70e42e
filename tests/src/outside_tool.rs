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
    match decide(&test_name(), tool, install, available, in_ci()) {
        Decision::Run => true,
        Decision::Skip(line) => {
            eprintln!("{line}");
            false
        }
        Decision::Fail(message) => panic!("{message}"),
    }
}

/// What [`require`] does, as a value.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// The line printed on stderr.
    Skip(String),
    /// The test's failure message.
    Fail(String),
}

/// The rule itself: run when the tool is there; otherwise fail under CI, else skip visibly.
pub fn decide(test: &str, tool: &str, install: &str, available: bool, ci: bool) -> Decision {
    if available {
        Decision::Run
    } else if ci {
        Decision::Fail(format!(
            "{test}: {tool} is required under CI=true but is not available; to install it, {install}"
        ))
    } else {
        Decision::Skip(format!(
            "SKIP {test}: {tool} is not available; to install it, {install} (CI=true makes this a failure)"
        ))
    }
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
        use super::{decide, Decision, INSTALL_TOOLS};
        let tool = "no-such-tool-anywhere-3f9c";
        assert_eq!(decide("t", tool, INSTALL_TOOLS, true, true), Decision::Run);
        match decide("t", tool, INSTALL_TOOLS, false, false) {
            Decision::Skip(line) => {
                assert!(
                    line.starts_with(&format!("SKIP t: {tool} is not available")),
                    "{line}"
                );
                assert!(line.contains(".ci/install-tools"), "{line}");
            }
            other => panic!("outside CI an absent tool skips, got {other:?}"),
        }
        match decide("t", tool, INSTALL_TOOLS, false, true) {
            Decision::Fail(message) => {
                assert!(
                    message.contains(&format!("{tool} is required under CI=true")),
                    "{message}"
                );
                assert!(message.contains(".ci/install-tools"), "{message}");
            }
            other => panic!("under CI an absent tool fails, got {other:?}"),
        }
    }
}
