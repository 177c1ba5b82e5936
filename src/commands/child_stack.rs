//! A stack a command starts for its own use and stops again: `cogno run
//! --ephemeral`'s throwaway copy (`ephemeral.rs`) and the bundled servers
//! `cogno backup` starts on a stopped stack's data directory.
//!
//! It is a child `cogno up` in its own process group, its output appended
//! to a file; the command waits for its readiness through the control
//! socket (the socket's creation seen by inotify, then `/events`, checking
//! `/status` after each) until a deadline, and stops it with SIGTERM — the
//! stack stops in order — when done, in success or failure (Drop).
//!
//! That child dies with the command (`PR_SET_PDEATHSIG`, SIGTERM: it still
//! stops its servers in order). If both are SIGKILLed, the servers are what
//! any killed cogno leaves, stopped by the next start on that data
//! directory (`leftovers`).

use super::run::{wait_unreaped, Relay, Target};
use super::{wait, StackArgs};
use crate::config::Stack;
use crate::control::client::{self, Failure};
use crate::control::{Phase, ServiceState, StackStatus};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::os::process::Watched;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Leaves out of a stack started for a command's own use what is not its
/// to run: the TCP health listener (a fixed address another stack may hold)
/// and the scheduled backups (a child `cogno backup` would start from the
/// stack file, not from this stack).
pub fn set_apart(stack: &mut Stack) {
    stack.health_listen = None;
    stack.backup = None;
}

/// How to start one.
pub(super) struct Launch<'a> {
    /// What messages call it ("the throwaway stack").
    pub name: &'static str,
    /// What has happened when it fails to become ready ("the command was
    /// not run"); the rest is said here.
    pub aftermath: String,
    /// The stack file and env files, as the command was given them.
    pub target: &'a StackArgs,
    pub data: DataDir,
    /// Where its output goes (appended), and that file's path.
    pub log: std::fs::File,
    pub log_path: PathBuf,
    /// `cogno up`'s hidden arguments that set it apart (`--throwaway=…`).
    pub up_args: Vec<String>,
    /// Only these and their dependencies (none: the whole stack).
    pub services: &'a [String],
    pub timeout: Duration,
}

/// A running child stack; dropping it stops it and waits until its cogno has exited.
pub(super) struct ChildStack<'r> {
    name: &'static str,
    aftermath: String,
    data: DataDir,
    log: PathBuf,
    /// Where this run's output begins in `log`.
    log_from: u64,
    cogno: Option<Child>,
    relay: &'r Relay,
}

impl<'r> ChildStack<'r> {
    /// Starts it and waits until it is ready, at most `launch.timeout`.
    pub(super) fn start(launch: Launch, relay: &'r Relay) -> Result<ChildStack<'r>, Error> {
        let deadline = Deadline {
            at: Instant::now() + launch.timeout,
            total: launch.timeout,
        };
        launch.data.create()?;
        let log_from = launch.log.metadata().map_or(0, |m| m.len());
        let mut s = ChildStack {
            name: launch.name,
            aftermath: launch.aftermath,
            data: launch.data,
            log: launch.log_path,
            log_from,
            cogno: None,
            relay,
        };
        // Watched before `cogno up` starts: the socket's creation cannot be missed.
        let cannot_watch = |e: nix::Error| {
            Error::new(format!(
                "cannot watch {} for {}'s control socket: {e}",
                s.data.run_dir().display(),
                s.name
            ))
        };
        let inotify =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(cannot_watch)?;
        inotify
            .add_watch(
                &s.data.run_dir(),
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
            )
            .map_err(cannot_watch)?;
        let cogno = spawn(
            launch.target,
            &s.data,
            launch.log,
            &launch.up_args,
            launch.services,
        )
        .map_err(|e| Error::new(format!("cannot start {}'s cogno: {e}", s.name)))?;
        let pid = Pid::from_raw(cogno.id() as i32);
        s.cogno = Some(cogno);
        relay.aim(Some(Target::Stack(pid)));
        let watched = Watched::of(pid)
            .map_err(|e| Error::new(format!("cannot watch {}'s cogno: {e}", s.name)))?;
        s.wait_socket(&inotify, &watched, &deadline)?;
        s.wait_ready(&deadline)?;
        Ok(s)
    }

    pub(super) fn data(&self) -> &DataDir {
        &self.data
    }

    /// Stops the stack in order and waits until its cogno has exited;
    /// its exit status, unless it was stopped already.
    pub(super) fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut cogno = self.cogno.take()?;
        let pid = Pid::from_raw(cogno.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        wait_unreaped(pid);
        self.relay.aim(None);
        cogno.wait().ok()
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
                Err(e) => return Err(Error::new(format!("cannot wait for {}: {e}", self.name))),
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
        Error::new(format!("{} is {}", self.name, e.message)).help(format!(
            "{}. If it only needs longer, raise --wait-timeout (it is {})",
            self.aftermath,
            crate::fmt::fmt_duration(deadline.total)
        ))
    }

    /// The error for a stack that did not become ready, with its last output.
    fn failed(&self, why: &str) -> Error {
        let tail = super::detach::last_lines(&self.log, self.log_from).join("\n");
        Error::new(format!("{} did not become ready: {why}", self.name)).help(format!(
            "its last lines of output:\n{tail}\n({})",
            self.aftermath
        ))
    }
}

impl Drop for ChildStack<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cogno up [SERVICE…]` on `data` with `up_args`, its output to `log`.
fn spawn(
    target: &StackArgs,
    data: &DataDir,
    log: std::fs::File,
    up_args: &[String],
    services: &[String],
) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let log2 = log.try_clone()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up").arg("--data").arg(data.root());
    if let Some(file) = &target.config.config {
        cmd.arg("--config").arg(file);
    }
    for file in &target.config.env_file {
        cmd.arg("--env-file").arg(file);
    }
    cmd.args(up_args)
        // Names were checked against the stack file already; after `--`
        // none can be taken for an option.
        .arg("--")
        .args(services)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Out of the terminal's reach: a Ctrl-C goes to the command, which
        // stops this stack in order once it is done with it.
        .process_group(0);
    let parent = nix::unistd::getpid();
    // SAFETY: prctl and getppid are async-signal-safe and touch nothing of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The command died before the line above: nobody would stop this stack.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "the command that started it has exited",
                ));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// When the wait for a child stack gives up.
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
