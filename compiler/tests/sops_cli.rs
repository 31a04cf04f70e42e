//! The `secrets` command paths end to end, scanning every byte they print and every file they
//! leave behind for the plaintext values.
//!
//! The commands run twice: through the library entry point (`cli_secrets::run_with`, with
//! captured stdio), and through the real `openclaw-compiler secrets …` binary.

mod sops_support;

#[allow(dead_code)]
#[path = "../src/cli_secrets.rs"]
mod cli_secrets;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;
use cli_secrets::{run_with, Io, SecretsCommand};
use compiler::sops;
use sops_support::{identity_file, keypair, Key};

const TELEGRAM: &str = "7711223344:AAH-telegram-SECRET-value";
const PROXY: &str = "pt_proxy_SECRET_0123456789";
const GATEWAY: &str = "gw-gateway-SECRET-abcdef";
const SECRETS: [&str; 3] = [TELEGRAM, PROXY, GATEWAY];

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: SecretsCommand,
}

/// What one command printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `secrets <args>` one way or the other.
trait Runner {
    fn run(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run;
}

struct Library<'a> {
    repo: &'a Path,
}

impl Runner for Library<'_> {
    fn run(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
        let cmd = Cli::try_parse_from(std::iter::once("secrets").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .cmd;
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |name: &str| env.get(name).cloned();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = stdin.as_bytes();
        let result = run_with(
            cmd,
            self.repo,
            &mut Io {
                stdin: &mut input,
                stdin_is_terminal: false,
                stdout: &mut out,
                stderr: &mut err,
                env: &lookup,
            },
        );
        if let Err(e) = &result {
            // What the binary would print on failure.
            writeln!(err, "error: {e:#}").unwrap();
        }
        Run {
            ok: result.is_ok(),
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
        }
    }
}

struct Binary<'a> {
    repo: &'a Path,
}

