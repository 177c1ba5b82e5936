//! Service output: read line by line from each service's pipes, prefixed with
//! the service's name, kept in a per-service ring of recent lines, and
//! written to cogno's stdout by one writer thread.
//!
//! The writer thread is the only thing that ever blocks on stdout, so a slow
//! or stopped reader of cogno's output cannot stall signal handling, reaping,
//! health checks or restarts. While the output queue is full, a service's
//! forwarder waits for room (the service's own writes then slow down, as they
//! would writing to that terminal directly); if the queue stays full for
//! [`BLOCKED_AFTER`], stdout is considered blocked: lines are dropped from
//! stdout (never from the in-memory ring, which `cogno logs` reads) and a
//! count of what was dropped is written once output flows again. The same
//! lines go to the service's log file when file logs are on (a writer
//! handed in, `logfiles`'s), which never makes a forwarder wait either.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

/// Lines kept in memory per service…
pub const RING_LINES: usize = 1000;
/// …within this many bytes (prefixes included): a service writing long lines
/// must not make PID 1 hold its output by the gigabyte. The newest chunk
/// read is always kept, so the bound is this plus one read (at most
/// [`MAX_LINE`]).
pub const RING_BYTES: usize = 1 << 20;
/// A line longer than this is cut when read back from the ring (for `cogno
/// logs` and error reports), with a note of how much was left out; stdout
/// gets every line whole.
const SHOWN_LINE: usize = 16 << 10;
/// Output queued for stdout before forwarders wait.
const QUEUE_BYTES: usize = 8 << 20;
/// How long a forwarder waits for room before treating stdout as blocked.
const BLOCKED_AFTER: Duration = Duration::from_secs(2);
/// At exit, how long the output may make no progress before cogno stops
/// waiting for it.
const FLUSH_STALL: Duration = Duration::from_millis(500);
/// A line longer than this is split (there is no newline to wait for forever).
const MAX_LINE: usize = 1 << 20;
const READ_CHUNK: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The stdout writer shared by all forwarders and by cogno's own messages.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake_writer: Condvar,
    drained: Condvar,
    room: Notify,
    style: Style,
    /// Only cogno's own lines: a detached cogno, whose stdout is a file
    /// that cannot be rotated under it, while the services' output has
    /// files of its own (`logfiles`).
    own_only: bool,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Bytes>,
    bytes: usize,
    writing: bool,
    /// Lines dropped while stdout was blocked, not yet reported.
    dropped: u64,
    /// Set when a forwarder gave up waiting for room; cleared only by the
    /// writer, once a write has gone through (output flows again) — never
    /// by a new line being queued, or every line would wait again.
    blocked: bool,
    /// The stack is stopping: forwarders never wait for room, so that a
    /// service's end of output (and so its stop) is never held up by stdout.
    stopping: bool,
}

/// How prefixes look: padded names, and colors on a terminal.
pub struct Style {
    width: usize,
    color: bool,
}

impl Style {
    pub fn new(names: &[&str], color: bool) -> Style {
        let width = names
            .iter()
            .map(|n| n.len())
            .chain([OWN_NAME.len()])
            .max()
            .unwrap_or(0);
        Style { width, color }
    }

    /// The prefix written before each line of `name`'s output (`idx` picks its color).
    pub fn prefix(&self, name: &str, idx: usize, stream: Stream) -> Vec<u8> {
        let mark = match stream {
            Stream::Stdout => '|',
            Stream::Stderr => '!',
        };
        if self.color {
            const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 96];
            let c = COLORS[idx % COLORS.len()];
            let m = if stream == Stream::Stderr {
                "\x1b[31m"
            } else {
                ""
            };
            format!(
                "\x1b[{c}m{name:<w$}\x1b[0m {m}{mark}\x1b[0m ",
                w = self.width
            )
            .into_bytes()
        } else {
            format!("{name:<w$} {mark} ", w = self.width).into_bytes()
        }
    }
}

const OWN_NAME: &str = "cogno";

impl Sink {
    /// Starts the writer thread on `out` (cogno's stdout in production).
    pub fn start(style: Style, out: impl Write + Send + 'static) -> Sink {
        Sink::start_with(style, out, false)
    }

