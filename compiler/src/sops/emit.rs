//! Writing SOPS YAML so that every YAML reader, go-yaml in sops and Flux included, reads back
//! exactly the values that were hashed into the MAC.
//!
//! This module owns the quoting decisions. A general-purpose emitter leaves a string plain
//! when its own resolver would read it back as a string, but resolvers differ: go-yaml reads
//! `2001-12-14` as a timestamp and `1_000` as an int, both of which change the MAC. So a
//! string is left plain only when it cannot be anything but a string to any YAML 1.1 or 1.2
//! reader (a letter first, then letters, digits and `._/-`, and not a boolean or null word),
//! or when it is an `ENC[...]` value; multi-line text becomes a literal block; everything else
//! is double-quoted.

use std::fmt::Write as _;

use crate::yaml::{Mapping, Value};

use super::SopsError;

/// Emits a document whose root is a mapping.
pub(crate) fn document(root: &Mapping) -> Result<String, SopsError> {
    let mut out = String::new();
    if root.is_empty() {
        out.push_str("{}\n");
    } else {
        mapping(&mut out, root, 0)?;
    }
    Ok(out)
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn mapping(out: &mut String, map: &Mapping, at: usize) -> Result<(), SopsError> {
    for (i, (key, value)) in map.iter().enumerate() {
        // The first entry of a mapping inside a sequence item goes on the `- ` line.
        if i > 0 || at == 0 || !out.ends_with("- ") {
            indent(out, at);
        }
        let Value::String(key) = key else {
            return Err(SopsError::Unsupported(
                "only string keys are supported".to_owned(),
            ));
        };
        out.push_str(&string_inline(key));
        out.push(':');
        node(out, value, at)?;
    }
    Ok(())
}

/// Writes a value after `key:` or `- `, ending with a newline. `at` is the parent's indent.
fn node(out: &mut String, value: &Value, at: usize) -> Result<(), SopsError> {
    match value {
        Value::Mapping(m) if m.is_empty() => out.push_str(" {}\n"),
        Value::Mapping(m) => {
            out.push('\n');
            mapping(out, m, at + 2)?;
        }
        Value::Sequence(items) if items.is_empty() => out.push_str(" []\n"),
        Value::Sequence(items) => {
            // Also for a sequence directly inside a sequence item, whose `-` stays alone.
            out.push('\n');
            for item in items {
                indent(out, at + 2);
                out.push_str("- ");
                match item {
                    Value::Mapping(m) if !m.is_empty() => mapping(out, m, at + 4)?,
                    _ => {
                        // `node` writes a leading space for scalars; drop the one from "- ".
                        out.pop();
                        node(out, item, at + 2)?;
                    }
                }
            }
        }
        Value::String(s) => {
            out.push(' ');
            string(out, s, at + 2);
        }
        Value::Null => out.push_str(" null\n"),
        Value::Bool(b) => {
            let _ = writeln!(out, " {b}");
        }
        Value::Number(n) => {
            let _ = writeln!(out, " {}", number(n));
        }
        Value::Tagged(_) => {
            return Err(SopsError::Unsupported(
                "YAML tags are not supported".to_owned(),
            ))
        }
    }
    Ok(())
}

fn number(n: &crate::yaml::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        let f = n.as_f64().expect("a YAML number is i64, u64 or f64");
        if f.is_nan() {
            ".nan".to_owned()
        } else if f.is_infinite() {
            if f > 0.0 { ".inf" } else { "-.inf" }.to_owned()
        } else {
            // Debug keeps a fraction or exponent, so it reads back as a float.
            format!("{f:?}")
        }
    }
}

/// Words some YAML reader resolves to a boolean or null when plain.
const RESERVED_WORDS: [&str; 11] = [
    "true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf",
];

fn plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !RESERVED_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

fn is_encrypted_value(s: &str) -> bool {
    let Some(body) = s
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|b| b.strip_suffix(']'))
    else {
        return false;
    };
    body.split(',').all(|field| {
        field.split_once(':').is_some_and(|(name, value)| {
            matches!(name, "data" | "iv" | "tag" | "type")
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        })
    })
}

fn string_inline(s: &str) -> String {
    if plain_safe(s) || is_encrypted_value(s) {
        s.to_owned()
    } else {
        double_quoted(s)
    }
}

