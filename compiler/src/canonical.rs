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
/// parses back to the same value (tested against serde_yaml, including by property tests).
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
    for _ in 0..n {
        out.push(' ');
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
        // Sequences under a key are written at the key's indentation, as kubectl and serde_yaml do.
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

/// Whether `s` can be written as a plain scalar and read back as exactly this string.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // A leading digit is fine when the string cannot be a number, date or time in YAML 1.1 or 1.2: it has a
    // letter that no numeric form uses, no ':' (sexagesimal), and no radix prefix ("512Mi", "5994eecf").
    let numeric_free = first.is_ascii_digit()
        && !s.contains(':')
        && !["0x", "0X", "0o", "0O", "0b", "0B"]
            .iter()
            .any(|p| s.starts_with(p))
        && s.chars()
            .any(|c| c.is_ascii_alphabetic() && !"eE".contains(c));
    if RESERVED_WORDS.contains(&s)
        || !(first.is_ascii_alphabetic()
            || first == '/'
            || first == '_'
            || first == '.'
            || numeric_free)
    {
        return false;
    }
    if s.ends_with(':') || s.contains(": ") || s.contains(" #") || s.ends_with(' ') {
        return false;
    }
    // Leading-dot numbers (.5) and sexagesimal or numeric look-alikes start with a letter check above;
    // what remains must be a conservative character set.
    if s.starts_with('.') && s[1..].chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " ._/-:@=+,".contains(c))
}

fn is_literal_block_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with(' ')
        && !s.starts_with('\n')
        && s.chars().all(|c| {
            c == '\n'
                || (c != '\r'
                    && !c.is_control()
                    && c != '\u{feff}'
                    && c != '\u{85}'
                    && c != '\u{2028}'
                    && c != '\u{2029}')
        })
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

/// The first path at which `a` and `b` differ, for error messages ("spec.template.spec.foo").
pub fn first_difference(a: &Value, b: &Value) -> Option<String> {
    fn walk(a: &Value, b: &Value, path: &mut Vec<String>) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    path.push(k.clone());
                    let found = match (x.get(k), y.get(k)) {
                        (Some(v), Some(w)) => walk(v, w, path),
                        _ => Some(path.join(".")),
                    };
                    if found.is_some() {
                        return found;
                    }
                    path.pop();
                }
                None
            }
            (Value::Array(x), Value::Array(y)) => {
                for (i, (v, w)) in x.iter().zip(y.iter()).enumerate() {
                    path.push(i.to_string());
                    if let Some(p) = walk(v, w, path) {
                        return Some(p);
                    }
                    path.pop();
                }
                (x.len() != y.len()).then(|| path.join("."))
            }
            _ => (a != b).then(|| path.join(".")),
        }
    }
    walk(a, b, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn emitted_yaml_reads_back_as_the_same_value(v in arb_value()) {
            let text = yaml(&v);
            let back: Value = serde_yaml::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
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
    fn keys_are_sorted_and_differences_located() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":"x"}}"#).unwrap();
        assert_eq!(yaml(&v), "a:\n  c: x\n  d:\n  - 1\n  - 2\nb: 1\n");
        let strings = serde_json::json!({"plain": "a-b/c.d", "num": "1", "yes": "yes", "text": "one\ntwo\n", "colon": "a: b", "empty": "", "list": [{"k": "v", "n": [1]}, "x"]});
        let text = yaml(&strings);
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, strings, "{text}");
        let w: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,3],"c":"x"}}"#).unwrap();
        assert_eq!(first_difference(&v, &w).as_deref(), Some("a.d.1"));
    }
}
