//! `cogno run --ephemeral`: a throwaway copy of the stack for one command.
//!
//! Every bundled server gets a free port (and Temporal's Web UI another), the
//! TCP health listener is left out, and the data directory is a fresh
//! temporary one, so that any number of copies of one stack run side by
//! side. The stack is a child `cogno up` in its own process group, told its
//! ports with the hidden `--throwaway` argument (and, when services are
//! named, to start only those and their dependencies), its output in a file
//! beside its data; `cogno run` waits for its readiness through the control
//! socket (the socket's creation seen by inotify, then `/events`, checking
//! `/status` after each) until an overall deadline (`--wait-timeout`), and
//! when the command has ended sends it SIGTERM — the stack stops in order
//! —, waits for it and removes the directory.
//!
//! That child dies with `cogno run` (`PR_SET_PDEATHSIG`, SIGTERM: it still
//! stops its servers in order). What a SIGKILLed `cogno run` leaves is the
//! temporary directory, `$TMPDIR/cogno-run-*`.

use super::run::{wait_unreaped, Relay, Target};
use super::{wait, StackArgs};
use crate::config::{Probe, Stack};
use crate::control::client::{self, Failure};
use crate::control::{Phase, ServiceState, StackStatus};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::os::process::Watched;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How many lines of the stack's output a failed start shows.
const TAIL: usize = 20;

/// How long `cogno run --ephemeral` waits for its stack to be ready by
/// default: the built-in stack's first start (initdb, Temporal's schema)
/// takes seconds, a busy CI machine several times that.
pub(super) const DEFAULT_WAIT: &str = "120s";

/// What a throwaway stack is to be: which services it starts (none named:
/// all), and how long it may take to be ready.
pub(super) struct Wanted<'a> {
    pub services: &'a [String],
    pub timeout: Duration,
}

/// A running throwaway stack; dropping it stops the stack and removes its directory.
pub(super) struct Throwaway<'r> {
    dir: PathBuf,
    data: DataDir,
    cogno: Option<Child>,
    relay: &'r Relay,
}

