//! SOPS-compatible encryption of Kubernetes Secrets with age.
//!
//! This module owns everything about `tenants/<name>/secrets.sops.yaml` files: writing them
//! exactly as sops 3.x does for age recipients (so that Flux's kustomize-controller and the
//! `sops` CLI decrypt them), decrypting them for operators with MAC verification, re-wrapping
//! or fully re-encrypting them when the platform's recipients change, and checking them
//! without any key at compile time. It does no I/O: callers pass file contents and identity
//! file contents in, and get YAML text back.
//!
//! The format, in short: a fresh 32-byte data key per file, wrapped for each age recipient as
//! an armored age file; every value selected by the encryption rule (here `encrypted_regex:
//! ^(data|stringData)$`) replaced by `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, encrypted
//! with the data key, a 32-byte IV and the value's path (`stringData:proxy-token:`) as
//! additional data; a SHA-512 MAC over every value's plaintext in document order, encrypted
//! with `lastmodified` as additional data; and the `sops:` metadata block. See
//! docs/secrets.md.
//!
//! Nothing in this module puts a plaintext value into an error message, a `Debug` output or a
//! panic; decrypted values and data keys are zeroized when dropped.

mod age_keys;
mod cipher;
mod document;
mod emit;
mod mac;
mod metadata;
mod secret;
mod tree;
mod verify;

pub use document::{decrypt_document, reencrypt, rotate_recipients};
pub use secret::{
    decrypt, encrypt_secret_manifest, tenant_secret_file, DecryptedSecret, TENANT_SECRET_KEYS,
    TENANT_SECRET_NAME,
};
pub use verify::{verify_without_keys, Problem};

/// The encryption rule every file this module writes carries: only the Secret's payload is
/// encrypted; apiVersion, kind and metadata stay readable for review and for Flux.
pub const ENCRYPTED_REGEX: &str = "^(data|stringData)$";

/// The `sops.version` this module writes: the sops release whose format it implements and is
/// tested against.
pub const SOPS_FORMAT_VERSION: &str = "3.11.0";

/// Everything that can go wrong. No variant carries a plaintext value: paths, recipients,
/// names and reasons only.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    /// The text is not a single YAML document.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// The document is YAML but has no `sops:` metadata block.
    #[error("not a SOPS file: there is no top-level `sops:` metadata block")]
    NotSops,
    /// Asked to encrypt a document that already carries a `sops:` block.
    #[error("the document is already SOPS-encrypted (it has a top-level `sops:` key)")]
    AlreadyEncrypted,
    /// The manifest is not a Kubernetes Secret this module can encrypt.
    #[error("not a valid Kubernetes Secret: {0}")]
    InvalidSecret(String),
    /// The `sops:` block is malformed.
    #[error("invalid SOPS metadata: {0}")]
    InvalidMetadata(String),
    /// A sops feature this implementation does not cover.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No recipients were given.
    #[error("no age recipients given: a SOPS file needs at least one")]
    NoRecipients,
    /// A recipient string is not an X25519 age recipient.
    #[error("invalid age recipient {recipient:?}: {reason}")]
    InvalidRecipient { recipient: String, reason: String },
    /// A recipient appears twice.
    #[error("age recipient {0} is listed twice")]
    DuplicateRecipient(String),
    /// The identity file could not be used. Never quotes the file.
    #[error("invalid age identity file: {0}")]
    InvalidIdentities(String),
    /// None of the identities opens any of the file's wrapped data keys.
    #[error(
        "wrong key: none of the given age identities can decrypt this file; it is encrypted for {}",
        recipients.join(", ")
    )]
    NoMatchingIdentity { recipients: Vec<String> },
    /// A wrapped data key is not a readable age file.
    #[error("the data key wrapped for {recipient} is not a valid age file: {reason}")]
    InvalidAgeEnvelope { recipient: String, reason: String },
    /// age failed to wrap the data key.
    #[error("could not wrap the data key with age: {0}")]
    DataKeyWrap(String),
    /// An encrypted value is not of the `ENC[AES256_GCM,...]` form.
    #[error("{path}: malformed encrypted value: {reason}")]
    MalformedValue { path: String, reason: String },
    /// A value that the encryption rule covers is in plaintext.
    #[error("{path}: value is not encrypted")]
    PlaintextValue { path: String },
    /// GCM authentication of a value failed.
    #[error(
        "{path}: the encrypted value does not authenticate: its data, IV or tag was altered, or it was moved from another key"
    )]
    ValueTampered { path: String },
    /// GCM authentication of the MAC failed.
    #[error("sops.mac does not authenticate: the MAC or sops.lastmodified was altered")]
    MacTampered,
    /// The MAC decrypts, but does not match the file's contents.
    #[error("MAC mismatch: the file's values were changed, added, removed or reordered after it was encrypted")]
    MacMismatch,
    /// `verify_without_keys` found problems; each says what and where.
    #[error("{} problem(s) in the secrets file:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Verification(Vec<Problem>),
}
