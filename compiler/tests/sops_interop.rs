//! Interoperability with the official tools, both ways: the `sops` binary decrypts what we
//! write (MAC included), we decrypt what `sops` writes, and the `age` CLI opens our wrapped
//! data keys. Plus a committed file written by sops 3.11, so one direction is checked even
//! where the tools are missing.

mod sops_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::AesGcm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use compiler::sops::{self, SopsError};
use compiler::yaml::Value;
use sops_support::{identity_file, keypair, tool, Key};

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sops");

/// A Secret that exercises what sops types and skips: null, ints, floats and booleans in
/// plaintext metadata, an empty value, unicode, a multi-line value and binary `data`.
fn tricky_manifest() -> String {
    let blob: Vec<u8> = (0..=255u8).rev().collect();
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: openclaw-secrets
  namespace: customer-acme
  creationTimestamp: null
  labels:
    app.kubernetes.io/part-of: openclaw
    replicas: 3
    ratio: 0.25
    enabled: true
  annotations:
    note: "contains: colons, # hashes and 'quotes'"
    yaml11-bool: "yes"
    yaml11-on: "on"
    octal-looking: "012"
    hex-looking: "0x1F"
    float-looking: "1e3"
    null-looking: "~"
    date-looking: "2001-12-14"
    time-looking: "2001-12-14T21:59:43.10-05:00"
    underscored-int: "1_000"
    equals: "="
    unicode: "naïve ✓"
    empty: ""
type: Opaque
stringData:
  telegram-bot-token: "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
  proxy-token: "päss wörd ✓ 🔑"
  gateway-token: ""
  multi-line: |
    line one
    line two
  looks-like-int: "42"
  leading-space: "  padded  "
data:
  blob: {}
"#,
        STANDARD.encode(blob)
    )
}

