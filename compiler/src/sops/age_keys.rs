//! Wrapping and unwrapping the data key with age, the way sops's age key source does.
//!
//! This module owns recipient and identity parsing and the armored age envelope around the
//! 32-byte data key. sops keeps one envelope per recipient (one `{recipient, enc}` entry each),
//! so every recipient gets its own age file with a single X25519 stanza.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::x25519;
use zeroize::Zeroizing;

use super::cipher::{DataKey, DATA_KEY_LEN};
use super::SopsError;

/// One entry of the `sops.age` list: a recipient and the data key encrypted to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AgeEntry {
    pub(crate) recipient: String,
    pub(crate) enc: String,
}

/// Parses and checks a recipient list: each must be an X25519 age recipient (`age1…`), and none
/// may appear twice.
pub(crate) fn parse_recipients(
    recipients: &[String],
) -> Result<Vec<(String, x25519::Recipient)>, SopsError> {
    if recipients.is_empty() {
        return Err(SopsError::NoRecipients);
    }
    let mut seen = BTreeSet::new();
    let mut parsed = Vec::with_capacity(recipients.len());
    for raw in recipients {
        let text = raw.trim();
        if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
            // Never echo it: an identity passed where a public key belongs is a leaked key.
            return Err(SopsError::InvalidRecipient {
                recipient: "AGE-SECRET-KEY-…".to_owned(),
                reason: "this is an age identity (a private key), not a recipient; pass its public key (age1…)".to_owned(),
            });
        }
        let recipient =
            x25519::Recipient::from_str(text).map_err(|reason| SopsError::InvalidRecipient {
                recipient: text.to_owned(),
                reason: reason.to_string(),
            })?;
        if !seen.insert(text.to_owned()) {
            return Err(SopsError::DuplicateRecipient(text.to_owned()));
        }
        parsed.push((text.to_owned(), recipient));
    }
    Ok(parsed)
}

/// Encrypts the data key to one recipient and armors it, like `age -r R -a`.
pub(crate) fn wrap(data_key: &DataKey, recipient: &x25519::Recipient) -> Result<String, SopsError> {
    let wrap_err = |e: &dyn std::fmt::Display| SopsError::DataKeyWrap(e.to_string());
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .map_err(|e| wrap_err(&e))?;
    let mut out = Vec::with_capacity(400);
    let armored =
        ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(|e| wrap_err(&e))?;
    let mut writer = encryptor.wrap_output(armored).map_err(|e| wrap_err(&e))?;
    writer
        .write_all(data_key.as_ref())
        .map_err(|e| wrap_err(&e))?;
    writer
        .finish()
        .and_then(|armored| armored.finish())
        .map_err(|e| wrap_err(&e))?;
    let mut text = String::from_utf8(out).expect("age armor is ASCII");
    // sops stores the armored file with its trailing newline; keep exactly one.
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Wraps the data key for every recipient, in the given order.
pub(crate) fn wrap_for_all(
    data_key: &DataKey,
    recipients: &[String],
) -> Result<Vec<AgeEntry>, SopsError> {
    parse_recipients(recipients)?
        .into_iter()
        .map(|(text, recipient)| {
            Ok(AgeEntry {
                recipient: text,
                enc: wrap(data_key, &recipient)?,
            })
        })
        .collect()
}

/// The identities an operator holds, parsed from an age identity file (the format of
/// `SOPS_AGE_KEY_FILE`: `AGE-SECRET-KEY-1…` lines, `#` comments, blank lines).
pub(crate) struct Identities(Vec<Box<dyn age::Identity>>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys, redacted)", self.0.len())
    }
}

impl Identities {
    /// Parses identity file contents. Errors never quote the contents.
    pub(crate) fn parse(contents: &str) -> Result<Self, SopsError> {
        let file = age::IdentityFile::from_buffer(contents.as_bytes())
            .map_err(|_| SopsError::InvalidIdentities("not an age identity file".to_owned()))?;
        let identities = file.into_identities().map_err(|_| {
            SopsError::InvalidIdentities(
                "contains an identity that needs a plugin, which is not supported".to_owned(),
            )
        })?;
        if identities.is_empty() {
            return Err(SopsError::InvalidIdentities(
                "contains no identities".to_owned(),
            ));
        }
        Ok(Self(identities))
    }

