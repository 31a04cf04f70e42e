//! Shared helpers for the SOPS tests: throwaway age keys and the official tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;

/// Where CI installs the official tools when they are not on PATH.
const TOOLS_DIR: &str = "/opt/openclaw-cloud-tools/bin";

/// A throwaway age key pair.
pub struct Key {
    pub recipient: String,
    pub identity: String,
}

pub fn keypair() -> Key {
    let id = age::x25519::Identity::generate();
    Key {
        recipient: id.to_public().to_string(),
        identity: id.to_string().expose_secret().to_owned(),
    }
}

/// Writes an identity file (the SOPS_AGE_KEY_FILE format) into `dir`.
pub fn identity_file(dir: &Path, name: &str, key: &Key) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("# public key: {}\n{}\n", key.recipient, key.identity),
    )
    .unwrap();
    path
}

/// Finds an official tool on PATH or in the CI tools directory. Missing tools fail the test
/// when CI=true and skip it (with the reason printed) otherwise.
pub fn tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(std::iter::once(PathBuf::from(TOOLS_DIR)))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if on_path.is_none() {
        let reason = format!(
            "the `{name}` tool is not installed (looked on PATH and in {TOOLS_DIR}); run .ci/install-tools"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason}");
        }
        eprintln!("skipping: {reason}");
    }
    on_path
}
