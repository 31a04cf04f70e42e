//! Kubernetes Secrets as SOPS files: the shape this platform encrypts and the decrypted view
//! operators get back.
//!
//! This module owns what a Secret must look like before it is encrypted (apiVersion v1, kind
//! Secret, a name, string values under `data` and `stringData`, valid key names, base64 in
//! `data`) and the tenant convention (`openclaw-secrets` in `customer-<name>`). `data` values
//! are base64 text to sops and are encrypted as such.

use std::collections::BTreeMap;

use crate::yaml::{Mapping, Value};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use regex::Regex;
use zeroize::{Zeroize, Zeroizing};

use super::age_keys::Identities;
use super::document::{self, SopsFile};
use super::tree::{EncryptionRule, PlainTree};
use super::{SopsError, ENCRYPTED_REGEX};

/// The name of every tenant's Secret.
pub const TENANT_SECRET_NAME: &str = "openclaw-secrets";

/// The `stringData` keys a tenant's Secret carries.
pub const TENANT_SECRET_KEYS: [&str; 3] = ["telegram-bot-token", "proxy-token", "gateway-token"];

/// The two maps of a Secret that hold secret material.
pub(crate) const PAYLOAD_FIELDS: [&str; 2] = ["data", "stringData"];

/// A Secret key as the API server accepts it.
pub(crate) fn check_secret_key(field: &str, key: &str) -> Result<(), SopsError> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(SopsError::InvalidSecret(format!(
            "{field} key {key:?} is not a valid Secret key (1-253 characters of [-._a-zA-Z0-9])"
        )))
    }
}

fn str_field<'a>(map: &'a Mapping, name: &str) -> Option<&'a str> {
    map.get(name).and_then(Value::as_str)
}

/// Checks that the manifest is a Secret this module can encrypt. Errors name keys and fields,
/// never values.
fn check_secret_shape(doc: &Mapping) -> Result<(), SopsError> {
    if str_field(doc, "apiVersion") != Some("v1") {
        return Err(SopsError::InvalidSecret("apiVersion must be v1".to_owned()));
    }
    if str_field(doc, "kind") != Some("Secret") {
        return Err(SopsError::InvalidSecret("kind must be Secret".to_owned()));
    }
    let metadata = doc
        .get("metadata")
        .and_then(Value::as_mapping)
        .ok_or_else(|| SopsError::InvalidSecret("metadata must be a mapping".to_owned()))?;
    if str_field(metadata, "name").is_none_or(str::is_empty) {
        return Err(SopsError::InvalidSecret(
            "metadata.name is missing".to_owned(),
        ));
    }
    for field in PAYLOAD_FIELDS {
        let Some(payload) = doc.get(field) else {
            continue;
        };
        let Value::Mapping(payload) = payload else {
            return Err(SopsError::InvalidSecret(format!(
                "{field} must be a mapping"
            )));
        };
        for (key, value) in payload {
            let Value::String(key) = key else {
                return Err(SopsError::InvalidSecret(format!(
                    "{field} has a non-string key"
                )));
            };
            check_secret_key(field, key)?;
            let Value::String(value) = value else {
                return Err(SopsError::InvalidSecret(format!(
                    "{field}.{key} must be a string"
                )));
            };
            if field == "data" && STANDARD.decode(value).is_err() {
                return Err(SopsError::InvalidSecret(format!(
                    "data.{key} is not valid base64"
                )));
            }
        }
    }
    Ok(())
}

fn payload_rule() -> EncryptionRule {
    EncryptionRule::EncryptedRegex(
        Regex::new(ENCRYPTED_REGEX).expect("the constant is a valid regex"),
    )
}

/// Encrypts a Kubernetes Secret manifest into SOPS YAML for the given age recipients, with
/// `encrypted_regex: ^(data|stringData)$`: apiVersion, kind and metadata stay in plaintext.
pub fn encrypt_secret_manifest(
    secret_yaml: &str,
    recipients: &[String],
) -> Result<String, SopsError> {
    let doc = PlainTree(Value::Mapping(document::parse_mapping(secret_yaml)?));
    let Value::Mapping(map) = &doc.0 else {
        unreachable!("parse_mapping returns a mapping")
    };
    if map.contains_key(super::metadata::SOPS_KEY) {
        return Err(SopsError::AlreadyEncrypted);
    }
    check_secret_shape(map)?;
    document::encrypt_mapping(map, payload_rule(), false, recipients)
}

/// Builds a tenant's Secret (apiVersion v1, kind Secret, `metadata.name`/`namespace`, type
/// Opaque, `stringData` in key order) and encrypts it for `recipients`.
pub fn tenant_secret_file(
    name: &str,
    namespace: &str,
    string_data: &BTreeMap<String, String>,
    recipients: &[String],
) -> Result<String, SopsError> {
    if name.is_empty() || namespace.is_empty() {
        return Err(SopsError::InvalidSecret(
            "name and namespace must not be empty".to_owned(),
        ));
    }
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), name.into());
    metadata.insert("namespace".into(), namespace.into());
    let mut payload = Mapping::new();
    for (key, value) in string_data {
        check_secret_key("stringData", key)?;
        payload.insert(key.as_str().into(), value.as_str().into());
    }
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("kind".into(), "Secret".into());
    doc.insert("metadata".into(), Value::Mapping(metadata));
    doc.insert("type".into(), "Opaque".into());
    doc.insert("stringData".into(), Value::Mapping(payload));
    let doc = PlainTree(Value::Mapping(doc));
    let Value::Mapping(map) = &doc.0 else {
        unreachable!("built as a mapping")
    };
    document::encrypt_mapping(map, payload_rule(), false, recipients)
}

