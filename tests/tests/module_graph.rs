//! No module circles in any crate of the workspace: reads every `crate::…` and `super::…` path in
//! the src of api, proxy, compiler and contracts and fails, printing every circle, when modules
//! depend on each other in a circle.
//!
//! The graph is checked level by level: the children of the crate root, then the children of each
//! folder module, where a reference from anywhere inside child A to anything inside sibling B is
//! an edge A -> B. A module's references to its own parent or descendants are not edges (a child
//! using its parent's items is how Rust modules are built), so a circle means two siblings that
//! each need the other, which is the shape that keeps a module from being understood or moved
//! alone. Doc comments and line comments are skipped: intra-doc links are not dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root (`["http", "caller"]`); the root is `[]`.
type ModPath = Vec<String>;

/// Every module file of a crate: module path -> file.
fn modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut found = BTreeMap::new();
    walk(src, src, &mut found);
    found
}

fn walk(src: &Path, dir: &Path, found: &mut BTreeMap<ModPath, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            // `src/bin` holds separate crates.
            if dir == src && path.file_name().is_some_and(|n| n == "bin") {
                continue;
            }
            walk(src, &path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).expect("under src");
        let mut segments: ModPath = relative
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let file = segments.pop().expect("a file name");
        let stem = file.trim_end_matches(".rs");
        match stem {
            // The crate roots: main.rs is the binary's own crate, apart from the library.
            "lib" | "main" if segments.is_empty() => {
                if stem == "lib" {
                    found.insert(Vec::new(), path.clone());
                }
            }
            "mod" => {
                found.insert(segments, path.clone());
            }
            _ => {
                segments.push(stem.to_owned());
                found.insert(segments, path.clone());
            }
        }
    }
}

