//! `openclaw-compiler secrets …`: the operator's side of tenant secrets files.
//!
//! This module owns the command-line surface over [`compiler::sops`]: creating or updating
//! `tenants/<shard>/<name>/secrets.sops.yaml` from values read on stdin or from named environment
//! variables (never from arguments, which leak into shell history and process lists),
//! decrypting for operators who hold an age identity, re-wrapping every tenant's file when the
//! platform's recipients change, and the keyless check. It reads and writes files; the
//! cryptography is all in the library. Nothing here prints a secret value except `decrypt`,
//! whose job that is, and only to stdout.

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use compiler::platform::{Platform, PLATFORM_PATH};
use compiler::sops::{self, TENANT_SECRET_KEYS, TENANT_SECRET_NAME};
use compiler::spec::TenantName;
use zeroize::Zeroizing;

/// The file each tenant's secrets live in, relative to its folder.
use compiler::layout::{self, SECRETS_FILE};

/// Where the recipients come from: the platform config, or an explicit list.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Recipients {
    /// The platform config whose `sops.ageRecipients` to use [default: templates/platform.yaml].
    #[arg(long, value_name = "PATH")]
    pub platform: Option<PathBuf>,
    /// Use this age recipient instead of the platform's (repeatable). Public keys only.
    #[arg(long = "recipient", value_name = "AGE1…")]
    pub recipient: Vec<String>,
}

/// Where the age identity comes from.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Identity {
    /// An age identity file [default: $SOPS_AGE_KEY_FILE; $SOPS_AGE_KEY holds the key itself].
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
}

/// The `secrets` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SecretsCommand {
    /// Create or update tenants/<shard>/<TENANT>/secrets.sops.yaml. Values come from stdin as KEY=VALUE
    /// lines, or with --from-env from environment variables; never from arguments. Keys:
    /// telegram-bot-token, proxy-token, gateway-token.
    Set {
        /// The tenant's name.
        tenant: String,
        /// Take KEY's value from the environment variable ENV_VAR (repeatable); stdin is not read.
        #[arg(long = "from-env", value_name = "KEY=ENV_VAR")]
        from_env: Vec<String>,
        /// Write only the given values, dropping the file's others (no identity needed).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        recipients: Recipients,
        // Keeps the values of an existing file that are not being set.
        #[command(flatten)]
        identity: Identity,
    },
    /// Decrypt a tenant's secrets file (or --file) to stdout, checking its MAC.
    Decrypt {
        /// The tenant's name.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        tenant: Option<String>,
        /// Decrypt this SOPS file instead of a tenant's.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Print only this key's value, without a trailing newline.
        #[arg(long, value_name = "KEY", conflicts_with = "keys_only")]
        key: Option<String>,
        /// Print only the key names.
        #[arg(long)]
        keys_only: bool,
        #[command(flatten)]
        identity: Identity,
    },
    /// Re-wrap every tenant's data key for the platform's current recipients (values are not
    /// touched), or with --reencrypt encrypt everything afresh with new data keys.
    Rotate {
        /// Decrypt and re-encrypt fully: new data key, new IVs, new MAC.
        #[arg(long)]
        reencrypt: bool,
        /// Only these tenants (repeatable) [default: all].
        #[arg(long = "tenant", value_name = "NAME")]
        tenants: Vec<String>,
        #[command(flatten)]
        recipients: Recipients,
        #[command(flatten)]
        identity: Identity,
    },
    /// Check tenants' secrets files without any key: all values encrypted, exactly the
    /// platform's recipients, the right Secret name and namespace.
    Verify {
        /// Only these tenants [default: all].
        tenants: Vec<String>,
        #[command(flatten)]
        recipients: Recipients,
    },
}

/// The process's surroundings, passed in so that tests can capture every byte written.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdin_is_terminal: bool,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Runs a `secrets` subcommand against the repository at `repo_root` with the real stdio and
/// environment.
pub fn run(cmd: SecretsCommand, repo_root: &Path) -> Result<()> {
    let stdin = std::io::stdin();
    let stdin_is_terminal = stdin.is_terminal();
    let mut stdin = stdin.lock();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let env = |name: &str| std::env::var(name).ok();
    run_with(
        cmd,
        repo_root,
        &mut Io {
            stdin: &mut stdin,
            stdin_is_terminal,
            stdout: &mut stdout,
            stderr: &mut stderr,
            env: &env,
        },
    )
}

