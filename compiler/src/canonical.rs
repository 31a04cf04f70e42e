//! Canonical serialisation: every generated file is written from a value with sorted keys through one
//! emitter, so that output is byte-identical across runs, thread counts, machines and crate feature sets.

use serde::Serialize;
use serde_json::Value;

/// Rebuilds `value` with every object's keys in sorted order (whatever map type serde_json was built with).
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The canonical YAML text of `value`: sorted keys, block style, literal blocks for multi-line strings.
pub fn yaml<T: Serialize>(value: &T) -> String {
    yaml_value(&serde_json::to_value(value).expect("generated values serialise to JSON"))
}

/// [`yaml`] for a value already in JSON form.
pub fn yaml_value(value: &Value) -> String {
    let mut out = String::with_capacity(4096);
    emit_document(value, &mut out);
    out
}

/// Writes one YAML document for a JSON value. The emitter is deliberately small: block mappings and
/// sequences, keys in sorted order, plain scalars only where YAML cannot read them as anything but that
/// string, double-quoted (JSON-escaped) strings elsewhere, and literal blocks for multi-line text. Its output
/// parses back to the same value (tested against the YAML library, including by property tests).
fn emit_document(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => emit_mapping(map, 0, out),
        Value::Array(items) if !items.is_empty() => emit_sequence(items, 0, out),
        scalar => {
            emit_scalar(scalar, 0, out);
            out.push('\n');
        }
    }
}

fn indent(n: usize, out: &mut String) {
    const SPACES: &str = "                                                                ";
    if n <= SPACES.len() {
        out.push_str(&SPACES[..n]);
    } else {
        out.extend(std::iter::repeat_n(' ', n));
    }
}

fn sorted_keys(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // serde_json's default map is already sorted; with its preserve_order feature it may not be.
    if !entries.windows(2).all(|w| w[0].0 <= w[1].0) {
        entries.sort_by(|a, b| a.0.cmp(b.0));
    }
    entries
}

fn emit_mapping(map: &serde_json::Map<String, Value>, level: usize, out: &mut String) {
    for (i, (key, value)) in sorted_keys(map).into_iter().enumerate() {
        if i > 0 {
            indent(level, out);
        }
        emit_string(key, level, true, out);
        out.push(':');
        emit_value_after_key(value, level, out);
    }
}

/// After `key:` (or after `- ` for a sequence item holding a scalar).
fn emit_value_after_key(value: &Value, level: usize, out: &mut String) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            indent(level + 2, out);
            emit_mapping(m, level + 2, out);
        }
        // Sequences under a key are written at the key's indentation, as kubectl and the YAML library do.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            indent(level, out);
            emit_sequence(items, level, out);
        }
        scalar => {
            out.push(' ');
            emit_scalar(scalar, level + 2, out);
            out.push('\n');
        }
    }
}

fn emit_sequence(items: &[Value], level: usize, out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            indent(level, out);
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => emit_mapping(m, level + 2, out),
            Value::Array(inner) if !inner.is_empty() => emit_sequence(inner, level + 2, out),
            scalar => {
                emit_scalar(scalar, level + 2, out);
                out.push('\n');
            }
        }
    }
}

fn emit_scalar(value: &Value, level: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => emit_string(s, level, false, out),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

/// Words YAML 1.1 or 1.2 resolves to something other than a string.
const RESERVED_WORDS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", ".inf",
    ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN", "<<", "=",
];