/// A decrypted Secret. Values are zeroized on drop and never shown by `Debug`.
pub struct DecryptedSecret {
    name: String,
    namespace: Option<String>,
    string_data: BTreeMap<String, String>,
    data: BTreeMap<String, Vec<u8>>,
    yaml: Zeroizing<String>,
}

impl DecryptedSecret {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The `stringData` values.
    pub fn string_data(&self) -> &BTreeMap<String, String> {
        &self.string_data
    }

    /// The `data` values, base64-decoded.
    pub fn data(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.data
    }

    /// The whole decrypted manifest as YAML, without the `sops:` block.
    pub fn to_yaml(&self) -> &str {
        &self.yaml
    }
}

impl std::fmt::Debug for DecryptedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptedSecret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field(
                "string_data_keys",
                &self.string_data.keys().collect::<Vec<_>>(),
            )
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for DecryptedSecret {
    fn drop(&mut self) {
        self.string_data.values_mut().for_each(Zeroize::zeroize);
        self.data.values_mut().for_each(Zeroize::zeroize);
    }
}

/// Decrypts a SOPS-encrypted Secret with the contents of an age identity file (the format of
/// `SOPS_AGE_KEY_FILE`), verifying every value and the MAC.
pub fn decrypt(sops_yaml: &str, identities: &str) -> Result<DecryptedSecret, SopsError> {
    let identities = Identities::parse(identities)?;
    let file = SopsFile::parse(sops_yaml)?;
    let key = file.data_key(&identities)?;
    let plain = file.decrypt(&key)?;
    secret_from_plain(&plain)
}

fn secret_from_plain(plain: &PlainTree) -> Result<DecryptedSecret, SopsError> {
    let Value::Mapping(doc) = &plain.0 else {
        unreachable!("the root stays a mapping")
    };
    if str_field(doc, "kind") != Some("Secret") {
        return Err(SopsError::InvalidSecret("kind must be Secret".to_owned()));
    }
    let metadata = doc.get("metadata").and_then(Value::as_mapping);
    let name = metadata
        .and_then(|m| str_field(m, "name"))
        .ok_or_else(|| SopsError::InvalidSecret("metadata.name is missing".to_owned()))?
        .to_owned();
    let namespace = metadata
        .and_then(|m| str_field(m, "namespace"))
        .map(str::to_owned);
    let mut secret = DecryptedSecret {
        name,
        namespace,
        string_data: BTreeMap::new(),
        data: BTreeMap::new(),
        yaml: document::emit_plain(plain)?,
    };
    for field in PAYLOAD_FIELDS {
        let Some(payload) = doc.get(field) else {
            continue;
        };
        let payload = payload
            .as_mapping()
            .ok_or_else(|| SopsError::InvalidSecret(format!("{field} must be a mapping")))?;
        for (key, value) in payload {
            let key = key
                .as_str()
                .ok_or_else(|| SopsError::InvalidSecret(format!("{field} has a non-string key")))?;
            let value = value.as_str().ok_or_else(|| {
                SopsError::InvalidSecret(format!("{field}.{key} is not a string"))
            })?;
            if field == "data" {
                let bytes = STANDARD.decode(value).map_err(|_| {
                    SopsError::InvalidSecret(format!("data.{key} is not valid base64"))
                })?;
                secret.data.insert(key.to_owned(), bytes);
            } else {
                secret.string_data.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn tenant_file_round_trips_and_keeps_metadata_plain() {
        let id = age::x25519::Identity::generate();
        let values: BTreeMap<String, String> = TENANT_SECRET_KEYS
            .iter()
            .map(|k| (k.to_string(), format!("value-of-{k}")))
            .collect();
        let enc = tenant_secret_file(
            TENANT_SECRET_NAME,
            "customer-acme",
            &values,
            &[id.to_public().to_string()],
        )
        .unwrap();
        assert!(enc.contains("name: openclaw-secrets"));
        assert!(enc.contains("namespace: customer-acme"));
        let doc: Value = crate::yaml::parse(&enc).unwrap();
        assert_eq!(
            doc["sops"]["encrypted_regex"].as_str(),
            Some(ENCRYPTED_REGEX)
        );
        assert!(!enc.contains("value-of"));
        let secret = decrypt(&enc, id.to_string().expose_secret()).unwrap();
        assert_eq!(secret.name(), TENANT_SECRET_NAME);
        assert_eq!(secret.namespace(), Some("customer-acme"));
        assert_eq!(secret.string_data(), &values);
        assert!(!format!("{secret:?}").contains("value-of"));
    }

    #[test]
    fn manifest_checks_name_fields_not_values() {
        let r = vec![age::x25519::Identity::generate().to_public().to_string()];
        let err = encrypt_secret_manifest(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: 'not base64 sekrit'}\n",
            &r,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("data.k") && !err.contains("sekrit"), "{err}");
        let err =
            encrypt_secret_manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n", &r)
                .unwrap_err();
        assert!(matches!(err, SopsError::InvalidSecret(_)));
        let err = encrypt_secret_manifest(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {'bad key': sekrit}\n",
            &r,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad key") && !err.contains("sekrit"), "{err}");
    }

    #[test]
    fn binary_data_round_trips() {
        let id = age::x25519::Identity::generate();
        let bytes: Vec<u8> = (0..=255).collect();
        let manifest = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  blob: {}\n",
            STANDARD.encode(&bytes)
        );
        let enc = encrypt_secret_manifest(&manifest, &[id.to_public().to_string()]).unwrap();
        let secret = decrypt(&enc, id.to_string().expose_secret()).unwrap();
        assert_eq!(secret.data()["blob"], bytes);
    }
}
