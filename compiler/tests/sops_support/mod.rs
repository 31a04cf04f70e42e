//! Shared helpers for the SOPS tests: throwaway age keys and the official tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;

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

#[path = "../../../tests/src/outside_tool.rs"]
pub mod outside_tool;

/// Finds an official tool on PATH or in the CI tools directory. Missing tools fail the test
/// when CI=true and skip it (with a `SKIP` line) otherwise ([`outside_tool`]).
pub fn tool(name: &str) -> Option<PathBuf> {
    outside_tool::find(name)
}
