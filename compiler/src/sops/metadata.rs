//! The `sops:` block of an encrypted file: reading it, checking it, and writing it.
//!
//! This module owns the metadata field names and their meaning (the recipients and their
//! wrapped data keys, `lastmodified` and its role as the MAC's additional data, the encryption
//! rule, `mac_only_encrypted`, `version`), and refuses the features this implementation does
//! not cover (Shamir key groups, comment-driven encryption rules) instead of misreading them.

use crate::yaml::{Mapping, Value};
use regex::Regex;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use super::age_keys::AgeEntry;
use super::tree::{EncryptionRule, DEFAULT_UNENCRYPTED_SUFFIX};
use super::SopsError;

/// The top-level key that holds the metadata.
pub(crate) const SOPS_KEY: &str = "sops";

/// Key types sops supports besides age. A file that uses any of them can be decrypted by more
/// parties than its age recipients.
pub(crate) const OTHER_KEY_TYPES: [&str; 5] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"];

/// The parsed `sops:` block.
#[derive(Clone, Debug)]
pub(crate) struct Metadata {
    pub(crate) age: Vec<AgeEntry>,
    /// As written in the file; [`Metadata::mac_aad`] is what sops authenticates the MAC with.
    pub(crate) lastmodified: String,
    pub(crate) mac: String,
    pub(crate) rule: EncryptionRule,
    pub(crate) mac_only_encrypted: bool,
}

fn field_str<'a>(map: &'a Mapping, name: &str) -> Result<Option<&'a str>, SopsError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SopsError::InvalidMetadata(format!(
            "sops.{name} must be a string"
        ))),
    }
}

fn non_empty_list(map: &Mapping, name: &str) -> bool {
    matches!(map.get(name), Some(Value::Sequence(items)) if !items.is_empty())
}

impl Metadata {
    /// Reads the `sops:` mapping.
    pub(crate) fn parse(value: &Value) -> Result<Self, SopsError> {
        let Value::Mapping(map) = value else {
            return Err(SopsError::InvalidMetadata(
                "sops must be a mapping".to_owned(),
            ));
        };
        if non_empty_list(map, "key_groups") {
            return Err(SopsError::Unsupported(
                "sops.key_groups (Shamir secret sharing) is not supported".to_owned(),
            ));
        }
        for name in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if field_str(map, name)?.is_some_and(|s| !s.is_empty()) {
                return Err(SopsError::Unsupported(format!(
                    "sops.{name} is not supported"
                )));
            }
        }
        let age = parse_age_entries(map)?;
        let lastmodified = field_str(map, "lastmodified")?
            .ok_or_else(|| SopsError::InvalidMetadata("sops.lastmodified is missing".to_owned()))?
            .to_owned();
        mac_aad(&lastmodified)?;
        let mac = field_str(map, "mac")?
            .ok_or_else(|| SopsError::InvalidMetadata("sops.mac is missing".to_owned()))?
            .to_owned();
        let mac_only_encrypted = match map.get("mac_only_encrypted") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(SopsError::InvalidMetadata(
                    "sops.mac_only_encrypted must be a boolean".to_owned(),
                ))
            }
        };
        Ok(Self {
            age,
            lastmodified,
            mac,
            rule: parse_rule(map)?,
            mac_only_encrypted,
        })
    }

    /// The additional data sops authenticates the MAC with.
    pub(crate) fn mac_aad(&self) -> String {
        mac_aad(&self.lastmodified).expect("checked in parse")
    }
}

pub(crate) fn parse_age_entries(map: &Mapping) -> Result<Vec<AgeEntry>, SopsError> {
    let items = match map.get("age") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            return Err(SopsError::InvalidMetadata(
                "sops.age must be a list".to_owned(),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Mapping(entry) = item else {
                return Err(SopsError::InvalidMetadata(format!(
                    "sops.age[{i}] must be a mapping"
                )));
            };
            let get = |name: &str| {
                field_str(entry, name)?.map(str::to_owned).ok_or_else(|| {
                    SopsError::InvalidMetadata(format!("sops.age[{i}].{name} is missing"))
                })
            };
            Ok(AgeEntry {
                recipient: get("recipient")?,
                enc: get("enc")?,
            })
        })
        .collect()
}

fn parse_rule(map: &Mapping) -> Result<EncryptionRule, SopsError> {
    let mut rules = Vec::new();
    if let Some(s) = field_str(map, "unencrypted_suffix")?.filter(|s| !s.is_empty()) {
        rules.push(EncryptionRule::UnencryptedSuffix(s.to_owned()));
    }
    if let Some(s) = field_str(map, "encrypted_suffix")?.filter(|s| !s.is_empty()) {
        rules.push(EncryptionRule::EncryptedSuffix(s.to_owned()));
    }
    let regex = |name: &str, s: &str| {
        Regex::new(s).map_err(|e| {
            SopsError::InvalidMetadata(format!("sops.{name} is not a valid regex: {e}"))
        })
    };
    if let Some(s) = field_str(map, "unencrypted_regex")?.filter(|s| !s.is_empty()) {
        rules.push(EncryptionRule::UnencryptedRegex(regex(
            "unencrypted_regex",
            s,
        )?));
    }
    if let Some(s) = field_str(map, "encrypted_regex")?.filter(|s| !s.is_empty()) {
        rules.push(EncryptionRule::EncryptedRegex(regex("encrypted_regex", s)?));
    }
    match rules.len() {
        0 => Ok(EncryptionRule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.to_owned())),
        1 => Ok(rules.pop().expect("one rule")),
        _ => Err(SopsError::InvalidMetadata(
            "more than one of unencrypted_suffix, encrypted_suffix, unencrypted_regex, encrypted_regex".to_owned(),
        )),
    }
}

