//! The keyless check the compiler runs on every `tenants/<name>/secrets.sops.yaml`.
//!
//! This module owns the rules a committed secrets file must satisfy without anyone holding a
//! key: every `data`/`stringData` value is a well-formed encrypted value, the `sops:` block is
//! present and complete, the file is wrapped for exactly the platform's age recipients and
//! nobody else, and the Secret is the tenant's. It reports every problem at once, each naming
//! the offending key, recipient or field, and never a value.

use std::collections::BTreeSet;
use std::fmt;

use crate::yaml::Value;

use super::age_keys;
use super::cipher::{looks_encrypted, EncryptedValue};
use super::document::parse_mapping;
use super::metadata::{self, OTHER_KEY_TYPES, SOPS_KEY};
use super::secret::PAYLOAD_FIELDS;
use super::{SopsError, ENCRYPTED_REGEX};

/// One thing wrong with a secrets file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The file has no `sops:` block: it was committed in plaintext.
    NotEncrypted,
    /// `kind` or `apiVersion` is not that of a v1 Secret.
    NotASecret {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    /// `metadata.name` differs from the tenant's Secret name.
    NameMismatch {
        expected: String,
        found: Option<String>,
    },
    /// `metadata.namespace` differs from the tenant's namespace.
    NamespaceMismatch {
        expected: String,
        found: Option<String>,
    },
    /// Neither `data` nor `stringData` holds anything.
    NoPayload,
    /// `data` or `stringData` is not a mapping of strings.
    BadPayloadShape { path: String },
    /// A value under `data`/`stringData` is in plaintext.
    PlaintextValue { path: String },
    /// A value under `data`/`stringData` looks encrypted but is malformed.
    MalformedValue { path: String, reason: String },
    /// A `sops:` field is missing or wrong.
    BadMetadata { field: String, reason: String },
    /// A platform recipient has no wrapped data key in the file.
    MissingRecipient(String),
    /// The file is wrapped for a recipient the platform does not list.
    ExtraRecipient(String),
    /// A recipient has more than one entry.
    DuplicateRecipient(String),
    /// The file can also be opened with a non-age key type.
    OtherKeyType(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| {
            v.as_deref()
                .map_or("nothing".to_owned(), |s| format!("{s:?}"))
        };
        match self {
            Problem::NotEncrypted => write!(
                f,
                "the file is not SOPS-encrypted (no `sops:` block); encrypt it with `openclaw-compiler secrets set`"
            ),
            Problem::NotASecret { field, expected, found } => {
                write!(f, "{field}: expected {expected:?}, found {found:?}")
            }
            Problem::NameMismatch { expected, found } => {
                write!(f, "metadata.name: expected {expected:?}, found {}", show(found))
            }
            Problem::NamespaceMismatch { expected, found } => {
                write!(f, "metadata.namespace: expected {expected:?}, found {}", show(found))
            }
            Problem::NoPayload => write!(f, "the Secret has no data or stringData values"),
            Problem::BadPayloadShape { path } => write!(f, "{path}: must be a mapping of strings"),
            Problem::PlaintextValue { path } => {
                write!(f, "{path}: value is in plaintext; it must be encrypted")
            }
            Problem::MalformedValue { path, reason } => write!(f, "{path}: malformed encrypted value: {reason}"),
            Problem::BadMetadata { field, reason } if field.is_empty() => write!(f, "sops: {reason}"),
            Problem::BadMetadata { field, reason } => write!(f, "sops.{field}: {reason}"),
            Problem::MissingRecipient(r) => write!(f, "sops.age: recipient {r} is missing"),
            Problem::ExtraRecipient(r) => {
                write!(f, "sops.age: recipient {r} is not one of the platform's recipients")
            }
            Problem::DuplicateRecipient(r) => write!(f, "sops.age: recipient {r} is listed more than once"),
            Problem::OtherKeyType(k) => write!(
                f,
                "sops.{k}: the file is also encrypted for {k} keys; only the platform's age recipients are allowed"
            ),
        }
    }
}

