//! File logs: each service's output in DATA/logs/<service>.log, rotated by
//! size ([`MAX_BYTES`] × [`KEEP`] files a service), and a detached cogno's own
//! output in DATA/logs/cogno.log; and reading them back for `cogno logs` and
//! for the reason a detached start failed — also after cogno restarted.
//!
//! Writing never stalls supervision (the rule of `logs`): forwarders hand
//! lines to one writer thread through a bounded queue and never wait; what
//! does not fit while the disk is slow is dropped from the files (never from
//! the in-memory rings) and the count written once there is room again.
//!
//! DATA/logs is root's (cogno's user's) and 0700, opened without following a
//! symbolic link and checked to be cogno's own; every file in it is opened
//! relative to that descriptor, with O_NOFOLLOW, created 0600.

use crate::datadir::DataDir;
use crate::logs::{Line, Stream};
use bytes::Bytes;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

/// A service's log file is rotated once it is this large…
pub const MAX_BYTES: u64 = 10 << 20;
/// …keeping this many files: `NAME.log` and `NAME.log.1` … `NAME.log.{KEEP-1}`.
pub const KEEP: usize = 3;
/// Batches queued for the writer before lines are dropped from the files.
const QUEUE: usize = 1024;
/// cogno's own log file (a detached cogno's stdout and stderr).
pub const OWN_FILE: &str = "cogno.log";

/// The file of `name`'s current output.
fn file_name(name: &str) -> String {
    format!("{name}.log")
}

/// DATA/logs, created if missing (0700), opened without following a link
/// and refused unless it is a directory of cogno's user that nobody else
/// may write: root never writes through a path it does not own.
pub fn open_dir(data: &DataDir) -> io::Result<OwnedFd> {
    use std::os::unix::fs::DirBuilderExt;
    let path = data.logs();
    match std::fs::DirBuilder::new().mode(0o700).create(&path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "cannot open {}: {}",
            path.display(),
            if e == nix::errno::Errno::ELOOP || e == nix::errno::Errno::ENOTDIR {
                "it is not a directory (a symbolic link?), and cogno does not follow one here"
                    .to_owned()
            } else {
                e.to_string()
            }
        ))
    })?;
    // SAFETY: `open` just returned this descriptor, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    if st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} belongs to another user or others may write it: cogno writes its logs only \
             into a directory of its own",
            path.display()
        )));
    }
    Ok(fd)
}

/// Opens `name` in `dir` for appending (created 0600), never through a link.
fn open_append(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    // SAFETY: `openat` just returned this descriptor, owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!("{name} is not a regular file")));
    }
    Ok(file)
}

/// Shifts `name`'s files one place (`.log` → `.log.1` …), dropping the oldest.
fn rotate(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let current = file_name(name);
    let numbered = |n: usize| format!("{current}.{n}");
    for n in (1..KEEP).rev() {
        let from = if n == 1 {
            current.clone()
        } else {
            numbered(n - 1)
        };
        match nix::fcntl::renameat(
            Some(dir.as_raw_fd()),
            from.as_str(),
            Some(dir.as_raw_fd()),
            numbered(n).as_str(),
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// cogno's own log file, for a detached cogno's stdout and stderr: rotated
/// first when it has grown past [`MAX_BYTES`] (it cannot be rotated under
/// a running cogno, whose descriptors hold it).
pub fn open_own(data: &DataDir) -> io::Result<File> {
    let dir = open_dir(data)?;
    let name = own_name();
    let big = nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        OWN_FILE,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_size as u64 >= MAX_BYTES);
    if big {
        rotate(&dir, name)?;
    }
    let file = open_append(&dir, OWN_FILE)?;
    // Blocking writes from here on: cogno's stdout writer thread owns them.
    nix::fcntl::fcntl(
        file.as_fd().as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND),
    )?;
    Ok(file)
}

/// One batch of complete lines of one service, as read from its pipe.
struct Batch {
    svc: usize,
    at: SystemTime,
    stream: Stream,
    bytes: Bytes,
}

/// The sending side, cloned into every forwarder.
#[derive(Clone)]
pub struct FileLogs {
    tx: SyncSender<Batch>,
}

impl FileLogs {
    /// Opens DATA/logs and starts the writer thread for `names` (the stack's
    /// services, by index).
    pub fn start(data: &DataDir, names: Vec<String>) -> io::Result<FileLogs> {
        let dir = open_dir(data)?;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("cogno-logfiles".into())
            .stack_size(64 << 10)
            .spawn(move || write_files(&dir, &names, &rx))?;
        Ok(FileLogs { tx })
    }

    /// Queues `bytes` (complete lines of service `svc`, without prefixes).
    /// Never waits: dropped when the writer is behind.
    pub fn write(&self, svc: usize, stream: Stream, bytes: Bytes) {
        let batch = Batch {
            svc,
            at: SystemTime::now(),
            stream,
            bytes,
        };
        match self.tx.try_send(batch) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(b)) => DROPPED.with_batch(&b),
        }
    }
}