/// sops parses `lastmodified` as RFC 3339 and re-formats it with Go's `time.RFC3339` layout
/// (whole seconds, `Z` for a zero offset) before using it as the MAC's additional data.
pub(crate) fn mac_aad(lastmodified: &str) -> Result<String, SopsError> {
    let parsed = OffsetDateTime::parse(lastmodified, &Rfc3339).map_err(|_| {
        SopsError::InvalidMetadata(format!(
            "sops.lastmodified {lastmodified:?} is not an RFC 3339 timestamp"
        ))
    })?;
    Ok(format_go_rfc3339(parsed))
}

fn format_go_rfc3339(t: OffsetDateTime) -> String {
    let base = t
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .expect("formatting a valid date cannot fail");
    let offset = t.offset();
    if offset == UtcOffset::UTC {
        format!("{base}Z")
    } else {
        let (h, m, _) = offset.as_hms();
        let sign = if offset.is_negative() { '-' } else { '+' };
        format!(
            "{base}{sign}{:02}:{:02}",
            h.unsigned_abs(),
            m.unsigned_abs()
        )
    }
}

/// The current time as sops writes `lastmodified`.
pub(crate) fn now_lastmodified() -> String {
    format_go_rfc3339(
        OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond"),
    )
}

/// The `age:` list as YAML.
pub(crate) fn age_entries_value(entries: &[AgeEntry]) -> Value {
    Value::Sequence(
        entries
            .iter()
            .map(|e| {
                let mut m = Mapping::new();
                m.insert("recipient".into(), e.recipient.clone().into());
                m.insert("enc".into(), e.enc.clone().into());
                Value::Mapping(m)
            })
            .collect(),
    )
}

/// A fresh `sops:` block, fields in the order sops 3.11 writes them.
pub(crate) fn emit(
    entries: &[AgeEntry],
    lastmodified: &str,
    encrypted_mac: &str,
    rule: &EncryptionRule,
    mac_only_encrypted: bool,
    version: &str,
) -> Value {
    let mut m = Mapping::new();
    m.insert("age".into(), age_entries_value(entries));
    m.insert("lastmodified".into(), lastmodified.into());
    m.insert("mac".into(), encrypted_mac.into());
    let (name, value) = match rule {
        EncryptionRule::UnencryptedSuffix(s) => ("unencrypted_suffix", s.clone()),
        EncryptionRule::EncryptedSuffix(s) => ("encrypted_suffix", s.clone()),
        EncryptionRule::UnencryptedRegex(r) => ("unencrypted_regex", r.as_str().to_owned()),
        EncryptionRule::EncryptedRegex(r) => ("encrypted_regex", r.as_str().to_owned()),
    };
    m.insert(name.into(), value.into());
    if mac_only_encrypted {
        m.insert("mac_only_encrypted".into(), true.into());
    }
    m.insert("version".into(), version.into());
    Value::Mapping(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_aad_normalises_like_go() {
        assert_eq!(
            mac_aad("2026-11-25T12:27:42Z").unwrap(),
            "2026-11-25T12:27:42Z"
        );
        assert_eq!(
            mac_aad("2026-11-25T12:27:42+00:00").unwrap(),
            "2026-11-25T12:27:42Z"
        );
        assert_eq!(
            mac_aad("2026-11-25T12:27:42.123Z").unwrap(),
            "2026-11-25T12:27:42Z"
        );
        assert_eq!(
            mac_aad("2026-11-25T12:27:42-05:30").unwrap(),
            "2026-11-25T12:27:42-05:30"
        );
        assert!(mac_aad("yesterday").is_err());
    }

    #[test]
    fn now_is_whole_seconds_utc() {
        let now = now_lastmodified();
        assert_eq!(now.len(), "2026-11-25T12:27:42Z".len(), "{now}");
        assert_eq!(mac_aad(&now).unwrap(), now);
    }

    #[test]
    fn refuses_two_rules_and_key_groups() {
        let two: Value = crate::yaml::parse(
            "{age: [], lastmodified: '2026-01-01T00:00:00Z', mac: x, encrypted_regex: a, unencrypted_suffix: b}",
        )
        .unwrap();
        assert!(matches!(
            Metadata::parse(&two),
            Err(SopsError::InvalidMetadata(_))
        ));
        let groups: Value = crate::yaml::parse(
            "{key_groups: [{age: []}], lastmodified: '2026-01-01T00:00:00Z', mac: x}",
        )
        .unwrap();
        assert!(matches!(
            Metadata::parse(&groups),
            Err(SopsError::Unsupported(_))
        ));
    }
}
