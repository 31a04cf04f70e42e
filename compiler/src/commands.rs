//! The subcommands: read inputs, call the library, write or compare files, report.

use anyhow::{bail, Context, Result};
use compiler::{source, Diagnostics, Output};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

fn report(d: &Diagnostics) -> ExitCode {
    eprintln!("{d}");
    ExitCode::FAILURE
}

/// The inputs of the working tree at `repo`; an error when it is not a repository root.
fn read_inputs(repo: &Path) -> Result<Result<source::Inputs, Diagnostics>> {
    if !repo.join("templates").is_dir() {
        bail!(
            "{} has no templates/ folder: run from the repository root or pass --repo",
            repo.display()
        );
    }
    Ok(source::from_dir(repo))
}

fn compile_dir(repo: &Path) -> Result<Result<(usize, Output), Diagnostics>> {
    let inputs = match read_inputs(repo)? {
        Ok(i) => i,
        Err(d) => return Ok(Err(d)),
    };
    let count = inputs.tenants.len();
    Ok(compiler::compile(&inputs.platform, &inputs.templates, &inputs.tenants).map(|o| (count, o)))
}

/// Every file under the generated roots in the tree of revision `rev`.
fn generated_at_rev(repo: &Path, rev: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let git = git2::Repository::discover(repo).context("opening the git repository")?;
    let tree = git
        .revparse_single(rev)
        .with_context(|| format!("unknown revision {rev:?}"))?
        .peel_to_tree()
        .with_context(|| format!("{rev:?} does not name a commit"))?;
    let prefix = git
        .workdir()
        .and_then(|w| {
            repo.canonicalize()
                .ok()?
                .strip_prefix(w.canonicalize().ok()?)
                .ok()
                .map(|p| p.to_path_buf())
        })
        .unwrap_or_default();
    let prefix = prefix.to_string_lossy().replace('\\', "/");
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut files = BTreeMap::new();
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        let full = format!("{dir}{}", entry.name().unwrap_or_default());
        if let Some(rel) = full.strip_prefix(&prefix) {
            if compiler::is_generated_path(rel) {
                match entry.to_object(&git).and_then(|o| o.peel_to_blob()) {
                    Ok(b) => {
                        files.insert(rel.to_string(), b.content().to_vec());
                    }
                    Err(e) => {
                        failure = Some(e);
                        return git2::TreeWalkResult::Abort;
                    }
                }
            }
        }
        git2::TreeWalkResult::Ok
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(files)
}

