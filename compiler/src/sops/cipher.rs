//! The value cipher: one scalar in, one `ENC[AES256_GCM,...]` string out, and back.
//!
//! This module owns the exact wire format sops uses for an encrypted value: AES-256-GCM with a
//! 32-byte random IV, the 16-byte tag split off the ciphertext, everything base64 (standard
//! alphabet, padded), and the plaintext's scalar type recorded so that decryption restores an
//! int as an int. The additional authenticated data is supplied by the caller (the value's path
//! for tree values, the `lastmodified` timestamp for the MAC); this module knows nothing of trees.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::AesGcm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use zeroize::Zeroizing;

/// sops's nonce size for values. Go's `cipher.NewGCMWithNonceSize(block, 32)` hashes a
/// non-96-bit nonce through GHASH; `AesGcm<_, U32>` does the same.
pub(crate) const IV_LEN: usize = 32;
/// The GCM tag, stored separately from the ciphertext in the `tag:` field.
pub(crate) const TAG_LEN: usize = 16;
/// The data key is always a 256-bit AES key.
pub(crate) const DATA_KEY_LEN: usize = 32;

type ValueCipher = AesGcm<Aes256, U32>;

/// The data key of one SOPS file. Zeroized on drop.
pub(crate) type DataKey = Zeroizing<[u8; DATA_KEY_LEN]>;

/// Generates a fresh random data key.
pub(crate) fn generate_data_key() -> DataKey {
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    key
}

/// A scalar as sops types it. The type name is part of the wire format (`type:str` ...), and
/// the byte form is what gets encrypted and what the MAC hashes.
#[derive(Clone, PartialEq)]
pub(crate) enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "str",
            Scalar::Int(_) => "int",
            Scalar::Float(_) => "float",
            Scalar::Bool(_) => "bool",
        }
    }

    /// The bytes sops encrypts and hashes for this scalar (its `ToBytes`): strings as UTF-8,
    /// ints in decimal, floats in Go's shortest non-exponent form, booleans title-cased
    /// (`True`/`False`, inherited from the Python implementation).
    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Scalar::Str(s) => s.as_bytes().to_vec(),
            Scalar::Int(i) => i.to_string().into_bytes(),
            Scalar::Float(f) => go_format_float(*f).into_bytes(),
            Scalar::Bool(true) => b"True".to_vec(),
            Scalar::Bool(false) => b"False".to_vec(),
        })
    }
}

/// Shows the type only: a scalar is usually a decrypted secret.
impl std::fmt::Debug for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scalar({}, redacted)", self.type_name())
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        if let Scalar::Str(s) = self {
            zeroize::Zeroize::zeroize(s);
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest representation that round-trips,
/// never in exponent form. Rust's `Display` for `f64` has the same contract for finite values.
fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{f}")
    }
}

/// An `ENC[...]` string split into its fields, without decrypting anything. Holds no
/// plaintext, so it can be parsed and checked without keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EncryptedValue {
    pub(crate) data: Vec<u8>,
    pub(crate) iv: [u8; IV_LEN],
    pub(crate) tag: [u8; TAG_LEN],
    pub(crate) datatype: String,
}

const PREFIX: &str = "ENC[AES256_GCM,";

/// True when the string has the shape of an encrypted value (whether or not its fields are
/// well formed). Used to tell "plaintext" from "malformed ciphertext" in diagnostics.
pub(crate) fn looks_encrypted(value: &str) -> bool {
    value.starts_with(PREFIX)
}

impl EncryptedValue {
    /// Parses `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]`. The error says which
    /// field is wrong and never echoes the value.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        let body = value
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or_else(|| "not of the form ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]".to_owned())?;
        let mut fields = body.split(',');
        let mut field = |name: &str| -> Result<&str, String> {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|f| f.strip_prefix(':'))
                .ok_or_else(|| format!("missing or misplaced `{name}:` field"))
        };
        let data = field("data")?;
        let iv = field("iv")?;
        let tag = field("tag")?;
        let datatype = field("type")?;
        if fields.next().is_some() {
            return Err("unexpected field after `type:`".to_owned());
        }
        let decode = |name: &str, b64: &str| {
            STANDARD
                .decode(b64)
                .map_err(|_| format!("`{name}:` is not valid base64"))
        };
        let data = decode("data", data)?;
        let iv: [u8; IV_LEN] = decode("iv", iv)?
            .try_into()
            .map_err(|v: Vec<u8>| format!("`iv:` is {} bytes, expected {IV_LEN}", v.len()))?;
        let tag: [u8; TAG_LEN] = decode("tag", tag)?
            .try_into()
            .map_err(|v: Vec<u8>| format!("`tag:` is {} bytes, expected {TAG_LEN}", v.len()))?;
        if !matches!(
            datatype,
            "str" | "int" | "int64" | "float" | "bool" | "bytes"
        ) {
            return Err(format!("unknown `type:` {datatype:?}"));
        }
        Ok(Self {
            data,
            iv,
            tag,
            datatype: datatype.to_owned(),
        })
    }

    fn format(&self) -> String {
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
            STANDARD.encode(&self.data),
            STANDARD.encode(self.iv),
            STANDARD.encode(self.tag),
            self.datatype
        )
    }
}

/// Encrypts one scalar under `key` with `aad` as additional authenticated data, with a fresh
/// random IV.
pub(crate) fn encrypt(scalar: &Scalar, key: &[u8; DATA_KEY_LEN], aad: &str) -> String {
    let mut iv = [0u8; IV_LEN];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    encrypt_with_iv(scalar, key, aad, iv)
}

