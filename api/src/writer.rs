//! The single writer of the state repo.
//!
//! Every change goes through one thread that owns the api's clone. It takes whatever changes are
//! waiting (up to `repo.max_batch`), applies each on top of the previous one (one commit per
//! change), records them in the database in one transaction (tenants index, outbox rows,
//! idempotency responses), moves the local branch, and pushes them all at once. A rejected push
//! (someone else pushed) is followed by a fetch and a re-apply of every pending change on the new
//! head; an unreachable remote either undoes the batch (policy `fail`: 503, nothing half-written)
//! or keeps it in the outbox and answers 202 (policy `queue`). On start, the outbox is replayed:
//! changes already on the remote are marked pushed, the others are re-applied and pushed, so a
//! crash never loses an acknowledged change nor applies one twice.
//!
//! Callers talk to it through [`WriterHandle`]; replies come back on a oneshot channel once the
//! change is pushed (or queued, or refused).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::{Oid, Signature};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::config::{RepoConfig, UnreachablePolicy};
use crate::lifecycle::{commit_message, compiled_for, plan, Change, ChangeError, Compiled};
use crate::state_repo::{PushError, RepoError, StateRepo};
use crate::store::{Customer, IdempotencyRecord, IndexEffect, Recorded, Store, StoreError};

/// What a caller gets back for an applied change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeResponse {
    pub tenant: String,
    pub action: String,
    /// The commit that carries the change (or, when nothing had to change, the head it holds at).
    pub commit: String,
    /// True once the commit is on the remote; false when queued in the outbox.
    pub pushed: bool,
    /// True when the tenant was already in the requested state and no commit was made.
    pub unchanged: bool,
    pub request_id: String,
}

impl ChangeResponse {
    /// The HTTP status: 201 for a new tenant, 202 when queued, 200 otherwise.
    pub fn status(&self) -> u16 {
        if !self.pushed {
            202
        } else if self.action == "provision" && !self.unchanged {
            201
        } else {
            200
        }
    }
}

/// Why a change was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The remote or the database cannot take the change now; nothing was written.
    #[error("{0}")]
    Unavailable(String),
    /// Too many changes are waiting.
    #[error("the api is busy: too many changes are waiting to be written; retry shortly")]
    Busy,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RepoError> for WriteError {
    fn from(e: RepoError) -> Self {
        WriteError::Internal(e.to_string())
    }
}

impl From<git2::Error> for WriteError {
    fn from(e: git2::Error) -> Self {
        WriteError::Internal(e.message().to_owned())
    }
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Unavailable(format!("the database cannot take the change: {e}"))
    }
}

/// The Idempotency-Key of a request and the hash of the request it was first used with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub actor: String,
    pub key: String,
    pub request_hash: String,
}

struct Job {
    change: Change,
    /// The account a provision creates for its owner, recorded with the change.
    new_owner: Option<Customer>,
    idempotency: Option<IdempotencyKey>,
    reply: oneshot::Sender<Result<ChangeResponse, WriteError>>,
}

/// Sends changes to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Job>,
    remote_ok: Arc<AtomicBool>,
    /// The last commit pushed and when (for telling Flux at once, `cluster::receiver`).
    pushes: tokio::sync::watch::Receiver<Option<Pushed>>,
}

/// A push the remote took: the branch's new tip and the moment it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub tip: Oid,
    pub at: Instant,
}

impl WriterHandle {
    /// A handle whose writer is gone (every submit answers that it stopped), for the tests of
    /// what runs before a change reaches the writer.
    #[cfg(test)]
    pub(crate) fn detached() -> WriterHandle {
        let (tx, _) = mpsc::sync_channel::<Job>(1);
        WriterHandle {
            tx,
            remote_ok: Arc::new(AtomicBool::new(false)),
            pushes: tokio::sync::watch::channel(None).1,
        }
    }

    /// Queues `change` and waits until it is pushed, queued or refused.
    pub async fn submit(
        &self,
        change: Change,
        new_owner: Option<Customer>,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<ChangeResponse, WriteError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Job {
            change,
            new_owner,
            idempotency,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(WriteError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(WriteError::Unavailable("the api is shutting down".into()))
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(WriteError::Internal(
                "the writer stopped before answering".into(),
            ))
        })
    }

    /// Whether the last push or fetch reached the remote.
    /// Follows the pushes: changes each time the remote takes the branch's new tip.
    pub fn pushes(&self) -> tokio::sync::watch::Receiver<Option<Pushed>> {
        self.pushes.clone()
    }