pub fn build(repo: &Path, jobs: Option<usize>) -> Result<ExitCode> {
    if let Some(jobs) = jobs {
        rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .build_global()
            .ok();
    }
    let inputs = match read_inputs(repo)? {
        Ok(i) => i,
        Err(d) => return Ok(report(&d)),
    };
    let tenants = inputs.tenants.len();
    let bar = |len: usize, message: &'static str| {
        (len > 2000 && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(len as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_message(message);
            bar
        })
    };
    // Each rendered file is compared with the tree's as soon as it exists; only differing files are kept, and
    // nothing is written unless every tenant compiles.
    let existing = compiler::sink::generated_paths(repo)?;
    let rendering = bar(tenants, "rendering tenants");
    let unchanged = |path: &str, contents: &str| {
        if let Some(bar) = rendering
            .as_ref()
            .filter(|_| path.ends_with(compiler::layout::MANIFESTS_FILE))
        {
            bar.inc(1);
        }
        compiler::sink::unchanged_on_disk(repo, &existing, path, contents)
    };
    let changes = compiler::compile_changes(
        &inputs.platform,
        &inputs.templates,
        &inputs.tenants,
        &unchanged,
    );
    if let Some(bar) = rendering {
        bar.finish_and_clear();
    }
    let changes = match changes {
        Ok(c) => c,
        Err(d) => return Ok(report(&d)),
    };
    let writing = bar(changes.files.len(), "writing files");
    let stats = compiler::sink::write_changes(repo, &changes, &existing, || {
        if let Some(bar) = &writing {
            bar.inc(1);
        }
    })?;
    if let Some(bar) = writing {
        bar.finish_and_clear();
    }
    let (written, unchanged, removed) = (stats.written, stats.unchanged, stats.removed);
    eprintln!(
        "built {tenants} tenant{}: {written} file{} written, {unchanged} unchanged, {removed} removed",
        if tenants == 1 { "" } else { "s" },
        if written == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// (missing, differing, stale) paths.
fn differences(
    expected: &Output,
    actual: &BTreeMap<String, Vec<u8>>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    for (path, contents) in &expected.files {
        match actual.get(path) {
            None => missing.push(path.clone()),
            Some(old) if old != contents.as_bytes() => differ.push(path.clone()),
            Some(_) => {}
        }
    }
    let stale = actual
        .keys()
        .filter(|p| !expected.files.contains_key(*p))
        .cloned()
        .collect();
    (missing, differ, stale)
}

pub fn check(repo: &Path) -> Result<ExitCode> {
    let (tenants, output) = match compile_dir(repo)? {
        Ok(o) => o,
        Err(d) => return Ok(report(&d)),
    };
    let actual = compiler::sink::generated_on_disk(repo)?;
    let (missing, differ, stale) = differences(&output, &actual);
    if missing.is_empty() && differ.is_empty() && stale.is_empty() {
        eprintln!(
            "flux/ is up to date with the specs of {tenants} tenant{}",
            if tenants == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut err = std::io::stderr().lock();
    writeln!(err, "flux/ is not what the specs produce:")?;
    for p in &missing {
        writeln!(err, "  missing: {p}")?;
    }
    for p in &differ {
        writeln!(err, "  differs: {p}")?;
    }
    for p in &stale {
        writeln!(err, "  stale:   {p} (no spec renders it)")?;
    }
    writeln!(
        err,
        "{} missing, {} differing, {} stale; run `openclaw-compiler build` and commit the result (`openclaw-compiler diff` shows the changes)",
        missing.len(),
        differ.len(),
        stale.len()
    )?;
    Ok(ExitCode::FAILURE)
}

pub fn diff(repo: &Path, rev: Option<&str>, color: Color) -> Result<ExitCode> {
    let (_, output) = match compile_dir(repo)? {
        Ok(o) => o,
        Err(d) => return Ok(report(&d)),
    };
    let (label, actual) = match rev {
        Some(rev) => (rev.to_string(), generated_at_rev(repo, rev)?),
        None => (
            "working tree".to_string(),
            compiler::sink::generated_on_disk(repo)?,
        ),
    };
    let colored = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal(),
    };
    if colored {
        console::set_colors_enabled(true);
    }
    let paths: BTreeSet<&String> = output.files.keys().chain(actual.keys()).collect();
    let mut out = std::io::stdout().lock();
    let mut changed = 0usize;
    for path in paths {
        let old = actual
            .get(path)
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let new = output.files.get(path);
        if old.as_deref() == new.map(String::as_str) {
            continue;
        }
        changed += 1;
        let old_text = old.as_deref().unwrap_or("");
        let new_text = new.map(String::as_str).unwrap_or("");
        let old_name = if old.is_some() {
            format!("a/{path}")
        } else {
            "/dev/null".to_string()
        };
        let new_name = if new.is_some() {
            format!("b/{path}")
        } else {
            "/dev/null".to_string()
        };
        let diff = similar::TextDiff::from_lines(old_text, new_text);
        let text = diff
            .unified_diff()
            .context_radius(3)
            .header(&old_name, &new_name)
            .to_string();
        for line in text.lines() {
            let styled = if !colored {
                line.to_string()
            } else if line.starts_with("+++") || line.starts_with("---") {
                console::style(line).bold().to_string()
            } else if line.starts_with('+') {
                console::style(line).green().to_string()
            } else if line.starts_with('-') {
                console::style(line).red().to_string()
            } else if line.starts_with("@@") {
                console::style(line).cyan().to_string()
            } else {
                line.to_string()
            };
            writeln!(out, "{styled}")?;
        }
    }
    eprintln!(
        "{changed} file{} differ from {label}",
        if changed == 1 { "" } else { "s" }
    );
    Ok(if changed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn validate(repo: &Path) -> Result<ExitCode> {
    if !repo.join("templates").is_dir() {
        bail!(
            "{} has no templates/ folder: run from the repository root or pass --repo",
            repo.display()
        );
    }
    let platform = match source::platform_from_dir(repo) {
        Ok(p) => p,
        Err(d) => return Ok(report(&d)),
    };
    let tenants = match source::tenants_from_dir(repo) {
        Ok(t) => t,
        Err(d) => return Ok(report(&d)),
    };
    match compiler::validate::tenants(&platform, &tenants) {
        Ok(valid) => {
            eprintln!(
                "{} tenant spec{} valid",
                valid.len(),
                if valid.len() == 1 { " is" } else { "s are" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => Ok(report(&d)),
    }
}

/// `path`: a tenant's paths, one `what: path` line each, for SREs and scripts.
pub fn path(tenant: &str) -> Result<ExitCode> {
    let name = compiler::spec::TenantName::parse(tenant.to_string())
        .map_err(|why| anyhow::anyhow!("{tenant:?} is not a valid tenant name: {why}"))?;
    print!("{}", compiler::layout::describe(name.as_str()));
    Ok(ExitCode::SUCCESS)
}
