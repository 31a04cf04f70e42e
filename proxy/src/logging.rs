//! The log writer: JSON lines gathered in memory and written to stdout in batches by one background thread.
//!
//! A request's log line must cost the request only its formatting. Writing each line to stdout from the
//! request's thread would stall it behind a slow pipe; handing each line to a writer thread through a
//! channel wakes that thread once per line, which on a small machine costs more than the formatting. Here
//! a line is appended to a shared buffer under a short lock. The writer thread is woken only when the
//! buffer goes from empty to non-empty (at most once per interval) or passes its high-water mark; it then
//! lets lines gather for up to one interval and writes them with one call.
//!
//! Nothing is dropped: a writer that finds the buffer at its hard limit (stdout stuck) waits until the
//! writer thread has drained it. Dropping the [`FlushGuard`] writes what is left and stops the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long lines may gather before they are written.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);
/// A buffer this large is written at once, without waiting for the interval.
const HIGH_WATER: usize = 256 * 1024;
/// A buffer this large makes writers wait for the writer thread (back-pressure instead of loss).
const HARD_LIMIT: usize = 16 * 1024 * 1024;

struct State {
    buf: Vec<u8>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The writer thread waits here for lines (or the high-water mark, or stop).
    wake: Condvar,
    /// Writers blocked by the hard limit wait here for the buffer to drain.
    drained: Condvar,
    interval: Duration,
    high_water: usize,
    hard_limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `MakeWriter` handed to tracing-subscriber. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread and writes the remaining lines when dropped. Keep it alive for the process's life.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread for `out` (stdout in the binary).
    pub fn new<W: Write + Send + 'static>(out: W, interval: Duration) -> (Self, FlushGuard) {
        Self::with_limits(out, interval, HIGH_WATER, HARD_LIMIT)
    }

    fn with_limits<W: Write + Send + 'static>(
        mut out: W,
        interval: Duration,
        high_water: usize,
        hard_limit: usize,
    ) -> (Self, FlushGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                stop: false,
            }),
            wake: Condvar::new(),
            drained: Condvar::new(),
            interval,
            high_water,
            hard_limit,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || run(&shared, &mut out))
                .expect("spawning the log writer thread")
        };
        (
            Self {
                shared: shared.clone(),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        )
    }

    fn append(&self, line: &[u8]) {
        let s = &self.shared;
        let mut st = s.lock();
        while st.buf.len() >= s.hard_limit && !st.stop {
            st = s.drained.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let before = st.buf.len();
        st.buf.extend_from_slice(line);
        let after = st.buf.len();
        drop(st);
        if before == 0 || (before < s.high_water && after >= s.high_water) {
            s.wake.notify_one();
        }
    }
}

/// The writer thread: wait for lines, let them gather for one interval (or until the high-water mark),
/// write them in one call, repeat; on stop, write what is left.
fn run<W: Write>(s: &Shared, out: &mut W) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let mut st = s.lock();
        while st.buf.is_empty() && !st.stop {
            st = s.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if !st.stop && st.buf.len() < s.high_water {
            st = s
                .wake
                .wait_timeout_while(st, s.interval, |st| !st.stop && st.buf.len() < s.high_water)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let stop = st.stop;
        std::mem::swap(&mut st.buf, &mut batch);
        drop(st);
        s.drained.notify_all();
        // A failing stdout cannot be reported anywhere else; keep going so that writers never block on it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > s.high_water * 4 {
            batch.shrink_to(64 * 1024);
        }
        if stop && s.lock().buf.is_empty() {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        self.shared.drained.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One log line's writer: tracing-subscriber formats a whole line into it, then it is appended at once.
pub struct LineWriter {
    writer: BatchWriter,
    line: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.writer.append(&self.line);
            self.line.clear();
        }
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            writer: self.clone(),
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output that records every write call.
    #[derive(Clone, Default)]
    struct Sink {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        /// While set, writes block (a stuck stdout).
        stuck: Arc<Mutex<bool>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            while *self.stuck.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(2));
            }
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.writes.lock().unwrap().concat()).unwrap()
        }
        fn calls(&self) -> usize {
            self.writes.lock().unwrap().len()
        }
    }

    fn line(w: &BatchWriter, text: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        let mut l = w.make_writer();
        l.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_whole_in_order_and_batched() {
        let sink = Sink::default();
        let (w, guard) = BatchWriter::new(sink.clone(), Duration::from_millis(200));
        for i in 0..100 {
            line(&w, &format!("line {i}\n"));
        }
        drop(guard);
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), expected);
        // A hundred lines written within one interval take far fewer than a hundred writes.
        assert!(sink.calls() <= 3, "{} write calls", sink.calls());
    }

    #[test]
    fn lines_are_written_within_about_one_interval_without_a_flush() {
        let sink = Sink::default();
        let (w, _guard) = BatchWriter::new(sink.clone(), Duration::from_millis(20));
        line(&w, "first\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.text().is_empty() {
            assert!(Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "first\n");
    }

    #[test]
    fn concurrent_writers_never_interleave_inside_a_line() {
        let sink = Sink::default();
        let (w, guard) = BatchWriter::new(sink.clone(), Duration::from_millis(5));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        line(&w, &format!("{{\"thread\":{t},\"i\":{i}}}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 2000);
        for t in 0..4 {
            let seen: Vec<usize> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v["thread"] == t)
                .map(|v| v["i"].as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                seen,
                (0..500).collect::<Vec<_>>(),
                "thread {t} out of order"
            );
        }
    }

    #[test]
    fn a_stuck_output_blocks_writers_at_the_hard_limit_and_loses_nothing() {
        let sink = Sink::default();
        *sink.stuck.lock().unwrap() = true;
        let (w, guard) = BatchWriter::with_limits(sink.clone(), Duration::from_millis(1), 64, 256);
        let writer = {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    line(&w, &format!("{i:08}\n"));
                }
            })
        };
        // The writer thread holds one batch in a stuck write; the buffer fills to the hard limit and the
        // producer waits rather than growing it or dropping lines.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!writer.is_finished(), "the producer should be held back");
        assert!(w.shared.lock().buf.len() <= 256 + 9);
        *sink.stuck.lock().unwrap() = false;
        writer.join().unwrap();
        drop(guard);
        let expected: String = (0..200).map(|i| format!("{i:08}\n")).collect();
        assert_eq!(sink.text(), expected);
    }

    #[test]
    fn tracing_json_lines_go_through_whole() {
        let sink = Sink::default();
        let (w, guard) = BatchWriter::new(sink.clone(), Duration::from_millis(10));
        let subscriber = tracing_subscriber::fmt().json().with_writer(w).finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..10 {
                tracing::info!(i, "request done");
            }
        });
        drop(guard);
        let text = sink.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[9]["fields"]["i"], 9);
        assert_eq!(lines[0]["fields"]["message"], "request done");
    }
}
