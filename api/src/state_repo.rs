//! The state repo: the api's bare clone of the GitOps repository Flux watches.
//!
//! This module owns every git operation: opening or cloning the clone, reading files of a commit,
//! building new trees in memory from a parent tree plus a list of edits (no working tree, no index
//! file: only the trees on the path of an edit are rewritten), writing commits, fetching and
//! pushing with the configured credentials. It does not know what a tenant is.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{
    Cred, CredentialType, ErrorCode, FetchOptions, ObjectType, Oid, PushOptions, RemoteCallbacks,
    Repository, Signature, Tree,
};

use crate::config::RepoConfig;

pub const REMOTE: &str = "origin";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("the remote branch {0:?} does not exist; seed the state repo first (see docs/api.md)")]
    NoBranch(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why a push did not land.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Someone else pushed first: fetch, re-apply, retry.
    #[error("push rejected: the remote branch moved")]
    Rejected,
    /// The remote could not be reached (network, credentials, missing path).
    #[error("the state repo's remote cannot be reached: {0}")]
    Unreachable(String),
}

/// One edit of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Create or replace the file at `path` ('/'-separated, relative to the root).
    Write { path: String, contents: Vec<u8> },
    /// Remove the file or folder at `path` (absent is fine).
    Remove { path: String },
}

impl Edit {
    pub fn path(&self) -> &str {
        match self {
            Edit::Write { path, .. } | Edit::Remove { path } => path,
        }
    }
}

/// The api's clone and how to reach its remote.
///
/// New objects are written to an in-memory pack (libgit2's mempack backend) and flushed to disk as
/// one pack file per batch by [`StateRepo::persist`]: a loose object costs a file creation each,
/// and a change writes about twenty objects.
pub struct StateRepo {
    // Field order is drop order: the mempack handle and the object database go before the
    // repository that owns them.
    mempack: Option<git2::Mempack<'static>>,
    odb: Option<git2::Odb<'static>>,
    repo: Repository,
    config: RepoConfig,
    /// The background `git repack` started by [`StateRepo::maintain`], if still running.
    repack: Option<std::process::Child>,
    packs_written: usize,
    /// Commits written since the last [`StateRepo::persist`].
    unsaved: Vec<Oid>,
}

// SAFETY: git2 makes `Repository` and `Odb` Send; `Mempack` is a pointer to a backend owned by
// the odb. A `StateRepo` is used by one thread at a time (it is not Sync), which is all libgit2
// asks of a repository and its backends.
unsafe impl Send for StateRepo {}

impl StateRepo {
    /// Opens the clone at `config.local_path`, creating it (bare, with the remote) and fetching
    /// the branch when it does not exist yet.
    pub fn open_or_clone(config: &RepoConfig) -> Result<StateRepo, RepoError> {
        let path = &config.local_path;
        let repo = if path.join("HEAD").exists() {
            Repository::open_bare(path)?
        } else {
            std::fs::create_dir_all(path)?;
            let repo = Repository::init_bare(path)?;
            repo.set_head(&format!("refs/heads/{}", config.branch))?;
            repo.remote(REMOTE, &config.remote_url)?;
            repo
        };
        if repo.find_remote(REMOTE)?.url() != Some(config.remote_url.as_str()) {
            repo.remote_set_url(REMOTE, &config.remote_url)?;
        }
        let odb = repo.odb()?;
        // SAFETY: `Odb` and `Mempack` carry lifetimes only to tie them to the repository and the
        // odb handle; the underlying libgit2 objects are reference-counted (the odb) or owned by
        // the odb (the backend). Both handles are stored beside the repository and dropped before
        // it (field order), so they never outlive what they point to.
        let odb: git2::Odb<'static> =
            unsafe { std::mem::transmute::<git2::Odb<'_>, git2::Odb<'static>>(odb) };
        let mempack = odb.add_new_mempack_backend(1000)?;
        let mempack: git2::Mempack<'static> =
            unsafe { std::mem::transmute::<git2::Mempack<'_>, git2::Mempack<'static>>(mempack) };
        let state = StateRepo {
            mempack: Some(mempack),
            odb: Some(odb),
            repo,
            config: config.clone(),
            repack: None,
            packs_written: 0,
            unsaved: Vec::new(),
        };
        if state.remote_tip().is_none() {
            state.fetch().map_err(|e| match e {
                PushError::Unreachable(msg) => RepoError::Git(git2::Error::from_str(&msg)),
                PushError::Rejected => RepoError::NoBranch(config.branch.clone()),
            })?;
        }
        if state.remote_tip().is_none() {
            return Err(RepoError::NoBranch(config.branch.clone()));
        }
        Ok(state)
    }