/// A literal block keeps armored age files and other multi-line text readable. Only text
/// that a block scalar represents exactly qualifies.
fn block_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.lines().all(|line| {
            !line.ends_with([' ', '\t'])
                && !line.is_empty()
                && line.chars().all(|c| !c.is_control() && !special(c))
        })
        && !s.trim_end_matches('\n').contains("\n\n")
}

fn string(out: &mut String, s: &str, at: usize) {
    if block_safe(s) {
        let body = s.trim_end_matches('\n');
        let trailing = s.len() - body.len();
        out.push_str(match trailing {
            0 => "|-",
            1 => "|",
            _ => "|+",
        });
        out.push('\n');
        for line in body.split('\n') {
            indent(out, at);
            out.push_str(line);
            out.push('\n');
        }
        // `|+` keeps the extra newlines as empty lines.
        for _ in 1..trailing {
            out.push('\n');
        }
    } else {
        out.push_str(&string_inline(s));
        out.push('\n');
    }
}

/// Characters YAML readers treat as line breaks, byte-order marks or non-printable, which
/// must be escaped.
fn special(c: char) -> bool {
    matches!(
        c,
        '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
    )
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || special(c) => {
                let _ = if (c as u32) <= 0xff {
                    write!(out, "\\x{:02x}", c as u32)
                } else {
                    write!(out, "\\u{:04x}", c as u32)
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(v: &Value) {
        let Value::Mapping(m) = v else {
            panic!("root must be a mapping")
        };
        let text = document(m).unwrap();
        let back: Value = crate::yaml::parse(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert_eq!(&back, v, "\n{text}");
    }

    #[test]
    fn quotes_what_go_yaml_would_retype() {
        let doc: Value = crate::yaml::parse(
            r#"{a: "2001-12-14", b: "1_000", c: "yes", d: "012", e: "~", f: "", g: "ENC[AES256_GCM,data:QQ==,iv:QQ==,tag:QQ==,type:str]", h: plain-word, i: "2001-12-14T21:59:43.10-05:00"}"#,
        )
        .unwrap();
        let Value::Mapping(m) = &doc else {
            unreachable!()
        };
        let text = document(m).unwrap();
        for quoted in [
            r#"a: "2001-12-14""#,
            r#"b: "1_000""#,
            r#"c: "yes""#,
            r#"f: """#,
        ] {
            assert!(text.contains(quoted), "{quoted} in\n{text}");
        }
        assert!(
            text.contains("g: ENC[AES256_GCM,data:QQ==,iv:QQ==,tag:QQ==,type:str]\n"),
            "{text}"
        );
        assert!(text.contains("h: plain-word\n"), "{text}");
        round_trip(&doc);
    }

    #[test]
    fn nested_structures_and_blocks() {
        let doc: Value = crate::yaml::parse(
            "a:\n  b: [1, 2.5, true, null, x]\n  c: []\n  d: {}\n  e:\n  - f: 1\n    g: [h]\n  - [i, j]\n  - {}\nk: |\n  -----BEGIN-----\n  abc\n  -----END-----\nl: \"no newline\\nat end\"\nm: \"two\\n\\n\"\nn: 1.0\n",
        )
        .unwrap();
        round_trip(&doc);
        let Value::Mapping(m) = &doc else {
            unreachable!()
        };
        assert!(document(m)
            .unwrap()
            .contains("k: |\n  -----BEGIN-----\n  abc\n"));
    }

    proptest! {
        #[test]
        fn any_strings_read_back_unchanged(
            entries in prop::collection::vec((any::<String>(), any::<String>()), 0..8),
            nested in prop::collection::vec("\\PC*", 0..4),
        ) {
            let mut m = Mapping::new();
            for (k, v) in entries {
                m.insert(k.into(), v.into());
            }
            m.insert("list".into(), Value::Sequence(nested.into_iter().map(Value::from).collect()));
            let v = Value::Mapping(m);
            let Value::Mapping(m) = &v else { unreachable!() };
            let text = document(m).unwrap();
            let back: Value = crate::yaml::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}:\n{text}")))?;
            prop_assert_eq!(back, v);
        }
    }
}
