//! docs/api.md's "The whole loop, step by step" and "Trying the budget path" run as written: each
//! `cargo run -p api --release -- dev …` line starts the real `openclaw-api dev` (this build's
//! binary) with its arguments, and the shell blocks after it run in one bash session in a folder
//! holding a copy of the checkout's templates/, flux/ and tenants/. The only substitutions: free
//! ports for 8080, 8081 and 11434, where an OpenAI-compatible stand-in answers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START: &str = "cargo run -p api --release -- dev";

/// The `sh` blocks under each `### title` of `doc`.
fn blocks_under(doc: &str, title: &str) -> Vec<String> {
    let start = doc
        .find(&format!("\n### {title}\n"))
        .unwrap_or_else(|| panic!("docs/api.md has no section {title:?}"));
    let rest = &doc[start + 1..];
    // The next heading of level 2 or 3 (shell comments inside the blocks start with "# ").
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| rest[4..].find(h))
        .min()
        .map_or(rest.len(), |i| i + 4);
    let section = &rest[..end];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(body.join("\n"));
        }
    }
    assert!(!blocks.is_empty(), "no sh block under {title:?}");
    blocks
}

struct Ports {
    api: u16,
    proxy: u16,
    model: u16,
}

impl Ports {
    fn apply(&self, text: &str) -> String {
        text.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.api))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", self.proxy))
            .replace("127.0.0.1:11434", &format!("127.0.0.1:{}", self.model))
    }
}

fn bash(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the documented commands failed:\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the block that starts the platform: its lines before the start command in bash, then the
/// api binary with the command's arguments. Returns once the api and the proxy answer.
fn start_platform(dir: &Path, block: &str, ports: &Ports) -> Child {
    let block = ports.apply(block);
    let (before, start) = block
        .split_once(START)
        .unwrap_or_else(|| panic!("the first block must start the platform: {block}"));
    if !before.trim().is_empty() {
        bash(dir, before);
    }
    let args: Vec<&str> = start.lines().next().unwrap().split_whitespace().collect();
    let child = Command::new(e2e::api_binary())
        .arg("dev")
        .args(&args)
        .args(["--listen", &format!("127.0.0.1:{}", ports.api)])
        .args(["--proxy-listen", &format!("127.0.0.1:{}", ports.proxy)])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for port in [ports.api, ports.proxy] {
        let url = format!("http://127.0.0.1:{port}/readyz");
        while !probe::ready(&url) {
            assert!(Instant::now() < deadline, "{url} never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    child
}

mod probe {
    /// Whether `url` answers 2xx (a bare HTTP/1.0 GET; the test needs nothing more).
    pub fn ready(url: &str) -> bool {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 2") || answer.starts_with("HTTP/1.0 2")
    }
}

fn checkout_copy(dir: &Path) {
    let checkout = e2e::checkout();
    for folder in ["templates", "flux", "tenants"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(checkout.join(folder))
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The commands' output, or `None` when curl is missing outside CI.
fn run_section(title: &str, model: u16) -> Option<String> {
    if !e2e::require("curl (the documented commands use it)", curl_available()) {
        return None;
    }
    let doc = std::fs::read_to_string(e2e::checkout().join("docs/api.md")).unwrap();
    let blocks = blocks_under(&doc, title);
    let dir = tempfile::tempdir().unwrap();
    checkout_copy(dir.path());
    let ports = Ports {
        api: e2e::free_port(),
        proxy: e2e::free_port(),
        model,
    };
    let mut platform = start_platform(dir.path(), &blocks[0], &ports);
    let script = blocks[1..]
        .iter()
        .map(|b| ports.apply(b))
        .collect::<Vec<_>>()
        .join("\n");
    let out = bash(dir.path(), &script);
    let _ = platform.kill();
    let _ = platform.wait();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_runs_as_documented() {
    let model = e2e::openai_stand_in().await.port();
    let Some(out) =
        tokio::task::spawn_blocking(move || run_section("The whole loop, step by step", model))
            .await
            .unwrap()
    else {
        return;
    };
    // Provisioned, answered through the proxy, metered into the api's ledger.
    assert!(out.contains("\"action\":\"provision\""), "{out}");
    assert!(out.contains("hello from the stand-in"), "{out}");
    assert!(out.contains("\"billableTokens\":150"), "{out}");
    // Suspended, reactivated, rotated: the proxy's answers, in order.
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.len() == 3 && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(codes, ["403", "200", "401", "200"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_path_runs_as_documented() {
    let model = e2e::openai_stand_in().await.port();
    let Some(out) =
        tokio::task::spawn_blocking(move || run_section("Trying the budget path", model))
            .await
            .unwrap()
    else {
        return;
    };
    let answers: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    // The provisioning answer, then the five calls: two fit in 300 tokens (150 each), then 429.
    let calls = &answers[1..];
    assert_eq!(calls.len(), 5, "{out}");
    assert!(
        calls[..2]
            .iter()
            .all(|c| c.contains("hello from the stand-in")),
        "{out}"
    );
    assert!(
        calls[2..].iter().all(|c| c.contains("insufficient_quota")),
        "{out}"
    );
}