fn encrypt_with_iv(
    scalar: &Scalar,
    key: &[u8; DATA_KEY_LEN],
    aad: &str,
    iv: [u8; IV_LEN],
) -> String {
    let cipher = ValueCipher::new(key.into());
    let plaintext = scalar.to_bytes();
    let mut sealed = cipher
        .encrypt(
            (&iv).into(),
            Payload {
                msg: &plaintext,
                aad: aad.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let tag: [u8; TAG_LEN] = sealed
        .split_off(sealed.len() - TAG_LEN)
        .try_into()
        .expect("the tag is TAG_LEN bytes");
    EncryptedValue {
        data: sealed,
        iv,
        tag,
        datatype: scalar.type_name().to_owned(),
    }
    .format()
}

/// Why a value could not be decrypted. Kept apart from [`SopsError`] so that callers attach
/// the path (or say "the MAC").
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// The string is not a well-formed encrypted value.
    Malformed(String),
    /// GCM authentication failed: the data, IV, tag, path or key is not what was encrypted.
    Authentication,
    /// Authenticated, but the plaintext does not parse as its declared type.
    BadType(String),
}

/// Decrypts one `ENC[...]` string and restores its scalar type.
pub(crate) fn decrypt(
    value: &str,
    key: &[u8; DATA_KEY_LEN],
    aad: &str,
) -> Result<Scalar, ValueError> {
    let parsed = EncryptedValue::parse(value).map_err(ValueError::Malformed)?;
    let cipher = ValueCipher::new(key.into());
    let mut sealed = Vec::with_capacity(parsed.data.len() + TAG_LEN);
    sealed.extend_from_slice(&parsed.data);
    sealed.extend_from_slice(&parsed.tag);
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                (&parsed.iv).into(),
                Payload {
                    msg: &sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ValueError::Authentication)?,
    );
    let text = || {
        std::str::from_utf8(&plaintext).map_err(|_| {
            ValueError::BadType(format!("type:{} value is not UTF-8", parsed.datatype))
        })
    };
    let bad =
        |what: &str| ValueError::BadType(format!("type:{} value is not {what}", parsed.datatype));
    Ok(match parsed.datatype.as_str() {
        "str" => Scalar::Str(text()?.to_owned()),
        // Go has no separate text form for raw bytes in YAML; sops emits them as strings too.
        "bytes" => Scalar::Str(text()?.to_owned()),
        "int" | "int64" => Scalar::Int(text()?.parse().map_err(|_| bad("an integer"))?),
        "float" => Scalar::Float(parse_go_float(text()?).ok_or_else(|| bad("a float"))?),
        "bool" => Scalar::Bool(parse_go_bool(text()?).ok_or_else(|| bad("a boolean"))?),
        other => return Err(ValueError::Malformed(format!("unknown `type:` {other:?}"))),
    })
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];

    #[test]
    fn round_trips_every_scalar_type() {
        for scalar in [
            Scalar::Str("123:abc ✓".into()),
            Scalar::Int(-42),
            Scalar::Float(1.5),
            Scalar::Float(1e21),
            Scalar::Bool(true),
            Scalar::Bool(false),
        ] {
            let enc = encrypt(&scalar, &KEY, "stringData:token:");
            assert!(
                enc.ends_with(&format!(",type:{}]", scalar.type_name())),
                "{enc}"
            );
            assert_eq!(decrypt(&enc, &KEY, "stringData:token:").unwrap(), scalar);
        }
    }

    #[test]
    fn format_has_32_byte_iv_and_16_byte_tag() {
        let enc = encrypt(&Scalar::Str("x".into()), &KEY, "a:");
        let parsed = EncryptedValue::parse(&enc).unwrap();
        assert_eq!(parsed.data.len(), 1);
        assert_eq!(parsed.format(), enc);
    }

    #[test]
    fn path_is_authenticated() {
        let enc = encrypt(&Scalar::Str("x".into()), &KEY, "data:a:");
        assert_eq!(
            decrypt(&enc, &KEY, "data:b:"),
            Err(ValueError::Authentication)
        );
        assert_eq!(
            decrypt(&enc, &[8u8; 32], "data:a:"),
            Err(ValueError::Authentication)
        );
    }

    #[test]
    fn booleans_and_floats_use_sops_byte_forms() {
        assert_eq!(&*Scalar::Bool(true).to_bytes(), b"True");
        assert_eq!(&*Scalar::Float(1.0).to_bytes(), b"1");
        assert_eq!(&*Scalar::Float(0.1).to_bytes(), b"0.1");
        assert_eq!(&*Scalar::Float(1e21).to_bytes(), b"1000000000000000000000");
        assert_eq!(&*Scalar::Int(i64::MIN).to_bytes(), b"-9223372036854775808");
    }

    #[test]
    fn malformed_values_name_the_field() {
        let err = EncryptedValue::parse("ENC[AES256_GCM,data:!!,iv:,tag:,type:str]").unwrap_err();
        assert!(err.contains("data"), "{err}");
        let err = EncryptedValue::parse("ENC[AES256_GCM,data:,iv:AAAA,tag:,type:str]").unwrap_err();
        assert!(err.contains("iv"), "{err}");
        assert!(EncryptedValue::parse("plain").is_err());
    }
}