/// Lines the files missed while the writer was behind, per service, until noted.
static DROPPED: Dropped = Dropped(std::sync::Mutex::new(Vec::new()));

struct Dropped(std::sync::Mutex<Vec<(usize, u64)>>);

impl Dropped {
    fn with_batch(&self, b: &Batch) {
        let lines = memchr::memchr_iter(b'\n', &b.bytes).count() as u64;
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match d.iter_mut().find(|(svc, _)| *svc == b.svc) {
            Some((_, n)) => *n += lines,
            None => d.push((b.svc, lines)),
        }
    }

    fn take(&self, svc: usize) -> u64 {
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match d.iter().position(|(s, _)| *s == svc) {
            Some(i) => d.swap_remove(i).1,
            None => 0,
        }
    }
}

/// The writer thread: one open file per service, opened on its first line.
fn write_files(dir: &OwnedFd, names: &[String], rx: &Receiver<Batch>) {
    let mut files: Vec<Option<(File, u64)>> = names.iter().map(|_| None).collect();
    let mut failed = vec![false; names.len()];
    while let Ok(batch) = rx.recv() {
        let Some(name) = names.get(batch.svc) else {
            continue;
        };
        let mut text = Vec::with_capacity(batch.bytes.len() + 64);
        let dropped = DROPPED.take(batch.svc);
        let stamp = crate::fmt::rfc3339(batch.at);
        if dropped > 0 {
            text.extend_from_slice(
                format!("{stamp} err [cogno: {dropped} lines were not written here while the disk was slow]\n")
                    .as_bytes(),
            );
        }
        let mark = match batch.stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        for line in batch
            .bytes
            .strip_suffix(b"\n")
            .unwrap_or(&batch.bytes)
            .split(|b| *b == b'\n')
        {
            text.extend_from_slice(format!("{stamp} {mark} ").as_bytes());
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let slot = &mut files[batch.svc];
        if slot.is_none() {
            match open_append(dir, &file_name(name)).and_then(|f| {
                let size = f.metadata()?.len();
                Ok((f, size))
            }) {
                Ok(f) => *slot = Some(f),
                Err(e) => {
                    // Said once; the service's output still reaches the ring and stdout.
                    if !std::mem::replace(&mut failed[batch.svc], true) {
                        tracing::warn!("{name}: cannot write its log file: {e}");
                    }
                    continue;
                }
            }
        }
        let Some((file, size)) = slot else { continue };
        if file.write_all(&text).is_ok() {
            *size += text.len() as u64;
        }
        if *size >= MAX_BYTES {
            *slot = None;
            if let Err(e) = rotate(dir, name) {
                tracing::warn!("{name}: cannot rotate its log file: {e}");
            }
        }
    }
}

/// The files holding `service`'s output, oldest first.
fn files_of(data: &DataDir, service: &str) -> Vec<std::path::PathBuf> {
    let current = data.logs().join(file_name(service));
    let mut paths: Vec<_> = (1..KEEP)
        .rev()
        .map(|n| data.logs().join(format!("{}.{n}", file_name(service))))
        .collect();
    paths.push(current);
    paths
}

/// Whether DATA/logs holds a log file of `service` (cogno's own stream,
/// `cogno`, has none: cogno.log is its stdout, in another format).
pub fn has(data: &DataDir, service: &str) -> bool {
    service != own_name() && files_of(data, service).iter().any(|p| p.is_file())
}

/// `cogno`: the stream name of cogno's own lines.
fn own_name() -> &'static str {
    OWN_FILE.trim_end_matches(".log")
}

