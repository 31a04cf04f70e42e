//! The workspace's one door to YAML: every YAML read and write in the compiler, the api and the
//! tests goes through this module (the token proxy, which must not link the compiler, uses the same
//! library directly). The library is `serde_yaml_ng`, the maintained successor of the deprecated
//! `serde_yaml`, whose output it reproduces byte for byte.
//!
//! [`from_str`] is strict parsing with diagnostics: the library's errors turned into
//! file:line:column, snippet and hint. [`parse`], [`parse_slice`] and [`to_string`] are the plain
//! library calls, for text a program wrote (rendered output, SOPS files, test fixtures).

use crate::diagnostics::Diagnostic;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use serde_yaml_ng::{Deserializer, Error, Mapping, Number, Value};

/// Parses YAML text into `T`, with the library's own error.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_yaml_ng::from_str(text)
}

/// [`parse`] for bytes (which must be UTF-8).
pub fn parse_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_yaml_ng::from_slice(bytes)
}

/// The library's YAML text of `value` (the generated files use [`crate::canonical`] instead).
pub fn to_string<T: ?Sized + Serialize>(value: &T) -> Result<String, Error> {
    serde_yaml_ng::to_string(value)
}

/// Parses `source` (the file at `path`) into `T`. `reference` names the document that lists the fields.
pub fn from_str<T: DeserializeOwned>(
    path: &str,
    source: &str,
    reference: &str,
) -> Result<T, Diagnostic> {
    if source.trim().is_empty() {
        return Err(Diagnostic::file(path, "file is empty")
            .with_hint(format!("write the document described in {reference}")));
    }
    if source.starts_with("---") || source.contains("\n---") {
        // the library reads only the first document of a stream; a second one would be silently ignored.
        let documents = serde_yaml_ng::Deserializer::from_str(source).count();
        if documents > 1 {
            let line = source
                .lines()
                .enumerate()
                .filter(|(_, l)| l.starts_with("---"))
                .nth(if source.starts_with("---") { 1 } else { 0 })
                .map_or(1, |(i, _)| i + 1);
            return Err(Diagnostic::at(
                path,
                source,
                line,
                1,
                format!("file holds {documents} YAML documents; expected one"),
            )
            .with_hint("keep one YAML document per file (no `---` separators)"));
        }
    }
    serde_yaml_ng::from_str(source).map_err(|e| {
        let d = diagnostic(path, source, &e, reference);
        if d.message.contains("duplicate field") {
            // serde reports the mapping; point at the repeated key instead.
            if let Some((key, pos)) =
                crate::yaml_position::Positions::of(source).first_duplicate_key()
            {
                return Diagnostic::at(
                    path,
                    source,
                    pos.0,
                    pos.1,
                    format!("duplicate key `{key}`"),
                )
                .with_hint("remove one of the two entries with this key");
            }
        }
        d
    })
}

/// Converts a YAML library error into a diagnostic with position, snippet and a hint.
pub fn diagnostic(
    path: &str,
    source: &str,
    e: &serde_yaml_ng::Error,
    reference: &str,
) -> Diagnostic {
    let mut message = e.to_string();
    // the library appends " at line L column C"; the diagnostic shows the position itself.
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    let message = message.trim_end_matches(':').to_string();
    let hint = if message.contains("unknown field") {
        format!("remove the field or fix its spelling; {reference} lists the fields")
    } else if message.contains("missing field") {
        format!("add the field; {reference} describes it")
    } else if message.contains("unknown variant") {
        "use one of the expected values".to_string()
    } else if message.contains("invalid type") {
        format!("give the value the type {reference} describes")
    } else if message.contains("duplicate entry") {
        "remove one of the two entries with this key".to_string()
    } else if message.contains("more than one document") {
        "keep one YAML document per file (no `---` separators)".to_string()
    } else if message.contains("invalid value") || message.contains("out of range") {
        format!("see {reference} for the allowed values")
    } else if message.contains("found character")
        || message.contains("did not find")
        || message.contains("mapping values are not allowed")
    {
        "fix the YAML syntax (indentation, quoting, ':' placement)".to_string()
    } else {
        format!("see {reference}")
    };
    let d = match e.location() {
        Some(loc) => Diagnostic::at(path, source, loc.line(), loc.column(), message),
        None => Diagnostic::file(path, message),
    };
    d.with_hint(hint)
}