fn sops_cmd(sops: &Path, key_file: &Path) -> Command {
    let mut cmd = Command::new(sops);
    cmd.env("SOPS_AGE_KEY_FILE", key_file)
        .env_remove("SOPS_AGE_KEY")
        // Keep sops from phoning home for version checks.
        .env("SOPS_DISABLE_VERSION_CHECK", "1");
    cmd
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn yaml(text: &str) -> Value {
    compiler::yaml::parse(text).unwrap()
}

#[test]
fn sops_decrypts_what_we_write_for_every_recipient() {
    let Some(sops_bin) = tool("sops") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (keypair(), keypair());
    let manifest = tricky_manifest();
    let encrypted =
        sops::encrypt_secret_manifest(&manifest, &[a.recipient.clone(), b.recipient.clone()])
            .unwrap();
    let file = dir.path().join("secrets.sops.yaml");
    std::fs::write(&file, &encrypted).unwrap();
    for (name, key) in [("a.txt", &a), ("b.txt", &b)] {
        let key_file = identity_file(dir.path(), name, key);
        let out = sops_cmd(&sops_bin, &key_file)
            .args(["--decrypt", "--input-type", "yaml", "--output-type", "yaml"])
            .arg(&file)
            .output()
            .unwrap();
        let plain = ok(out, "sops --decrypt");
        assert_eq!(yaml(&plain), yaml(&manifest));
    }
}

#[test]
fn sops_decrypts_tenant_files_and_rotations() {
    let Some(sops_bin) = tool("sops") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (keypair(), keypair());
    let values: BTreeMap<String, String> = sops::TENANT_SECRET_KEYS
        .iter()
        .map(|k| (k.to_string(), format!("{k}-value")))
        .collect();
    let written = sops::tenant_secret_file(
        sops::TENANT_SECRET_NAME,
        "customer-acme",
        &values,
        std::slice::from_ref(&old.recipient),
    )
    .unwrap();
    let rotated = sops::rotate_recipients(
        &written,
        &old.identity,
        std::slice::from_ref(&new.recipient),
    )
    .unwrap();
    let reencrypted = sops::reencrypt(
        &rotated,
        &new.identity,
        std::slice::from_ref(&new.recipient),
    )
    .unwrap();
    let old_key = identity_file(dir.path(), "old.txt", &old);
    let new_key = identity_file(dir.path(), "new.txt", &new);
    for (label, text, key, should_work) in [
        ("written", &written, &old_key, true),
        ("rotated", &rotated, &new_key, true),
        ("rotated, old key", &rotated, &old_key, false),
        ("re-encrypted", &reencrypted, &new_key, true),
    ] {
        let file = dir.path().join("f.sops.yaml");
        std::fs::write(&file, text).unwrap();
        let out = sops_cmd(&sops_bin, key)
            .args(["--decrypt"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.success(), should_work, "{label}");
        if should_work {
            let plain = yaml(&ok(out, label));
            for (k, v) in &values {
                assert_eq!(plain["stringData"][k.as_str()].as_str(), Some(v.as_str()));
            }
        }
    }
}

#[test]
fn sops_checks_our_mac() {
    let Some(sops_bin) = tool("sops") else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keypair();
    let encrypted =
        sops::encrypt_secret_manifest(&tricky_manifest(), std::slice::from_ref(&key.recipient))
            .unwrap();
    // A plaintext field is covered by the MAC: sops must refuse the file once it changes.
    let tampered = encrypted.replace("namespace: customer-acme", "namespace: customer-evil");
    assert_ne!(tampered, encrypted);
    let file = dir.path().join("f.sops.yaml");
    std::fs::write(&file, tampered).unwrap();
    let key_file = identity_file(dir.path(), "k.txt", &key);
    let out = sops_cmd(&sops_bin, &key_file)
        .arg("--decrypt")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MAC"), "{stderr}");
}

fn sops_encrypt(sops_bin: &Path, dir: &Path, key: &Key, plain: &str, extra: &[&str]) -> String {
    let input = dir.join("plain.yaml");
    std::fs::write(&input, plain).unwrap();
    let out = Command::new(sops_bin)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .current_dir(dir)
        .args(["--encrypt", "--age", &key.recipient])
        .args(extra)
        .arg(&input)
        .output()
        .unwrap();
    ok(out, "sops --encrypt")
}

#[test]
fn we_decrypt_what_sops_writes() {
    let Some(sops_bin) = tool("sops") else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keypair();
    let manifest = tricky_manifest();
    let encrypted = sops_encrypt(
        &sops_bin,
        dir.path(),
        &key,
        &manifest,
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    assert!(encrypted.contains("ENC[AES256_GCM"));
    // Our keyless check accepts it, too.
    sops::verify_without_keys(
        &encrypted,
        "openclaw-secrets",
        "customer-acme",
        std::slice::from_ref(&key.recipient),
    )
    .unwrap();
    let secret = sops::decrypt(&encrypted, &key.identity).unwrap();
    assert_eq!(yaml(secret.to_yaml()), yaml(&manifest));
    assert_eq!(
        secret.string_data()["proxy-token"],
        "päss wörd ✓ 🔑".to_owned()
    );
    assert_eq!(secret.data()["blob"], (0..=255u8).rev().collect::<Vec<_>>());

    // Default rules (everything encrypted but *_unencrypted keys), typed values included.
    let generic = "a: 1\nb_unencrypted: plain\nc: [true, 2.5, text]\nd: {e: null, f: ''}\n";
    let encrypted = sops_encrypt(&sops_bin, dir.path(), &key, generic, &[]);
    let plain = sops::decrypt_document(&encrypted, &key.identity).unwrap();
    assert_eq!(yaml(&plain), yaml(generic));

    // The other encryption rules, and a MAC over encrypted values only.
    for rule in [
        &["--unencrypted-regex", "^b_"][..],
        &["--encrypted-suffix", "a"],
        &[
            "--unencrypted-suffix",
            "_unencrypted",
            "--mac-only-encrypted",
        ],
        &["--encrypted-regex", "^(a|c)$", "--mac-only-encrypted"],
    ] {
        let encrypted = sops_encrypt(&sops_bin, dir.path(), &key, generic, rule);
        let plain = sops::decrypt_document(&encrypted, &key.identity)
            .unwrap_or_else(|e| panic!("{rule:?}: {e}"));
        assert_eq!(yaml(&plain), yaml(generic), "{rule:?}");
        let rewrapped = sops::rotate_recipients(
            &encrypted,
            &key.identity,
            std::slice::from_ref(&key.recipient),
        )
        .unwrap();
        let fresh = sops::reencrypt(
            &rewrapped,
            &key.identity,
            std::slice::from_ref(&key.recipient),
        )
        .unwrap();
        assert_eq!(
            yaml(&sops::decrypt_document(&fresh, &key.identity).unwrap()),
            yaml(generic),
            "{rule:?}"
        );
        // sops reads our re-encryption under the same rule, too.
        let file = dir.path().join("fresh.sops.yaml");
        std::fs::write(&file, &fresh).unwrap();
        let key_file = identity_file(dir.path(), "k.txt", &key);
        let out = sops_cmd(&sops_bin, &key_file)
            .arg("--decrypt")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(yaml(&ok(out, "sops --decrypt")), yaml(generic), "{rule:?}");
    }

    // And sops's MAC check is ours: altering the plaintext field breaks it.
    let tampered = encrypted.replace("b_unencrypted: plain", "b_unencrypted: other");
    assert!(matches!(
        sops::decrypt_document(&tampered, &key.identity),
        Err(SopsError::MacMismatch)
    ));
}

/// The age CLI opens the armored envelope we write, and what comes out really is the data key
/// the values are encrypted with.
#[test]
fn age_cli_opens_our_sops_data_key() {
    let Some(age_bin) = tool("age") else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keypair();
    let values = BTreeMap::from([("proxy-token".to_owned(), "pt-1234".to_owned())]);
    let encrypted = sops::tenant_secret_file(
        sops::TENANT_SECRET_NAME,
        "customer-acme",
        &values,
        std::slice::from_ref(&key.recipient),
    )
    .unwrap();
    let doc = yaml(&encrypted);
    let enc = doc["sops"]["age"][0]["enc"].as_str().unwrap();
    assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
    let envelope = dir.path().join("datakey.age");
    std::fs::write(&envelope, enc).unwrap();
    let key_file = identity_file(dir.path(), "k.txt", &key);
    let out = Command::new(age_bin)
        .arg("-d")
        .arg("-i")
        .arg(&key_file)
        .arg(&envelope)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data_key = out.stdout;
    assert_eq!(data_key.len(), 32);

    // Open the value by hand with that key: AES-256-GCM, 32-byte IV, path as AAD.
    let value = doc["stringData"]["proxy-token"].as_str().unwrap();
    let fields: BTreeMap<&str, &str> = value
        .trim_start_matches("ENC[AES256_GCM,")
        .trim_end_matches(']')
        .split(',')
        .map(|f| f.split_once(':').unwrap())
        .collect();
    let mut sealed = STANDARD.decode(fields["data"]).unwrap();
    sealed.extend(STANDARD.decode(fields["tag"]).unwrap());
    let iv = STANDARD.decode(fields["iv"]).unwrap();
    assert_eq!(iv.len(), 32);
    let cipher = AesGcm::<Aes256, U32>::new_from_slice(&data_key).unwrap();
    let plain = cipher
        .decrypt(
            iv.as_slice().into(),
            Payload {
                msg: &sealed,
                aad: b"stringData:proxy-token:",
            },
        )
        .unwrap();
    assert_eq!(plain, b"pt-1234");
    assert_eq!(fields["type"], "str");
}

/// A file written by `sops 3.11.0 --encrypt --age … --encrypted-regex '^(data|stringData)$'`,
/// with its test-only key, checked without needing the tools installed.
#[test]
fn decrypts_committed_sops_fixture() {
    let encrypted =
        std::fs::read_to_string(format!("{FIXTURE_DIR}/written-by-sops.sops.yaml")).unwrap();
    let identity = std::fs::read_to_string(format!("{FIXTURE_DIR}/test-only-key.txt")).unwrap();
    let expected =
        std::fs::read_to_string(format!("{FIXTURE_DIR}/written-by-sops.plain.yaml")).unwrap();
    let plain = sops::decrypt_document(&encrypted, &identity).unwrap();
    assert_eq!(yaml(&plain), yaml(&expected));
    let wrong = keypair();
    assert!(matches!(
        sops::decrypt_document(&encrypted, &wrong.identity),
        Err(SopsError::NoMatchingIdentity { .. })
    ));
}

mod arbitrary_values {
    //! sops reads back arbitrary strings exactly as we hashed them, whatever YAML quoting
    //! they need, in plaintext metadata as well as in encrypted values.

    use super::*;
    use compiler::yaml::Mapping;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn sops_reads_back_any_strings(
            annotations in prop::collection::btree_map("[a-z][a-z0-9.-]{0,20}", any::<String>(), 0..4),
            values in prop::collection::btree_map("[-._a-zA-Z0-9]{1,20}", any::<String>(), 1..4),
        ) {
            let Some(sops_bin) = tool("sops") else { return Ok(()) };
            let mut metadata = Mapping::new();
            metadata.insert("name".into(), "openclaw-secrets".into());
            let ann: Mapping = annotations.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect();
            metadata.insert("annotations".into(), Value::Mapping(ann));
            let sd: Mapping = values.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect();
            let mut doc = Mapping::new();
            doc.insert("apiVersion".into(), "v1".into());
            doc.insert("kind".into(), "Secret".into());
            doc.insert("metadata".into(), Value::Mapping(metadata));
            doc.insert("stringData".into(), Value::Mapping(sd));
            let manifest = compiler::yaml::to_string(&Value::Mapping(doc)).unwrap();

            let key = keypair();
            let encrypted = sops::encrypt_secret_manifest(&manifest, std::slice::from_ref(&key.recipient)).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("f.sops.yaml");
            std::fs::write(&file, &encrypted).unwrap();
            let key_file = identity_file(dir.path(), "k.txt", &key);
            let out = sops_cmd(&sops_bin, &key_file)
                .args(["--decrypt", "--input-type", "yaml", "--output-type", "json"])
                .arg(&file)
                .output()
                .unwrap();
            prop_assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), encrypted);
            // JSON output leaves no doubt about what sops read.
            let plain: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            for (k, v) in &annotations {
                prop_assert_eq!(plain["metadata"]["annotations"][k].as_str(), Some(v.as_str()));
            }
            for (k, v) in &values {
                prop_assert_eq!(plain["stringData"][k].as_str(), Some(v.as_str()));
            }
        }
    }
}
