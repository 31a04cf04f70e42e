//! Property tests: any Secret round-trips through encryption and decryption, and any single
//! changed byte in a value's data, IV or tag, or in the MAC, is detected.

mod sops_support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use compiler::sops::{self, SopsError};
use compiler::yaml::{Mapping, Value};
use proptest::prelude::*;
use sops_support::{keypair, Key};

fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(keypair)
}

fn secret_key() -> impl Strategy<Value = String> {
    "[-._a-zA-Z0-9]{1,40}"
}

fn manifest(string_data: &BTreeMap<String, String>, data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), "openclaw-secrets".into());
    metadata.insert("namespace".into(), "customer-acme".into());
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("kind".into(), "Secret".into());
    doc.insert("metadata".into(), Value::Mapping(metadata));
    doc.insert("type".into(), "Opaque".into());
    let sd: Mapping = string_data
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect();
    doc.insert("stringData".into(), Value::Mapping(sd));
    let d: Mapping = data
        .iter()
        .map(|(k, v)| (k.as_str().into(), STANDARD.encode(v).into()))
        .collect();
    doc.insert("data".into(), Value::Mapping(d));
    compiler::yaml::to_string(&Value::Mapping(doc)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sops_round_trip_any_secret(
        string_data in prop::collection::btree_map(
            secret_key(),
            prop_oneof![
                Just(String::new()),
                any::<String>(),
                "\\PC{0,16}",
                prop::collection::vec(any::<char>(), 1000..3000).prop_map(|c| c.into_iter().collect()),
            ],
            0..6,
        ),
        data in prop::collection::btree_map(secret_key(), prop::collection::vec(any::<u8>(), 0..600), 0..4),
    ) {
        let key = key();
        let text = manifest(&string_data, &data);
        let encrypted = sops::encrypt_secret_manifest(&text, std::slice::from_ref(&key.recipient)).unwrap();
        // No value of any length that could not occur by chance appears in the output.
        let skeleton = manifest(&BTreeMap::new(), &BTreeMap::new());
        for value in string_data.values().filter(|v| v.chars().count() >= 8) {
            if !skeleton.contains(value.as_str()) {
                prop_assert!(!encrypted.contains(value.as_str()));
            }
        }
        if !string_data.is_empty() || !data.is_empty() {
            sops::verify_without_keys(&encrypted, "openclaw-secrets", "customer-acme", std::slice::from_ref(&key.recipient)).unwrap();
        }
        let secret = sops::decrypt(&encrypted, &key.identity).unwrap();
        prop_assert_eq!(secret.string_data(), &string_data);
        prop_assert_eq!(secret.data(), &data);
    }
}

/// One encrypted file, reused by the tamper cases.
fn fixture() -> &'static String {
    static FILE: OnceLock<String> = OnceLock::new();
    FILE.get_or_init(|| {
        let values = BTreeMap::from([
            (
                "telegram-bot-token".to_owned(),
                "123456:ABCdefGHIjkl".to_owned(),
            ),
            ("proxy-token".to_owned(), "pt_0123456789abcdef".to_owned()),
            ("gateway-token".to_owned(), "gw".to_owned()),
        ]);
        sops::tenant_secret_file(
            "openclaw-secrets",
            "customer-acme",
            &values,
            std::slice::from_ref(&key().recipient),
        )
        .unwrap()
    })
}

/// Byte ranges of the base64 payloads of `data:`, `iv:` and `tag:` in every `ENC[...]` of the
/// file, the MAC's included.
fn encrypted_fields(text: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("ENC[AES256_GCM,") {
        let start = from + start;
        let end = start + text[start..].find(']').unwrap();
        for field in ["data:", "iv:", "tag:"] {
            let f = start + text[start..end].find(field).unwrap() + field.len();
            let e = f + text[f..end].find(',').unwrap();
            ranges.push((f, e));
        }
        from = end;
    }
    ranges
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sops_detects_any_changed_byte(field in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), replacement in any::<prop::sample::Index>()) {
        let text = fixture();
        let fields = encrypted_fields(text);
        // 3 values + the MAC, 3 fields each.
        prop_assert_eq!(fields.len(), 12);
        let (start, end) = fields[field.index(fields.len())];
        let at = start + pos.index(end - start);
        let original = text.as_bytes()[at];
        let alphabet: Vec<u8> = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
            .iter()
            .copied()
            .filter(|&b| b != original)
            .collect();
        let mut tampered = text.clone().into_bytes();
        tampered[at] = alphabet[replacement.index(alphabet.len())];
        let tampered = String::from_utf8(tampered).unwrap();
        let result = sops::decrypt(&tampered, &key().identity);
        prop_assert!(result.is_err(), "byte {} changed, not detected", at);
        let err = result.unwrap_err();
        prop_assert!(
            matches!(
                err,
                SopsError::ValueTampered { .. } | SopsError::MalformedValue { .. } | SopsError::MacTampered | SopsError::MacMismatch
            ),
            "unexpected error: {err}"
        );
        // Never a plaintext value in the message.
        let message = err.to_string();
        prop_assert!(!message.contains("ABCdefGHIjkl") && !message.contains("pt_0123456789abcdef"));
    }
}

#[test]
fn sops_detects_swapped_values() {
    let text = fixture();
    let doc: Value = compiler::yaml::parse(text).unwrap();
    let a = doc["stringData"]["proxy-token"].as_str().unwrap();
    let b = doc["stringData"]["gateway-token"].as_str().unwrap();
    let swapped = text.replace(a, "@@A@@").replace(b, a).replace("@@A@@", b);
    assert!(matches!(
        sops::decrypt(&swapped, &key().identity),
        Err(SopsError::ValueTampered { path }) if path == "stringData.gateway-token"
    ));
}

#[test]
fn wrong_key_and_not_sops_have_clear_errors() {
    let other = keypair();
    let err = sops::decrypt(fixture(), &other.identity).unwrap_err();
    assert!(matches!(err, SopsError::NoMatchingIdentity { .. }));
    assert!(err.to_string().contains(&key().recipient), "{err}");
    let err = sops::decrypt("apiVersion: v1\nkind: Secret\n", &key().identity).unwrap_err();
    assert!(matches!(err, SopsError::NotSops), "{err}");
    let err = sops::decrypt("not: [yaml", &key().identity).unwrap_err();
    assert!(matches!(err, SopsError::Yaml(_)), "{err}");
}