    /// [`Sink::start`]; with `own_only`, service output is not written to `out`.
    pub fn start_with(style: Style, mut out: impl Write + Send + 'static, own_only: bool) -> Sink {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake_writer: Condvar::new(),
            drained: Condvar::new(),
            room: Notify::new(),
            style,
            own_only,
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("cogno-stdout".into())
            .stack_size(64 << 10)
            .spawn(move || loop {
                let batch: Vec<Bytes> = {
                    let mut q = s.queue.lock().expect("sink lock");
                    while q.batches.is_empty() {
                        q.writing = false;
                        s.drained.notify_all();
                        q = s.wake_writer.wait(q).expect("sink lock");
                    }
                    q.writing = true;
                    q.batches.drain(..).collect()
                };
                let mut written = 0;
                for b in &batch {
                    // A closed stdout (EPIPE) must not kill supervision: the output is dropped.
                    let _ = out.write_all(b);
                    written += b.len();
                }
                let _ = out.flush();
                let mut q = s.queue.lock().expect("sink lock");
                q.bytes -= written;
                if std::mem::take(&mut q.blocked) && q.dropped > 0 {
                    let note = format!(
                        "{:<w$} | stdout was blocked: {} lines were not written here (`cogno logs` has the recent ones)\n",
                        OWN_NAME,
                        std::mem::take(&mut q.dropped),
                        w = s.style.width
                    );
                    q.bytes += note.len();
                    q.batches.push_back(note.into());
                }
                drop(q);
                s.room.notify_waiters();
                // Progress, for `flush`.
                s.drained.notify_all();
            })
            .expect("spawn the stdout writer thread");
        Sink { shared }
    }

    pub fn style(&self) -> &Style {
        &self.shared.style
    }

    fn push(&self, q: &mut Queue, bytes: Bytes) {
        q.bytes += bytes.len();
        q.batches.push_back(bytes);
        self.shared.wake_writer.notify_one();
    }

    /// Queues a batch of service output holding `lines` lines; waits while the
    /// queue is full, and drops the batch if stdout looks blocked.
    pub async fn write(&self, bytes: Bytes, lines: usize) {
        if self.shared.own_only {
            return;
        }
        let deadline = tokio::time::Instant::now() + BLOCKED_AFTER;
        loop {
            let room = self.shared.room.notified();
            {
                let mut q = self.shared.queue.lock().expect("sink lock");
                if q.bytes + bytes.len() <= QUEUE_BYTES || q.bytes == 0 {
                    self.push(&mut q, bytes);
                    return;
                }
                if q.blocked || q.stopping || tokio::time::Instant::now() >= deadline {
                    q.blocked = true;
                    q.dropped += lines as u64;
                    return;
                }
            }
            let _ = tokio::time::timeout_at(deadline, room).await;
        }
    }

    /// Queues one of cogno's own lines. Never waits: a blocked stdout must not
    /// hold up the supervisor that logs.
    pub fn write_own(&self, line: &[u8]) {
        let mut q = self.shared.queue.lock().expect("sink lock");
        if q.bytes > 2 * QUEUE_BYTES {
            q.dropped += 1;
            q.blocked = true;
            return;
        }
        let mut out = Vec::with_capacity(line.len() + 16);
        out.extend_from_slice(
            &self
                .shared
                .style
                .prefix(OWN_NAME, usize::MAX, Stream::Stdout),
        );
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
        self.push(&mut q, out.into());
    }

    /// From now on, forwarders never wait for room: what does not fit is
    /// dropped from stdout (the rings keep it). Called when the stack starts
    /// stopping, so that a stalled reader of cogno's stdout cannot delay
    /// a stop past its budget.
    pub fn stop_waiting(&self) {
        self.shared.queue.lock().expect("sink lock").stopping = true;
        self.shared.room.notify_waiters();
    }

