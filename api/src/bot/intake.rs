//! Group commit of the webhook's updates: one task owns the webhook's connection and stores
//! every update that arrived while its previous statement committed, in one statement,
//! then answers each waiting request. An update is acknowledged only after the transaction that
//! holds it committed; a batch costs one commit (one WAL flush) however many updates it holds,
//! so the acknowledgement's latency stays near one commit's at any rate the disk can absorb.
//!
//! No batching window is waited out: a lone update is stored at once, and updates queue only
//! while a commit is under way. The queue is bounded ([`QUEUE`]); when it is full the webhook
//! waits for room (back-pressure to Telegram, which retries slow answers) rather than
//! growing memory without bound.
//!
//! This module owns nothing but the batching: the SQL is [`super::db::BotDb::insert_updates`].

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use super::db::BotDb;
use super::update::Input;
use super::worker::now_ms;

/// Updates waiting for the committer at most.
pub const QUEUE: usize = 4096;
/// Updates stored in one transaction at most.
pub const BATCH: usize = 256;

/// Why an update was not stored; the webhook answers 503 and Telegram delivers it again.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot store the update: {0}")]
    Store(String),
    #[error("the update committer has stopped")]
    Stopped,
}

struct Waiting {
    input: Input,
    answer: oneshot::Sender<Result<bool, IntakeError>>,
}

/// The webhook's side of the committer.
pub struct Intake {
    queue: mpsc::Sender<Waiting>,
}

impl Intake {
    /// Starts the committer on `db` (the webhook's own connection); it stops when the intake is
    /// dropped, after storing what was queued. `stored` is woken after a batch stored a new
    /// update.
    pub fn start(db: BotDb, stored: Arc<Notify>) -> Intake {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(commit_batches(db, receiver, stored));
        Intake { queue }
    }

    /// Stores `input` with whatever else is waiting; true when it is new, false when this
    /// update was stored before (a second delivery).
    pub async fn store(&self, input: Input) -> Result<bool, IntakeError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting { input, answer })
            .await
            .map_err(|_| IntakeError::Stopped)?;
        answered.await.map_err(|_| IntakeError::Stopped)?
    }
}

async fn commit_batches(db: BotDb, mut receiver: mpsc::Receiver<Waiting>, stored: Arc<Notify>) {
    let mut batch: Vec<Waiting> = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let inputs: Vec<&Input> = batch.iter().map(|w| &w.input).collect();
        let result = db.insert_updates(&inputs, now_ms()).await;
        crate::metrics::get()
            .bot_intake_batch_size
            .observe(batch.len() as f64);
        match result {
            Ok(fresh) => {
                if fresh.iter().any(|f| *f) {
                    stored.notify_one();
                }
                for (waiting, fresh) in batch.drain(..).zip(fresh) {
                    // A request that gave up (its client went away) no longer listens.
                    let _ = waiting.answer.send(Ok(fresh));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for waiting in batch.drain(..) {
                    let _ = waiting.answer.send(Err(IntakeError::Store(reason.clone())));
                }
            }
        }
    }
}
