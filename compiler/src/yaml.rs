//! Strict YAML parsing with diagnostics: serde_yaml's errors turned into file:line:column, snippet and hint.

use crate::diagnostics::Diagnostic;
use serde::de::DeserializeOwned;

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
    serde_yaml::from_str(source).map_err(|e| diagnostic(path, source, &e, reference))
}

/// Converts a serde_yaml error into a diagnostic with position, snippet and a hint.
pub fn diagnostic(path: &str, source: &str, e: &serde_yaml::Error, reference: &str) -> Diagnostic {
    let mut message = e.to_string();
    // serde_yaml appends " at line L column C"; the diagnostic shows the position itself.
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
