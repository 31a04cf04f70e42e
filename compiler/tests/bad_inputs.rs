//! The corpus of malformed inputs under tests/corpus/: each case changes one file of a copy of this
//! repository, runs `openclaw-compiler build`, and asserts the exit code, the message (what, where, hint),
//! and that nothing was written.
//!
//! A case file starts with directives, the rest is the file body:
//! `#! target: PATH` (write the body there), `#! from: PATH` (start the body from that file of the repo),
//! `#! replace: "A" => "B"` (JSON strings), `#! replace-line: "PREFIX" => "LINE"`, `#! pad: N` (append a
//! comment of N bytes), `#! remove: PATH`, `#! expect: TEXT` (must appear in stderr), `#! at: TEXT` (a
//! position that must appear), `#! forbid: TEXT` (must not appear anywhere in the output).

mod support;

use std::path::Path;
use std::process::Command;

struct Case {
    name: String,
    target: Option<String>,
    body: String,
    removes: Vec<String>,
    expects: Vec<String>,
    forbids: Vec<String>,
}

fn json_str(s: &str) -> String {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("bad JSON string {s}: {e}"))
}

fn parse_case(name: &str, text: &str) -> Case {
    let root = support::repo_root();
    let mut case = Case {
        name: name.into(),
        target: None,
        body: String::new(),
        removes: vec![],
        expects: vec![],
        forbids: vec![],
    };
    let mut body_lines = Vec::new();
    let mut from = None;
    let mut edits: Vec<(String, String, String)> = Vec::new();
    for line in text.lines() {
        let Some(directive) = line.strip_prefix("#! ") else {
            body_lines.push(line);
            continue;
        };
        let (key, value) = directive
            .split_once(": ")
            .unwrap_or_else(|| panic!("{name}: bad directive {line}"));
        match key {
            "target" => case.target = Some(value.into()),
            "from" => from = Some(std::fs::read_to_string(root.join(value)).unwrap()),
            "replace" | "replace-line" => {
                let (a, b) = value.split_once(" => ").unwrap();
                edits.push((key.into(), json_str(a), json_str(b)));
            }
            "pad" => edits.push(("pad".into(), value.into(), String::new())),
            "remove" => case.removes.push(value.into()),
            "expect" | "at" => case.expects.push(value.into()),
            "forbid" => case.forbids.push(value.into()),
            other => panic!("{name}: unknown directive {other}"),
        }
    }
    let mut body = from.unwrap_or_else(|| {
        let mut b = body_lines.join("\n");
        if !b.is_empty() {
            b.push('\n');
        }
        b
    });
    for (kind, a, b) in edits {
        match kind.as_str() {
            "replace" => {
                assert!(body.contains(&a), "{name}: {a:?} not found in the source");
                body = body.replacen(&a, &b, 1);
            }
            "replace-line" => {
                let mut found = false;
                body = body
                    .lines()
                    .map(|l| {
                        if !found && l.starts_with(&a) {
                            found = true;
                            b.clone()
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
                assert!(found, "{name}: no line starts with {a:?}");
            }
            "pad" => {
                let n: usize = a.parse().unwrap();
                body.push_str(&format!("# {}\n", "x".repeat(n)));
            }
            _ => unreachable!(),
        }
    }
    case.body = body;
    assert!(
        !case.expects.is_empty(),
        "{name}: a case must expect something"
    );
    case
}

#[test]
fn every_malformed_input_is_reported_precisely_and_changes_nothing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.len() >= 40,
        "the corpus holds at least 40 cases, found {}",
        names.len()
    );
    let mut failures = Vec::new();
    for name in &names {
        let case = parse_case(name, &std::fs::read_to_string(dir.join(name)).unwrap());
        let repo = support::copy_repo();
        for r in &case.removes {
            let p = repo.path().join(r);
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap()
            } else {
                std::fs::remove_file(p).unwrap()
            }
        }
        if let Some(t) = &case.target {
            let p = repo.path().join(t);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &case.body).unwrap();
        }
        let before = compiler::sink::generated_on_disk(repo.path()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_openclaw-compiler"))
            .args(["build", "--repo"])
            .arg(repo.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let after = compiler::sink::generated_on_disk(repo.path()).unwrap();
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit code {:?}, expected 1", out.status.code()));
        }
        for e in &case.expects {
            if !stderr.contains(e.as_str()) {
                problems.push(format!("stderr lacks {e:?}"));
            }
        }
        if !stderr.contains("= hint: ") {
            problems.push("no hint".into());
        }
        for f in &case.forbids {
            if stderr.contains(f.as_str()) || stdout.contains(f.as_str()) {
                problems.push(format!("output reveals {f:?}"));
            }
        }
        if before != after {
            problems.push("flux/ changed".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n--- stderr ---\n{stderr}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}
