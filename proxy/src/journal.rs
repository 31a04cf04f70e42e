//! The usage journal: every buffered usage event on local disk until the api acknowledged it.
//!
//! This module owns the journal's files and their format. The in-memory buffer of [`crate::usage`]
//! alone loses what it holds when the process is killed (an OOM kill, `kill -9`); the journal keeps
//! it. Each event is appended, as one line, to the current segment file before the buffer takes it,
//! with one `write(2)`: from then on it survives the death of the process, because the kernel holds
//! it. `fdatasync(2)` runs every `usage.journal_fsync_interval_ms` on a background task, so a crash of
//! the whole machine loses at most that interval; 0 syncs every event before the request's response
//! ends, which costs a disk flush per request (docs/BENCHMARKS.md has both figures).
//!
//! When the api acknowledges a batch, its event ids are appended as one ack line; a segment whose
//! events were all acknowledged is deleted, and the current one is truncated whenever nothing is
//! waiting. On start, [`Journal::open`] replays every segment and returns the events without an ack,
//! which the shipper sends first: the api stores each event id once, so an event shipped just
//! before the kill and sent again after it counts once.
//!
//! The journal is bounded by `usage.journal_max_bytes`: past it, events are still buffered and
//! shipped but not journaled (counted in `proxy_usage_journal_full_total`). A torn last line (a crash
//! of the machine in the middle of a write) is skipped with a warning. One journal belongs to one
//! process: replicas need their own directories.
//!
//! Lines: `E <event as JSON>` and `A <uuid> <uuid> …`. Segments: `usage-<20-digit seq>.log`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A usage event as the journal stores it: the same type as `crate::usage::UsageEvent`, named
/// from the contract so that the journal does not depend on the buffer that uses it.
type UsageEvent = contracts::usage::UsageEvent<uuid::Uuid, chrono::DateTime<chrono::Utc>>;

#[derive(Debug, thiserror::Error)]
#[error("usage journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError {
        path: path.to_owned(),
        source,
    }
}

/// Sizes and sync policy, from [`crate::config::UsageConfig`].
#[derive(Clone, Copy, Debug)]
pub struct JournalLimits {
    /// All segments together; past it, events are not journaled.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Sync every append before returning (instead of on the interval task).
    pub sync_every_event: bool,
}

/// An open journal. Not thread-safe by itself: [`crate::usage::UsageSink`] holds it under the lock
/// that also guards the buffer, so that the order on disk is the order of the buffer.
pub struct Journal {
    dir: PathBuf,
    limits: JournalLimits,
    current: Arc<File>,
    current_seq: u64,
    current_bytes: u64,
    /// Closed segments still on disk, by sequence number, with their sizes.
    sealed: BTreeMap<u64, u64>,
    /// Segments closed since the last sync; the sync task flushes them once.
    unsynced: Vec<Arc<File>>,
}

/// What [`Journal::append`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written to segment `seq`.
    In(u64),
    /// Not written: the journal is at its size bound.
    Full,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("usage-{seq:020}.log"))
}

fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("usage-")?
        .strip_suffix(".log")
        .filter(|n| n.len() == 20)?
        .parse()
        .ok()
}

fn open_segment(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err(path))
}

/// Reads one segment: its events in order and the ids acknowledged in it.
fn read_segment(
    path: &Path,
    events: &mut Vec<UsageEvent>,
    acked: &mut HashSet<uuid::Uuid>,
) -> Result<(), JournalError> {
    let reader = BufReader::new(File::open(path).map_err(err(path))?);
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(err(path))?;
        let parsed = match line.split_first() {
            Some((b'E', rest)) => serde_json::from_slice::<UsageEvent>(rest.trim_ascii())
                .map(|e| events.push(e))
                .is_ok(),
            Some((b'A', rest)) => std::str::from_utf8(rest)
                .ok()
                .map(|ids| {
                    ids.split_ascii_whitespace()
                        .map(|id| id.parse().map(|id| acked.insert(id)))
                        .all(|r| r.is_ok())
                })
                .unwrap_or(false),
            None => true,
            Some(_) => false,
        };
        if !parsed {
            // Only a crash of the machine during a write leaves a torn line; its event was never
            // answered as recorded by a completed write.
            tracing::warn!(file = %path.display(), line = n + 1, "skipping an unreadable usage journal line");
        }
    }
    Ok(())
}

