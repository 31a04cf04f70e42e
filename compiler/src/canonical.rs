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
    let value = serde_json::to_value(value).expect("generated values serialise to JSON");
    serde_yaml::to_string(&sorted(value)).expect("JSON values serialise to YAML")
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
    #[test]
    fn keys_are_sorted_and_differences_located() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":"x"}}"#).unwrap();
        assert_eq!(yaml(&v), "a:\n  c: x\n  d:\n  - 1\n  - 2\nb: 1\n");
        let w: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,3],"c":"x"}}"#).unwrap();
        assert_eq!(first_difference(&v, &w).as_deref(), Some("a.d.1"));
    }
}