impl Problem {
    /// The dotted YAML path of the node the problem is about (`stringData.proxy-token`,
    /// `metadata.namespace`, `sops.age`), so that callers can point at a line; `None` for
    /// problems about the file as a whole.
    pub fn path(&self) -> Option<String> {
        match self {
            Problem::NotEncrypted | Problem::NoPayload => None,
            Problem::NotASecret { field, .. } => Some((*field).to_owned()),
            Problem::NameMismatch { .. } => Some("metadata.name".to_owned()),
            Problem::NamespaceMismatch { .. } => Some("metadata.namespace".to_owned()),
            Problem::BadPayloadShape { path }
            | Problem::PlaintextValue { path }
            | Problem::MalformedValue { path, .. } => Some(path.clone()),
            Problem::BadMetadata { field, .. } if field.is_empty() => Some("sops".to_owned()),
            Problem::BadMetadata { field, .. } => Some(format!("sops.{field}")),
            Problem::MissingRecipient(_)
            | Problem::ExtraRecipient(_)
            | Problem::DuplicateRecipient(_) => Some("sops.age".to_owned()),
            Problem::OtherKeyType(k) => Some(format!("sops.{k}")),
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "nothing".to_owned(),
        Value::Bool(_) | Value::Number(_) => "a non-string scalar".to_owned(),
        Value::Sequence(_) => "a sequence".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(_) => "a tagged value".to_owned(),
    }
}

/// Checks a tenant's secrets file without any key: every `data`/`stringData` value is
/// encrypted, the `sops:` block is complete and wraps the data key for exactly
/// `expected_recipients`, and the Secret is `expected_name` in `expected_namespace`.
/// All problems are reported together in [`SopsError::Verification`].
pub fn verify_without_keys(
    sops_yaml: &str,
    expected_name: &str,
    expected_namespace: &str,
    expected_recipients: &[String],
) -> Result<(), SopsError> {
    let doc = parse_mapping(sops_yaml)?;
    let mut problems = Vec::new();

    for (field, expected) in [("apiVersion", "v1"), ("kind", "Secret")] {
        let found = doc
            .get(field)
            .map_or_else(|| "nothing".to_owned(), describe);
        if found != expected {
            problems.push(Problem::NotASecret {
                field,
                expected,
                found,
            });
        }
    }
    let metadata = doc.get("metadata").and_then(Value::as_mapping);
    let meta_str = |name: &str| {
        metadata
            .and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = meta_str("name");
    if name.as_deref() != Some(expected_name) {
        problems.push(Problem::NameMismatch {
            expected: expected_name.to_owned(),
            found: name,
        });
    }
    let namespace = meta_str("namespace");
    if namespace.as_deref() != Some(expected_namespace) {
        problems.push(Problem::NamespaceMismatch {
            expected: expected_namespace.to_owned(),
            found: namespace,
        });
    }

    let mut values = 0usize;
    for field in PAYLOAD_FIELDS {
        let Some(payload) = doc.get(field) else {
            continue;
        };
        let Some(payload) = payload.as_mapping() else {
            problems.push(Problem::BadPayloadShape {
                path: field.to_owned(),
            });
            continue;
        };
        for (key, value) in payload {
            let Some(key) = key.as_str() else {
                problems.push(Problem::BadPayloadShape {
                    path: field.to_owned(),
                });
                continue;
            };
            values += 1;
            let path = format!("{field}.{key}");
            match value {
                // sops leaves empty strings unencrypted: they hold nothing.
                Value::String(s) if s.is_empty() => {}
                Value::String(s) if looks_encrypted(s) => {
                    if let Err(reason) = EncryptedValue::parse(s) {
                        problems.push(Problem::MalformedValue { path, reason });
                    }
                }
                _ => problems.push(Problem::PlaintextValue { path }),
            }
        }
    }
    if values == 0 {
        problems.push(Problem::NoPayload);
    }

    match doc.get(SOPS_KEY) {
        None => problems.push(Problem::NotEncrypted),
        Some(meta) => check_metadata(meta, expected_recipients, &mut problems),
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(SopsError::Verification(problems))
    }
}

fn check_metadata(meta: &Value, expected_recipients: &[String], problems: &mut Vec<Problem>) {
    let bad = |field: &str, reason: &str| Problem::BadMetadata {
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    let Some(map) = meta.as_mapping() else {
        problems.push(bad("", "must be a mapping"));
        return;
    };
    let get_str = |name: &str| map.get(name).and_then(Value::as_str);

    match get_str("encrypted_regex") {
        Some(ENCRYPTED_REGEX) => {}
        Some(other) => problems.push(bad(
            "encrypted_regex",
            &format!("is {other:?}, expected {ENCRYPTED_REGEX:?}"),
        )),
        None => problems.push(bad(
            "encrypted_regex",
            &format!("is missing, expected {ENCRYPTED_REGEX:?}"),
        )),
    }
    for other_rule in [
        "unencrypted_suffix",
        "encrypted_suffix",
        "unencrypted_regex",
        "unencrypted_comment_regex",
        "encrypted_comment_regex",
        "mac_only_encrypted",
    ] {
        if map
            .get(other_rule)
            .is_some_and(|v| !v.is_null() && v.as_str() != Some("") && v.as_bool() != Some(false))
        {
            problems.push(bad(other_rule, "must not be set"));
        }
    }
    match get_str("lastmodified") {
        Some(lm) => {
            if metadata::mac_aad(lm).is_err() {
                problems.push(bad("lastmodified", "is not an RFC 3339 timestamp"));
            }
        }
        None => problems.push(bad("lastmodified", "is missing")),
    }
    match get_str("mac") {
        Some(mac) => {
            if let Err(reason) = EncryptedValue::parse(mac) {
                problems.push(bad("mac", &format!("is not an encrypted MAC: {reason}")));
            }
        }
        None => problems.push(bad("mac", "is missing")),
    }
    if get_str("version").is_none_or(str::is_empty) {
        problems.push(bad("version", "is missing"));
    }
    if map
        .get("key_groups")
        .and_then(Value::as_sequence)
        .is_some_and(|g| !g.is_empty())
    {
        problems.push(Problem::OtherKeyType("key_groups".to_owned()));
    }
    for key_type in OTHER_KEY_TYPES {
        if map
            .get(key_type)
            .and_then(Value::as_sequence)
            .is_some_and(|k| !k.is_empty())
        {
            problems.push(Problem::OtherKeyType(key_type.to_owned()));
        }
    }

    let entries = match metadata::parse_age_entries(map) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(bad("age", &e.to_string()));
            return;
        }
    };
    let expected: BTreeSet<&str> = expected_recipients.iter().map(|r| r.trim()).collect();
    let mut found = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        if !found.insert(entry.recipient.as_str()) {
            problems.push(Problem::DuplicateRecipient(entry.recipient.clone()));
        }
        if !expected.contains(entry.recipient.as_str()) {
            problems.push(Problem::ExtraRecipient(entry.recipient.clone()));
        }
        if let Err(reason) = age_keys::check_envelope(&entry.enc) {
            problems.push(bad(
                &format!("age[{i}].enc"),
                &format!("is not an armored age file: {reason}"),
            ));
        }
    }
    for missing in expected.difference(&found) {
        problems.push(Problem::MissingRecipient((*missing).to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tenant_secret_file;
    use super::*;
    use std::collections::BTreeMap;

    fn recipient() -> String {
        age::x25519::Identity::generate().to_public().to_string()
    }

    fn problems(result: Result<(), SopsError>) -> Vec<Problem> {
        match result {
            Err(SopsError::Verification(p)) => p,
            other => panic!("expected verification problems, got {other:?}"),
        }
    }

    fn tenant_file(recipients: &[String]) -> String {
        let values = BTreeMap::from([("proxy-token".to_owned(), "pt-secret".to_owned())]);
        tenant_secret_file("openclaw-secrets", "customer-acme", &values, recipients).unwrap()
    }

    #[test]
    fn accepts_a_good_file() {
        let rs = vec![recipient(), recipient()];
        verify_without_keys(&tenant_file(&rs), "openclaw-secrets", "customer-acme", &rs).unwrap();
    }

    #[test]
    fn names_plaintext_keys_and_never_values() {
        let plain = "apiVersion: v1\nkind: Secret\nmetadata: {name: openclaw-secrets, namespace: customer-acme}\nstringData: {proxy-token: pt-secret}\n";
        let err = verify_without_keys(plain, "openclaw-secrets", "customer-acme", &[recipient()])
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("stringData.proxy-token") && !text.contains("pt-secret"),
            "{text}"
        );
        let SopsError::Verification(found) = err else {
            panic!("expected verification problems")
        };
        assert!(found.contains(&Problem::NotEncrypted));
        let paths: Vec<_> = found.iter().filter_map(Problem::path).collect();
        assert!(
            paths.contains(&"stringData.proxy-token".to_owned()),
            "{paths:?}"
        );
    }

    #[test]
    fn half_encrypted_file_is_rejected() {
        let rs = vec![recipient()];
        let enc = tenant_file(&rs);
        let half = enc.replacen(
            "stringData:\n",
            "stringData:\n  telegram-bot-token: leaked\n",
            1,
        );
        assert_eq!(
            problems(verify_without_keys(
                &half,
                "openclaw-secrets",
                "customer-acme",
                &rs
            )),
            vec![Problem::PlaintextValue {
                path: "stringData.telegram-bot-token".to_owned()
            }]
        );
    }

    #[test]
    fn reports_missing_and_extra_recipients_and_wrong_tenant() {
        let (a, b, c) = (recipient(), recipient(), recipient());
        let enc = tenant_file(&[a.clone(), b.clone()]);
        let found = problems(verify_without_keys(
            &enc,
            "other",
            "customer-other",
            &[a, c.clone()],
        ));
        assert_eq!(
            found,
            vec![
                Problem::NameMismatch {
                    expected: "other".into(),
                    found: Some("openclaw-secrets".into())
                },
                Problem::NamespaceMismatch {
                    expected: "customer-other".into(),
                    found: Some("customer-acme".into())
                },
                Problem::ExtraRecipient(b),
                Problem::MissingRecipient(c),
            ]
        );
    }
}