    /// Waits until everything queued is written, as long as the writer makes
    /// progress and at most `limit`: a stalled stdout gets [`FLUSH_STALL`],
    /// not the whole limit, so it cannot keep cogno from exiting in time.
    pub fn flush(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let mut q = self.shared.queue.lock().expect("sink lock");
        loop {
            if q.batches.is_empty() && !q.writing {
                return;
            }
            let before = q.bytes;
            let wait =
                FLUSH_STALL.min(deadline.saturating_duration_since(std::time::Instant::now()));
            q = self
                .shared
                .drained
                .wait_timeout(q, wait)
                .expect("sink lock")
                .0;
            if (q.bytes == before && q.writing) || std::time::Instant::now() >= deadline {
                return;
            }
        }
    }
}

/// A `tracing` writer that routes cogno's own messages through the sink.
#[derive(Clone)]
pub struct OwnWriter(pub Sink);

pub struct OwnLine(Sink, Vec<u8>);

impl Write for OwnLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for OwnLine {
    fn drop(&mut self) {
        if !self.1.is_empty() {
            self.0.write_own(&self.1);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OwnWriter {
    type Writer = OwnLine;
    fn make_writer(&'a self) -> OwnLine {
        OwnLine(self.0.clone(), Vec::with_capacity(128))
    }
}

/// A run of complete lines read at one moment from one stream, each with
/// its prefix: the very buffer that was queued for stdout, shared.
struct Chunk {
    at: SystemTime,
    stream: Stream,
    data: Bytes,
    prefix_len: usize,
    lines: usize,
}

/// The most recent [`RING_LINES`] lines of one service, kept as the chunks
/// they were read in (no copy and no allocation per line on the hot path).
#[derive(Default)]
pub struct Ring {
    chunks: VecDeque<Chunk>,
    lines: usize,
    bytes: usize,
    /// Lines ever pushed: a follower's position.
    seq: u64,
}

/// One line from a ring, for error reports and `cogno logs`.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: SystemTime,
    pub stream: Stream,
    pub text: String,
}

impl Ring {
    fn push(&mut self, chunk: Chunk) {
        self.lines += chunk.lines;
        self.bytes += chunk.data.len();
        self.seq += chunk.lines as u64;
        self.chunks.push_back(chunk);
        while let Some(front) = self.chunks.front() {
            let enough_lines = self.lines - front.lines >= RING_LINES;
            let too_big = self.bytes > RING_BYTES && self.chunks.len() > 1;
            if !(enough_lines || too_big) {
                break;
            }
            self.lines -= front.lines;
            self.bytes -= front.data.len();
            self.chunks.pop_front();
        }
    }

    /// Adds one line that was not read from a pipe (cogno's own events).
    pub fn push_line(&mut self, stream: Stream, text: &str) {
        self.push(Chunk {
            at: SystemTime::now(),
            stream,
            data: format!("{text}\n").into(),
            prefix_len: 0,
            lines: 1,
        });
    }

    /// The position after the newest line.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Lines pushed after position `seq` (as many as are still kept), oldest first.
    pub fn since(&self, seq: u64) -> Vec<Line> {
        let newer = self.seq.saturating_sub(seq).min(self.lines as u64) as usize;
        self.tail(newer)
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<Line> {
        let mut out = Vec::new();
        for chunk in self.chunks.iter().rev() {
            for text in chunk
                .data
                .strip_suffix(b"\n")
                .unwrap_or(&chunk.data)
                .rsplit(|b| *b == b'\n')
            {
                if out.len() == n {
                    break;
                }
                let text = &text[chunk.prefix_len.min(text.len())..];
                let mut shown =
                    String::from_utf8_lossy(&text[..text.len().min(SHOWN_LINE)]).into_owned();
                if text.len() > SHOWN_LINE {
                    shown.push_str(&format!(" [… {} more bytes]", text.len() - SHOWN_LINE));
                }
                out.push(Line {
                    at: chunk.at,
                    stream: chunk.stream,
                    text: shown,
                });
            }
        }
        out.reverse();
        out
    }
}

pub type SharedRing = Arc<Mutex<Ring>>;

/// Read access to every service's recent output, for `cogno logs`.
#[derive(Clone)]
pub struct LogView {
    pub services: Vec<(String, SharedRing)>,
    /// The stack's events: streamed by `/events`, and the `cogno` stream of `/logs`.
    pub events: crate::events::Events,
    pub changes: tokio::sync::watch::Receiver<u64>,
}

/// Bumped whenever any ring gets lines, so `cogno logs -f` wakes on new
/// output instead of polling.
pub type Changes = tokio::sync::watch::Sender<u64>;

/// Where a service's output goes: its ring (and the change signal of
/// `cogno logs -f`), stdout, and its log file when file logs are on.
pub struct To {
    pub ring: SharedRing,
    pub sink: Sink,
    pub changes: Changes,
    /// Hands complete lines (without prefixes) to the service's log file
    /// writer; never waits.
    pub files: Option<ToFile>,
}

/// See [`To::files`].
pub type ToFile = Box<dyn Fn(Stream, Bytes) + Send>;

/// Forwards one pipe of a service until end of file.
pub async fn forward(
    mut pipe: tokio::net::unix::pipe::Receiver,
    prefix: Vec<u8>,
    stream: Stream,
    to: To,
) {
    let To {
        ring,
        sink,
        changes,
        files,
    } = to;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let eof = match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        };
        if eof && !buf.is_empty() && !buf.ends_with(b"\n") {
            // The last line had no newline: it is still a line.
            buf.push(b'\n');
        }
        let complete = match memchr::memrchr(b'\n', &buf) {
            Some(i) => i + 1,
            None if buf.len() >= MAX_LINE => {
                buf.push(b'\n');
                buf.len()
            }
            None => 0,
        };
        if complete > 0 {
            let mut out = Vec::with_capacity(complete + complete / 16 * prefix.len());
            let mut lines = 0;
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &buf[..complete]) {
                out.extend_from_slice(&prefix);
                out.extend_from_slice(&buf[start..=end]);
                start = end + 1;
                lines += 1;
            }
            if let Some(to_file) = &files {
                // Never waits: a slow disk loses file lines, not supervision.
                to_file(stream, Bytes::copy_from_slice(&buf[..complete]));
            }
            buf.drain(..complete);
            let out = Bytes::from(out);
            ring.lock().expect("ring lock").push(Chunk {
                at: SystemTime::now(),
                stream,
                data: out.clone(),
                prefix_len: prefix.len(),
                lines,
            });
            changes.send_modify(|n| *n += 1);
            sink.write(out, lines).await;
        }
        if eof {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> Chunk {
        let prefix = "svc | ";
        let data: String = text.lines().map(|l| format!("{prefix}{l}\n")).collect();
        Chunk {
            at: SystemTime::now(),
            stream: Stream::Stdout,
            data: data.into(),
            prefix_len: prefix.len(),
            lines: text.matches('\n').count(),
        }
    }

    #[test]
    fn ring_keeps_the_last_lines_in_order() {
        let mut ring = Ring::default();
        for i in 0..600 {
            ring.push(chunk(&format!("a{i}\nb{i}\n")));
        }
        let tail = ring.tail(3);
        let texts: Vec<&str> = tail.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["b598", "a599", "b599"]);
        assert!(ring.lines >= RING_LINES && ring.lines < RING_LINES + 2);
        assert_eq!(ring.tail(5000).len(), ring.lines);
    }

    #[test]
    fn ring_is_bounded_by_bytes_and_long_lines_are_shown_cut() {
        let mut ring = Ring::default();
        let long = "y".repeat(300 << 10);
        for i in 0..20 {
            ring.push(chunk(&format!("{i} {long}\n")));
        }
        assert!(
            ring.bytes <= RING_BYTES + (301 << 10),
            "{} bytes kept",
            ring.bytes
        );
        assert!(ring.lines >= 3, "the newest lines are kept: {}", ring.lines);
        let last = ring.tail(1).pop().unwrap();
        assert!(last.text.starts_with("19 yyy"), "{}", &last.text[..10]);
        let note = format!(" [… {} more bytes]", "19 ".len() + long.len() - SHOWN_LINE);
        assert_eq!(last.text.len(), SHOWN_LINE + note.len());
        assert!(last.text.ends_with(&note), "{}", &last.text[SHOWN_LINE..]);
    }
}