    pub fn remote_ok(&self) -> bool {
        self.remote_ok.load(Ordering::Relaxed)
    }
}

/// A change committed locally and recorded in the database, not yet on the remote.
struct Pending {
    seq: i64,
    change: Change,
    commit: Oid,
    /// Present while the caller still waits for the answer.
    waiting: Option<Waiting>,
}

struct Waiting {
    reply: oneshot::Sender<Result<ChangeResponse, WriteError>>,
    record: Recorded,
}

enum Applied {
    Commit {
        commit: Oid,
        owner_email: Option<String>,
        uid: Option<String>,
    },
    Unchanged,
}

/// The writer thread's state.
pub struct Writer {
    repo: StateRepo,
    store: Store,
    runtime: Handle,
    config: RepoConfig,
    compiled: Option<Arc<Compiled>>,
    next_seq: i64,
    /// The local branch: the remote tip plus the pending commits.
    tip: Oid,
    pending: Vec<Pending>,
    /// Outbox rows whose commits are on the remote but still marked pending in the database: they
    /// are marked in the next batch's transaction, or at once when no change is waiting.
    unmarked: Vec<i64>,
    /// Outbox rows could not be checked against the remote yet (it was unreachable at start).
    recovering: bool,
    remote_ok: Arc<AtomicBool>,
    pushes: tokio::sync::watch::Sender<Option<Pushed>>,
}