impl Runner for Binary<'_> {
    fn run(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_openclaw-compiler"))
            .arg("--repo")
            .arg(self.repo)
            .arg("secrets")
            .args(args)
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_KEY")
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Commands that do not read stdin may exit before it is written.
        let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn binary_has_secrets_command() -> bool {
    Command::new(env!("CARGO_BIN_EXE_openclaw-compiler"))
        .args(["secrets", "--help"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn assert_no_plaintext(label: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{label} contains a plaintext value:\n{text}"
        );
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The whole operator story: set from stdin, add a value from the environment, verify,
/// decrypt, rotate to a new key, re-encrypt; plus the error paths that see a secret.
fn exercise(runner: &dyn Runner, repo: &Path, keys: &Path) {
    let (old, new) = (keypair(), keypair());
    let other = keypair();
    let old_file = identity_file(keys, "old.txt", &old);
    let new_file = identity_file(keys, "new.txt", &new);
    let old_path = old_file.to_str().unwrap();
    let new_path = new_file.to_str().unwrap();
    let mut printed = Vec::new();
    let mut check = |label: &str, run: Run, should_succeed: bool| -> Run {
        assert_eq!(run.ok, should_succeed, "{label}: {}", run.stderr);
        assert_no_plaintext(&format!("{label} stderr"), &run.stderr);
        printed.push((label.to_owned(), run.stdout.clone()));
        run
    };
    let recipients = |k: &Key| vec!["--recipient".to_owned(), k.recipient.clone()];
    let with = |base: &[&str], extra: &[String]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().cloned())
            .collect()
    };
    let run = |args: Vec<String>, stdin: &str, env: &[(&str, &str)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        runner.run(&args, stdin, env)
    };

    // Set two values from stdin.
    let stdin = format!("# tenant acme\ntelegram-bot-token={TELEGRAM}\n\nproxy-token={PROXY}\n");
    let r = check(
        "set",
        run(with(&["set", "acme"], &recipients(&old)), &stdin, &[]),
        true,
    );
    assert!(
        r.stderr.contains(&compiler::layout::secrets_path("acme")),
        "{}",
        r.stderr
    );
    let path = repo.join(compiler::layout::secrets_path("acme"));
    let text = std::fs::read_to_string(&path).unwrap();
    sops::verify_without_keys(
        &text,
        "openclaw-secrets",
        "customer-acme",
        std::slice::from_ref(&old.recipient),
    )
    .unwrap();

    // Updating without a key would lose values: refused.
    check(
        "set without identity",
        run(
            with(
                &["set", "acme", "--from-env", "gateway-token=GW"],
                &recipients(&old),
            ),
            "",
            &[("GW", GATEWAY)],
        ),
        false,
    );
    // With the key (from SOPS_AGE_KEY_FILE), the new value joins the old ones.
    let r = check(
        "set from env",
        run(
            with(
                &["set", "acme", "--from-env", "gateway-token=GW"],
                &recipients(&old),
            ),
            "",
            &[("GW", GATEWAY), ("SOPS_AGE_KEY_FILE", old_path)],
        ),
        true,
    );
    assert!(
        r.stderr.contains("kept proxy-token, telegram-bot-token"),
        "{}",
        r.stderr
    );

    // Keyless verification.
    check(
        "verify",
        run(with(&["verify"], &recipients(&old)), "", &[]),
        true,
    );
    let r = check(
        "verify wrong recipients",
        run(with(&["verify", "acme"], &recipients(&other)), "", &[]),
        false,
    );
    assert!(
        r.stderr.contains(&other.recipient) && r.stderr.contains(&old.recipient),
        "{}",
        r.stderr
    );

    // Decrypt: key names only, one key, and the whole manifest (which is the point of it).
    let r = check(
        "decrypt keys",
        run(
            vec![
                "decrypt".into(),
                "acme".into(),
                "--keys-only".into(),
                "--identity-file".into(),
                old_path.into(),
            ],
            "",
            &[],
        ),
        true,
    );
    assert_eq!(r.stdout, "gateway-token\nproxy-token\ntelegram-bot-token\n");
    assert_no_plaintext("decrypt --keys-only stdout", &r.stdout);
    let r = runner.run(
        &[
            "decrypt",
            "acme",
            "--key",
            "proxy-token",
            "--identity-file",
            old_path,
        ],
        "",
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, PROXY);
    assert_no_plaintext("decrypt --key stderr", &r.stderr);
    let r = runner.run(&["decrypt", "acme"], "", &[("SOPS_AGE_KEY_FILE", old_path)]);
    assert!(r.ok, "{}", r.stderr);
    for secret in SECRETS {
        assert!(r.stdout.contains(secret));
    }
    assert_no_plaintext("decrypt stderr", &r.stderr);
    check(
        "decrypt with the wrong key",
        run(
            vec!["decrypt".into(), "acme".into()],
            "",
            &[("SOPS_AGE_KEY_FILE", new_path)],
        ),
        false,
    );

    // Rotate to the new key: the old one no longer opens the file, the new one does.
    check(
        "rotate",
        run(
            with(&["rotate", "--identity-file", old_path], &recipients(&new)),
            "",
            &[],
        ),
        true,
    );
    check(
        "verify after rotate",
        run(with(&["verify"], &recipients(&new)), "", &[]),
        true,
    );
    check(
        "decrypt with the rotated-out key",
        run(
            vec![
                "decrypt".into(),
                "acme".into(),
                "--identity-file".into(),
                old_path.into(),
            ],
            "",
            &[],
        ),
        false,
    );
    check(
        "re-encrypt",
        run(
            with(
                &["rotate", "--reencrypt", "--identity-file", new_path],
                &recipients(&new),
            ),
            "",
            &[],
        ),
        true,
    );
    let r = runner.run(
        &[
            "decrypt",
            "acme",
            "--key",
            "gateway-token",
            "--identity-file",
            new_path,
        ],
        "",
        &[],
    );
    assert_eq!(r.stdout, GATEWAY, "{}", r.stderr);

    // Error paths that have a secret in hand must not repeat it.
    check(
        "set: line without =",
        run(
            with(&["set", "beta"], &recipients(&new)),
            &format!("{TELEGRAM}\n"),
            &[],
        ),
        false,
    );
    let r = check(
        "set: unknown key",
        run(
            with(&["set", "beta"], &recipients(&new)),
            &format!("bot-token={TELEGRAM}\n"),
            &[],
        ),
        false,
    );
    assert!(r.stderr.contains("bot-token"), "{}", r.stderr);
    check(
        "set: duplicate key",
        run(
            with(&["set", "beta"], &recipients(&new)),
            &format!("proxy-token={PROXY}\nproxy-token={GATEWAY}\n"),
            &[],
        ),
        false,
    );
    check(
        "set: bad tenant name",
        run(
            with(&["set", "Not_A_Name"], &recipients(&new)),
            &format!("proxy-token={PROXY}\n"),
            &[],
        ),
        false,
    );

    for (label, stdout) in &printed {
        assert_no_plaintext(&format!("{label} stdout"), stdout);
    }
    // Nothing but ciphertext on disk, and no temporary files left behind.
    for file in files(repo) {
        let contents = std::fs::read(&file).unwrap();
        let contents = String::from_utf8_lossy(&contents);
        assert_no_plaintext(&file.display().to_string(), &contents);
        assert!(
            !file.to_string_lossy().contains(".tmp-"),
            "left behind: {}",
            file.display()
        );
    }
    assert!(!repo.join(compiler::layout::spec_dir("beta")).exists());
}

#[test]
fn sops_cli_through_the_library_never_leaks_plaintext() {
    let repo = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    exercise(&Library { repo: repo.path() }, repo.path(), keys.path());
}

#[test]
fn sops_cli_through_the_binary_never_leaks_plaintext() {
    assert!(
        binary_has_secrets_command(),
        "openclaw-compiler has no `secrets` subcommand"
    );
    let repo = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    exercise(&Binary { repo: repo.path() }, repo.path(), keys.path());
}

#[test]
fn sops_values_never_come_from_arguments() {
    // There is no flag that takes a value: only KEY=ENV_VAR names.
    let err = Cli::try_parse_from(["secrets", "set", "acme", "--value", "proxy-token=x"]);
    assert!(err.is_err());
}

/// Without --recipient, the commands use templates/platform.yaml's `sops.ageRecipients`, and
/// `rotate` follows a change to that list.
#[test]
fn sops_recipients_come_from_the_platform_config() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/platform.yaml");
    let Ok(platform) = std::fs::read_to_string(&source) else {
        eprintln!("skipping: {} is not there", source.display());
        return;
    };
    let with_recipients = |keys: &[&Key]| {
        let mut out = String::new();
        let mut in_list = false;
        for line in platform.lines() {
            if in_list && line.trim_start().starts_with("- age1") {
                continue;
            }
            in_list = false;
            out.push_str(line);
            out.push('\n');
            if line.trim() == "ageRecipients:" {
                in_list = true;
                let indent = " ".repeat(line.len() - line.trim_start().len() + 2);
                for key in keys {
                    out.push_str(&format!("{indent}- {}\n", key.recipient));
                }
            }
        }
        out
    };
    let repo = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("templates")).unwrap();
    let platform_path = repo.path().join("templates/platform.yaml");
    let (a, b, c) = (keypair(), keypair(), keypair());
    std::fs::write(&platform_path, with_recipients(&[&a, &b])).unwrap();
    let runner = Library { repo: repo.path() };

    let r = runner.run(&["set", "acme"], &format!("proxy-token={PROXY}\n"), &[]);
    assert!(r.ok, "{}", r.stderr);
    let file = repo.path().join(compiler::layout::secrets_path("acme"));
    let text = std::fs::read_to_string(&file).unwrap();
    sops::verify_without_keys(
        &text,
        "openclaw-secrets",
        "customer-acme",
        &[a.recipient.clone(), b.recipient.clone()],
    )
    .unwrap();
    let r = runner.run(&["verify"], "", &[]);
    assert!(r.ok, "{}", r.stderr);

    // The platform drops b and adds c: verify fails until rotate re-wraps.
    std::fs::write(&platform_path, with_recipients(&[&a, &c])).unwrap();
    let r = runner.run(&["verify", "acme"], "", &[]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&c.recipient) && r.stderr.contains(&b.recipient),
        "{}",
        r.stderr
    );
    let b_file = identity_file(keys.path(), "b.txt", &b);
    let r = runner.run(
        &["rotate", "--identity-file", b_file.to_str().unwrap()],
        "",
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    let r = runner.run(&["verify"], "", &[]);
    assert!(r.ok, "{}", r.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sops::decrypt(&text, &c.identity).unwrap().string_data()["proxy-token"],
        PROXY
    );
    assert!(sops::decrypt(&text, &b.identity).is_err());
}