impl<'r> Throwaway<'r> {
    /// Starts a throwaway copy of `stack` (whose ports it moves), or of the
    /// services `wanted` names and their dependencies, and waits until it is
    /// ready — at most `wanted.timeout`.
    pub(super) fn start(
        target: &StackArgs,
        stack: &mut Stack,
        wanted: &Wanted,
        relay: &'r Relay,
    ) -> Result<Throwaway<'r>, Error> {
        let started = Instant::now();
        let deadline = Deadline {
            at: started + wanted.timeout,
            total: wanted.timeout,
        };
        let moves = Moves::pick(stack)?;
        moves.apply(stack);
        let dir = temp_dir()?;
        let mut t = Throwaway {
            data: DataDir::new(dir.join("data")),
            dir,
            cogno: None,
            relay,
        };
        t.data.create()?;
        // Watched before `cogno up` starts: the socket's creation cannot be missed.
        let cannot_watch = |e: nix::Error| {
            Error::new(format!(
                "cannot watch {} for the throwaway stack's control socket: {e}",
                t.data.run_dir().display()
            ))
        };
        let inotify =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(cannot_watch)?;
        inotify
            .add_watch(
                &t.data.run_dir(),
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
            )
            .map_err(cannot_watch)?;
        let cogno = t.spawn(target, &moves, wanted.services)?;
        let pid = Pid::from_raw(cogno.id() as i32);
        t.cogno = Some(cogno);
        relay.aim(Some(Target::Stack(pid)));
        let watched = Watched::of(pid)
            .map_err(|e| Error::new(format!("cannot watch the throwaway stack's cogno: {e}")))?;
        t.wait_socket(&inotify, &watched, &deadline)?;
        t.wait_ready(&deadline)?;
        let ports = if moves.0.is_empty() {
            String::new()
        } else {
            format!("ports {moves}; ")
        };
        eprintln!(
            "cogno run: throwaway stack ready in {} ({ports}data in {}, removed afterwards)",
            crate::fmt::fmt_duration(started.elapsed()),
            t.data.root().display()
        );
        Ok(t)
    }

    pub(super) fn data(&self) -> &DataDir {
        &self.data
    }

    /// Stops the stack in order, waits until its cogno has exited, removes its directory.
    pub(super) fn stop(self) {
        drop(self);
    }

    fn log(&self) -> PathBuf {
        self.dir.join("cogno.log")
    }

    /// `cogno up [SERVICE…]` on the temporary data directory with the moved ports.
    fn spawn(
        &self,
        target: &StackArgs,
        moves: &Moves,
        services: &[String],
    ) -> Result<Child, Error> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::new(format!("cannot find cogno's own program: {e}")))?;
        let log = std::fs::File::create(self.log())
            .map_err(|e| Error::new(format!("cannot create {}: {e}", self.log().display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::new(format!("cannot share {}: {e}", self.log().display())))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("up").arg("--data").arg(self.data.root());
        if let Some(file) = &target.config.config {
            cmd.arg("--config").arg(file);
        }
        for file in &target.config.env_file {
            cmd.arg("--env-file").arg(file);
        }
        cmd.arg(format!("--throwaway={moves}"))
            // Names were checked against the stack file already; after `--`
            // none can be taken for an option.
            .arg("--")
            .args(services)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Out of the terminal's reach: a Ctrl-C goes to the command; the
            // stack is stopped by `cogno run`, in order, once the command is done.
            .process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: prctl and getppid are async-signal-safe and touch nothing of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // `cogno run` died before the line above: nobody would stop this stack.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("cogno run has exited"));
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(|e| Error::new(format!("cannot start the throwaway stack's cogno: {e}")))
    }

    /// Until `cogno up` has bound its control socket, or has exited, or the deadline.
    fn wait_socket(
        &self,
        inotify: &Inotify,
        cogno: &Watched,
        deadline: &Deadline,
    ) -> Result<(), Error> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let socket = self.data.socket();
        loop {
            if socket.exists() {
                return Ok(());
            }
            let Some(left) = deadline.left() else {
                // Still preparing (a first initdb, a download): no service
                // has started, so its own output is all there is to show.
                return Err(self.failed(&format!(
                    "its cogno was still preparing the stack after {} (--wait-timeout)",
                    crate::fmt::fmt_duration(deadline.total)
                )));
            };
            let mut fds = [
                PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(cogno.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::new(format!(
                        "cannot wait for the throwaway stack: {e}"
                    )))
                }
            }
            if fds[1].any().unwrap_or(false) {
                return Err(self.failed("its cogno exited before opening its control socket"));
            }
            // Drained only: what matters is whether the socket exists now.
            let _ = inotify.read_events();
        }
    }

    /// Until the stack is ready: its status after every event it reports,
    /// and at the deadline what is not ready and why.
    fn wait_ready(&self, deadline: &Deadline) -> Result<(), Error> {
        let socket = self.data.socket();
        let events = events(&socket).map_err(|f| self.failed(&Error::from(f).message))?;
        let mut events = BufReader::new(events);
        let mut line = Vec::new();
        loop {
            match client::get_status(&socket) {
                Ok(status) => match verdict(&status) {
                    Verdict::Ready => return Ok(()),
                    Verdict::Starting => {}
                    Verdict::Failed(why) => return Err(self.failed(&why)),
                },
                Err(f) => return Err(self.failed(&Error::from(f).message)),
            }
            let Some(left) = deadline.left() else {
                return Err(self.timed_out(deadline));
            };
            line.clear();
            let read = events
                .get_ref()
                .stream()
                .set_read_timeout(Some(left))
                .and_then(|()| events.read_until(b'\n', &mut line));
            match read {
                Ok(0) => return Err(self.failed("its cogno stopped before the stack was ready")),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.timed_out(deadline))
                }
                Err(_) => return Err(self.failed("its cogno stopped before the stack was ready")),
            }
            // The stack's own `ready` event settles it: the status read after
            // the last transition's event may not show that transition yet,
            // and no event would follow to look again.
            let kind = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|e| e.get("kind").and_then(|k| k.as_str()).map(str::to_owned));
            if kind.as_deref() == Some("ready") {
                return Ok(());
            }
        }
    }

    /// The error for a stack not ready by the deadline: as `cogno up
    /// --wait-timeout` says it — each service not ready, why, and its last
    /// lines —, read now from the stack, which goes next.
    fn timed_out(&self, deadline: &Deadline) -> Error {
        let e = wait::not_ready(&self.data, deadline.total);
        Error::new(format!("the throwaway stack is {}", e.message)).help(format!(
            "the command was not run; the stack is stopped and {} removed. If it only needs \
             longer, raise --wait-timeout (it is {})",
            self.dir.display(),
            crate::fmt::fmt_duration(deadline.total)
        ))
    }

    /// The error for a stack that did not become ready, with its last output
    /// (read now: the directory goes with the stack).
    fn failed(&self, why: &str) -> Error {
        let output = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = output.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
        Error::new(format!("the throwaway stack did not become ready: {why}")).help(format!(
            "its last lines of output:\n{tail}\n(the command was not run; the stack is stopped and {} removed)",
            self.dir.display()
        ))
    }
}