/// [`run`] with explicit stdio and environment.
pub fn run_with(cmd: SecretsCommand, repo_root: &Path, io: &mut Io<'_>) -> Result<()> {
    match cmd {
        SecretsCommand::Set {
            tenant,
            from_env,
            replace,
            recipients,
            identity,
        } => set(
            repo_root,
            &tenant,
            &from_env,
            replace,
            &recipients,
            &identity,
            io,
        ),
        SecretsCommand::Decrypt {
            tenant,
            file,
            key,
            keys_only,
            identity,
        } => decrypt(
            repo_root,
            tenant.as_deref(),
            file.as_deref(),
            key.as_deref(),
            keys_only,
            &identity,
            io,
        ),
        SecretsCommand::Rotate {
            reencrypt,
            tenants,
            recipients,
            identity,
        } => rotate(repo_root, reencrypt, &tenants, &recipients, &identity, io),
        SecretsCommand::Verify {
            tenants,
            recipients,
        } => verify(repo_root, &tenants, &recipients, io),
    }
}

fn tenant_name(name: &str) -> Result<TenantName> {
    TenantName::parse(name).map_err(|e| anyhow!(e))
}

fn secrets_path(repo_root: &Path, tenant: &TenantName) -> PathBuf {
    repo_root.join(layout::secrets_path(tenant.as_str()))
}

