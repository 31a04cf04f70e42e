//! Reads of tenant state, straight from the state repo's head (the remote branch as last fetched or
//! pushed), so that changes merged by SREs show in the api and auditors see what Flux sees.
//!
//! Each read opens its own handle on the api's clone: the writer thread owns the other one.

use std::path::Path;
use std::sync::{Arc, Mutex};

use git2::{Oid, Repository, Sort};
use serde::Serialize;

use crate::lifecycle::{compiled_for, secrets_path, spec_path, trailer, ChangeError, Compiled};
use crate::state_repo::entry_id;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{} in the state repo is not a valid spec: {}", compiler::layout::spec_path(.0), .1)]
    BadSpec(String, String),
}

/// Why the platform config at the head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("git: {}", .0.message())]
    Git(#[from] git2::Error),
    /// The head holds something the api cannot work with (templates/ missing or invalid).
    #[error(transparent)]
    Change(#[from] ChangeError),
}

/// The platform config and templates at the head, for the checks handlers make at the boundary
/// (tier and model exist, the age recipients to encrypt for). Keeps its own handle on the clone,
/// opened once, and the parsed config of the last templates/ tree it saw.
#[derive(Default)]
pub struct HeadConfig {
    inner: Mutex<HeadConfigInner>,
}

#[derive(Default)]
struct HeadConfigInner {
    repo: Option<Repository>,
    compiled: Option<Arc<Compiled>>,
}

impl HeadConfig {
    /// The platform config and templates at `tracking_ref` of the clone at `path` (blocking:
    /// call it off the async runtime).
    pub fn compiled(&self, path: &Path, tracking_ref: &str) -> Result<Arc<Compiled>, HeadError> {
        let mut inner = self.inner.lock().expect("head config cache");
        let inner = &mut *inner;
        let repo = match &mut inner.repo {
            Some(repo) => repo,
            None => inner.repo.insert(Repository::open_bare(path)?),
        };
        let tip = repo.refname_to_id(tracking_ref)?;
        let tree = repo.find_commit(tip).and_then(|c| c.tree())?;
        Ok(compiled_for(repo, &tree, &mut inner.compiled)?)
    }
}

/// The tenant's encrypted secrets file at the head; None when the tenant has none.
pub fn secrets_file(
    path: &Path,
    tracking_ref: &str,
    name: &str,
) -> Result<Option<Vec<u8>>, git2::Error> {
    let repo = Repository::open_bare(path)?;
    let tip = repo.refname_to_id(tracking_ref)?;
    let tree = repo.find_commit(tip).and_then(|c| c.tree())?;
    Ok(crate::state_repo::read_file(
        &repo,
        &tree,
        &secrets_path(name),
    ))
}

/// One commit that touched a tenant, as auditors see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub commit: String,
    pub author: String,
    pub author_email: String,
    /// Author time, RFC 3339 (UTC).
    pub time: String,
    /// `Action:` trailer, or `manual` for commits made without the api (pull requests).
    pub action: String,
    /// `Reason:` trailer, or the commit's subject.
    pub reason: String,
    pub request_id: Option<String>,
    pub subject: String,
}

/// A tenant as the head of the state repo describes it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub name: String,
    /// tenants/<name>/tenant.yaml as JSON.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The head commit the spec was read at.
    pub head: String,
    /// The last commit that changed the tenant's folder.
    pub last_commit: Option<HistoryEntry>,
}

fn tracking_tip(repo: &Repository, tracking_ref: &str) -> Result<Oid, ReadError> {
    Ok(repo.refname_to_id(tracking_ref)?)
}

/// Reads tenant `name` at the head. `hint` is the commit the database recorded as its last change:
/// when the tenant's folder is the same there as at the head, it is the answer without a walk.
pub fn tenant(
    path: &Path,
    tracking_ref: &str,
    name: &str,
    hint: Option<&str>,
) -> Result<Option<TenantView>, ReadError> {
    let repo = Repository::open_bare(path)?;
    let tip = tracking_tip(&repo, tracking_ref)?;
    let tree = repo.find_commit(tip)?.tree()?;
    let Some(text) = crate::state_repo::read_file(&repo, &tree, &spec_path(name)) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let spec = compiler::spec::TenantSpec::parse(&spec_path(name), &text)
        .map_err(|d| ReadError::BadSpec(name.to_owned(), d.to_string()))?;
    let spec = serde_json::to_value(&spec)
        .map_err(|e| ReadError::BadSpec(name.to_owned(), e.to_string()))?;
    let folder = compiler::layout::spec_dir(name);
    let here = entry_id(&tree, &folder);
    let hinted = hint
        .and_then(|h| Oid::from_str(h).ok())
        .filter(|h| *h == tip || repo.graph_descendant_of(tip, *h).unwrap_or(false))
        .filter(|h| {
            repo.find_commit(*h)
                .and_then(|c| c.tree())
                .map(|t| entry_id(&t, &folder) == here)
                .unwrap_or(false)
        });
    let last_commit = match hinted {
        Some(commit) => Some(entry(&repo.find_commit(commit)?)),
        None => walk(&repo, tip, name, None, 1)?.into_iter().next(),
    };
    Ok(Some(TenantView {
        name: name.to_owned(),
        spec,
        head: tip.to_string(),
        last_commit,
    }))
}

