//! Writing compiled output into a working tree: only files whose bytes changed are rewritten (each through a
//! temporary file and a rename, so no reader sees half a file), and whatever the compiler owns but no longer
//! generates is removed. With [`crate::source`], the library's only filesystem edge.

use crate::{Output, GENERATED_ROOTS};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

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

/// Every file currently under the generated roots of the working tree at `repo`.
pub fn generated_on_disk(repo: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
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
                    let bytes = std::fs::read(&path).map_err(|e| with_path(e, "reading", &path))?;
                    files.insert(rel, bytes);
                }
            }
        }
    }
    Ok(files)
}

/// Makes the generated roots of `repo` hold exactly `output`. `progress` is called once per output file.
pub fn write(repo: &Path, output: &Output, mut progress: impl FnMut()) -> io::Result<WriteStats> {
    let existing = generated_on_disk(repo)?;
    let mut stats = WriteStats::default();
    for (path, contents) in &output.files {
        if existing
            .get(path)
            .is_some_and(|old| old == contents.as_bytes())
        {
            stats.unchanged += 1;
        } else {
            let full = repo.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(|e| with_path(e, "creating", parent))?;
            }
            if existing.contains_key(path) {
                // Replace through a rename so that no reader sees half a file.
                let tmp = full.with_extension("tmp~");
                std::fs::write(&tmp, contents).map_err(|e| with_path(e, "writing", &tmp))?;
                std::fs::rename(&tmp, &full).map_err(|e| with_path(e, "writing", &full))?;
            } else {
                std::fs::write(&full, contents).map_err(|e| with_path(e, "writing", &full))?;
            }
            stats.written += 1;
        }
        progress();
    }
    for path in existing.keys().filter(|p| !output.files.contains_key(*p)) {
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