/// The code of a file without comments (line comments, doc comments, block comments) and
/// string literals, so that only real paths remain.
fn code(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'r'
            && i + 1 < bytes.len()
            && (bytes[i + 1] == b'"' || bytes[i + 1] == b'#')
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while j < bytes.len() && bytes[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'"' {
                let end = format!("\"{}", "#".repeat(hashes));
                let rest = &text[j + 1..];
                let close = rest
                    .find(&end)
                    .map_or(bytes.len(), |k| j + 1 + k + end.len());
                out.push_str("\"\"");
                i = close;
            } else {
                out.push(bytes[i] as char);
                i += 1;
            }
        } else if bytes[i] == b'\'' {
            // A char literal ('x', '\n', '"') or a lifetime ('a): skip only the literal.
            let rest = &text[i..];
            let literal = if let Some(escaped) = rest.strip_prefix("'\\") {
                escaped.find('\'').map(|k| k + 3)
            } else {
                rest.char_indices()
                    .nth(2)
                    .filter(|(_, c)| *c == '\'')
                    .map(|(k, _)| k + 1)
            };
            match literal {
                Some(len) => {
                    out.push_str("' '");
                    i += len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = text[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path named after `crate::` or `super::` in `code`, as absolute segment lists
/// (`use crate::a::{b, c::d}` gives `a::b` and `a::c::d`). `here` is the module of the file.
fn paths(code: &str, here: &ModPath) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let (base, rest_at) = if start == "crate::" {
                (Vec::new(), from)
            } else {
                // super::super::x
                let mut base = here.clone();
                base.pop();
                let mut rest_at = from;
                while code[rest_at..].starts_with("super::") {
                    base.pop();
                    rest_at += "super::".len();
                }
                (base, rest_at)
            };
            for tail in expand(&code[rest_at..]) {
                let mut path = base.clone();
                path.extend(tail);
                found.push(path);
            }
        }
    }
    found
}

/// The paths a `use` tree or an expression path starting at `text` names, relative to its start.
fn expand(text: &str) -> Vec<Vec<String>> {
    let (trees, _) = tree(text);
    trees
}

/// Parses `a::b::{c, d::e}` (or a plain `a::b::c`) at the start of `text`; returns the paths and
/// how many bytes were read.
fn tree(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    let mut i = 0;
    loop {
        let ident: String = text[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        i += ident.len();
        let named = !ident.is_empty();
        if named {
            segments.push(ident);
        }
        let group = if named { "::{" } else { "{" };
        if text[i..].starts_with(group) {
            i += group.len();
            let mut out = Vec::new();
            loop {
                let skipped = text[i..].len() - text[i..].trim_start().len();
                i += skipped;
                if text[i..].starts_with('}') {
                    i += 1;
                    break;
                }
                let (subs, used) = tree(&text[i..]);
                i += used;
                for sub in subs {
                    let mut path = segments.clone();
                    path.extend(sub);
                    out.push(path);
                }
                // Skip `as alias` and the comma.
                while i < text.len() && !text[i..].starts_with(',') && !text[i..].starts_with('}') {
                    i += text[i..].chars().next().map_or(1, char::len_utf8);
                }
                if text[i..].starts_with(',') {
                    i += 1;
                }
                if used == 0 && i >= text.len() {
                    break;
                }
            }
            if out.is_empty() {
                out.push(segments);
            }
            return (out, i);
        }
        if text[i..].starts_with("::") && named {
            i += 2;
            continue;
        }
        return (vec![segments], i);
    }
}

/// The module a path lands in: its longest prefix that is a module.
fn module_of(path: &[String], known: &BTreeSet<ModPath>) -> ModPath {
    let mut best = Vec::new();
    for n in 1..=path.len() {
        if known.contains(&path[..n].to_vec()) {
            best = path[..n].to_vec();
        } else {
            break;
        }
    }
    best
}

/// Edges between modules (from the file's module to the module it names).
fn edges(src: &Path) -> (BTreeSet<ModPath>, BTreeSet<(ModPath, ModPath)>) {
    let files = modules(src);
    let known: BTreeSet<ModPath> = files.keys().cloned().collect();
    let mut edges = BTreeSet::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for path in paths(&code(&text), module) {
            let target = module_of(&path, &known);
            if &target != module {
                edges.insert((module.clone(), target));
            }
        }
    }
    (known, edges)
}

/// The first circle among the children of `parent`, as a list of module paths.
fn circle_under(
    parent: &ModPath,
    known: &BTreeSet<ModPath>,
    edges: &BTreeSet<(ModPath, ModPath)>,
) -> Option<Vec<String>> {
    let child = |m: &ModPath| -> Option<String> {
        (m.len() > parent.len() && m[..parent.len()] == parent[..]).then(|| m[parent.len()].clone())
    };
    let children: BTreeSet<String> = known.iter().filter_map(child).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges {
        if let (Some(a), Some(b)) = (child(from), child(to)) {
            if a != b {
                graph.entry(a).or_default().insert(b);
            }
        }
    }
    // Depth-first search with colours; the stack gives the circle.
    let mut state: BTreeMap<String, u8> = BTreeMap::new();
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut circle = stack[from..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(circle) = visit(next, graph, state, stack) {
                        return Some(circle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    for node in &children {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(circle) = visit(node, &graph, &mut state, &mut Vec::new()) {
                let prefix = if parent.is_empty() {
                    String::new()
                } else {
                    format!("{}::", parent.join("::"))
                };
                return Some(circle.into_iter().map(|m| format!("{prefix}{m}")).collect());
            }
        }
    }
    None
}

/// Every circle of a crate, one per folder level that has one.
fn circles(src: &Path) -> Vec<String> {
    let (known, edges) = edges(src);
    known
        .iter()
        .filter_map(|parent| circle_under(parent, &known, &edges))
        .map(|circle| circle.join(" -> "))
        .collect()
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

#[test]
fn no_crate_has_a_module_circle() {
    let mut found = Vec::new();
    for krate in ["api", "proxy", "compiler", "contracts"] {
        let src = crate_src(krate);
        let (known, edges) = edges(&src);
        assert!(
            known.len() > 3 && !edges.is_empty(),
            "{krate}: read {} modules and {} edges; the reader is broken",
            known.len(),
            edges.len()
        );
        for circle in circles(&src) {
            found.push(format!("{krate}: {circle}"));
        }
    }
    assert!(
        found.is_empty(),
        "modules that depend on each other in a circle (break it by moving what both need into \
         a module of its own, or by passing it in):\n{}",
        found.join("\n")
    );
}

/// The reader finds the circles it must, in a crate written for the purpose.
#[test]
fn a_circle_is_found_and_printed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("web")).unwrap();
    let write = |path: &str, text: &str| std::fs::write(src.join(path), text).unwrap();
    write(
        "lib.rs",
        "pub mod a;\npub mod b;\npub mod c;\npub mod web;\n",
    );
    write(
        "a.rs",
        "use crate::b::Thing;\n/// [`crate::c`] is only a doc link\n",
    );
    write(
        "b.rs",
        "pub struct Thing;\nfn f() { let _ = \"crate::c::in_a_string\"; }\nuse crate::{web::{error::E, x}, c};\n",
    );
    write("c.rs", "// crate::a in a comment\n");
    write("web/mod.rs", "pub mod error;\npub mod routes;\n");
    write("web/error.rs", "use super::routes::R;\n");
    write(
        "web/routes.rs",
        "use super::error::E;\nuse crate::web::State;\n",
    );

    let (_, edges) = edges(src);
    let edge = |a: &str, b: &str| {
        let path = |s: &str| -> ModPath {
            s.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        edges.contains(&(path(a), path(b)))
    };
    assert!(edge("a", "b"));
    assert!(edge("b", "web::error"));
    assert!(edge("b", "c"));
    assert!(!edge("a", "c"), "a doc link is not a dependency");
    assert!(!edge("c", "a"), "a comment is not a dependency");
    assert_eq!(
        circles(src),
        vec!["web::error -> web::routes -> web::error"]
    );

    write("c.rs", "use crate::a;\n");
    write("a.rs", "use crate::b::Thing;\n");
    let found = circles(src);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&"a -> b -> c -> a".to_owned()), "{found:?}");
}
