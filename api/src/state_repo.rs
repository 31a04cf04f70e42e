//! The state repo: the api's bare clone of the GitOps repository Flux watches.
//!
//! This module owns every git operation: opening or cloning the clone, reading files of a commit,
//! building new trees in memory from a parent tree plus a list of edits (no working tree, no index
//! file: only the trees on the path of an edit are rewritten), writing commits, fetching and
//! pushing with the configured credentials. It does not know what a tenant is.
//!
//! What reaches the disk, and when (see also docs/api.md, "Durability"):
//! - the objects of a batch: one pack and its index, flushed (fsync) with their folder before any
//!   ref points at them ([`pack`]); a remote on this machine gets the same files as hard links and
//!   its folder is flushed;
//! - the remote branch: moved under git's lock and flushed with its folder before a push returns
//!   ([`refs`]);
//! - the clone's own refs are not flushed when the remote is on this machine: after a crash they are
//!   set again from the remote. With a remote elsewhere, the clone's record of the pushed branch is
//!   flushed.

mod objects;
mod pack;
mod refs;

use std::cell::RefCell;
use std::path::Path;

use git2::{
    Cred, CredentialType, ErrorCode, FetchOptions, ObjectType, Oid, PushOptions, RemoteCallbacks,
    Repository, Signature, Tree,
};

use secrecy::ExposeSecret;

use crate::config::{redact_url_credentials, RepoConfig};
use objects::{ObjectCache, Objects, Staging};
use pack::PackName;
use refs::{Expect, RefError};

pub const REMOTE: &str = "origin";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("the remote branch {0:?} does not exist; seed the state repo first (see docs/api.md)")]
    NoBranch(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("ref: {0}")]
    Ref(#[from] RefError),
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
/// New objects are made in memory ([`objects::Staging`]) and written to disk as one pack per
/// batch by [`StateRepo::persist`], flushed before any ref points at them.
pub struct StateRepo {
    repo: Repository,
    config: RepoConfig,
    /// Objects made since the last [`StateRepo::persist`].
    staged: Staging,
    /// Trees and blobs read or written recently (the folders changes go through, shard indexes
    /// and tenant tables).
    cache: RefCell<ObjectCache>,
    /// Packs written since the last push.
    unpushed: Vec<PackName>,
    /// Those of them not yet linked into a remote on this machine; they go over at the push.
    unlinked: Vec<PackName>,
    /// Rolling pushed packs up, and `git repack` when idle.
    maintenance: Maintenance,
}

/// How many packs of one size class are rolled into one of the next.
const ROLLUP_FAN_IN: usize = 8;

/// The largest class a rollup makes: class 3 holds 512 batches' objects (37 MiB at 10,000 tenants
/// and about 2 changes per batch). A rollup holds its inputs and its result in memory, so going on
/// to class 4 would take about 600 MiB at once; packs of the top class are left to the idle
/// `git repack`, which keeps its memory within git's own bounds.
const ROLLUP_TOP_CLASS: usize = 3;

/// How long the packs a rollup replaced stay on disk beside the pack that replaces them, unless
/// `repo.max_packs` needs the room sooner. A reader (libgit2, git) that misses an object lists the
/// pack folder again; a listing is not atomic, so one made while the new pack appears and the old
/// ones go could see neither. Removing the old packs long after the new one appeared means every
/// listing sees one of them; removing them sooner still leaves the new pack in place first, which
/// a reader's next listing finds.
const RETIRE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// The smallest `repo.max_packs` ([`crate::config::MIN_MAX_PACKS`]): a rollup's inputs and its
/// result must fit beside a new pack.
pub use crate::config::MIN_MAX_PACKS;
const _: () = assert!(MIN_MAX_PACKS == 2 * ROLLUP_FAN_IN);

/// Keeps the number of pack files small. Every batch adds a pack (to the clone and, for a remote
/// on this machine, to the remote), and libgit2 and git look through every pack for an object, so
/// without this the cost of a change would grow with the number of changes made.
///
/// - While changes come in, the packs this process wrote are rolled up in the background: every
///   [`ROLLUP_FAN_IN`] packs of one size class become one pack of the next class, by copying
///   their entries as they are ([`pack::merge`]); an object is copied once per class (a handful of
///   times over its life), and nothing is inflated, walked or searched for deltas.
/// - When the writer is idle, `git repack -d --geometric=2` runs in the background (if a `git`
///   binary is installed), which also finds deltas and rolls up packs from fetches and earlier
///   runs. Both are safe beside readers and beside git processes working on the same repository.
/// - A hard bound: before a batch's pack is written, a pack folder holding `repo.max_packs`
///   packs is brought below that ([`StateRepo::make_room`]): replaced packs go at once, a
///   rollup in flight is waited for, and packs are rolled up on the spot, whatever the load.
#[derive(Default)]
struct Maintenance {
    /// Pushed packs of this process by size class (class n holds about FAN_IN^n batches).
    classes: Vec<Vec<PackName>>,
    /// A rollup in progress: the class its result belongs to, and the thread making it.
    rollup: Option<(usize, std::thread::JoinHandle<std::io::Result<RolledUp>>)>,
    /// Packs a rollup replaced, with when: removed once [`RETIRE_AFTER`] has passed.
    retired: std::collections::VecDeque<(std::time::Instant, Vec<PackName>)>,
    /// A `git repack` in progress.
    repack: Option<std::process::Child>,
    /// Packs written since the last `git repack` started.
    since_repack: usize,
    /// Whether the last [`StateRepo::make_room`] found packs over the bound it could not roll up
    /// (said once until it succeeds again).
    over_bound: bool,
}

/// A commit's tree, read through the objects not yet on disk.
pub struct Snapshot<'a> {
    objects: Objects<'a>,
    pub root: Oid,
}