    /// Opens the first entry any identity can open. `Ok(None)` means none matched.
    pub(crate) fn unwrap(&self, entries: &[AgeEntry]) -> Result<Option<DataKey>, SopsError> {
        for entry in entries {
            let decryptor = age::Decryptor::new_buffered(ArmoredReader::new(entry.enc.as_bytes()))
                .map_err(|e| SopsError::InvalidAgeEnvelope {
                    recipient: entry.recipient.clone(),
                    reason: e.to_string(),
                })?;
            let mut reader =
                match decryptor.decrypt(self.0.iter().map(|i| i.as_ref() as &dyn age::Identity)) {
                    Ok(reader) => reader,
                    Err(age::DecryptError::NoMatchingKeys) => continue,
                    Err(e) => {
                        return Err(SopsError::InvalidAgeEnvelope {
                            recipient: entry.recipient.clone(),
                            reason: e.to_string(),
                        })
                    }
                };
            let mut plain = Zeroizing::new(Vec::with_capacity(DATA_KEY_LEN));
            reader
                .read_to_end(&mut plain)
                .map_err(|e| SopsError::InvalidAgeEnvelope {
                    recipient: entry.recipient.clone(),
                    reason: e.to_string(),
                })?;
            let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
            if plain.len() != DATA_KEY_LEN {
                return Err(SopsError::InvalidAgeEnvelope {
                    recipient: entry.recipient.clone(),
                    reason: format!(
                        "the data key is {} bytes, expected {DATA_KEY_LEN}",
                        plain.len()
                    ),
                });
            }
            key.copy_from_slice(&plain);
            return Ok(Some(key));
        }
        Ok(None)
    }
}

/// Checks, without any key, that an `enc` field is an armored age file with a readable header.
pub(crate) fn check_envelope(enc: &str) -> Result<(), String> {
    age::Decryptor::new_buffered(ArmoredReader::new(enc.as_bytes()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn wraps_and_unwraps_for_each_recipient() {
        let a = x25519::Identity::generate();
        let b = x25519::Identity::generate();
        let key: DataKey = Zeroizing::new([9u8; 32]);
        let entries = wrap_for_all(
            &key,
            &[a.to_public().to_string(), b.to_public().to_string()],
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0]
            .enc
            .starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
        assert!(entries[0]
            .enc
            .ends_with("-----END AGE ENCRYPTED FILE-----\n"));
        for id in [&a, &b] {
            let ids = Identities::parse(id.to_string().expose_secret()).unwrap();
            assert_eq!(*ids.unwrap(&entries).unwrap().unwrap(), [9u8; 32]);
        }
        let other = x25519::Identity::generate();
        let ids = Identities::parse(other.to_string().expose_secret()).unwrap();
        assert!(ids.unwrap(&entries).unwrap().is_none());
        check_envelope(&entries[1].enc).unwrap();
    }

    #[test]
    fn rejects_bad_and_duplicate_recipients() {
        let a = x25519::Identity::generate().to_public().to_string();
        assert!(matches!(
            parse_recipients(&[a.clone(), a.clone()]),
            Err(SopsError::DuplicateRecipient(r)) if r == a
        ));
        assert!(matches!(
            parse_recipients(&["age1nope".into()]),
            Err(SopsError::InvalidRecipient { .. })
        ));
        assert!(matches!(
            parse_recipients(&[]),
            Err(SopsError::NoRecipients)
        ));
    }

    #[test]
    fn identity_errors_do_not_quote_contents() {
        let err = Identities::parse("AGE-SECRET-KEY-1NOTAKEY\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("NOTAKEY"), "{err}");
    }
}