/// Whether DATA/logs holds cogno's own log (a detached cogno ran here).
pub fn has_own(data: &DataDir) -> bool {
    data.logs().join(OWN_FILE).is_file()
}

/// The last `n` lines of cogno's own log file.
pub fn own_tail(data: &DataDir, n: usize) -> Vec<String> {
    let path = data.logs().join(OWN_FILE);
    let Ok(Some(bytes)) = crate::datadir::files::read_small_bytes(&path, 2 * MAX_BYTES) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// The services with a log file in DATA/logs, sorted.
pub fn services(data: &DataDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.logs())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let service = name.strip_suffix(".log")?.to_owned();
            (service != own_name()).then_some(service)
        })
        .collect();
    names.sort();
    names
}

/// The last `n` lines of `service`'s log files, oldest first (an empty list
/// when there are none, or they cannot be read).
pub fn tail(data: &DataDir, service: &str, n: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    for path in files_of(data, service).iter().rev() {
        if lines.len() >= n {
            break;
        }
        // Read without following a link, and no more than a rotated file holds.
        let Ok(Some(bytes)) = crate::datadir::files::read_small_bytes(path, MAX_BYTES + (2 << 20))
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let older: Vec<Line> = text
            .lines()
            .rev()
            .take(n - lines.len())
            .filter_map(parse)
            .collect();
        lines.extend(older);
    }
    lines.reverse();
    lines
}

/// One line of a log file: `TIME out|err TEXT`.
fn parse(line: &str) -> Option<Line> {
    let (t, rest) = line.split_once(' ')?;
    let (mark, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Line {
        at: crate::fmt::parse_rfc3339(t)?,
        stream: if mark == "err" {
            Stream::Stderr
        } else {
            Stream::Stdout
        },
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TempDir;

    fn write(dir: &OwnedFd, lines: std::ops::Range<usize>, stream: Stream) {
        let (tx, rx) = sync_channel(16);
        let big = "x".repeat(1 << 20);
        for i in lines {
            let bytes = format!("line {i}\n{big}\n").into();
            let at = SystemTime::now();
            tx.send(Batch {
                svc: 0,
                at,
                stream,
                bytes,
            })
            .unwrap();
        }
        drop(tx);
        write_files(dir, &["web".into()], &rx);
    }

    #[test]
    fn lines_are_written_rotated_and_read_back_in_order() {
        let tmp = TempDir::new("logfiles");
        let data = DataDir::new(tmp.path());
        let dir = open_dir(&data).unwrap();
        // 8 batches of 1 MiB: not rotated yet.
        write(&dir, 0..8, Stream::Stdout);
        let last = tail(&data, "web", 2);
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].text, "line 7");
        assert!(!data.logs().join("web.log.1").exists());
        write(&dir, 8..12, Stream::Stderr);
        assert!(
            data.logs().join("web.log.1").exists(),
            "rotated past 10 MiB"
        );
        let all = tail(&data, "web", 100);
        let numbered: Vec<&str> = all
            .iter()
            .map(|l| l.text.as_str())
            .filter(|t| t.starts_with("line"))
            .collect();
        let expected: Vec<String> = (0..12).map(|i| format!("line {i}")).collect();
        assert_eq!(numbered, expected);
        assert_eq!(all.last().unwrap().stream, Stream::Stderr);
        assert_eq!(services(&data), ["web"]);
    }

    #[test]
    fn a_linked_logs_directory_is_refused() {
        let tmp = TempDir::new("logfiles-link");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::create_dir(tmp.path().join("data")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("data/logs")).unwrap();
        let err = open_dir(&DataDir::new(tmp.path().join("data"))).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