impl Snapshot<'_> {
    /// The file at `path`; None when absent or not a file.
    pub fn file(&self, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        Ok(self.objects.file(self.root, path)?.map(|d| d.to_vec()))
    }

    /// The id of the entry at `path`, if any.
    pub fn entry_id(&self, path: &str) -> Result<Option<Oid>, RepoError> {
        Ok(self.objects.entry(self.root, path)?.map(|(_, id)| id))
    }
}

/// Size of the object cache: the folders on the paths of changes and every shard's index and
/// tenant table at 10,000 tenants, with room to spare.
const OBJECT_CACHE_BYTES: usize = 64 << 20;

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
            repo.remote(REMOTE, config.remote_url.expose_secret())
                .map_err(redacted)?;
            repo
        };
        let url = config.remote_url.expose_secret();
        if repo.find_remote(REMOTE)?.url() != Some(url) {
            repo.remote_set_url(REMOTE, url).map_err(redacted)?;
        }
        let state = StateRepo {
            repo,
            config: config.clone(),
            staged: Staging::default(),
            cache: RefCell::new(ObjectCache::new(OBJECT_CACHE_BYTES)),
            unpushed: Vec::new(),
            unlinked: Vec::new(),
            maintenance: Maintenance::default(),
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

    fn objects(&self) -> Objects<'_> {
        Objects {
            repo: &self.repo,
            staged: &self.staged,
            cache: Some(&self.cache),
        }
    }

    /// The tree of `commit`, read through what is not on disk yet.
    pub fn snapshot(&self, commit: Oid) -> Result<Snapshot<'_>, RepoError> {
        let objects = self.objects();
        let root = objects.commit_tree(commit)?;
        Ok(Snapshot { objects, root })
    }

    /// Whether `id` is only in memory so far.
    pub fn is_staged(&self, id: Oid) -> bool {
        self.staged.contains(id)
    }

    /// The remote branch as last fetched or pushed.
    pub fn remote_tip(&self) -> Option<Oid> {
        self.repo.refname_to_id(&self.tracking_ref()).ok()
    }

    /// Moves the local branch (what gets pushed next), after writing what it needs to disk.
    pub fn set_local_tip(&mut self, tip: Oid) -> Result<(), RepoError> {
        self.persist()?;
        refs::update(
            &self.config.local_path,
            &self.branch_ref(),
            tip,
            Expect::Anything,
            false,
        )?;
        Ok(())
    }

    /// Records where the remote branch is after a push. When the remote is on another machine this
    /// clone is the durable local copy, so the ref is flushed to disk.
    fn set_remote_tip(&self, tip: Oid, durable: bool) -> Result<(), RepoError> {
        refs::update(
            &self.config.local_path,
            &self.tracking_ref(),
            tip,
            Expect::Anything,
            durable,
        )?;
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
            .map_err(|e| PushError::Unreachable(redact_url_credentials(e.message())))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        let refspec = format!("+refs/heads/{}:{}", self.config.branch, self.tracking_ref());
        remote
            .fetch(&[&refspec], Some(&mut options), Some("fetch"))
            .map_err(|e| PushError::Unreachable(remote_error(&e)))?;
        Ok(self.remote_tip())
    }

    /// Pushes `tip` to the remote branch (fast-forward only). When this returns Ok, the commits
    /// are durable on the remote (a remote on this machine: its pack and ref are flushed to disk).
    pub fn push(&mut self, tip: Oid) -> Result<(), PushError> {
        let unreachable = |e: RepoError| PushError::Unreachable(e.to_string());
        self.set_local_tip(tip).map_err(unreachable)?;
        if let Some(path) = local_path(self.config.remote_url.expose_secret()) {
            self.push_local(&path, tip)?;
            self.pushed_packs();
            return self.set_remote_tip(tip, false).map_err(unreachable);
        }
        let mut remote = self
            .repo
            .find_remote(REMOTE)
            .map_err(|e| PushError::Unreachable(redact_url_credentials(e.message())))?;
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
            Err(e) => return Err(PushError::Unreachable(remote_error(&e))),
        }
        drop(options);
        drop(remote);
        if let Some(status) = rejected {
            tracing::debug!(%status, "push rejected by the remote");
            return Err(PushError::Rejected);
        }
        self.pushed_packs();
        self.set_remote_tip(tip, true).map_err(unreachable)?;
        Ok(())
    }

    /// The packs written so far are on the remote: they may be rolled up from now on.
    fn pushed_packs(&mut self) {
        let pushed = std::mem::take(&mut self.unpushed);
        self.unlinked.clear();
        if self.maintenance.classes.is_empty() {
            self.maintenance.classes.push(Vec::new());
        }
        self.maintenance.classes[0].extend(pushed);
    }

    /// Pushes to a repository on this machine: the packs written since the last push go over as
    /// hard links (flushed), then the branch moves only if it still points where it did
    /// (compare-and-swap under git's ref lock, flushed), so a push racing with another writer is
    /// rejected instead of overwriting it.
    fn push_local(&self, path: &Path, tip: Oid) -> Result<(), PushError> {
        if !path.join("objects").is_dir() || !path.join("HEAD").is_file() {
            return Err(PushError::Unreachable(format!(
                "{} is not a bare git repository (missing or moved?)",
                path.display()
            )));
        }
        let branch = self.branch_ref();
        let expected =
            refs::read(path, &branch).map_err(|e| PushError::Unreachable(e.to_string()))?;
        if let Some(expected) = expected {
            if expected == tip {
                return Ok(());
            }
            // The local branch is built on the remote tip as last fetched or pushed, so when the
            // remote still holds that, this is a fast-forward without walking any history.
            let fast_forward = self.remote_tip() == Some(expected)
                || self
                    .repo
                    .graph_descendant_of(tip, expected)
                    .unwrap_or(false);
            if !fast_forward {
                return Err(PushError::Rejected);
            }
        }
        let from = self.config.local_path.join("objects/pack");
        let to = path.join("objects/pack");
        pack::link(&from, &self.unlinked, &to).map_err(|e| {
            PushError::Unreachable(format!("cannot write to {}: {e}", to.display()))
        })?;
        match refs::update(path, &branch, tip, Expect::Value(expected), true) {
            Ok(()) => Ok(()),
            Err(RefError::Moved(_) | RefError::Locked(_)) => Err(PushError::Rejected),
            Err(e) => Err(PushError::Unreachable(e.to_string())),
        }
    }

    /// Rolls pushed packs up in the background (see [`Maintenance`]); call after each push.
    pub fn maintain(&mut self) {
        let clone = self.config.local_path.join("objects/pack");
        let m = &mut self.maintenance;
        if let Some(child) = &mut m.repack {
            match child.try_wait() {
                Ok(None) => return,
                _ => m.repack_finished(&clone),
            }
        }
        if let Some((_, rollup)) = &m.rollup {
            if !rollup.is_finished() {
                return;
            }
            m.join_rollup();
        }
        let Some(class) = m.next_rollup() else {
            return;
        };
        // Its pack must fit under `repo.max_packs` beside the ones there; if not, the next batch
        // makes room on the spot (`make_room`).
        if !self.room_for_one() {
            return;
        }
        let m = &mut self.maintenance;
        let inputs: Vec<PackName> = m.classes[class].drain(..ROLLUP_FAN_IN).collect();
        let due = m.due_for_removal();
        let remote =
            local_path(self.config.remote_url.expose_secret()).map(|p| p.join("objects/pack"));
        let spawned = std::thread::Builder::new()
            .name("pack-rollup".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                if let Err(e) = remove_packs(&clone, remote.as_deref(), &due) {
                    // They stay; the next idle `git repack` takes them.
                    tracing::warn!(error = %e, "cannot remove rolled-up packs");
                }
                let result = roll_up(&clone, remote.as_deref(), &inputs);
                tracing::debug!(
                    class,
                    packs = inputs.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "packs rolled up"
                );
                result
            });
        match spawned {
            Ok(handle) => m.rollup = Some((class + 1, handle)),
            Err(e) => tracing::warn!(error = %e, "cannot start rolling packs up"),
        }
    }

    /// Idle work: when packs were written since the last time, starts `git repack -d
    /// --geometric=2` in the background on the clone (and on a remote on this machine). Without a
    /// `git` binary this does nothing.
    pub fn maintain_idle(&mut self) {
        let m = &mut self.maintenance;
        if m.repack.is_some() || m.since_repack == 0 {
            return;
        }
        if let Some((_, rollup)) = &m.rollup {
            if !rollup.is_finished() {
                return;
            }
        }
        self.maintain();
        if self.maintenance.rollup.is_some() || !self.room_for_one() {
            return;
        }
        let m = &mut self.maintenance;
        m.since_repack = 0;
        let mut dirs = vec![self.config.local_path.clone()];
        if let Some(remote) = local_path(self.config.remote_url.expose_secret()) {
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
            Ok(child) => m.repack = Some(child),
            Err(e) => tracing::debug!(error = %e, "cannot start git repack"),
        }
    }

    /// Waits for background maintenance (on shutdown). Replaced packs whose time beside their
    /// replacement is over go; the others stay on disk: readers of a remote on this machine (a
    /// `git clone` listing its pack folder) go on after the api stops, and a pack removed under
    /// such a listing breaks it. The next `git repack` takes what stays.
    pub fn finish_maintenance(&mut self) {
        let clone = self.config.local_path.join("objects/pack");
        let m = &mut self.maintenance;
        if let Some(mut child) = m.repack.take() {
            let _ = child.wait();
        }
        if m.rollup.is_some() {
            m.join_rollup();
        }
        let due = m.due_for_removal();
        let remote =
            local_path(self.config.remote_url.expose_secret()).map(|p| p.join("objects/pack"));
        if let Err(e) = remove_packs(&clone, remote.as_deref(), &due) {
            tracing::warn!(error = %e, "cannot remove rolled-up packs");
        }
    }

    /// Whether one more pack fits under `repo.max_packs` beside those on disk and in flight.
    fn room_for_one(&self) -> bool {
        self.pack_count()
            .is_ok_and(|n| n + self.maintenance.in_flight() < self.config.max_packs)
    }

    /// How many packs the clone's pack folder, or a remote on this machine's, holds (the larger).
    fn pack_count(&self) -> std::io::Result<usize> {
        let clone = pack::count(&self.config.local_path.join("objects/pack"))?;
        let remote = match local_path(self.config.remote_url.expose_secret()) {
            Some(remote) if remote.join("objects/pack").is_dir() => {
                pack::count(&remote.join("objects/pack"))?
            }
            _ => 0,
        };
        Ok(clone.max(remote))
    }

    /// Brings the pack folders below `repo.max_packs` before a new pack is written: removes the
    /// packs rollups replaced (their replacement is in place and flushed), waits for a rollup or
    /// `git repack` in flight, and rolls the smallest class with two packs or more up on the
    /// spot, until there is room. Packs not pushed yet and packs this process did not write (a
    /// fetch's, the seed's) are not its to roll up; when only those are left, this says so once
    /// and lets the batch through.
    fn make_room(&mut self) -> std::io::Result<()> {
        let clone = self.config.local_path.join("objects/pack");
        let remote =
            local_path(self.config.remote_url.expose_secret()).map(|p| p.join("objects/pack"));
        loop {
            let m = &self.maintenance;
            // A rollup or `git repack` in flight adds its pack before it removes any.
            let count = self.pack_count()? + m.in_flight();
            let m = &mut self.maintenance;
            if count < self.config.max_packs {
                m.over_bound = false;
                return Ok(());
            }
            if let Some(packs) = m.retired.pop_front().map(|(_, packs)| packs) {
                remove_packs(&clone, remote.as_deref(), &packs)?;
            } else if m.rollup.is_some() {
                m.join_rollup();
            } else if let Some(mut child) = m.repack.take() {
                let _ = child.wait();
                m.repack_finished(&clone);
            } else if let Some(class) = m.classes.iter().position(|c| c.len() >= 2) {
                let inputs = std::mem::take(&mut m.classes[class]);
                let started = std::time::Instant::now();
                let rolled = roll_up(&clone, remote.as_deref(), &inputs)?;
                tracing::debug!(
                    class,
                    packs = inputs.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "packs rolled up to stay within repo.max_packs"
                );
                m.absorb((class + 1).min(ROLLUP_TOP_CLASS), rolled);
            } else {
                if !m.over_bound {
                    tracing::warn!(
                        packs = count,
                        max_packs = self.config.max_packs,
                        "the pack folder holds more packs than repo.max_packs and none of them \
                         is this process's to roll up (unpushed, fetched or seeded packs); \
                         `git repack -d` on the repository reduces them"
                    );
                }
                m.over_bound = true;
                return Ok(());
            }
        }
    }

    /// Writes the objects made since the last call to disk as one pack, flushed with its index and
    /// folder, so that refs may point at them. Must run before a ref moves to a new commit.
    pub fn persist(&mut self) -> Result<(), RepoError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.make_room()?;
        let pack_dir = self.config.local_path.join("objects/pack");
        let remote = local_path(self.config.remote_url.expose_secret())
            .map(|p| p.join("objects/pack"))
            .filter(|p| p.is_dir());
        match remote {
            // A remote on this machine gets the pack now, while the clone's folder is flushed;
            // only its branch moves at the push. (Objects no ref names yet are harmless there.)
            Some(remote) => {
                let (name, linked) = pack::write_and_link(&pack_dir, &remote, self.staged.iter())?;
                if let Err(e) = linked {
                    tracing::debug!(error = %e, "cannot link the pack into the remote yet");
                    self.unlinked.push(name.clone());
                }
                self.unpushed.push(name);
            }
            None => {
                let name = pack::write(&pack_dir, self.staged.iter())?;
                self.unlinked.push(name.clone());
                self.unpushed.push(name);
            }
        }
        self.maintenance.since_repack += 1;
        let mut cache = self.cache.borrow_mut();
        for (id, kind, data) in self.staged.take_readable() {
            cache.insert(id, kind, data);
        }
        Ok(())
    }

    /// Forgets the objects made since the last [`StateRepo::persist`] (their changes were undone).
    pub fn discard(&mut self) {
        self.staged.take_readable();
    }

    /// Builds the tree of `base` with `edits` applied (see [`objects::edit_tree`]); the new
    /// objects stay in memory until [`StateRepo::persist`].
    pub fn edit_tree(&mut self, base: Oid, edits: &[Edit]) -> Result<Oid, RepoError> {
        let (id, made) = objects::edit_tree(&self.objects(), Some(base), edits)?;
        self.staged.absorb(made);
        Ok(id)
    }

    /// Makes a commit object (in memory; no ref moves).
    pub fn commit(
        &mut self,
        parent: Oid,
        tree: Oid,
        author: &Signature<'_>,
        committer: &Signature<'_>,
        message: &str,
    ) -> Result<Oid, RepoError> {
        let data = objects::commit_object(tree, &[parent], author, committer, message);
        Ok(self.staged.put(ObjectType::Commit, data)?)
    }

    /// Whether `commit` is `tip` or one of its ancestors.
    pub fn contains(&self, tip: Oid, commit: Oid) -> bool {
        tip == commit || self.repo.graph_descendant_of(tip, commit).unwrap_or(false)
    }
}