impl Journal {
    /// Opens the journal in `dir` (created if missing) and returns it with the events that were
    /// journaled but never acknowledged, oldest first, each with the segment that holds it.
    pub fn open(
        dir: &Path,
        limits: JournalLimits,
    ) -> Result<(Journal, Vec<(UsageEvent, u64)>), JournalError> {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(err(dir))? {
            let entry = entry.map_err(err(dir))?;
            if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
                let bytes = entry.metadata().map_err(err(&entry.path()))?.len();
                segments.insert(seq, bytes);
            }
        }
        let mut pending = Vec::new();
        let mut acked = HashSet::new();
        let mut events = Vec::new();
        for &seq in segments.keys() {
            let before = events.len();
            read_segment(&segment_path(dir, seq), &mut events, &mut acked)?;
            pending.extend(std::iter::repeat_n(seq, events.len() - before));
        }
        let unacked: Vec<(UsageEvent, u64)> = events
            .into_iter()
            .zip(pending)
            .filter(|(e, _)| !acked.contains(&e.id))
            .collect();
        let current_seq = segments.keys().next_back().map_or(0, |s| s + 1);
        let path = segment_path(dir, current_seq);
        let current = Arc::new(open_segment(&path)?);
        let mut journal = Journal {
            dir: dir.to_owned(),
            limits,
            current,
            current_seq,
            current_bytes: 0,
            sealed: segments,
            unsynced: Vec::new(),
        };
        // Segments with nothing left to send go now.
        let oldest = unacked.first().map(|(_, seq)| *seq);
        journal.remove_sealed_before(oldest.unwrap_or(current_seq));
        Ok((journal, unacked))
    }

    /// The segment new events go to.
    pub fn current_segment(&self) -> u64 {
        self.current_seq
    }

    /// Bytes on disk across all segments.
    pub fn bytes(&self) -> u64 {
        self.current_bytes + self.sealed.values().sum::<u64>()
    }

    /// Appends one event line (`line` is the event's JSON, without the newline).
    pub fn append(&mut self, line: &[u8]) -> Result<Appended, JournalError> {
        let len = line.len() as u64 + 3;
        if self.bytes() + len > self.limits.max_bytes {
            return Ok(Appended::Full);
        }
        if self.current_bytes > 0 && self.current_bytes + len > self.limits.segment_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 3);
        buf.extend_from_slice(b"E ");
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.write(&buf)?;
        if self.limits.sync_every_event {
            let path = segment_path(&self.dir, self.current_seq);
            self.current.sync_data().map_err(err(&path))?;
        }
        Ok(Appended::In(self.current_seq))
    }

    /// Records that the api stored `ids`, and removes what no longer holds a waiting event:
    /// `oldest_waiting` is the segment of the oldest event still buffered (`None`: nothing waits).
    pub fn ack(
        &mut self,
        ids: impl Iterator<Item = uuid::Uuid>,
        oldest_waiting: Option<u64>,
    ) -> Result<(), JournalError> {
        match oldest_waiting {
            None => {
                // Everything journaled was acknowledged: start the current segment afresh.
                self.remove_sealed_before(u64::MAX);
                let path = segment_path(&self.dir, self.current_seq);
                self.current.set_len(0).map_err(err(&path))?;
                self.current_bytes = 0;
            }
            Some(oldest) => {
                let mut line = String::from("A");
                for id in ids {
                    line.push(' ');
                    line.push_str(
                        id.hyphenated()
                            .encode_lower(&mut uuid::Uuid::encode_buffer()),
                    );
                }
                line.push('\n');
                self.write(line.as_bytes())?;
                self.remove_sealed_before(oldest);
            }
        }
        Ok(())
    }

    /// The files to sync now: the current segment and any closed since the last call.
    pub fn to_sync(&mut self) -> Vec<Arc<File>> {
        let mut files = std::mem::take(&mut self.unsynced);
        files.push(self.current.clone());
        files
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        let path = || segment_path(&self.dir, self.current_seq);
        // One write(2) per line on a file opened for appending: once it returns, the line survives
        // the process.
        (&*self.current).write_all(bytes).map_err(err(&path()))?;
        self.current_bytes += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let next = self.current_seq + 1;
        let file = Arc::new(open_segment(&segment_path(&self.dir, next))?);
        let old = std::mem::replace(&mut self.current, file);
        self.unsynced.push(old);
        self.sealed.insert(self.current_seq, self.current_bytes);
        self.current_seq = next;
        self.current_bytes = 0;
        Ok(())
    }

    fn remove_sealed_before(&mut self, seq: u64) {
        let keep = self.sealed.split_off(&seq);
        for old in std::mem::replace(&mut self.sealed, keep).into_keys() {
            let path = segment_path(&self.dir, old);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an acknowledged usage journal segment");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event of tenant acme with `n` input tokens and a fresh id.
    fn event(n: u64) -> UsageEvent {
        UsageEvent {
            id: uuid::Uuid::now_v7(),
            tenant: "acme".into(),
            model: "kimi-k2".into(),
            input_tokens: n,
            output_tokens: 2,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 5,
            status: 200,
            partial: false,
            api: contracts::usage::ApiName::Openai,
            started_at: "2026-11-25T12:00:00Z".parse().unwrap(),
        }
    }

    const LIMITS: JournalLimits = JournalLimits {
        max_bytes: 1 << 20,
        segment_bytes: 1_000,
        sync_every_event: false,
    };

    fn append(j: &mut Journal, e: &UsageEvent) -> u64 {
        match j.append(&serde_json::to_vec(e).unwrap()).unwrap() {
            Appended::In(seq) => seq,
            Appended::Full => panic!("journal full"),
        }
    }

    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unacknowledged_events_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, replayed) = Journal::open(dir.path(), LIMITS).unwrap();
        assert!(replayed.is_empty());
        let events: Vec<_> = (0..20).map(event).collect();
        let seqs: Vec<u64> = events.iter().map(|e| append(&mut j, e)).collect();
        assert!(seqs.last().unwrap() > &0, "small segments rotate: {seqs:?}");
        // The first five were acknowledged; the sixth is the oldest still waiting.
        j.ack(events[..5].iter().map(|e| e.id), Some(seqs[5]))
            .unwrap();
        drop(j);

        let (_j, replayed) = Journal::open(dir.path(), LIMITS).unwrap();
        let ids: Vec<_> = replayed.iter().map(|(e, _)| e.id).collect();
        let want: Vec<_> = events[5..].iter().map(|e| e.id).collect();
        assert_eq!(ids, want);
        assert_eq!(replayed[0].0, events[5]);
    }

    #[test]
    fn acknowledged_segments_are_removed_and_an_idle_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), LIMITS).unwrap();
        let events: Vec<_> = (0..20).map(event).collect();
        let seqs: Vec<u64> = events.iter().map(|e| append(&mut j, e)).collect();
        assert!(segments(dir.path()).len() > 2);
        j.ack(events[..19].iter().map(|e| e.id), Some(seqs[19]))
            .unwrap();
        assert_eq!(
            segments(dir.path()),
            vec![format!("usage-{:020}.log", seqs[19])]
        );
        j.ack(std::iter::once(events[19].id), None).unwrap();
        assert_eq!(j.bytes(), 0);
        drop(j);
        let (j, replayed) = Journal::open(dir.path(), LIMITS).unwrap();
        assert!(replayed.is_empty());
        assert_eq!(
            segments(dir.path()).len(),
            1,
            "only the new current segment"
        );
        assert_eq!(j.bytes(), 0);
    }

    #[test]
    fn the_size_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_bytes: 2_000,
            ..LIMITS
        };
        let (mut j, _) = Journal::open(dir.path(), limits).unwrap();
        let mut full = 0;
        for n in 0..100 {
            if j.append(&serde_json::to_vec(&event(n)).unwrap()).unwrap() == Appended::Full {
                full += 1;
            }
        }
        assert!(full > 80, "{full}");
        assert!(j.bytes() <= 2_000);
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2_000, "{on_disk}");
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), LIMITS).unwrap();
        let kept = event(1);
        append(&mut j, &kept);
        drop(j);
        let path = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"A not-a-uuid\nX \x00\x01\nE {\"id\":\"0193a1b2-0000-7000-8000")
            .unwrap();
        drop(f);
        let (_j, replayed) = Journal::open(dir.path(), LIMITS).unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].0, kept);
    }
}