/// Whether `s` can be written as a plain scalar and read back as exactly this string. One pass over the
/// bytes: every string of every generated object goes through here.
fn is_plain_safe(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    // A conservative character set (which has no '#', so " #" cannot occur), and no ": ".
    let mut has_colon = false;
    let mut has_non_numeric_letter = false;
    let mut prev = 0u8;
    for &b in bytes {
        let allowed = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b' ' | b'.' | b'_' | b'/' | b'-' | b':' | b'@' | b'=' | b'+' | b','
            );
        if !allowed || (prev == b':' && b == b' ') {
            return false;
        }
        has_colon |= b == b':';
        has_non_numeric_letter |= b.is_ascii_alphabetic() && b != b'e' && b != b'E';
        prev = b;
    }
    if prev == b':' || prev == b' ' {
        return false;
    }
    // A leading digit is fine when the string cannot be a number, date or time in YAML 1.1 or 1.2: it has a
    // letter that no numeric form uses, no ':' (sexagesimal), and no radix prefix ("512Mi", "5994eecf").
    let numeric_free = first.is_ascii_digit()
        && !has_colon
        && has_non_numeric_letter
        && !["0x", "0X", "0o", "0O", "0b", "0B"]
            .iter()
            .any(|p| s.starts_with(p));
    if !(first.is_ascii_alphabetic()
        || first == b'/'
        || first == b'_'
        || first == b'.'
        || numeric_free)
    {
        return false;
    }
    // Leading-dot numbers (.5).
    if first == b'.' && bytes.get(1).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    // Every reserved word that got this far is at most five bytes long and starts with one of these.
    !(bytes.len() <= 5
        && matches!(
            first,
            b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'.'
        )
        && RESERVED_WORDS.contains(&s))
}

fn is_literal_block_safe(s: &str) -> bool {
    let printable = |c: char| {
        c == '\n'
            || (c != '\r'
                && !c.is_control()
                && c != '\u{feff}'
                && c != '\u{85}'
                && c != '\u{2028}'
                && c != '\u{2029}')
    };
    s.contains('\n')
        && !s.starts_with(' ')
        && !s.starts_with('\n')
        && if s.is_ascii() {
            // The common case, a byte at a time: no control character but the line feed.
            s.bytes().all(|b| b == b'\n' || (b >= 0x20 && b != 0x7f))
        } else {
            s.chars().all(printable)
        }
        && !s.lines().any(|l| l.ends_with(' ') || l.ends_with('\t'))
}

fn emit_string(s: &str, level: usize, is_key: bool, out: &mut String) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if !is_key && is_literal_block_safe(s) {
        let body = s.trim_end_matches('\n');
        let trailing = s.len() - body.len();
        out.push_str(match trailing {
            0 => "|-",
            1 => "|",
            _ => "|+",
        });
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                indent(level.max(2), out);
                out.push_str(line);
            }
        }
        for _ in 1..trailing {
            out.push('\n');
        }
    } else {
        // JSON's escaping is valid YAML double-quoting, except that YAML also breaks lines at these.
        let quoted = serde_json::to_string(s).expect("strings serialise");
        for c in quoted.chars() {
            match c {
                '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c => out.push(c),
            }
        }
    }
}

/// The canonical pretty JSON text of `value` (sorted keys, two-space indent, trailing newline).
pub fn json<T: Serialize>(value: &T) -> String {
    let value = serde_json::to_value(value).expect("generated values serialise to JSON");
    let mut text = serde_json::to_string_pretty(&sorted(value)).expect("JSON values serialise");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn emitted_yaml_reads_back_as_the_same_value(v in arb_value()) {
            let text = yaml(&v);
            let back: Value = crate::yaml::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, v, "{}", text);
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC*".prop_map(Value::String),
            "[a-z0-9 .:/#\\n-]{0,30}".prop_map(Value::String),
            prop::sample::select(vec![
                "yes",
                "no",
                "on",
                "1.5",
                "0x1f",
                "0b101",
                "1e5",
                "1:30",
                "2026-01-01",
                "512Mi",
                "5994eecf",
                "1_000",
                "~",
                "- a",
                "a\n\n",
                "\n",
                " lead",
                "x\n y\n"
            ])
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z0-9_./-]{1,12}|\\PC{1,5}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
    #[test]
    fn reserved_words_are_quoted() {
        for word in RESERVED_WORDS {
            assert!(!is_plain_safe(word), "{word} written plain");
            let v = Value::String(word.to_string());
            let back: Value = crate::yaml::parse(&yaml(&v)).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn keys_are_sorted_and_strings_read_back() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":"x"}}"#).unwrap();
        assert_eq!(yaml(&v), "a:\n  c: x\n  d:\n  - 1\n  - 2\nb: 1\n");
        let strings = serde_json::json!({"plain": "a-b/c.d", "num": "1", "yes": "yes", "text": "one\ntwo\n", "colon": "a: b", "empty": "", "list": [{"k": "v", "n": [1]}, "x"]});
        let text = yaml(&strings);
        let back: Value = crate::yaml::parse(&text).unwrap();
        assert_eq!(back, strings, "{text}");
    }
}