/// What a rollup made: the merged pack (none when no input was left), and the inputs it replaces,
/// which stay on disk for [`RETIRE_AFTER`].
struct RolledUp {
    merged: Option<PackName>,
    replaced: Vec<PackName>,
}

/// Rolls the packs `inputs` of the clone's pack folder into one and puts it into the remote's pack
/// folder too (a remote on this machine, which holds the same packs), flushed in both; the inputs
/// stay until [`remove_packs`] (see [`RETIRE_AFTER`]).
fn roll_up(clone: &Path, remote: Option<&Path>, inputs: &[PackName]) -> std::io::Result<RolledUp> {
    let Some(merged) = pack::merge(clone, inputs)? else {
        return Ok(RolledUp {
            merged: None,
            replaced: Vec::new(),
        });
    };
    if let Some(remote) = remote {
        pack::link(clone, std::slice::from_ref(&merged), remote)?;
    }
    let replaced = inputs.iter().filter(|i| **i != merged).cloned().collect();
    Ok(RolledUp {
        merged: Some(merged),
        replaced,
    })
}

/// Removes packs from the clone and from a remote on this machine; absent files are fine.
fn remove_packs(clone: &Path, remote: Option<&Path>, packs: &[PackName]) -> std::io::Result<()> {
    for pack in packs {
        pack::remove(clone, pack)?;
        if let Some(remote) = remote {
            pack::remove(remote, pack)?;
        }
    }
    Ok(())
}

