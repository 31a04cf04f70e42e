//! Whole-document operations on SOPS YAML: encrypt a tree, decrypt and verify one, re-wrap the
//! data key, re-encrypt.
//!
//! This module owns the order of operations sops follows (walk, encrypt or decrypt each leaf,
//! hash every leaf into the MAC, seal the MAC) and the parsing and emitting of the document
//! text. It is generic over document shape; what a Kubernetes Secret must look like is
//! [`super::secret`]'s business.

use crate::yaml::{Mapping, Value};
use zeroize::Zeroizing;

use super::age_keys::{self, AgeEntry, Identities};
use super::cipher::{self, DataKey, Scalar, ValueError};
use super::emit;
use super::mac::MacHasher;
use super::metadata::{self, Metadata, SOPS_KEY};
use super::tree::{self, EncryptionRule, PlainTree};
use super::{SopsError, SOPS_FORMAT_VERSION};

/// Parses one YAML document whose root is a mapping. Errors carry the parser's position and
/// problem, never document text.
pub(crate) fn parse_mapping(text: &str) -> Result<Mapping, SopsError> {
    let value: Value = crate::yaml::parse(text).map_err(|e| {
        SopsError::Yaml(match e.location() {
            Some(loc) => format!(
                "at line {} column {}: {}",
                loc.line(),
                loc.column(),
                yaml_problem(&e)
            ),
            None => yaml_problem(&e),
        })
    })?;
    match value {
        Value::Mapping(map) => Ok(map),
        _ => Err(SopsError::Yaml(
            "the document root must be a mapping".to_owned(),
        )),
    }
}