    /// Opens an existing clone for reading only.
    pub fn open_for_reading(path: &Path) -> Result<Repository, RepoError> {
        Ok(Repository::open_bare(path)?)
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/{REMOTE}/{}", self.config.branch)
    }

    fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.config.branch)
    }

    /// The remote branch as last fetched or pushed.
    pub fn remote_tip(&self) -> Option<Oid> {
        self.repo.refname_to_id(&self.tracking_ref()).ok()
    }

    /// Moves the local branch (what gets pushed next).
    pub fn set_local_tip(&mut self, tip: Oid, why: &str) -> Result<(), RepoError> {
        self.persist()?;
        self.repo.reference(&self.branch_ref(), tip, true, why)?;
        Ok(())
    }

    fn set_remote_tip(&self, tip: Oid) -> Result<(), RepoError> {
        self.repo
            .reference(&self.tracking_ref(), tip, true, "push")?;
        Ok(())
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        let config = &self.config;
        let mut attempts = 0;
        callbacks.credentials(move |_url, username, allowed| {
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("credentials were refused"));
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                if let Some(key) = &config.ssh_key_path {
                    return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
                }
                return Cred::ssh_key_from_agent(username.unwrap_or("git"));
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(path) = &config.token_path {
                    let token = std::fs::read_to_string(path).map_err(|e| {
                        git2::Error::from_str(&format!("cannot read repo.token_path: {e}"))
                    })?;
                    return Cred::userpass_plaintext(&config.token_username, token.trim());
                }
            }
            Err(git2::Error::from_str(
                "no credentials configured for this remote",
            ))
        });
        callbacks
    }

    /// Fetches the remote branch into the tracking ref; returns the remote tip.
    pub fn fetch(&self) -> Result<Option<Oid>, PushError> {
        let mut remote = self
            .repo
            .find_remote(REMOTE)
            .map_err(|e| PushError::Unreachable(e.message().to_owned()))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        let refspec = format!("+refs/heads/{}:{}", self.config.branch, self.tracking_ref());
        remote
            .fetch(&[&refspec], Some(&mut options), Some("fetch"))
            .map_err(|e| PushError::Unreachable(e.message().to_owned()))?;
        Ok(self.remote_tip())
    }

    /// Pushes `tip` to the remote branch (fast-forward only).
    pub fn push(&mut self, tip: Oid) -> Result<(), PushError> {
        self.set_local_tip(tip, "push")
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        if let Some(path) = local_path(&self.config.remote_url) {
            self.push_local(&path, tip)?;
            return self
                .set_remote_tip(tip)
                .map_err(|e| PushError::Unreachable(e.to_string()));
        }
        let mut remote = self
            .repo
            .find_remote(REMOTE)
            .map_err(|e| PushError::Unreachable(e.message().to_owned()))?;
        let mut rejected = None;
        let mut callbacks = self.callbacks();
        callbacks.push_update_reference(|_refname, status| {
            if let Some(status) = status {
                rejected = Some(status.to_owned());
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let refspec = format!("{0}:{0}", self.branch_ref());
        match remote.push(&[&refspec], Some(&mut options)) {
            Ok(()) => {}
            Err(e) if e.code() == ErrorCode::NotFastForward => return Err(PushError::Rejected),
            Err(e)
                if e.message().contains("non-fast-forward")
                    || e.message().contains("fetch first") =>
            {
                return Err(PushError::Rejected)
            }
            Err(e) => return Err(PushError::Unreachable(e.message().to_owned())),
        }
        drop(options);
        if let Some(status) = rejected {
            tracing::debug!(%status, "push rejected by the remote");
            return Err(PushError::Rejected);
        }
        self.set_remote_tip(tip)
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        Ok(())
    }

    /// Pushes to a repository on this machine: the new objects go over as one pack, then the
    /// branch moves only if it still points where it did (compare-and-swap under git's ref lock),
    /// so a push racing with another writer is rejected instead of overwriting it. (libgit2's own
    /// local transport does not compare the old value when it moves the ref.)
    fn push_local(&self, path: &Path, tip: Oid) -> Result<(), PushError> {
        let unreachable = |e: git2::Error| PushError::Unreachable(e.message().to_owned());
        if !path.exists() {
            return Err(PushError::Unreachable(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let remote = Repository::open_bare(path).map_err(unreachable)?;
        let branch = self.branch_ref();
        let expected = remote.refname_to_id(&branch).ok();
        if let Some(expected) = expected {
            let fast_forward = expected == tip
                || self
                    .repo
                    .graph_descendant_of(tip, expected)
                    .unwrap_or(false);
            if !fast_forward {
                return Err(PushError::Rejected);
            }
            if expected == tip {
                return Ok(());
            }
        }
        // The new objects go over as one pack without deltas: delta search would cost more than
        // it saves on a local disk.
        let mut walk = self.repo.revwalk().map_err(unreachable)?;
        walk.push(tip).map_err(unreachable)?;
        if let Some(expected) = expected {
            walk.hide(expected).map_err(unreachable)?;
        }
        let local = self.repo.odb().map_err(unreachable)?;
        let target = remote.odb().map_err(unreachable)?;
        let mut objects = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for commit in walk {
            let commit = commit.map_err(unreachable)?;
            let commit_object = self.repo.find_commit(commit).map_err(unreachable)?;
            let parent_tree = commit_object.parent(0).ok().map(|p| p.tree_id());
            collect_tree(
                &local,
                &target,
                commit_object.tree_id(),
                parent_tree,
                &mut seen,
                &mut objects,
            )
            .map_err(unreachable)?;
            collect_object(&local, commit, &mut seen, &mut objects).map_err(unreachable)?;
        }
        write_pack(&target, &objects).map_err(unreachable)?;
        let moved = match expected {
            Some(expected) => remote.reference_matching(&branch, tip, true, expected, "push"),
            None => remote.reference(&branch, tip, false, "push"),
        };
        match moved {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked
                ) =>
            {
                Err(PushError::Rejected)
            }
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Keeps the number of pack files small. Every batch adds a pack (to the clone and, for a
    /// remote on this machine, to the remote), and libgit2 looks through every pack for each
    /// object it writes, so the cost of a change would grow with the number of changes made. Every
    /// 16 packs this starts `git repack --geometric=2 -d` in the background (it rolls small packs
    /// into bigger ones and is safe beside concurrent writers); without a `git` binary it does
    /// nothing.
    pub fn maintain(&mut self) {
        self.packs_written += 1;
        if let Some(child) = &mut self.repack {
            match child.try_wait() {
                Ok(None) => return,
                _ => self.repack = None,
            }
        }
        if self.packs_written < 16 {
            return;
        }
        self.packs_written = 0;
        let mut dirs = vec![self.config.local_path.clone()];
        if let Some(remote) = local_path(&self.config.remote_url) {
            dirs.push(remote);
        }
        let script = dirs
            .iter()
            .map(|d| format!("git --git-dir '{}' repack -q -d --geometric=2", d.display()))
            .collect::<Vec<_>>()
            .join(" ; ");
        match std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => self.repack = Some(child),
            Err(e) => tracing::debug!(error = %e, "cannot start git repack"),
        }
    }

    /// Waits for a running background repack (on shutdown).
    pub fn finish_maintenance(&mut self) {
        if let Some(mut child) = self.repack.take() {
            let _ = child.wait();
        }
    }

    /// Writes the objects made since the last call to disk as one pack, so that refs may point
    /// at them. Must run before a ref moves to a new commit.
    pub fn persist(&mut self) -> Result<(), RepoError> {
        let (Some(mempack), Some(odb)) = (&self.mempack, &self.odb) else {
            return Ok(());
        };
        if self.unsaved.is_empty() {
            return Ok(());
        }
        // What is new: everything reachable from the new commits that the disk lacks.
        let disk_repo = Repository::open_bare(&self.config.local_path)?;
        let disk = disk_repo.odb()?;
        let mut objects = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for commit in std::mem::take(&mut self.unsaved) {
            if disk.exists(commit) {
                continue;
            }
            let commit_object = self.repo.find_commit(commit)?;
            let parent_tree = commit_object.parent(0).ok().map(|p| p.tree_id());
            collect_tree(
                odb,
                &disk,
                commit_object.tree_id(),
                parent_tree,
                &mut seen,
                &mut objects,
            )?;
            collect_object(odb, commit, &mut seen, &mut objects)?;
        }
        write_pack(odb, &objects)?;
        mempack.reset()?;
        Ok(())
    }

    /// Builds the tree of `base` with `edits` applied (see [`edit_tree_in`]).
    pub fn edit_tree(&self, base: &Tree<'_>, edits: &[Edit]) -> Result<Oid, RepoError> {
        Ok(edit_tree_in(&self.repo, base, edits)?)
    }

    /// Writes a commit object (no ref moves).
    pub fn commit(
        &mut self,
        parent: Oid,
        tree: Oid,
        author: &Signature<'_>,
        committer: &Signature<'_>,
        message: &str,
    ) -> Result<Oid, RepoError> {
        let parent = self.repo.find_commit(parent)?;
        let tree = self.repo.find_tree(tree)?;
        let id = self
            .repo
            .commit(None, author, committer, message, &tree, &[&parent])?;
        self.unsaved.push(id);
        Ok(id)
    }

    /// Whether `commit` is `tip` or one of its ancestors.
    pub fn contains(&self, tip: Oid, commit: Oid) -> bool {
        tip == commit || self.repo.graph_descendant_of(tip, commit).unwrap_or(false)
    }
}

/// Connects to the configured remote (readiness probe); the error says why it cannot be reached.
pub fn probe_remote(config: &RepoConfig) -> Result<(), String> {
    let repo = Repository::open_bare(&config.local_path)
        .map_err(|e| format!("the api's clone: {}", e.message()))?;
    let state = StateRepo {
        mempack: None,
        odb: None,
        repo,
        config: config.clone(),
        repack: None,
        packs_written: 0,
        unsaved: Vec::new(),
    };
    let mut remote = state
        .repo
        .find_remote(REMOTE)
        .map_err(|e| e.message().to_owned())?;
    remote
        .connect_auth(git2::Direction::Fetch, Some(state.callbacks()), None)
        .map_err(|e| format!("the state repo's remote cannot be reached: {}", e.message()))?;
    Ok(())
}

/// Builds the tree of `base` with `edits` applied. Only the trees on the paths of the edits are
/// read and rewritten; later edits of a path win over earlier ones.
pub fn edit_tree_in(
    repo: &Repository,
    base: &Tree<'_>,
    edits: &[Edit],
) -> Result<Oid, git2::Error> {
    let mut root = Node::default();
    for edit in edits {
        root.insert(edit);
    }
    match write_node(repo, Some(base), &root)? {
        Some(oid) => Ok(oid),
        None => empty_tree(repo),
    }
}

fn write_node(
    repo: &Repository,
    existing: Option<&Tree<'_>>,
    node: &Node,
) -> Result<Option<Oid>, git2::Error> {
    let mut builder = repo.treebuilder(existing)?;
    for (name, child) in &node.children {
        match child {
            Change::Remove => {
                if builder.get(name)?.is_some() {
                    builder.remove(name)?;
                }
            }
            Change::Write(contents) => {
                let blob = repo.blob(contents)?;
                builder.insert(name, blob, 0o100644)?;
            }
            Change::Dir(sub) => {
                let current = match builder.get(name)? {
                    Some(entry) if entry.kind() == Some(ObjectType::Tree) && !sub.replace => {
                        Some(repo.find_tree(entry.id())?)
                    }
                    _ => None,
                };
                match write_node(repo, current.as_ref(), sub)? {
                    Some(oid) => {
                        builder.insert(name, oid, 0o040000)?;
                    }
                    None => {
                        if builder.get(name)?.is_some() {
                            builder.remove(name)?;
                        }
                    }
                }
            }
        }
    }
    if builder.is_empty() {
        return Ok(None);
    }
    Ok(Some(builder.write()?))
}

fn collect_object(
    from: &git2::Odb<'_>,
    id: Oid,
    seen: &mut std::collections::HashSet<Oid>,
    out: &mut Vec<(ObjectType, Vec<u8>)>,
) -> Result<(), git2::Error> {
    if seen.insert(id) {
        let object = from.read(id)?;
        out.push((object.kind(), object.data().to_vec()));
    }
    Ok(())
}

/// An entry of a raw tree object: (mode, name, id).
type RawEntry<'a> = (&'a [u8], &'a [u8], Oid);

/// Entries of a raw tree object.
fn tree_entries(data: &[u8]) -> Result<Vec<RawEntry<'_>>, git2::Error> {
    let mut entries = Vec::new();
    let mut rest = data;
    // Tree entries: "<mode> <name>\0<20-byte id>".
    while let Some(nul) = rest.iter().position(|b| *b == 0) {
        let header = &rest[..nul];
        let space = header.iter().position(|b| *b == b' ').unwrap_or(0);
        let id = Oid::from_bytes(&rest[nul + 1..nul + 21])?;
        entries.push((&header[..space], &header[space + 1..], id));
        rest = &rest[nul + 21..];
    }
    Ok(entries)
}

/// Collects a tree and what it holds, skipping what `have` has. `old` is the same folder in the
/// parent commit: entries unchanged from it are skipped without a lookup, so the cost follows the
/// size of the change, not of the tree (a tree `have` has comes with everything below it).
fn collect_tree(
    from: &git2::Odb<'_>,
    have: &git2::Odb<'_>,
    id: Oid,
    old: Option<Oid>,
    seen: &mut std::collections::HashSet<Oid>,
    out: &mut Vec<(ObjectType, Vec<u8>)>,
) -> Result<(), git2::Error> {
    if old == Some(id) || seen.contains(&id) || have.exists(id) {
        return Ok(());
    }
    let object = from.read(id)?;
    let data = object.data().to_vec();
    let old_data = match old {
        Some(old) => from.read(old).ok().map(|o| o.data().to_vec()),
        None => None,
    };
    let old_entries: std::collections::HashMap<&[u8], (&[u8], Oid)> = match &old_data {
        Some(data) => tree_entries(data)?
            .into_iter()
            .map(|(m, n, i)| (n, (m, i)))
            .collect(),
        None => Default::default(),
    };
    for (mode, name, child) in tree_entries(&data)? {
        let before = old_entries.get(name);
        if before.is_some_and(|(_, i)| *i == child) {
            continue;
        }
        if mode == b"40000" {
            let old_child = before.filter(|(m, _)| *m == b"40000").map(|(_, i)| *i);
            collect_tree(from, have, child, old_child, seen, out)?;
        } else if mode != b"160000" && !seen.contains(&child) && !have.exists(child) {
            collect_object(from, child, seen, out)?;
        }
    }
    seen.insert(id);
    out.push((ObjectType::Tree, data));
    Ok(())
}

/// Writes `objects` into `odb` as one pack without deltas. libgit2's own pack writers search for
/// deltas, which costs more than the whole change on big trees.
fn write_pack(odb: &git2::Odb<'_>, objects: &[(ObjectType, Vec<u8>)]) -> Result<(), git2::Error> {
    use sha1::Digest;
    use std::io::Write;
    if objects.is_empty() {
        return Ok(());
    }
    let mut pack = Vec::new();
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&(objects.len() as u32).to_be_bytes());
    for (kind, data) in objects {
        let code: u8 = match kind {
            ObjectType::Commit => 1,
            ObjectType::Tree => 2,
            ObjectType::Blob => 3,
            ObjectType::Tag => 4,
            _ => return Err(git2::Error::from_str("unexpected object type")),
        };
        let mut size = data.len();
        let mut byte = (code << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        let mut encoder = flate2::write::ZlibEncoder::new(&mut pack, flate2::Compression::fast());
        encoder
            .write_all(data)
            .and_then(|()| encoder.finish().map(|_| ()))
            .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    }
    let checksum = sha1::Sha1::digest(&pack);
    pack.extend_from_slice(&checksum);
    let mut writer = odb.packwriter()?;
    writer
        .write_all(&pack)
        .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    writer.commit()?;
    Ok(())
}

/// The filesystem path of a remote URL that names a repository on this machine.
fn local_path(url: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(path.into());
    }
    if url.contains("://") || (url.contains(':') && !url.starts_with('/') && !url.starts_with('.'))
    {
        return None; // ssh://, https://, or scp-like user@host:path
    }
    Some(url.into())
}

/// Reads the file at `path` in `tree`; None when absent or not a file.
pub fn read_file(repo: &Repository, tree: &Tree<'_>, path: &str) -> Option<Vec<u8>> {
    let entry = tree.get_path(Path::new(path)).ok()?;
    if entry.kind() != Some(ObjectType::Blob) {
        return None;
    }
    repo.find_blob(entry.id())
        .ok()
        .map(|b| b.content().to_vec())
}

/// The id of the entry at `path` in `tree`, if any.
pub fn entry_id(tree: &Tree<'_>, path: &str) -> Option<Oid> {
    tree.get_path(Path::new(path)).ok().map(|e| e.id())
}

fn empty_tree(repo: &Repository) -> Result<Oid, git2::Error> {
    repo.treebuilder(None)?.write()
}

#[derive(Default, Debug)]
struct Node {
    children: BTreeMap<String, Change>,
    /// The folder was removed before being written to: start from empty, not from its old content.
    replace: bool,
}

#[derive(Debug)]
enum Change {
    Write(Vec<u8>),
    Remove,
    Dir(Node),
}

impl Node {
    /// Later edits win over earlier ones on the same path.
    fn insert(&mut self, edit: &Edit) {
        let parts: Vec<&str> = edit.path().split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return;
        };
        let mut node = self;
        for dir in dirs {
            let entry = node
                .children
                .entry((*dir).to_owned())
                .or_insert_with(|| Change::Dir(Node::default()));
            if !matches!(entry, Change::Dir(_)) {
                *entry = Change::Dir(Node {
                    children: BTreeMap::new(),
                    replace: true,
                });
            }
            let Change::Dir(next) = entry else {
                unreachable!("just made a folder")
            };
            node = next;
        }
        let change = match edit {
            Edit::Write { contents, .. } => Change::Write(contents.clone()),
            Edit::Remove { .. } => Change::Remove,
        };
        node.children.insert((*last).to_owned(), change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn seeded_remote(dir: &Path) -> std::path::PathBuf {
        let remote = dir.join("remote.git");
        let repo = Repository::init_bare(&remote).unwrap();
        let sig = Signature::now("seed", "seed@example.com").unwrap();
        let mut builder = repo.treebuilder(None).unwrap();
        let blob = repo.blob(b"hello\n").unwrap();
        builder.insert("README", blob, 0o100644).unwrap();
        let tree = repo.find_tree(builder.write().unwrap()).unwrap();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "seed", &tree, &[])
            .unwrap();
        remote
    }

    fn config(dir: &Path, remote: &Path) -> RepoConfig {
        let mut config = Config::default().repo;
        config.local_path = dir.join("clone.git");
        config.remote_url = remote.display().to_string();
        config
    }

    #[test]
    fn edits_commit_and_push() {
        let dir = tempfile::tempdir().unwrap();
        let remote = seeded_remote(dir.path());
        let mut state = StateRepo::open_or_clone(&config(dir.path(), &remote)).unwrap();
        let tip = state.remote_tip().unwrap();
        let base = state.repository().find_commit(tip).unwrap().tree().unwrap();
        let tree = state
            .edit_tree(
                &base,
                &[
                    Edit::Write {
                        path: "a/b/c.txt".into(),
                        contents: b"c".to_vec(),
                    },
                    Edit::Write {
                        path: "a/d.txt".into(),
                        contents: b"d".to_vec(),
                    },
                ],
            )
            .unwrap();
        drop(base);
        let sig = Signature::now("t", "t@example.com").unwrap();
        let commit = state.commit(tip, tree, &sig, &sig, "add").unwrap();
        state.persist().unwrap();
        state.push(commit).unwrap();
        let remote_repo = Repository::open_bare(&remote).unwrap();
        assert_eq!(
            remote_repo.refname_to_id("refs/heads/main").unwrap(),
            commit
        );
        let tree = state.repository().find_tree(tree).unwrap();
        assert_eq!(
            read_file(state.repository(), &tree, "a/b/c.txt").unwrap(),
            b"c"
        );

        // A folder removed then written to holds only what was written.
        let replaced = state
            .edit_tree(
                &tree,
                &[
                    Edit::Remove { path: "a".into() },
                    Edit::Write {
                        path: "a/e.txt".into(),
                        contents: b"e".to_vec(),
                    },
                ],
            )
            .unwrap();
        let replaced = state.repository().find_tree(replaced).unwrap();
        assert!(replaced.get_path(Path::new("a/d.txt")).is_err());
        assert!(replaced.get_path(Path::new("a/e.txt")).is_ok());

        // Removing the only file of a folder removes the folder.
        let tree2 = state
            .edit_tree(
                &tree,
                &[
                    Edit::Remove { path: "a/b".into() },
                    Edit::Remove {
                        path: "a/d.txt".into(),
                    },
                ],
            )
            .unwrap();
        let tree2 = state.repository().find_tree(tree2).unwrap();
        assert!(tree2.get_name("a").is_none());
        assert!(tree2.get_name("README").is_some());
    }

    #[test]
    fn a_push_behind_the_remote_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let remote = seeded_remote(dir.path());
        let mut state = StateRepo::open_or_clone(&config(dir.path(), &remote)).unwrap();
        let tip = state.remote_tip().unwrap();
        // Someone else pushes.
        let other = Repository::open_bare(&remote).unwrap();
        let sig = Signature::now("sre", "sre@example.com").unwrap();
        let parent = other.find_commit(tip).unwrap();
        other
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                "sre",
                &parent.tree().unwrap(),
                &[&parent],
            )
            .unwrap();
        let base = state.repository().find_commit(tip).unwrap().tree().unwrap();
        let tree = state
            .edit_tree(
                &base,
                &[Edit::Write {
                    path: "x".into(),
                    contents: b"x".to_vec(),
                }],
            )
            .unwrap();
        drop(base);
        let commit = state.commit(tip, tree, &sig, &sig, "mine").unwrap();
        assert!(matches!(state.push(commit), Err(PushError::Rejected)));
        let new_tip = state.fetch().unwrap().unwrap();
        assert_ne!(new_tip, tip);
    }

    #[test]
    fn an_unreachable_remote_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let remote = seeded_remote(dir.path());
        let mut state = StateRepo::open_or_clone(&config(dir.path(), &remote)).unwrap();
        std::fs::rename(&remote, dir.path().join("moved.git")).unwrap();
        let tip = state.remote_tip().unwrap();
        assert!(matches!(state.push(tip), Err(PushError::Unreachable(_))));
    }
}