impl Maintenance {
    /// Packs being made in the background (a rollup's, a `git repack`'s) and not on disk yet.
    fn in_flight(&self) -> usize {
        usize::from(self.rollup.is_some()) + usize::from(self.repack.is_some())
    }

    /// Waits for the rollup in flight and files its result.
    fn join_rollup(&mut self) {
        let Some((class, rollup)) = self.rollup.take() else {
            return;
        };
        match rollup.join() {
            Ok(Ok(rolled)) => self.absorb(class, rolled),
            // The inputs stay as they are; the next idle `git repack` takes them.
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot roll packs up"),
            Err(_) => tracing::warn!("rolling packs up panicked"),
        }
    }

    /// Files a rollup's result in `class` and its inputs among the retired packs.
    fn absorb(&mut self, class: usize, rolled: RolledUp) {
        if let Some(name) = rolled.merged {
            while self.classes.len() <= class {
                self.classes.push(Vec::new());
            }
            self.classes[class].push(name);
        }
        if !rolled.replaced.is_empty() {
            self.retired
                .push_back((std::time::Instant::now(), rolled.replaced));
        }
    }

    /// After a `git repack`: it rolled up some of the packs, and removed them; those still on
    /// disk (written while it ran, or left out by its geometric progression) stay in their class.
    fn repack_finished(&mut self, clone: &Path) {
        self.repack = None;
        let exists = |p: &PackName| clone.join(format!("{}.pack", p.0)).exists();
        for class in &mut self.classes {
            class.retain(exists);
        }
        for (_, packs) in &mut self.retired {
            packs.retain(exists);
        }
        self.retired.retain(|(_, packs)| !packs.is_empty());
    }