/// the YAML library's messages for syntax errors name the problem and position only; messages for
/// type errors may quote a scalar, and we only ever deserialize into `Value`, which has none.
/// Drop the position suffix, which we report ourselves.
fn yaml_problem(e: &crate::yaml::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// An encrypted file split into its payload and its metadata.
pub(crate) struct SopsFile {
    pub(crate) body: Mapping,
    pub(crate) metadata_value: Value,
    pub(crate) metadata: Metadata,
}

impl SopsFile {
    pub(crate) fn parse(text: &str) -> Result<Self, SopsError> {
        let mut body = parse_mapping(text)?;
        let metadata_value = body.shift_remove(SOPS_KEY).ok_or(SopsError::NotSops)?;
        let metadata = Metadata::parse(&metadata_value)?;
        Ok(Self {
            body,
            metadata_value,
            metadata,
        })
    }

    fn recipients(&self) -> Vec<String> {
        self.metadata
            .age
            .iter()
            .map(|e| e.recipient.clone())
            .collect()
    }

    /// Unwraps the data key with the first entry any identity opens.
    pub(crate) fn data_key(&self, identities: &Identities) -> Result<DataKey, SopsError> {
        if self.metadata.age.is_empty() {
            return Err(SopsError::Unsupported(
                "the file has no age recipients (only age is supported)".to_owned(),
            ));
        }
        identities
            .unwrap(&self.metadata.age)?
            .ok_or_else(|| SopsError::NoMatchingIdentity {
                recipients: self.recipients(),
            })
    }

    /// Decrypts every value and checks the MAC. The result is scrubbed on drop.
    pub(crate) fn decrypt(&self, key: &DataKey) -> Result<PlainTree, SopsError> {
        let meta = &self.metadata;
        let mut plain = PlainTree(Value::Mapping(self.body.clone()));
        let mut mac = MacHasher::new(meta.mac_only_encrypted);
        tree::walk_leaves_mut(&mut plain.0, &mut Vec::new(), &mut |leaf, path| {
            let encrypted = meta.rule.encrypts(path);
            let scalar = if encrypted {
                match leaf {
                    Value::Null => return Ok(()),
                    // sops leaves empty strings as they are: there is nothing to hide.
                    Value::String(s) if s.is_empty() => Scalar::Str(String::new()),
                    Value::String(s) => cipher::decrypt(s, key, &tree::aad_for(path))
                        .map_err(|e| value_error(e, path))?,
                    _ => {
                        return Err(SopsError::PlaintextValue {
                            path: tree::display_path(path),
                        })
                    }
                }
            } else {
                match tree::scalar_of(leaf, path)? {
                    Some(scalar) => scalar,
                    None => return Ok(()),
                }
            };
            mac.add(&scalar, encrypted);
            if encrypted {
                *leaf = tree::value_of(&scalar);
            }
            Ok(())
        })?;
        let computed = Zeroizing::new(mac.finish());
        let stored = match cipher::decrypt(&meta.mac, key, &meta.mac_aad()) {
            Ok(scalar) => match &scalar {
                Scalar::Str(s) => Zeroizing::new(s.clone()),
                _ => {
                    return Err(SopsError::InvalidMetadata(
                        "sops.mac is not of type str".to_owned(),
                    ))
                }
            },
            Err(ValueError::Authentication) => return Err(SopsError::MacTampered),
            Err(ValueError::Malformed(reason) | ValueError::BadType(reason)) => {
                return Err(SopsError::MalformedValue {
                    path: "sops.mac".to_owned(),
                    reason,
                })
            }
        };
        if *stored != *computed {
            return Err(SopsError::MacMismatch);
        }
        Ok(plain)
    }
}

fn value_error(e: ValueError, path: &[&str]) -> SopsError {
    let path = tree::display_path(path);
    match e {
        ValueError::Authentication => SopsError::ValueTampered { path },
        ValueError::Malformed(reason) | ValueError::BadType(reason) => {
            SopsError::MalformedValue { path, reason }
        }
    }
}

/// Encrypts a plaintext document under `rule` for `recipients` with a fresh data key, and
/// returns the SOPS YAML text.
pub(crate) fn encrypt_mapping(
    plain: &Mapping,
    rule: EncryptionRule,
    mac_only_encrypted: bool,
    recipients: &[String],
) -> Result<String, SopsError> {
    if plain.contains_key(SOPS_KEY) {
        return Err(SopsError::AlreadyEncrypted);
    }
    // Check the recipients before doing any work on values.
    age_keys::parse_recipients(recipients)?;
    let key = cipher::generate_data_key();
    let entries = age_keys::wrap_for_all(&key, recipients)?;
    encrypt_with_key(plain, rule, mac_only_encrypted, &key, &entries)
}

fn encrypt_with_key(
    plain: &Mapping,
    rule: EncryptionRule,
    mac_only_encrypted: bool,
    key: &DataKey,
    entries: &[AgeEntry],
) -> Result<String, SopsError> {
    let mut doc = PlainTree(Value::Mapping(plain.clone()));
    let mut mac = MacHasher::new(mac_only_encrypted);
    tree::walk_leaves_mut(&mut doc.0, &mut Vec::new(), &mut |leaf, path| {
        let Some(scalar) = tree::scalar_of(leaf, path)? else {
            return Ok(());
        };
        let encrypted = rule.encrypts(path);
        mac.add(&scalar, encrypted);
        let empty = matches!(&scalar, Scalar::Str(s) if s.is_empty());
        if encrypted && !empty {
            let mut old = std::mem::replace(
                leaf,
                Value::String(cipher::encrypt(&scalar, key, &tree::aad_for(path))),
            );
            tree::scrub(&mut old);
        }
        Ok(())
    })?;
    let lastmodified = metadata::now_lastmodified();
    let mac_plain = Scalar::Str(mac.finish());
    let encrypted_mac = cipher::encrypt(&mac_plain, key, &lastmodified);
    let meta = metadata::emit(
        entries,
        &lastmodified,
        &encrypted_mac,
        &rule,
        mac_only_encrypted,
        SOPS_FORMAT_VERSION,
    );
    let Value::Mapping(body) = &doc.0 else {
        unreachable!("the root stays a mapping")
    };
    // Every leaf the rule covers is ciphertext now, so emitting is safe to do in the clear.
    emit(body, meta)
}

/// Emits a payload plus its `sops:` block (last, as sops does).
fn emit(body: &Mapping, metadata: Value) -> Result<String, SopsError> {
    let mut out = body.clone();
    out.insert(SOPS_KEY.into(), metadata);
    emit::document(&out)
}

/// Decrypts any SOPS YAML document (not only Secrets) with the given identity file contents,
/// verifying the MAC, and returns the plaintext YAML.
pub fn decrypt_document(sops_yaml: &str, identities: &str) -> Result<Zeroizing<String>, SopsError> {
    let identities = Identities::parse(identities)?;
    let file = SopsFile::parse(sops_yaml)?;
    let key = file.data_key(&identities)?;
    let plain = file.decrypt(&key)?;
    emit_plain(&plain)
}

pub(crate) fn emit_plain(plain: &PlainTree) -> Result<Zeroizing<String>, SopsError> {
    let Value::Mapping(map) = &plain.0 else {
        unreachable!("the root stays a mapping")
    };
    emit::document(map).map(Zeroizing::new)
}

/// Re-wraps the file's data key for `new_recipients`, leaving every encrypted value, the MAC
/// and `lastmodified` byte for byte as they were. The file is decrypted and its MAC verified
/// first, so a tampered file is never re-wrapped.
pub fn rotate_recipients(
    sops_yaml: &str,
    identities: &str,
    new_recipients: &[String],
) -> Result<String, SopsError> {
    let identities = Identities::parse(identities)?;
    let file = SopsFile::parse(sops_yaml)?;
    let key = file.data_key(&identities)?;
    drop(file.decrypt(&key)?);
    let entries = age_keys::wrap_for_all(&key, new_recipients)?;
    let mut metadata_value = file.metadata_value.clone();
    let Value::Mapping(meta) = &mut metadata_value else {
        unreachable!("Metadata::parse accepted a mapping")
    };
    meta.insert("age".into(), metadata::age_entries_value(&entries));
    emit(&file.body, metadata_value)
}

/// Decrypts the file and encrypts it again from scratch: a new data key, new IVs for every
/// value, a new MAC and `lastmodified`, wrapped for `new_recipients`. The encryption rule is
/// kept. Use after a key may have leaked.
pub fn reencrypt(
    sops_yaml: &str,
    identities: &str,
    new_recipients: &[String],
) -> Result<String, SopsError> {
    let identities = Identities::parse(identities)?;
    let file = SopsFile::parse(sops_yaml)?;
    let key = file.data_key(&identities)?;
    let plain = file.decrypt(&key)?;
    let Value::Mapping(plain_map) = &plain.0 else {
        unreachable!("the root stays a mapping")
    };
    encrypt_mapping(
        plain_map,
        file.metadata.rule.clone(),
        file.metadata.mac_only_encrypted,
        new_recipients,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use regex::Regex;

    fn rule() -> EncryptionRule {
        EncryptionRule::EncryptedRegex(Regex::new(super::super::ENCRYPTED_REGEX).unwrap())
    }

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_public().to_string(),
            id.to_string().expose_secret().to_owned(),
        )
    }

    const DOC: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  creationTimestamp: null\n  labels: {n: 3, f: 1.5, b: true}\nstringData:\n  a: hello\n  empty: ''\n  n: 42\n  list: [x, y]\n";

    #[test]
    fn round_trip_with_typed_values() {
        let (r, id) = keypair();
        let enc = encrypt_mapping(&parse_mapping(DOC).unwrap(), rule(), false, &[r]).unwrap();
        assert!(!enc.contains("hello"));
        assert!(enc.contains("type:int]"));
        assert!(
            enc.contains("empty: ''") || enc.contains("empty: \"\""),
            "{enc}"
        );
        let plain = decrypt_document(&enc, &id).unwrap();
        assert_eq!(
            crate::yaml::parse::<Value>(&plain).unwrap(),
            crate::yaml::parse::<Value>(DOC).unwrap()
        );
    }

    #[test]
    fn mac_covers_plain_metadata_and_order() {
        let (r, id) = keypair();
        let enc = encrypt_mapping(&parse_mapping(DOC).unwrap(), rule(), false, &[r]).unwrap();
        let renamed = enc.replace("name: s", "name: t");
        assert!(matches!(
            decrypt_document(&renamed, &id),
            Err(SopsError::MacMismatch)
        ));
    }

    #[test]
    fn rotation_keeps_values_byte_for_byte() {
        let (r1, id1) = keypair();
        let (r2, id2) = keypair();
        let enc = encrypt_mapping(&parse_mapping(DOC).unwrap(), rule(), false, &[r1]).unwrap();
        let rotated = rotate_recipients(&enc, &id1, std::slice::from_ref(&r2)).unwrap();
        let values = |text: &str| {
            let mut f = SopsFile::parse(text).unwrap();
            f.body.shift_remove("metadata");
            (f.body, f.metadata.mac, f.metadata.lastmodified)
        };
        assert_eq!(values(&enc), values(&rotated));
        assert!(matches!(
            decrypt_document(&rotated, &id1),
            Err(SopsError::NoMatchingIdentity { .. })
        ));
        decrypt_document(&rotated, &id2).unwrap();
        let fresh = reencrypt(&rotated, &id2, &[r2]).unwrap();
        assert_ne!(values(&fresh).1, values(&rotated).1);
        decrypt_document(&fresh, &id2).unwrap();
    }

    #[test]
    fn errors_for_not_sops_and_already_encrypted() {
        let (r, id) = keypair();
        assert!(matches!(
            decrypt_document(DOC, &id),
            Err(SopsError::NotSops)
        ));
        let enc = encrypt_mapping(
            &parse_mapping(DOC).unwrap(),
            rule(),
            false,
            std::slice::from_ref(&r),
        )
        .unwrap();
        assert!(matches!(
            encrypt_mapping(&parse_mapping(&enc).unwrap(), rule(), false, &[r]),
            Err(SopsError::AlreadyEncrypted)
        ));
        assert!(matches!(
            decrypt_document("a: [", &id),
            Err(SopsError::Yaml(_))
        ));
    }
}