impl Drop for Throwaway<'_> {
    fn drop(&mut self) {
        if let Some(mut cogno) = self.cogno.take() {
            let pid = Pid::from_raw(cogno.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            wait_unreaped(pid);
            self.relay.aim(None);
            let _ = cogno.wait();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "cogno run: cannot remove the throwaway stack's directory {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// When the wait for a throwaway stack gives up.
struct Deadline {
    at: Instant,
    /// The whole wait allowed, for messages.
    total: Duration,
}

impl Deadline {
    /// The time left, None once it has passed.
    fn left(&self) -> Option<Duration> {
        Some(self.at.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
    }
}

/// A fresh directory under $TMPDIR, 0711 like a data directory's parent:
/// the bundled servers' users (when cogno runs as root) pass through it.
fn temp_dir() -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let mut last = None;
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "cogno-run-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {
                // The umask may have taken bits away.
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711));
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    Err(Error::new(format!(
        "cannot create a temporary directory in {}: {}",
        base.display(),
        last.map_or_else(|| "no free name".to_owned(), |e| e.to_string())
    ))
    .help("set TMPDIR to a writable directory"))
}

/// The `/events` stream, once `cogno up` listens: the socket file appears
/// between its bind and its listen, when a connection is still refused.
fn events(socket: &Path) -> Result<client::Body, Failure> {
    let mut tries = 0;
    loop {
        match client::request(socket, "GET", "/events", None) {
            Ok(reply) if reply.status == 200 => return Ok(reply.body),
            Ok(reply) => return Err(Failure::Other(reply.refusal().message)),
            Err(Failure::NotRunning(..)) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(f) => return Err(f),
        }
    }
}

enum Verdict {
    Ready,
    Starting,
    Failed(String),
}

/// Ready, still on its way, or not going to be ready: stopping, or a
/// service that has failed or ended for good. A degraded stack is waited
/// for: on a busy machine a server may miss a probe and recover.
fn verdict(status: &StackStatus) -> Verdict {
    let ended = status.services.iter().any(|s| {
        matches!(
            s.state,
            ServiceState::Failed | ServiceState::Fatal | ServiceState::Exited
        )
    });
    match status.phase {
        Phase::Ready => Verdict::Ready,
        Phase::Stopping => Verdict::Failed("it is stopping".to_owned()),
        _ if ended => Verdict::Failed(status.not_ready.join("; ")),
        Phase::Starting | Phase::Degraded => Verdict::Starting,
    }
}

/// The ports a throwaway stack's bundled servers listen on instead of the
/// stack file's, as `cogno run` hands them to its `cogno up`
/// (`--throwaway=postgres=40123,temporal=40124:40125`; empty when there is
/// no bundled server).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Moves(Vec<Move>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Move {
    service: String,
    port: u16,
    ui_port: Option<u16>,
}

impl Moves {
    /// A free port for every port a bundled server of `stack` listens on,
    /// all held at once so that they differ, then released for the servers.
    fn pick(stack: &Stack) -> Result<Moves, Error> {
        let mut held = Vec::new();
        let mut free = || -> Result<u16, Error> {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr().map(|a| (a.port(), l)))
                .map_err(|e| Error::new(format!("cannot find a free port on 127.0.0.1: {e}")))?;
            held.push(l.1);
            Ok(l.0)
        };
        let mut moves = Vec::new();
        for svc in &stack.services {
            if let Some(b) = &svc.bundled {
                moves.push(Move {
                    service: svc.name.clone(),
                    port: free()?,
                    ui_port: b.ui_port.map(|_| free()).transpose()?,
                });
            }
        }
        Ok(Moves(moves))
    }

    /// Puts the bundled servers on their new ports (their own health checks
    /// follow), and leaves out the TCP health listener, whose fixed address
    /// two copies would share, and the scheduled backups.
    pub fn apply(&self, stack: &mut Stack) {
        stack.health_listen = None;
        // A throwaway copy's data is thrown away: nothing to back up (and a
        // child `cogno backup` would read the stack file without the moves).
        stack.backup = None;
        for m in &self.0 {
            let Some(svc) = stack.services.iter_mut().find(|s| s.name == m.service) else {
                continue;
            };
            for b in svc
                .bundled
                .iter_mut()
                .chain(svc.health.as_mut().and_then(|h| match &mut h.probe {
                    Probe::Bundled { server, .. } => Some(server),
                    _ => None,
                }))
            {
                b.port = m.port;
                if b.ui_port.is_some() {
                    b.ui_port = m.ui_port;
                }
            }
        }
    }
}

impl fmt::Display for Moves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}={}", m.service, m.port)?;
            if let Some(ui) = m.ui_port {
                write!(f, ":{ui}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Moves {
    type Err = String;

    fn from_str(s: &str) -> Result<Moves, String> {
        let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port `{p}`"));
        s.split(',')
            .filter(|m| !m.is_empty())
            .map(|m| {
                let (service, ports) = m
                    .split_once('=')
                    .ok_or_else(|| format!("`{m}` is not SERVICE=PORT[:UI_PORT]"))?;
                let (p, ui) = match ports.split_once(':') {
                    Some((p, ui)) => (p, Some(port(ui)?)),
                    None => (ports, None),
                };
                Ok(Move {
                    service: service.to_owned(),
                    port: port(p)?,
                    ui_port: ui,
                })
            })
            .collect::<Result<_, _>>()
            .map(Moves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_survive_the_command_line() {
        for text in ["", "postgres=40001", "postgres=40001,temporal=40002:40003"] {
            let moves: Moves = text.parse().unwrap();
            assert_eq!(moves.to_string(), text);
        }
        assert!("postgres".parse::<Moves>().is_err());
        assert!("postgres=x".parse::<Moves>().is_err());
        assert!("temporal=1:99999".parse::<Moves>().is_err());
    }
}