    /// The class whose packs are due to be rolled up into the next one, if any.
    fn next_rollup(&self) -> Option<usize> {
        self.classes
            .iter()
            .take(ROLLUP_TOP_CLASS)
            .position(|c| c.len() >= ROLLUP_FAN_IN)
    }

    /// Takes the replaced packs whose time on disk is over.
    fn due_for_removal(&mut self) -> Vec<PackName> {
        let mut due = Vec::new();
        while let Some((since, _)) = self.retired.front() {
            if since.elapsed() < RETIRE_AFTER {
                break;
            }
            due.extend(self.retired.pop_front().expect("front exists").1);
        }
        due
    }
}

/// Writes a root commit holding exactly `files` into the bare repository at `path` (one pack)
/// and points `refname` at it.
pub fn write_root_commit(
    path: &Path,
    refname: &str,
    files: &[Edit],
    signature: &Signature<'_>,
    message: &str,
) -> Result<Oid, RepoError> {
    let repo = Repository::open_bare(path)?;
    let empty = Staging::default();
    let objects = Objects {
        repo: &repo,
        staged: &empty,
        cache: None,
    };
    let (tree, mut made) = objects::edit_tree(&objects, None, files)?;
    let commit = made.put(
        ObjectType::Commit,
        objects::commit_object(tree, &[], signature, signature, message),
    )?;
    pack::write(&path.join("objects/pack"), made.iter())?;
    refs::update(path, refname, commit, Expect::Anything, true)?;
    Ok(commit)
}