fn relative(repo_root: &Path, path: &Path) -> String {
    path.strip_prefix(repo_root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn resolve_recipients(repo_root: &Path, recipients: &Recipients) -> Result<Vec<String>> {
    if !recipients.recipient.is_empty() {
        return Ok(recipients.recipient.clone());
    }
    let path = recipients
        .platform
        .clone()
        .unwrap_or_else(|| repo_root.join(PLATFORM_PATH));
    let source =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let platform =
        Platform::parse(&relative(repo_root, &path), &source).map_err(|d| anyhow!("{d}"))?;
    if platform.sops.age_recipients.is_empty() {
        bail!("{}: sops.ageRecipients is empty", path.display());
    }
    Ok(platform.sops.age_recipients)
}

/// The identity file contents, from --identity-file, $SOPS_AGE_KEY_FILE or $SOPS_AGE_KEY.
fn load_identity(identity: &Identity, io: &Io<'_>) -> Result<Option<Zeroizing<String>>> {
    let path = identity.identity_file.clone().or_else(|| {
        (io.env)("SOPS_AGE_KEY_FILE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = path {
        let contents = fs::read_to_string(&path)
            .with_context(|| format!("reading identity file {}", path.display()))?;
        return Ok(Some(Zeroizing::new(contents)));
    }
    Ok((io.env)("SOPS_AGE_KEY")
        .filter(|k| !k.is_empty())
        .map(Zeroizing::new))
}

fn require_identity(identity: &Identity, io: &Io<'_>) -> Result<Zeroizing<String>> {
    load_identity(identity, io)?
        .ok_or_else(|| anyhow!("no age identity: pass --identity-file or set SOPS_AGE_KEY_FILE"))
}

/// Values to set, keyed by Secret key. Zeroized on drop.
struct Values(BTreeMap<String, Zeroizing<String>>);

fn check_key(key: &str) -> Result<()> {
    if TENANT_SECRET_KEYS.contains(&key) {
        Ok(())
    } else {
        bail!(
            "unknown secret key {key:?}; a tenant's secrets are {}",
            TENANT_SECRET_KEYS.join(", ")
        )
    }
}

fn insert_value(
    values: &mut Values,
    key: &str,
    value: Zeroizing<String>,
    origin: &str,
) -> Result<()> {
    check_key(key)?;
    if value.is_empty() {
        bail!("{origin}: the value for {key} is empty");
    }
    if values.0.insert(key.to_owned(), value).is_some() {
        bail!("{origin}: {key} is given more than once");
    }
    Ok(())
}

fn read_values(from_env: &[String], io: &mut Io<'_>) -> Result<Values> {
    let mut values = Values(BTreeMap::new());
    if !from_env.is_empty() {
        for mapping in from_env {
            let (key, var) = mapping
                .split_once('=')
                .ok_or_else(|| anyhow!("--from-env {mapping:?}: expected KEY=ENV_VAR"))?;
            let value = (io.env)(var)
                .ok_or_else(|| anyhow!("environment variable {var} (for {key}) is not set"))?;
            insert_value(
                &mut values,
                key,
                Zeroizing::new(value),
                &format!("environment variable {var}"),
            )?;
        }
        return Ok(values);
    }
    if io.stdin_is_terminal {
        writeln!(
            io.stderr,
            "reading KEY=VALUE lines from stdin ({}); end with Ctrl-D",
            TENANT_SECRET_KEYS.join(", ")
        )?;
    }
    let mut input = Zeroizing::new(String::new());
    io.stdin
        .read_to_string(&mut input)
        .context("reading values from stdin")?;
    for (n, line) in input.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let origin = format!("stdin line {}", n + 1);
        // Never echo the line: it holds a secret.
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("{origin}: expected KEY=VALUE"))?;
        insert_value(
            &mut values,
            key.trim(),
            Zeroizing::new(value.to_owned()),
            &origin,
        )?;
    }
    if values.0.is_empty() {
        bail!("no values given: pipe KEY=VALUE lines on stdin or use --from-env KEY=ENV_VAR");
    }
    Ok(values)
}

/// Writes `contents` next to `path` and renames it into place, so that a reader never sees a
/// half-written file. Only ciphertext is ever written.
fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let dir = path
        .parent()
        .expect("a secrets file lives in a tenant folder");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{SECRETS_FILE}.tmp-{}", std::process::id()));
    let written = fs::write(&tmp, contents)
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
        });
    if written.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn set(
    repo_root: &Path,
    tenant: &str,
    from_env: &[String],
    replace: bool,
    recipients: &Recipients,
    identity: &Identity,
    io: &mut Io<'_>,
) -> Result<()> {
    let tenant = tenant_name(tenant)?;
    let recipients = resolve_recipients(repo_root, recipients)?;
    let values = read_values(from_env, io)?;
    let path = secrets_path(repo_root, &tenant);
    let shown = relative(repo_root, &path);

    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    let mut kept = Vec::new();
    if path.exists() && !replace {
        let identities = load_identity(identity, io)?.ok_or_else(|| {
            anyhow!(
                "{shown} exists: pass --identity-file (or set SOPS_AGE_KEY_FILE) to keep its other values, or --replace to write only the given ones"
            )
        })?;
        let existing = fs::read_to_string(&path).with_context(|| format!("reading {shown}"))?;
        let secret =
            sops::decrypt(&existing, &identities).with_context(|| format!("decrypting {shown}"))?;
        if !secret.data().is_empty() {
            bail!("{shown} has `data` entries; tenant secrets use stringData only; use --replace");
        }
        for (key, value) in secret.string_data() {
            if !values.0.contains_key(key) {
                kept.push(key.clone());
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    for (key, value) in &values.0 {
        merged.insert(key.clone(), value.to_string());
    }
    let result = sops::tenant_secret_file(
        TENANT_SECRET_NAME,
        &tenant.namespace(),
        &merged,
        &recipients,
    );
    merged.values_mut().for_each(zeroize::Zeroize::zeroize);
    let encrypted = result?;
    write_atomically(&path, &encrypted)?;
    let set_keys: Vec<&str> = values.0.keys().map(String::as_str).collect();
    write!(io.stderr, "wrote {shown}: set {}", set_keys.join(", "))?;
    if !kept.is_empty() {
        write!(io.stderr, "; kept {}", kept.join(", "))?;
    }
    writeln!(
        io.stderr,
        "; encrypted for {} recipient(s)",
        recipients.len()
    )?;
    Ok(())
}

fn decrypt(
    repo_root: &Path,
    tenant: Option<&str>,
    file: Option<&Path>,
    key: Option<&str>,
    keys_only: bool,
    identity: &Identity,
    io: &mut Io<'_>,
) -> Result<()> {
    let path = match (tenant, file) {
        (_, Some(file)) => file.to_owned(),
        (Some(tenant), None) => secrets_path(repo_root, &tenant_name(tenant)?),
        (None, None) => bail!("name a tenant or pass --file"),
    };
    let shown = relative(repo_root, &path);
    let identities = require_identity(identity, io)?;
    let text = fs::read_to_string(&path).with_context(|| format!("reading {shown}"))?;
    let secret =
        sops::decrypt(&text, &identities).with_context(|| format!("decrypting {shown}"))?;
    if keys_only {
        for name in secret.string_data().keys().chain(secret.data().keys()) {
            writeln!(io.stdout, "{name}")?;
        }
    } else if let Some(key) = key {
        if let Some(value) = secret.string_data().get(key) {
            io.stdout.write_all(value.as_bytes())?;
        } else if let Some(value) = secret.data().get(key) {
            io.stdout.write_all(value)?;
        } else {
            bail!("{shown} has no key {key:?}");
        }
    } else {
        io.stdout.write_all(secret.to_yaml().as_bytes())?;
    }
    io.stdout.flush()?;
    Ok(())
}

/// Every tenant folder that has a secrets file, or the named ones.
fn tenant_files(repo_root: &Path, only: &[String]) -> Result<Vec<(TenantName, PathBuf)>> {
    if !only.is_empty() {
        return only
            .iter()
            .map(|name| {
                let tenant = tenant_name(name)?;
                let path = secrets_path(repo_root, &tenant);
                if !path.exists() {
                    bail!("{} does not exist", relative(repo_root, &path));
                }
                Ok((tenant, path))
            })
            .collect();
    }
    let dir = repo_root.join(layout::SPECS_DIR);
    let mut found = Vec::new();
    let shards = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for shard in shards {
        let shard = shard?;
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        if !shard.file_type()?.is_dir() || !layout::is_shard_name(&shard_name) {
            continue;
        }
        let entries = fs::read_dir(shard.path())
            .with_context(|| format!("listing {}", shard.path().display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path().join(SECRETS_FILE);
            if !entry.file_type()?.is_dir() || !path.exists() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            layout::check_spec_folder(&shard_name, &name).map_err(|d| anyhow!("{d}"))?;
            found.push((tenant_name(&name)?, path));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

fn rotate(
    repo_root: &Path,
    reencrypt: bool,
    only: &[String],
    recipients: &Recipients,
    identity: &Identity,
    io: &mut Io<'_>,
) -> Result<()> {
    let recipients = resolve_recipients(repo_root, recipients)?;
    let identities = require_identity(identity, io)?;
    let files = tenant_files(repo_root, only)?;
    let mut failed = Vec::new();
    for (tenant, path) in &files {
        let shown = relative(repo_root, path);
        let outcome = fs::read_to_string(path)
            .with_context(|| format!("reading {shown}"))
            .and_then(|text| {
                let rotated = if reencrypt {
                    sops::reencrypt(&text, &identities, &recipients)
                } else {
                    sops::rotate_recipients(&text, &identities, &recipients)
                };
                rotated.map_err(anyhow::Error::from)
            })
            .and_then(|rotated| write_atomically(path, &rotated));
        match outcome {
            Ok(()) => writeln!(
                io.stderr,
                "{}: {shown} for {} recipient(s)",
                if reencrypt {
                    "re-encrypted"
                } else {
                    "re-wrapped"
                },
                recipients.len()
            )?,
            Err(e) => {
                writeln!(io.stderr, "failed: {shown}: {e:#}")?;
                failed.push(tenant.to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} tenant(s) failed: {}",
            failed.len(),
            files.len(),
            failed.join(", ")
        );
    }
    writeln!(io.stderr, "{} tenant secrets file(s) done", files.len())?;
    Ok(())
}

fn verify(
    repo_root: &Path,
    only: &[String],
    recipients: &Recipients,
    io: &mut Io<'_>,
) -> Result<()> {
    let recipients = resolve_recipients(repo_root, recipients)?;
    let files = tenant_files(repo_root, only)?;
    let mut failed = Vec::new();
    for (tenant, path) in &files {
        let shown = relative(repo_root, path);
        let text = fs::read_to_string(path).with_context(|| format!("reading {shown}"))?;
        match sops::verify_without_keys(&text, TENANT_SECRET_NAME, &tenant.namespace(), &recipients)
        {
            Ok(()) => writeln!(io.stderr, "ok: {shown}")?,
            Err(e) => {
                writeln!(io.stderr, "{shown}: {e}")?;
                failed.push(tenant.to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} tenant secrets file(s) failed verification: {}",
            failed.len(),
            files.len(),
            failed.join(", ")
        );
    }
    writeln!(io.stderr, "{} tenant secrets file(s) verified", files.len())?;
    Ok(())
}
