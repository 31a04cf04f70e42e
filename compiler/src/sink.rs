//! Writing compiled output into a working tree: only files whose bytes changed are rewritten (a replaced file
//! goes through a temporary file and a rename, so no reader sees half of it), and whatever the compiler owns
//! but no longer generates is removed. With [`crate::source`], the library's only filesystem edge. File
//! reads, comparisons and writes run in parallel: at 10,000 tenants the build is mostly system calls.

use crate::{Changes, GENERATED_ROOTS};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

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

/// The paths (relative to `repo`, '/'-separated) of every file under the generated roots. The folders
/// directly below each root (the shard folders) are walked in parallel.
pub fn generated_paths(repo: &Path) -> io::Result<BTreeSet<String>> {
    let mut files = Vec::new();
    let mut folders = Vec::new();
    for root in GENERATED_ROOTS {
        list_dir(repo, root, &mut files, &mut folders)?;
    }
    let below: Vec<Vec<String>> = folders
        .into_par_iter()
        .map(|folder| {
            let mut files = Vec::new();
            let mut stack = vec![folder];
            while let Some(dir) = stack.pop() {
                list_dir(repo, &dir, &mut files, &mut stack)?;
            }
            Ok(files)
        })
        .collect::<io::Result<_>>()?;
    files.extend(below.into_iter().flatten());
    // Sorted first (in parallel), so that building the set is a single pass.
    files.par_sort_unstable();
    Ok(files.into_iter().collect())
}

/// Adds the files of folder `rel` (relative to `repo`; nothing when it does not exist) to `files` and its
/// subfolders to `folders`.
fn list_dir(
    repo: &Path,
    rel: &str,
    files: &mut Vec<String>,
    folders: &mut Vec<String>,
) -> io::Result<()> {
    let dir = repo.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, "reading", &dir)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| with_path(e, "reading", &dir))?;
        let path = format!("{rel}/{}", entry.file_name().to_string_lossy());
        if entry
            .file_type()
            .map_err(|e| with_path(e, "reading", &entry.path()))?
            .is_dir()
        {
            folders.push(path);
        } else {
            files.push(path);
        }
    }
    Ok(())
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
/// that is not in `changes.paths`, then every folder that removal left empty (up to the generated roots,
/// which stay). `progress` is called once per file written, from any thread.
pub fn write_changes(
    repo: &Path,
    changes: &Changes,
    existing: &BTreeSet<String>,
    progress: impl Fn() + Sync,
) -> io::Result<WriteStats> {
    // The files to write, by folder: each folder's files are written by one thread, which first creates the
    // folder when it may be missing (it holds a file the tree did not have).
    let mut folders: Vec<Folder<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (path, contents) in &changes.files {
        let (dir, _) = path
            .rsplit_once('/')
            .ok_or_else(|| io::Error::other(format!("not below a generated root: {path}")))?;
        let i = *index.entry(dir).or_insert_with(|| {
            folders.push(Folder {
                dir,
                create: false,
                files: Vec::new(),
            });
            folders.len() - 1
        });
        folders[i].create |= !existing.contains(path);
        folders[i].files.push((path, contents));
    }
    // The parents of the folders to create come first, once each (the few shard folders and roots), so that
    // the parallel writers below only ever create their own leaf folder.
    let parents: BTreeSet<&str> = folders
        .iter()
        .filter(|f| f.create)
        .filter_map(|f| f.dir.rsplit_once('/').map(|(parent, _)| parent))
        .collect();
    for parent in parents {
        let dir = repo.join(parent);
        std::fs::create_dir_all(&dir).map_err(|e| with_path(e, "creating", &dir))?;
    }
    folders
        .into_par_iter()
        .try_for_each(|folder| -> io::Result<()> {
            let dir = repo.join(folder.dir);
            if folder.create {
                std::fs::create_dir_all(&dir).map_err(|e| with_path(e, "creating", &dir))?;
            }
            for (path, contents) in folder.files {
                let full = repo.join(path);
                if existing.contains(path) {
                    let tmp = full.with_extension("tmp~");
                    std::fs::write(&tmp, contents).map_err(|e| with_path(e, "writing", &tmp))?;
                    std::fs::rename(&tmp, &full).map_err(|e| with_path(e, "writing", &full))?;
                } else {
                    std::fs::write(&full, contents).map_err(|e| with_path(e, "writing", &full))?;
                }
                progress();
            }
            Ok(())
        })?;
    let written = changes.files.len();
    let stale: Vec<&String> = existing
        .iter()
        .filter(|p| !changes.paths.contains(*p))
        .collect();
    stale.par_iter().try_for_each(|path| {
        let full = repo.join(path);
        std::fs::remove_file(&full).map_err(|e| with_path(e, "removing", &full))
    })?;
    // Only a folder a file was removed from can have become empty (and then its parent, and so on).
    let emptied: BTreeSet<&str> = stale
        .iter()
        .filter_map(|p| p.rsplit_once('/').map(|(dir, _)| dir))
        .collect();
    for dir in emptied {
        remove_if_empty(repo, dir)?;
    }
    Ok(WriteStats {
        written,
        unchanged: changes.paths.len().saturating_sub(written),
        removed: stale.len(),
    })
}