/// Connects to the configured remote (readiness probe); the error says why it cannot be reached.
pub fn probe_remote(config: &RepoConfig) -> Result<(), String> {
    let repo = Repository::open_bare(&config.local_path)
        .map_err(|e| format!("the api's clone: {}", e.message()))?;
    let state = StateRepo {
        repo,
        config: config.clone(),
        staged: Staging::default(),
        cache: RefCell::new(ObjectCache::new(0)),
        unpushed: Vec::new(),
        unlinked: Vec::new(),
        maintenance: Maintenance::default(),
    };
    let mut remote = state
        .repo
        .find_remote(REMOTE)
        .map_err(|e| e.message().to_owned())?;
    remote
        .connect_auth(git2::Direction::Fetch, Some(state.callbacks()), None)
        .map_err(|e| {
            format!(
                "the state repo's remote cannot be reached: {}",
                remote_error(&e)
            )
        })?;
    Ok(())
}

/// A git error about the remote's URL, with any credentials in the URL hidden.
fn redacted(e: git2::Error) -> git2::Error {
    git2::Error::new(e.code(), e.class(), redact_url_credentials(e.message()))
}

/// A remote operation's error, with what to do about an SSH host key nobody listed, and any
/// credentials of the remote's URL hidden.
fn remote_error(e: &git2::Error) -> String {
    redact_url_credentials(&remote_error_text(e))
}

