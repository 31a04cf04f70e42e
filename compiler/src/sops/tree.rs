//! The document tree as sops sees it: which leaves exist, in what order, under what path, and
//! which of them the file's encryption rule says are encrypted.
//!
//! This module owns the walk that both encryption and decryption use, so that the MAC is
//! computed over exactly the leaves, in exactly the order, that sops itself visits: mapping
//! entries in document order, sequence items under their parent's path (sops does not put
//! indices in paths), `null` skipped, and the top-level `sops` key left out. It also owns the
//! mapping from YAML scalars to sops's scalar types.

use crate::yaml::Value;
use regex::Regex;

use super::cipher::Scalar;
use super::SopsError;

/// The suffix sops applies when a file names no encryption rule at all.
pub(crate) const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// Which leaves of a file are encrypted. A sops file carries at most one of these in its
/// metadata; with none, [`DEFAULT_UNENCRYPTED_SUFFIX`] applies.
#[derive(Clone, Debug)]
pub(crate) enum EncryptionRule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
}

impl EncryptionRule {
    /// sops's `shouldBeEncrypted` for one path. Regexes are searched, not anchored, against each
    /// path component, like Go's `regexp.Match`.
    pub(crate) fn encrypts(&self, path: &[&str]) -> bool {
        match self {
            EncryptionRule::UnencryptedSuffix(s) => !path.iter().any(|p| p.ends_with(s.as_str())),
            EncryptionRule::EncryptedSuffix(s) => path.iter().any(|p| p.ends_with(s.as_str())),
            EncryptionRule::UnencryptedRegex(r) => !path.iter().any(|p| r.is_match(p)),
            EncryptionRule::EncryptedRegex(r) => path.iter().any(|p| r.is_match(p)),
        }
    }
}

/// sops's additional authenticated data for a value: the path's keys, each followed by `:`.
pub(crate) fn aad_for(path: &[&str]) -> String {
    let mut aad = String::new();
    for p in path {
        aad.push_str(p);
        aad.push(':');
    }
    aad
}

/// Renders a path for diagnostics: `stringData.telegram-bot-token`.
pub(crate) fn display_path(path: &[&str]) -> String {
    path.join(".")
}

/// Reads a YAML scalar as sops would after go-yaml decoded it into an `interface{}`.
/// `Ok(None)` is `null`, which sops neither encrypts nor hashes.
pub(crate) fn scalar_of(value: &Value, path: &[&str]) -> Result<Option<Scalar>, SopsError> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::String(s) => Scalar::Str(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Scalar::Int(i)
            } else if n.is_u64() {
                return Err(SopsError::Unsupported(format!(
                    "{}: integers above 2^63-1 are not supported by sops",
                    display_path(path)
                )));
            } else {
                Scalar::Float(n.as_f64().expect("a YAML number is i64, u64 or f64"))
            }
        }
        Value::Tagged(_) => {
            return Err(SopsError::Unsupported(format!(
                "{}: YAML tags are not supported",
                display_path(path)
            )))
        }
        Value::Sequence(_) | Value::Mapping(_) => {
            unreachable!("scalar_of is called on leaves only")
        }
    }))
}

/// Turns a scalar back into YAML.
pub(crate) fn value_of(scalar: &Scalar) -> Value {
    match scalar {
        Scalar::Str(s) => Value::String(s.clone()),
        Scalar::Int(i) => Value::Number((*i).into()),
        Scalar::Float(f) => Value::Number((*f).into()),
        Scalar::Bool(b) => Value::Bool(*b),
    }
}

/// Visits every leaf of `value` in sops's order, letting `visit` replace it. `visit` gets the
/// leaf and its path.
pub(crate) fn walk_leaves_mut<F>(
    value: &mut Value,
    path: &mut Vec<String>,
    visit: &mut F,
) -> Result<(), SopsError>
where
    F: FnMut(&mut Value, &[&str]) -> Result<(), SopsError>,
{
    match value {
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                let Value::String(key) = key else {
                    return Err(SopsError::Unsupported(format!(
                        "{}: only string keys are supported (found {})",
                        if path.is_empty() {
                            "<root>".to_owned()
                        } else {
                            path.join(".")
                        },
                        describe_key(key)
                    )));
                };
                path.push(key.clone());
                walk_leaves_mut(child, path, visit)?;
                path.pop();
            }
            Ok(())
        }
        Value::Sequence(items) => {
            for item in items {
                walk_leaves_mut(item, path, visit)?;
            }
            Ok(())
        }
        Value::Tagged(tagged) => Err(SopsError::Unsupported(format!(
            "{}: YAML tag {} is not supported",
            path.join("."),
            tagged.tag
        ))),
        leaf => {
            let borrowed: Vec<&str> = path.iter().map(String::as_str).collect();
            visit(leaf, &borrowed)
        }
    }
}

fn describe_key(key: &Value) -> &'static str {
    match key {
        Value::Null => "a null key",
        Value::Bool(_) => "a boolean key",
        Value::Number(_) => "a numeric key",
        Value::String(_) => "a string key",
        Value::Sequence(_) => "a sequence key",
        Value::Mapping(_) => "a mapping key",
        Value::Tagged(_) => "a tagged key",
    }
}

/// Overwrites every string in a YAML tree before it is dropped. The YAML library offers no
/// zeroizing container; this is the next best thing for trees holding decrypted values.
pub(crate) fn scrub(value: &mut Value) {
    match value {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Sequence(items) => items.iter_mut().for_each(scrub),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| scrub(v)),
        Value::Tagged(tagged) => scrub(&mut tagged.value),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A YAML tree that holds plaintext and is scrubbed on drop.
pub(crate) struct PlainTree(pub(crate) Value);

impl Drop for PlainTree {
    fn drop(&mut self) {
        scrub(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_regex_matches_any_component() {
        let rule = EncryptionRule::EncryptedRegex(Regex::new("^(data|stringData)$").unwrap());
        assert!(rule.encrypts(&["stringData", "token"]));
        assert!(rule.encrypts(&["data", "x"]));
        assert!(!rule.encrypts(&["metadata", "name"]));
        assert!(!rule.encrypts(&["metadata", "stringDataX"]));
    }

    #[test]
    fn default_suffix_rule() {
        let rule = EncryptionRule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.into());
        assert!(rule.encrypts(&["a", "b"]));
        assert!(!rule.encrypts(&["a_unencrypted", "b"]));
    }

    #[test]
    fn aad_is_colon_terminated_path() {
        assert_eq!(
            aad_for(&["stringData", "proxy-token"]),
            "stringData:proxy-token:"
        );
    }

    #[test]
    fn walk_visits_in_document_order_without_indices() {
        let mut v: Value = crate::yaml::parse("b: 1\na: [x, {c: y}]\nn: null\n").unwrap();
        let mut seen = vec![];
        walk_leaves_mut(&mut v, &mut vec![], &mut |leaf, path| {
            seen.push((path.join("."), leaf.clone()));
            Ok(())
        })
        .unwrap();
        let paths: Vec<_> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["b", "a", "a.c", "n"]);
    }
}
