//! Branch refs, read and moved the way git itself does it, so that the api and git processes
//! working on the same repository (a `git push` from an SRE, `git gc`) exclude each other:
//! a loose ref `refs/heads/main` is changed by creating `refs/heads/main.lock` exclusively,
//! checking the current value under that lock, writing the new value and renaming the lock over
//! the ref. `packed-refs` is read when there is no loose ref.
//!
//! Moving a ref optionally flushes the new value and the folder to disk: that is the last step
//! that makes an acknowledged commit durable.

use std::io::Write;
use std::path::{Path, PathBuf};

use git2::Oid;

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// Another process holds the ref's lock.
    #[error("{0} is locked by another writer")]
    Locked(String),
    /// The ref does not hold the expected value.
    #[error("{0} moved")]
    Moved(String),
    #[error("{0}: {1}")]
    Corrupt(String, String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RefError + '_ {
    move |e| RefError::Io(path.display().to_string(), e)
}

/// The value of `refname` in the repository at `git_dir`; None when it does not exist.
pub fn read(git_dir: &Path, refname: &str) -> Result<Option<Oid>, RefError> {
    let path = git_dir.join(refname);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, text.trim()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => packed(git_dir, refname),
        Err(e) => Err(io(&path)(e)),
    }
}

fn parse(path: &Path, value: &str) -> Result<Oid, RefError> {
    if value.starts_with("ref: ") {
        return Err(RefError::Corrupt(
            path.display().to_string(),
            "is a symbolic ref; a branch is expected".into(),
        ));
    }
    Oid::from_str(value).map_err(|_| {
        RefError::Corrupt(
            path.display().to_string(),
            "does not hold an object id".into(),
        )
    })
}

fn packed(git_dir: &Path, refname: &str) -> Result<Option<Oid>, RefError> {
    let path = git_dir.join("packed-refs");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with('^') {
            continue;
        }
        if let Some((id, name)) = line.split_once(' ') {
            if name == refname {
                return parse(&path, id).map(Some);
            }
        }
    }
    Ok(None)
}

/// What the ref must hold before it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever it holds (or nothing).
    Anything,
    /// Exactly this value; None: the ref must not exist.
    Value(Option<Oid>),
}

/// Moves `refname` to `new` if it holds what `expect` says; with `durable`, the value and the
/// folder are flushed to disk before this returns.
pub fn update(
    git_dir: &Path,
    refname: &str,
    new: Oid,
    expect: Expect,
    durable: bool,
) -> Result<(), RefError> {
    let path = git_dir.join(refname);
    let folder = path.parent().unwrap_or(git_dir).to_path_buf();
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let mut lock = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock_path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RefError::Locked(refname.to_owned()))
        }
        Err(e) => return Err(io(&lock_path)(e)),
    };
    let result = (|| {
        if let Expect::Value(expected) = expect {
            if read(git_dir, refname)? != expected {
                return Err(RefError::Moved(refname.to_owned()));
            }
        }
        lock.write_all(format!("{new}\n").as_bytes())
            .map_err(io(&lock_path))?;
        if durable {
            lock.sync_data().map_err(io(&lock_path))?;
        }
        std::fs::rename(&lock_path, &path).map_err(io(&path))?;
        if durable {
            super::pack::sync_dir(&folder).map_err(io(&folder))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&lock_path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let a = repo.blob(b"a").unwrap();
        let b = repo.blob(b"b").unwrap();
        let name = "refs/heads/main";
        assert_eq!(read(dir.path(), name).unwrap(), None);
        update(dir.path(), name, a, Expect::Value(None), true).unwrap();
        assert_eq!(read(dir.path(), name).unwrap(), Some(a));
        assert!(matches!(
            update(dir.path(), name, b, Expect::Value(None), true),
            Err(RefError::Moved(_))
        ));
        update(dir.path(), name, b, Expect::Value(Some(a)), false).unwrap();
        assert_eq!(repo.refname_to_id(name).unwrap(), b, "libgit2 reads it");

        // A held lock refuses the update and is left alone.
        std::fs::write(dir.path().join("refs/heads/main.lock"), "").unwrap();
        assert!(matches!(
            update(dir.path(), name, a, Expect::Anything, false),
            Err(RefError::Locked(_))
        ));
        std::fs::remove_file(dir.path().join("refs/heads/main.lock")).unwrap();

        // A packed ref is read when there is no loose one.
        std::fs::remove_file(dir.path().join(name)).unwrap();
        std::fs::write(
            dir.path().join("packed-refs"),
            format!("# pack-refs with: peeled fully-peeled sorted\n{a} {name}\n"),
        )
        .unwrap();
        assert_eq!(read(dir.path(), name).unwrap(), Some(a));
        update(dir.path(), name, b, Expect::Value(Some(a)), true).unwrap();
        assert_eq!(read(dir.path(), name).unwrap(), Some(b));
    }
}