/// The commits that changed tenants/<shard>/<name>/ in the incarnation with `uid` (None: the
/// spec has no uid), newest first, at most `limit`. A commit belongs to the incarnation whose uid
/// the spec has after it, or, for the commit that removed the tenant, before it: another
/// incarnation under the same name (an earlier owner's, a later owner's) never shows.
pub fn history(
    path: &Path,
    tracking_ref: &str,
    name: &str,
    uid: Option<&str>,
    limit: usize,
) -> Result<Vec<HistoryEntry>, ReadError> {
    let repo = Repository::open_bare(path)?;
    let tip = tracking_tip(&repo, tracking_ref)?;
    walk(&repo, tip, name, Some(uid), limit)
}

/// The uid of the tenant's spec in `tree`: Some(None) for a spec without one (or one that does
/// not parse), None when there is no spec.
fn uid_in(repo: &Repository, tree: &git2::Tree<'_>, name: &str) -> Option<Option<String>> {
    let text = crate::state_repo::read_file(repo, tree, &spec_path(name))?;
    let text = String::from_utf8_lossy(&text);
    Some(
        compiler::spec::TenantSpec::parse(&spec_path(name), &text)
            .ok()
            .and_then(|s| s.metadata.uid)
            .map(|u| u.to_string()),
    )
}

/// `git log -- 'tenants/*/<name>'`: a commit is listed when the folder differs from every parent's
/// (a merge that took one side unchanged is skipped, as git does). Comparing tree ids first keeps
/// the walk cheap: only commits whose shard folder tenants/<shard>/ changed are looked into.
/// `incarnation` keeps only the commits of the incarnation with that uid (see [`history`]).
fn walk(
    repo: &Repository,
    tip: Oid,
    name: &str,
    incarnation: Option<Option<&str>>,
    limit: usize,
) -> Result<Vec<HistoryEntry>, ReadError> {
    let folder = compiler::layout::spec_dir(name);
    let shard = compiler::layout::spec_shard_dir(name);
    let mut revwalk = repo.revwalk()?;
    revwalk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)?;
    revwalk.push(tip)?;
    let mut entries = Vec::new();
    for oid in revwalk {
        let commit = repo.find_commit(oid?)?;
        let tree = commit.tree()?;
        let shard_here = entry_id(&tree, &shard);
        let here = entry_id(&tree, &folder);
        let mut changed = true;
        if commit.parent_count() == 0 {
            changed = here.is_some();
        }
        for parent in commit.parents() {
            let parent_tree = parent.tree()?;
            let same = entry_id(&parent_tree, &shard) == shard_here
                || entry_id(&parent_tree, &folder) == here;
            if same {
                changed = false;
                break;
            }
        }
        if changed {
            if let Some(wanted) = incarnation {
                let uid = match uid_in(repo, &tree, name) {
                    Some(uid) => uid,
                    None => match commit.parents().next() {
                        Some(parent) => uid_in(repo, &parent.tree()?, name).flatten(),
                        None => None,
                    },
                };
                if uid.as_deref() != wanted {
                    continue;
                }
            }
            entries.push(entry(&commit));
            if entries.len() >= limit {
                break;
            }
        }
    }
    Ok(entries)
}

fn entry(commit: &git2::Commit<'_>) -> HistoryEntry {
    let message = commit.message().unwrap_or_default();
    let subject = commit.summary().unwrap_or_default().to_owned();
    let author = commit.author();
    let time = time::OffsetDateTime::from_unix_timestamp(author.when().seconds())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    HistoryEntry {
        commit: commit.id().to_string(),
        author: author.name().unwrap_or_default().to_owned(),
        author_email: author.email().unwrap_or_default().to_owned(),
        time,
        action: trailer(message, "Action").unwrap_or("manual").to_owned(),
        reason: trailer(message, "Reason")
            .map(str::to_owned)
            .unwrap_or_else(|| subject.clone()),
        request_id: trailer(message, "Request-Id").map(str::to_owned),
        subject,
    }
}

/// Ancestry questions on the api's clone ("does the revision Flux applied contain our commit?"),
/// one handle for many questions, each pair answered once.
pub struct Ancestry {
    repo: Repository,
    answers: std::collections::HashMap<(Oid, Oid), Option<bool>>,
}

impl Ancestry {
    pub fn open(path: &Path) -> Result<Ancestry, ReadError> {
        Ok(Ancestry {
            repo: Repository::open_bare(path)?,
            answers: Default::default(),
        })
    }

    /// Whether `descendant` is `ancestor` or a descendant of it. None: one of them is not a
    /// commit id, or not in the clone (a commit made elsewhere and not fetched yet).
    pub fn contains(&mut self, descendant: &str, ancestor: &str) -> Option<bool> {
        let d = Oid::from_str(descendant).ok()?;
        let a = Oid::from_str(ancestor).ok()?;
        if d == a {
            return Some(true);
        }
        if let Some(known) = self.answers.get(&(d, a)) {
            return *known;
        }
        let answer = (self.repo.find_commit(d).is_ok() && self.repo.find_commit(a).is_ok())
            .then(|| self.repo.graph_descendant_of(d, a).ok())
            .flatten();
        self.answers.insert((d, a), answer);
        answer
    }
}