/// The files [`write_changes`] writes into one folder.
struct Folder<'a> {
    /// Relative to the repository.
    dir: &'a str,
    /// Whether the folder may not exist yet.
    create: bool,
    files: Vec<(&'a String, &'a String)>,
}

/// Removes folder `dir` (relative to `repo`) if it is empty, then its parent if that leaves it empty, and so
/// on; stops at the generated roots, which stay even when empty.
fn remove_if_empty(repo: &Path, dir: &str) -> io::Result<()> {
    let mut dir = dir;
    while !GENERATED_ROOTS.contains(&dir) && crate::is_generated_path(dir) {
        let full = repo.join(dir);
        match std::fs::remove_dir(&full) {
            Ok(()) => {}
            // Not empty, or already removed along with an emptied child of it: nothing more to do above.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(with_path(e, "removing", &full)),
        }
        match dir.rsplit_once('/') {
            Some((parent, _)) => dir = parent,
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{layout, tenant_table};

    fn changes(files: &[(&str, &str)]) -> Changes {
        Changes {
            files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
            paths: files.iter().map(|(p, _)| p.to_string()).collect(),
        }
    }

    /// Every folder below `dir` that holds nothing.
    fn empty_folders(dir: &Path) -> Vec<PathBuf> {
        let mut empty = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if std::fs::read_dir(&path).unwrap().next().is_none() {
                    empty.push(path);
                } else {
                    empty.extend(empty_folders(&path));
                }
            }
        }
        empty
    }

    const TREE: &[(&str, &str)] = &[
        ("flux/tenants/kustomization.yaml", "index\n"),
        ("flux/tenants/82/kustomization.yaml", "shard\n"),
        ("flux/tenants/82/acme.yaml", "flux kustomization\n"),
        ("flux/tenants/82/acme/manifests.yaml", "manifests\n"),
        ("flux/tenants/82/acme/deep/er/file.yaml", "nested\n"),
        ("flux/tenants/5b/globex/manifests.yaml", "globex\n"),
        ("flux/tenants/5b/globex.yaml", "globex kustomization\n"),
        ("flux/platform/tenant-table/tenant-table-00.yaml", "table\n"),
        ("flux/platform/operators/kustomization.yaml", "operators\n"),
        ("flux/platform/services/api.yaml", "api\n"),
    ];

    #[test]
    fn a_write_into_a_fresh_tree_creates_every_folder() {
        let repo = tempfile::tempdir().unwrap();
        let all = changes(TREE);
        let stats = write_changes(repo.path(), &all, &BTreeSet::new(), || {}).unwrap();
        assert_eq!(
            stats,
            WriteStats {
                written: TREE.len(),
                unchanged: 0,
                removed: 0
            }
        );
        let on_disk = generated_on_disk(repo.path()).unwrap();
        let expected: BTreeMap<String, Vec<u8>> = TREE
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        assert_eq!(on_disk, expected);
        assert_eq!(generated_paths(repo.path()).unwrap(), all.paths);
    }

    #[test]
    fn a_rewrite_replaces_changed_files_and_adds_new_ones_beside_them() {
        let repo = tempfile::tempdir().unwrap();
        write_changes(repo.path(), &changes(TREE), &BTreeSet::new(), || {}).unwrap();
        let existing = generated_paths(repo.path()).unwrap();
        let mut next = changes(&[
            ("flux/tenants/82/acme/manifests.yaml", "changed\n"),
            ("flux/tenants/82/acme/new.yaml", "new\n"),
            ("flux/tenants/01/initech/manifests.yaml", "initech\n"),
        ]);
        next.paths = existing.clone();
        next.paths.insert("flux/tenants/82/acme/new.yaml".into());
        next.paths
            .insert("flux/tenants/01/initech/manifests.yaml".into());
        let stats = write_changes(repo.path(), &next, &existing, || {}).unwrap();
        assert_eq!((stats.written, stats.removed), (3, 0));
        let on_disk = generated_on_disk(repo.path()).unwrap();
        assert_eq!(on_disk.len(), TREE.len() + 2);
        assert_eq!(on_disk["flux/tenants/82/acme/manifests.yaml"], b"changed\n");
        assert_eq!(on_disk["flux/tenants/82/acme/new.yaml"], b"new\n");
        assert_eq!(
            on_disk["flux/tenants/01/initech/manifests.yaml"],
            b"initech\n"
        );
        // No temporary file is left behind.
        assert!(on_disk.keys().all(|p| !p.ends_with('~')));
    }

    #[test]
    fn removing_files_removes_the_folders_it_empties_and_no_others() {
        let repo = tempfile::tempdir().unwrap();
        write_changes(repo.path(), &changes(TREE), &BTreeSet::new(), || {}).unwrap();
        let existing = generated_paths(repo.path()).unwrap();
        // Keep acme's Flux Kustomization and shard index, drop its folder's files, all of globex's shard and
        // the whole tenant table.
        let kept = [
            "flux/tenants/kustomization.yaml",
            "flux/tenants/82/kustomization.yaml",
            "flux/tenants/82/acme.yaml",
        ];
        let mut next = changes(&[]);
        next.paths = kept.iter().map(|p| p.to_string()).collect();
        let stats = write_changes(repo.path(), &next, &existing, || {}).unwrap();
        assert_eq!(stats.removed, TREE.len() - kept.len());
        assert_eq!(stats.unchanged, kept.len());
        assert_eq!(generated_paths(repo.path()).unwrap(), next.paths);
        let p = repo.path();
        assert!(!p.join(layout::output_dir("acme")).exists());
        assert!(!p.join(layout::output_shard_dir("5b")).exists());
        assert!(p.join(layout::output_shard_dir("82")).is_dir());
        // The generated roots stay, even when nothing is left in them.
        assert!(p.join(tenant_table::DIR).is_dir());
        for root in GENERATED_ROOTS {
            assert_eq!(empty_folders(&p.join(root)), Vec::<PathBuf>::new());
        }
    }

    #[test]
    fn removing_every_file_leaves_only_the_roots() {
        let repo = tempfile::tempdir().unwrap();
        write_changes(repo.path(), &changes(TREE), &BTreeSet::new(), || {}).unwrap();
        let existing = generated_paths(repo.path()).unwrap();
        let stats = write_changes(repo.path(), &changes(&[]), &existing, || {}).unwrap();
        assert_eq!(stats.removed, TREE.len());
        for root in GENERATED_ROOTS {
            let dir = repo.path().join(root);
            assert!(dir.is_dir(), "{root}");
            assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "{root}");
        }
    }

    #[test]
    fn generated_paths_of_a_tree_without_output_is_empty() {
        let repo = tempfile::tempdir().unwrap();
        assert!(generated_paths(repo.path()).unwrap().is_empty());
    }
}
