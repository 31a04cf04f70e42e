//! Writing compiled output into a working tree: only files whose bytes changed are rewritten (a replaced file
//! goes through a temporary file and a rename, so no reader sees half of it), and whatever the compiler owns
//! but no longer generates is removed. With [`crate::source`], the library's only filesystem edge. File
//! reads, comparisons and writes run in parallel: at 10,000 tenants the build is mostly system calls.

use crate::{Changes, GENERATED_ROOTS};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// What a write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The paths (relative to `repo`, '/'-separated) of every file under the generated roots.
pub fn generated_paths(repo: &Path) -> io::Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    for root in GENERATED_ROOTS {
        let mut stack = vec![repo.join(root)];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(with_path(e, "reading", &dir)),
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(repo)
                        .expect("walked below repo")
                        .to_string_lossy()
                        .replace('\\', "/");
                    files.insert(rel);
                }
            }
        }
    }
    Ok(files)
}

/// Every file currently under the generated roots of the working tree at `repo`, with its bytes.
pub fn generated_on_disk(repo: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let paths: Vec<String> = generated_paths(repo)?.into_iter().collect();
    paths
        .into_par_iter()
        .map(|rel| {
            let full = repo.join(&rel);
            let bytes = std::fs::read(&full).map_err(|e| with_path(e, "reading", &full))?;
            Ok((rel, bytes))
        })
        .collect()
}

/// Whether the file at `path` (relative to `repo`) holds exactly `contents`; `existing` is
/// [`generated_paths`] of the same tree, so that files known to be missing are not looked for.
pub fn unchanged_on_disk(
    repo: &Path,
    existing: &BTreeSet<String>,
    path: &str,
    contents: &str,
) -> bool {
    existing.contains(path)
        && std::fs::read(repo.join(path)).is_ok_and(|old| old == contents.as_bytes())
}

/// Makes the generated roots of `repo` hold exactly the files of `changes`: writes `changes.files` and
/// removes every file of `existing` (the tree's [`generated_paths`], read before the changes were computed)
/// that is not in `changes.paths`. `progress` is called once per file written, from any thread.
pub fn write_changes(
    repo: &Path,
    changes: &Changes,
    existing: &BTreeSet<String>,
    progress: impl Fn() + Sync,
) -> io::Result<WriteStats> {
    // Folders first, once each, so that parallel writers never race to create them.
    let dirs: BTreeSet<PathBuf> = changes
        .files
        .keys()
        .filter(|p| !existing.contains(*p))
        .filter_map(|p| repo.join(p).parent().map(Path::to_path_buf))
        .collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, "creating", dir))?;
    }
    let files: Vec<(&String, &String)> = changes.files.iter().collect();
    files
        .into_par_iter()
        .try_for_each(|(path, contents)| -> io::Result<()> {
            let full = repo.join(path);
            if existing.contains(path) {
                let tmp = full.with_extension("tmp~");
                std::fs::write(&tmp, contents).map_err(|e| with_path(e, "writing", &tmp))?;
                std::fs::rename(&tmp, &full).map_err(|e| with_path(e, "writing", &full))?;
            } else {
                std::fs::write(&full, contents).map_err(|e| with_path(e, "writing", &full))?;
            }
            progress();
            Ok(())
        })?;
    let written = changes.files.len();
    let mut stats = WriteStats {
        written,
        unchanged: changes.paths.len().saturating_sub(written),
        removed: 0,
    };
    for path in existing.iter().filter(|p| !changes.paths.contains(*p)) {
        let full = repo.join(path);
        std::fs::remove_file(&full).map_err(|e| with_path(e, "removing", &full))?;
        stats.removed += 1;
    }
    for root in GENERATED_ROOTS {
        let dir = repo.join(root);
        if dir.is_dir() {
            remove_empty_dirs(&dir, true)?;
        }
    }
    Ok(stats)
}

/// Removes empty folders below `dir` (and `dir` itself unless `keep`); true when `dir` ended up empty.
fn remove_empty_dirs(dir: &Path, keep: bool) -> io::Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if !remove_empty_dirs(&entry.path(), false)? {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    if empty && !keep {
        std::fs::remove_dir(dir)?;
    }
    Ok(empty)
}
