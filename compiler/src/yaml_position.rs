//! Positions of values in a YAML document, by path (`spec.agent.allowFrom.0`).
//!
//! The YAML library reports where a parse error happened, but errors found after parsing (an unknown tier, a
//! duplicate connection) also need a file:line:column. This module walks the document's parser events once
//! and records where every value starts.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where each value of a YAML document starts (1-based line and column).
#[derive(Debug, Default)]
pub struct Positions {
    values: HashMap<String, (usize, usize)>,
    duplicate_keys: Vec<(String, (usize, usize))>,
}

impl Positions {
    /// Indexes `source`. A document that does not parse yields an empty index.
    pub fn of(source: &str) -> Positions {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut recorder, false).is_err() {
            return Positions::default();
        }
        Positions {
            values: recorder.values,
            duplicate_keys: recorder.duplicate_keys,
        }
    }

    /// The first key that appears twice in one mapping: its path and the position of its second occurrence.
    pub fn first_duplicate_key(&self) -> Option<&(String, (usize, usize))> {
        self.duplicate_keys.first()
    }

    /// The position of the value at `path` (keys and sequence indices joined by '.'), or of its nearest
    /// ancestor that exists.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return Some(*pos);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return self.values.get("").copied(),
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        seen: std::collections::HashSet<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    values: HashMap<String, (usize, usize)>,
    duplicate_keys: Vec<(String, (usize, usize))>,
}

fn join(base: &str, part: &str) -> String {
    if base.is_empty() {
        part.to_string()
    } else {
        format!("{base}.{part}")
    }
}

impl Recorder {
    /// The path of the value that starts now, or None when the event is a mapping key.
    fn value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, index }) => {
                let p = join(path, &index.to_string());
                *index += 1;
                Some(p)
            }
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.values
            .entry(path.to_string())
            .or_insert((mark.line(), mark.col() + 1));
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => match self.value_path() {
                Some(path) => self.record(&path, mark),
                None => {
                    if let Some(Frame::Map { key, seen, path }) = self.stack.last_mut() {
                        if !seen.insert(value.clone()) {
                            self.duplicate_keys
                                .push((join(path, &value), (mark.line(), mark.col() + 1)));
                        }
                        *key = Some(value);
                    }
                }
            },
            Event::MappingStart(..) => {
                let path = self.value_path().unwrap_or_default();
                self.record(&path, mark);
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    seen: Default::default(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.value_path().unwrap_or_default();
                self.record(&path, mark);
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                if let Some(path) = self.value_path() {
                    self.record(&path, mark);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values_and_sequence_items() {
        let src = "a: 1\nspec:\n  tier: gold\n  list:\n    - x\n    - {k: v}\n";
        let p = Positions::of(src);
        assert_eq!(p.find("spec.tier"), Some((3, 9)));
        assert_eq!(p.find("spec.list.1.k"), Some((6, 11)));
        assert_eq!(p.find("spec.list.1"), Some((6, 7)));
        assert_eq!(p.find("spec.list.0"), Some((5, 7)));
        let dup = Positions::of("a:\n  b: 1\n  b: 2\n");
        assert_eq!(
            dup.first_duplicate_key(),
            Some(&("a.b".to_string(), (3, 3)))
        );
        // missing leaf: nearest ancestor
        assert_eq!(p.find("spec.nothing"), p.find("spec"));
    }
}