fn remote_error_text(e: &git2::Error) -> String {
    if e.class() == git2::ErrorClass::Ssh && e.message().contains("hostkey") {
        let home = std::env::var("HOME").unwrap_or_else(|_| "~".into());
        return format!(
            "{}: the SSH server's host key is checked against {home}/.ssh/known_hosts; add the \
             server's key there (e.g. the output of `ssh-keyscan -p <port> <host>`, checked \
             against the git host's published fingerprints)",
            e.message()
        );
    }
    e.message().to_owned()
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
        config.remote_url = remote.display().to_string().into();
        config
    }

    #[test]
    fn edits_commit_and_push() {
        let dir = tempfile::tempdir().unwrap();
        let remote = seeded_remote(dir.path());
        let mut state = StateRepo::open_or_clone(&config(dir.path(), &remote)).unwrap();
        let tip = state.remote_tip().unwrap();
        let base = state.snapshot(tip).unwrap().root;
        let tree = state
            .edit_tree(
                base,
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
        let sig = Signature::now("t", "t@example.com").unwrap();
        let commit = state.commit(tip, tree, &sig, &sig, "add").unwrap();
        assert!(state.is_staged(commit));
        // A second commit on top, read through the first one's objects before they are on disk.
        let snapshot = state.snapshot(commit).unwrap();
        assert_eq!(snapshot.file("a/d.txt").unwrap().unwrap(), b"d");
        let tree_b = state
            .edit_tree(
                tree,
                &[Edit::Write {
                    path: "a/b/f.txt".into(),
                    contents: b"f".to_vec(),
                }],
            )
            .unwrap();
        let commit = state.commit(commit, tree_b, &sig, &sig, "more").unwrap();
        state.push(commit).unwrap();
        assert!(!state.is_staged(commit));
        let remote_repo = Repository::open_bare(&remote).unwrap();
        assert_eq!(
            remote_repo.refname_to_id("refs/heads/main").unwrap(),
            commit
        );
        assert_eq!(state.remote_tip(), Some(commit));
        let remote_tree = remote_repo.find_commit(commit).unwrap().tree().unwrap();
        assert_eq!(
            read_file(&remote_repo, &remote_tree, "a/b/f.txt").unwrap(),
            b"f"
        );
        assert_eq!(
            remote_repo
                .find_commit(commit)
                .unwrap()
                .parent(0)
                .unwrap()
                .message(),
            Some("add")
        );
        {
            let tree = state.repository().find_tree(tree).unwrap();
            assert_eq!(
                read_file(state.repository(), &tree, "a/b/c.txt").unwrap(),
                b"c"
            );
        }
        match std::process::Command::new("git")
            .args(["--git-dir"])
            .arg(&remote)
            .args(["fsck", "--strict"])
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("git is needed for this test under CI=true: {e}")
            }
            Err(e) => eprintln!("skipping git fsck: {e}"),
        }

        // A folder removed then written to holds only what was written.
        let replaced = state
            .edit_tree(
                tree,
                &[
                    Edit::Remove { path: "a".into() },
                    Edit::Write {
                        path: "a/e.txt".into(),
                        contents: b"e".to_vec(),
                    },
                ],
            )
            .unwrap();
        state.persist().unwrap();
        {
            let replaced = state.repository().find_tree(replaced).unwrap();
            assert!(replaced.get_path(Path::new("a/d.txt")).is_err());
            assert!(replaced.get_path(Path::new("a/e.txt")).is_ok());
        }

        // Removing the only file of a folder removes the folder.
        let tree2 = state
            .edit_tree(
                tree,
                &[
                    Edit::Remove { path: "a/b".into() },
                    Edit::Remove {
                        path: "a/d.txt".into(),
                    },
                ],
            )
            .unwrap();
        state.persist().unwrap();
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
        let base = state.snapshot(tip).unwrap().root;
        let tree = state
            .edit_tree(
                base,
                &[Edit::Write {
                    path: "x".into(),
                    contents: b"x".to_vec(),
                }],
            )
            .unwrap();
        let commit = state.commit(tip, tree, &sig, &sig, "mine").unwrap();
        assert!(matches!(state.push(commit), Err(PushError::Rejected)));
        let new_tip = state.fetch().unwrap().unwrap();
        assert_ne!(new_tip, tip);
    }

    #[test]
    fn rolled_up_packs_stay_beside_the_merged_one_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let remote = seeded_remote(dir.path());
        let mut state = StateRepo::open_or_clone(&config(dir.path(), &remote)).unwrap();
        let clone = dir.path().join("clone.git");
        let packs = |repo: &Path| {
            std::fs::read_dir(repo.join("objects/pack"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "pack")
                })
                .count()
        };
        let (clone_before, remote_before) = (packs(&clone), packs(&remote));
        let sig = Signature::now("api", "api@example.com").unwrap();
        let mut tip = state.remote_tip().unwrap();
        for i in 0..ROLLUP_FAN_IN {
            let base = state.snapshot(tip).unwrap().root;
            let edit = Edit::Write {
                path: format!("f{i}"),
                contents: vec![b'a' + i as u8],
            };
            let tree = state.edit_tree(base, &[edit]).unwrap();
            tip = state.commit(tip, tree, &sig, &sig, "change").unwrap();
            state.persist().unwrap();
            state.push(tip).unwrap();
            state.maintain();
        }
        while state
            .maintenance
            .rollup
            .as_ref()
            .is_some_and(|(_, rollup)| !rollup.is_finished())
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        state.maintain();
        assert_eq!(
            packs(&clone),
            clone_before + ROLLUP_FAN_IN + 1,
            "the replaced packs are still there beside the merged one"
        );
        assert_eq!(state.maintenance.retired.len(), 1);
        // A shutdown right after the rollup leaves them: a reader may be listing the folder.
        state.finish_maintenance();
        assert_eq!(packs(&clone), clone_before + ROLLUP_FAN_IN + 1);
        assert_eq!(packs(&remote), remote_before + ROLLUP_FAN_IN + 1);
        // Once their time beside the merged pack is over, they go.
        state.maintenance.retired[0].0 =
            std::time::Instant::now().checked_sub(RETIRE_AFTER).unwrap();
        state.finish_maintenance();
        assert_eq!(packs(&clone), clone_before + 1);
        assert_eq!(packs(&remote), remote_before + 1);
        // Every commit reads from the merged pack alone, in both repositories.
        for repo in [&clone, &remote] {
            let repo = Repository::open_bare(repo).unwrap();
            let mut walk = repo.revwalk().unwrap();
            walk.push(tip).unwrap();
            let commits: Vec<Oid> = walk.map(|c| c.unwrap()).collect();
            assert_eq!(commits.len(), ROLLUP_FAN_IN + 1);
            let head = repo.find_commit(tip).unwrap().tree().unwrap();
            assert!(head.get_name(&format!("f{}", ROLLUP_FAN_IN - 1)).is_some());
        }
    }

    #[test]
    fn the_pack_folders_never_hold_more_than_max_packs() {
        let dir = tempfile::tempdir().unwrap();
        let remote = seeded_remote(dir.path());
        let mut config = config(dir.path(), &remote);
        config.max_packs = MIN_MAX_PACKS;
        let mut state = StateRepo::open_or_clone(&config).unwrap();
        let clone = dir.path().join("clone.git");
        let count = |repo: &Path| pack::count(&repo.join("objects/pack")).unwrap();
        let sig = Signature::now("api", "api@example.com").unwrap();
        let mut tip = state.remote_tip().unwrap();
        let batches = 12 * ROLLUP_FAN_IN;
        for i in 0..batches {
            let base = state.snapshot(tip).unwrap().root;
            let edit = Edit::Write {
                path: format!("d{}/f{i}", i % 5),
                contents: format!("{i}\n").into_bytes(),
            };
            let tree = state.edit_tree(base, &[edit]).unwrap();
            tip = state.commit(tip, tree, &sig, &sig, "change").unwrap();
            state.push(tip).unwrap();
            state.maintain();
            for repo in [&clone, &remote] {
                assert!(
                    count(repo) <= MIN_MAX_PACKS,
                    "{} packs in {} after batch {i}",
                    count(repo),
                    repo.display()
                );
            }
        }
        state.finish_maintenance();
        for repo in [&clone, &remote] {
            assert!(count(repo) <= MIN_MAX_PACKS);
            let repo = Repository::open_bare(repo).unwrap();
            let mut walk = repo.revwalk().unwrap();
            walk.push(tip).unwrap();
            assert_eq!(walk.count(), batches + 1, "every commit is still there");
            let head = repo.find_commit(tip).unwrap().tree().unwrap();
            for i in 0..batches {
                let path = format!("d{}/f{i}", i % 5);
                let entry = head.get_path(Path::new(&path)).unwrap();
                let blob = repo.find_blob(entry.id()).unwrap();
                assert_eq!(blob.content(), format!("{i}\n").as_bytes());
            }
        }
    }

    #[test]
    fn a_pack_is_never_listed_without_its_index() {
        // Index in first and out last: at no moment of a write, a link or a removal does a
        // folder hold a `.pack` without its `.idx`. (A pack seen before and after the look at
        // its index was there all along: each name is written and removed once.)
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        std::fs::create_dir_all(&from).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let lister = scope.spawn(|| {
                let mut listings = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for folder in [&from, &to] {
                        for entry in std::fs::read_dir(folder).unwrap() {
                            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                            let Some(stem) = name.strip_suffix(".pack") else {
                                continue;
                            };
                            let pack_before = folder.join(&name).exists();
                            let index = folder.join(format!("{stem}.idx")).exists();
                            let pack_after = folder.join(&name).exists();
                            assert!(
                                index || !(pack_before && pack_after),
                                "{name} was there without its index"
                            );
                        }
                    }
                    listings += 1;
                }
                listings
            });
            for i in 0..200u32 {
                let data = i.to_be_bytes();
                let id = objects::object_id(ObjectType::Blob, &data).unwrap();
                let name =
                    pack::write(&from, std::iter::once((id, ObjectType::Blob, &data[..]))).unwrap();
                pack::link(&from, std::slice::from_ref(&name), &to).unwrap();
                pack::remove(&from, &name).unwrap();
                pack::remove(&to, &name).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(lister.join().unwrap() > 0);
        });
    }

    #[test]
    fn rollups_stop_at_the_top_class() {
        let packs = |n: usize, class: usize| -> Vec<PackName> {
            (0..n)
                .map(|i| PackName(format!("pack-{class}-{i}")))
                .collect()
        };
        let mut m = Maintenance::default();
        assert_eq!(m.next_rollup(), None);
        m.classes = vec![packs(ROLLUP_FAN_IN - 1, 0)];
        assert_eq!(m.next_rollup(), None);
        m.classes = vec![packs(ROLLUP_FAN_IN, 0)];
        assert_eq!(m.next_rollup(), Some(0));
        m.classes = vec![packs(3, 0), packs(ROLLUP_FAN_IN, 1)];
        assert_eq!(m.next_rollup(), Some(1));
        // Packs of the top class pile up until the idle `git repack` takes them.
        let mut classes = vec![Vec::new(); ROLLUP_TOP_CLASS];
        classes.push(packs(3 * ROLLUP_FAN_IN, ROLLUP_TOP_CLASS));
        m.classes = classes;
        assert_eq!(m.next_rollup(), None);
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