/// Starts the writer thread: replays the outbox, then serves changes until every handle is dropped.
pub fn spawn(
    repo: StateRepo,
    store: Store,
    config: RepoConfig,
    runtime: Handle,
) -> Result<(WriterHandle, std::thread::JoinHandle<()>), WriteError> {
    let tip = repo
        .remote_tip()
        .ok_or_else(|| WriteError::Internal("the state repo has no branch".into()))?;
    let next_seq = runtime.block_on(store.next_seq())?;
    let remote_ok = Arc::new(AtomicBool::new(true));
    let (tx, rx) = mpsc::sync_channel::<Job>(4096);
    let (pushes, pushes_rx) = tokio::sync::watch::channel(None);
    let mut writer = Writer {
        repo,
        store,
        runtime,
        config,
        compiled: None,
        next_seq,
        tip,
        pending: Vec::new(),
        unmarked: Vec::new(),
        recovering: true,
        remote_ok: remote_ok.clone(),
        pushes,
    };
    writer.recover();
    let thread = std::thread::Builder::new()
        .name("state-repo-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| WriteError::Internal(e.to_string()))?;
    Ok((
        WriterHandle {
            tx,
            remote_ok,
            pushes: pushes_rx,
        },
        thread,
    ))
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let interval = Duration::from_secs(self.config.fetch_interval_seconds.max(1));
        loop {
            if !self.unmarked.is_empty() {
                match rx.try_recv() {
                    Ok(first) => {
                        self.take_batch(first, &rx);
                        continue;
                    }
                    Err(mpsc::TryRecvError::Empty) => self.mark_pushed(),
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            }
            match rx.recv_timeout(interval) {
                Ok(first) => self.take_batch(first, &rx),
                Err(RecvTimeoutError::Timeout) => self.tick(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !self.pending.is_empty() {
            self.flush();
        }
        self.mark_pushed();
        self.repo.finish_maintenance();
        tracing::info!(pending = self.pending.len(), "state repo writer stopped");
    }

    /// Takes `first` and whatever else waits (up to `repo.max_batch`) and applies them.
    fn take_batch(&mut self, first: Job, rx: &mpsc::Receiver<Job>) {
        let mut jobs = vec![first];
        while jobs.len() < self.config.max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        self.process(jobs);
    }

    /// Marks the rows of pushed commits in the database (when no batch is there to carry them).
    fn mark_pushed(&mut self) {
        if self.unmarked.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.unmarked);
        if let Err(e) = self
            .runtime
            .block_on(self.store.mark_state(&seqs, "pushed", now_ms()))
        {
            // The commits are on the remote; the next start finds them there and marks them.
            tracing::warn!(error = %e, "cannot mark outbox rows as pushed");
        }
    }

    /// Idle work: retry pending pushes, or pick up what others pushed.
    fn tick(&mut self) {
        if self.recovering {
            self.recover();
        } else if !self.pending.is_empty() {
            self.flush();
        } else {
            self.refresh();
            self.repo.maintain_idle();
        }
    }

    /// Fetches the remote and, when nothing is pending, moves the local branch to it.
    fn refresh(&mut self) {
        match self.repo.fetch() {
            Ok(Some(remote)) => {
                self.remote_ok.store(true, Ordering::Relaxed);
                if self.pending.is_empty() && remote != self.tip {
                    self.tip = remote;
                    if let Err(e) = self.repo.set_local_tip(remote) {
                        tracing::warn!(error = %e, "cannot move the local branch");
                    }
                }
            }
            Ok(None) => tracing::warn!("the remote branch disappeared"),
            Err(e) => {
                self.remote_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "fetch failed");
            }
        }
    }

    /// Replays the outbox: marks what the remote already has, re-applies the rest.
    fn recover(&mut self) {
        let rows = match self.runtime.block_on(self.store.pending()) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        if let Err(e) = self.repo.fetch() {
            self.remote_ok.store(false, Ordering::Relaxed);
            if !rows.is_empty() {
                tracing::warn!(error = %e, pending = rows.len(), "cannot check the outbox against the remote yet");
                return;
            }
        }
        self.recovering = false;
        let Some(remote) = self.repo.remote_tip() else {
            return;
        };
        self.tip = remote;
        if rows.is_empty() {
            let _ = self.repo.set_local_tip(remote);
            return;
        }
        let mut done = Vec::new();
        let mut rewrites = Vec::new();
        let mut abandoned = Vec::new();
        for row in rows {
            let landed = Oid::from_str(&row.commit_id).is_ok_and(|c| self.repo.contains(remote, c));
            if landed {
                done.push(row.seq);
                continue;
            }
            let change: Change = match serde_json::from_str(&row.change_json) {
                Ok(change) => change,
                Err(e) => {
                    tracing::error!(seq = row.seq, error = %e, "outbox row is not a change");
                    abandoned.push(row.seq);
                    continue;
                }
            };
            match self.apply(self.tip, &change) {
                Ok(Applied::Commit { commit, .. }) => {
                    self.tip = commit;
                    rewrites.push((row.seq, row.tenant.clone(), commit.to_string()));
                    self.pending.push(Pending {
                        seq: row.seq,
                        change,
                        commit,
                        waiting: None,
                    });
                }
                Ok(Applied::Unchanged) => done.push(row.seq),
                Err(e) => {
                    tracing::error!(seq = row.seq, tenant = %row.tenant, error = %e, "an acknowledged change no longer applies");
                    abandoned.push(row.seq);
                }
            }
        }
        tracing::info!(
            landed = done.len(),
            replayed = rewrites.len(),
            abandoned = abandoned.len(),
            "outbox replayed"
        );
        let store = self.store.clone();
        let result = self.runtime.block_on(async {
            store.mark_state(&done, "pushed", now_ms()).await?;
            store.mark_state(&abandoned, "abandoned", now_ms()).await?;
            store.rewrite_commits(&rewrites).await
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record the outbox replay");
        }
        if !self.pending.is_empty() {
            self.flush();
        }
    }

    /// Applies one change on top of `base` and makes its commit, in memory (no ref moves).
    fn apply(&mut self, base: Oid, change: &Change) -> Result<Applied, WriteError> {
        let compiled = self.compiled_at(base)?;
        let (root, planned) = {
            let snapshot = self.repo.snapshot(base)?;
            (snapshot.root, plan(&snapshot, &compiled, change)?)
        };
        let new_tree = self.repo.edit_tree(root, &planned.edits)?;
        if new_tree == root {
            return Ok(Applied::Unchanged);
        }
        let author = Signature::now(&change.actor.name, &change.actor.email)?;
        let committer = Signature::now(&self.config.committer_name, &self.config.committer_email)?;
        let commit =
            self.repo
                .commit(base, new_tree, &author, &committer, &commit_message(change))?;
        Ok(Applied::Commit {
            commit,
            owner_email: planned.owner_email,
            uid: planned.uid,
        })
    }

    /// The platform config and templates of commit `base`, parsed once per templates/ tree.
    fn compiled_at(&mut self, base: Oid) -> Result<Arc<Compiled>, WriteError> {
        let templates = self
            .repo
            .snapshot(base)?
            .entry_id("templates")?
            .ok_or_else(|| ChangeError::Repo("templates/ is missing".into()))?;
        if let Some(compiled) = self
            .compiled
            .as_ref()
            .filter(|c| c.templates_tree == templates)
        {
            return Ok(compiled.clone());
        }
        // The compiler reads templates through libgit2: the commit must be on disk. (Only a fetch
        // brings new templates, and fetched commits are.)
        if self.repo.is_staged(base) {
            self.repo.persist()?;
        }
        let repository = self.repo.repository();
        let tree = repository.find_commit(base)?.tree()?;
        Ok(compiled_for(repository, &tree, &mut self.compiled)?)
    }

    fn response(
        &self,
        change: &Change,
        commit: Oid,
        pushed: bool,
        unchanged: bool,
    ) -> ChangeResponse {
        ChangeResponse {
            tenant: change.tenant.clone(),
            action: change.operation.action().to_owned(),
            commit: commit.to_string(),
            pushed,
            unchanged,
            request_id: change.request_id.clone(),
        }
    }

    fn process(&mut self, jobs: Vec<Job>) {
        crate::metrics::get()
            .write_batch_size
            .observe(jobs.len() as f64);
        if self.recovering {
            self.recover();
        }
        if self.recovering {
            for job in jobs {
                let _ = job.reply.send(Err(WriteError::Unavailable(
                    "the state repo's remote cannot be reached; acknowledged changes are waiting to be pushed".into(),
                )));
            }
            return;
        }
        let start_tip = self.tip;
        let started = Instant::now();
        let mut fresh: Vec<Pending> = Vec::new();
        for job in jobs {
            let Job {
                change,
                new_owner,
                idempotency,
                reply,
            } = job;
            if let Err(e) = self.within_cap(&change, &fresh) {
                let _ = reply.send(Err(e));
                continue;
            }
            match self.apply(self.tip, &change) {
                Ok(Applied::Commit {
                    commit,
                    owner_email,
                    uid,
                }) => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.tip = commit;
                    let response = self.response(&change, commit, true, false);
                    let record = Recorded {
                        seq,
                        tenant: change.tenant.clone(),
                        action: change.operation.action().to_owned(),
                        request_id: change.request_id.clone(),
                        change_json: serde_json::to_string(&change).expect("a change serialises"),
                        commit_id: commit.to_string(),
                        index: match owner_email {
                            Some(_) => IndexEffect::Upsert {
                                owner_id: change.operation.owner_id(),
                                uid,
                            },
                            None => IndexEffect::Remove,
                        },
                        idempotency: idempotency.map(|k| IdempotencyRecord {
                            actor: k.actor,
                            key: k.key,
                            request_hash: k.request_hash,
                            status: response.status(),
                            body: serde_json::to_string(&response).expect("a response serialises"),
                        }),
                        new_owner,
                        prior: None,
                        at: now_ms(),
                    };
                    fresh.push(Pending {
                        seq,
                        change,
                        commit,
                        waiting: Some(Waiting { reply, record }),
                    });
                }
                Ok(Applied::Unchanged) => {
                    let pushed = self.pending.is_empty() && fresh.is_empty();
                    let response = self.response(&change, self.tip, pushed, true);
                    let _ = reply.send(Ok(response));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        let applied = started.elapsed();
        crate::metrics::get()
            .apply_seconds
            .observe(applied.as_secs_f64());
        // Group commit: the batch's database transaction runs while its pack is written and
        // flushed; the remote's branch moves only once both are durable.
        let records: Vec<Recorded> = fresh
            .iter()
            .filter_map(|p| p.waiting.as_ref().map(|w| w.record.clone()))
            .collect();
        let store = self.store.clone();
        let recorded = Instant::now();
        let marks = std::mem::take(&mut self.unmarked);
        let recording = self.runtime.spawn(async move {
            let result = store.record_batch(&records, &marks, now_ms()).await;
            (result, marks)
        });
        let persisted = self.repo.persist();
        let result = match self.runtime.block_on(recording) {
            Ok((result, marks)) => {
                if result.is_err() {
                    // Not marked: carried to the next transaction.
                    self.unmarked.extend(marks);
                }
                result
            }
            Err(_) => Err(StoreError::Sqlx(sqlx::Error::WorkerCrashed)),
        };
        crate::metrics::get()
            .record_seconds
            .observe(recorded.elapsed().as_secs_f64());
        tracing::debug!(
            changes = fresh.len(),
            apply_ms = applied.as_millis() as u64,
            record_ms = recorded.elapsed().as_millis() as u64,
            "batch committed"
        );
        let failure = match (persisted, result) {
            (Ok(()), Ok(priors)) => {
                for (p, prior) in fresh.iter_mut().zip(priors) {
                    if let Some(w) = &mut p.waiting {
                        w.record.prior = prior;
                    }
                }
                None
            }
            (Err(e), Ok(priors)) => {
                tracing::error!(error = %e, "cannot write the batch's objects; undoing it");
                let undo: Vec<Recorded> = fresh
                    .iter()
                    .zip(priors)
                    .filter_map(|(p, prior)| {
                        p.waiting.as_ref().map(|w| Recorded {
                            prior,
                            ..w.record.clone()
                        })
                    })
                    .collect();
                if let Err(undo_error) = self.runtime.block_on(self.store.undo_batch(&undo)) {
                    // The rows stay pending; the next start re-applies them from the outbox.
                    tracing::error!(error = %undo_error, "cannot undo the batch's database rows");
                }
                Some(WriteError::Internal(e.to_string()))
            }
            (_, Err(e)) => {
                tracing::error!(error = %e, "cannot record the batch; nothing was written");
                Some(WriteError::Unavailable(WriteError::from(e).to_string()))
            }
        };
        if let Some(error) = failure {
            self.tip = start_tip;
            self.repo.discard();
            let message = error.to_string();
            let unavailable = matches!(error, WriteError::Unavailable(_));
            for p in fresh {
                if let Some(w) = p.waiting {
                    let _ = w.reply.send(Err(if unavailable {
                        WriteError::Unavailable(message.clone())
                    } else {
                        WriteError::Internal(message.clone())
                    }));
                }
            }
            return;
        }
        for p in &fresh {
            crate::metrics::get()
                .commits
                .with_label_values(&[p.change.operation.action()])
                .inc();
        }
        self.pending.extend(fresh);
        self.flush();
    }

    /// A customer's own sign-up must leave them within their tenant cap. The writer is the one
    /// place every change goes through in order, so counting here (the tenants index, which
    /// holds every recorded change, plus this batch's sign-ups) cannot be raced past.
    fn within_cap(&self, change: &Change, fresh: &[Pending]) -> Result<(), WriteError> {
        let Some((owner, cap)) = change.operation.owner_cap() else {
            return Ok(());
        };
        let recorded = self
            .runtime
            .block_on(self.store.tenant_count_of(owner))
            .map_err(WriteError::from)?;
        let in_batch = fresh
            .iter()
            .filter(|p| p.change.operation.owner_id().as_deref() == Some(owner))
            .count() as i64;
        let owned = recorded + in_batch;
        if owned >= i64::from(cap) {
            return Err(WriteError::Change(ChangeError::Forbidden(format!(
                "you own {owned} agents, the most one account may have ({cap}); destroy one or ask support"
            ))));
        }
        Ok(())
    }

    /// Pushes the pending commits, re-applying them after rejections.
    fn flush(&mut self) {
        let started = Instant::now();
        let mut delay = Duration::from_millis(5);
        for attempt in 0..=self.config.push_retries {
            if self.pending.is_empty() {
                return;
            }
            match self.repo.push(self.tip) {
                Ok(()) => {
                    self.remote_ok.store(true, Ordering::Relaxed);
                    self.pushes.send_replace(Some(Pushed {
                        tip: self.tip,
                        at: Instant::now(),
                    }));
                    crate::metrics::get()
                        .push_seconds
                        .observe(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        commits = self.pending.len(),
                        push_ms = started.elapsed().as_millis() as u64,
                        "pushed"
                    );
                    self.pushed();
                    return;
                }
                Err(PushError::Rejected) => {
                    crate::metrics::get().push_rejections.inc();
                    tracing::info!(
                        attempt,
                        pending = self.pending.len(),
                        "push rejected; re-applying on the new head"
                    );
                    if let Err(e) = self.repo.fetch() {
                        self.unreachable(&e.to_string());
                        return;
                    }
                    self.rebase();
                    // Jitter keeps two writers from colliding in lockstep.
                    let jitter = Duration::from_micros(
                        rand::random::<u64>() % (delay.as_micros() as u64 + 1),
                    );
                    std::thread::sleep(delay + jitter);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(PushError::Unreachable(message)) => {
                    self.remote_ok.store(false, Ordering::Relaxed);
                    self.unreachable(&message);
                    return;
                }
            }
        }
        self.unreachable("the remote branch kept moving; giving up after the configured retries");
    }

    /// The pending commits are on the remote: answers their callers first, then leaves their
    /// outbox rows to be marked (see [`Writer::unmarked`]) and lets pack maintenance run.
    fn pushed(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            if let Some(w) = p.waiting {
                let response = self.response(&p.change, p.commit, true, false);
                let _ = w.reply.send(Ok(response));
            }
            self.unmarked.push(p.seq);
        }
        self.repo.maintain();
    }

    /// Re-applies every pending change on the freshly fetched remote tip.
    fn rebase(&mut self) {
        let Some(remote) = self.repo.remote_tip() else {
            return;
        };
        let mut tip = remote;
        let mut kept = Vec::new();
        let mut rewrites = Vec::new();
        let mut settled = Vec::new();
        let mut undo = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            match self.apply(tip, &p.change) {
                Ok(Applied::Commit { commit, .. }) => {
                    tip = commit;
                    p.commit = commit;
                    rewrites.push((p.seq, p.change.tenant.clone(), commit.to_string()));
                    kept.push(p);
                }
                Ok(Applied::Unchanged) => {
                    // Someone else made the same change; it is on the remote already.
                    settled.push(p.seq);
                    if let Some(w) = p.waiting {
                        let _ = w
                            .reply
                            .send(Ok(self.response(&p.change, remote, true, true)));
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant = %p.change.tenant, error = %e, "a change no longer applies after a concurrent push");
                    match p.waiting {
                        Some(w) => {
                            undo.push(w.record);
                            let _ = w.reply.send(Err(e));
                        }
                        None => settled.push(p.seq),
                    }
                }
            }
        }
        let store = self.store.clone();
        let result = self.runtime.block_on(async {
            store.undo_batch(&undo).await?;
            store.mark_state(&settled, "pushed", now_ms()).await?;
            store.rewrite_commits(&rewrites).await
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record re-applied commits");
        }
        if let Err(e) = self.repo.persist() {
            tracing::error!(error = %e, "cannot write re-applied objects");
        }
        self.pending = kept;
        self.tip = tip;
        if let Err(e) = self.repo.set_local_tip(tip) {
            tracing::warn!(error = %e, "cannot move the local branch");
        }
    }

    fn unreachable(&mut self, message: &str) {
        tracing::warn!(error = %message, pending = self.pending.len(), "push failed");
        let message =
            format!("the state repo's remote cannot be reached ({message}); nothing was changed");
        match self.config.on_unreachable {
            UnreachablePolicy::Queue => {
                for p in &mut self.pending {
                    if let Some(w) = p.waiting.take() {
                        let response = ChangeResponse {
                            tenant: p.change.tenant.clone(),
                            action: p.change.operation.action().to_owned(),
                            commit: p.commit.to_string(),
                            pushed: false,
                            unchanged: false,
                            request_id: p.change.request_id.clone(),
                        };
                        let _ = w.reply.send(Ok(response));
                    }
                }
            }
            UnreachablePolicy::Fail => {
                // Only changes whose callers still wait are undone; acknowledged ones (replayed
                // from the outbox) stay pending and are retried.
                let split = self
                    .pending
                    .iter()
                    .position(|p| p.waiting.is_some())
                    .unwrap_or(self.pending.len());
                let fresh = self.pending.split_off(split);
                let records: Vec<Recorded> = fresh
                    .iter()
                    .filter_map(|p| p.waiting.as_ref().map(|w| w.record.clone()))
                    .collect();
                if let Err(e) = self.runtime.block_on(self.store.undo_batch(&records)) {
                    tracing::error!(error = %e, "cannot undo the batch; its changes stay in the outbox");
                    // The rows stay in the database, so the commits stay pending until pushed.
                    for mut p in fresh {
                        if let Some(w) = p.waiting.take() {
                            let _ = w.reply.send(Err(WriteError::Unavailable(message.clone())));
                        }
                        self.pending.push(p);
                    }
                    return;
                }
                for p in fresh {
                    if let Some(w) = p.waiting {
                        let _ = w.reply.send(Err(WriteError::Unavailable(message.clone())));
                    }
                }
                self.tip = self
                    .pending
                    .last()
                    .map(|p| p.commit)
                    .or_else(|| self.repo.remote_tip())
                    .unwrap_or(self.tip);
                if let Err(e) = self.repo.set_local_tip(self.tip) {
                    tracing::warn!(error = %e, "cannot move the local branch");
                }
            }
        }
    }
}
