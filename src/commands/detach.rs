//! `cogno up --detach`: the stack in the background. The command starts a
//! second cogno — itself, re-executed with the same arguments — in a new
//! session, with stdin from /dev/null and stdout and stderr appended to
//! DATA/logs/cogno.log, so that nothing of it holds the terminal. That
//! cogno runs `up` as in the foreground, with the services' output in files
//! too (`logfiles`).
//!
//! With `--wait` (the default) this command then shows the same numbered
//! progress lines and returns once the stack is ready, or fails as soon as
//! its start does. The detached cogno sends each progress line through a
//! pipe it inherited (`--detached-notify-fd`, hidden) and `serving` once its
//! control socket answers; from then on the wait follows `GET /events`
//! (`wait::until_ready`). A pipe that ends before `serving` means the
//! detached cogno has exited: its exit status and its last lines say why.

use super::{data_dir, wait, Outcome, StackArgs};
use crate::control;
use crate::error::Error;
use crate::logfiles;
use clap::Args;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What the detached cogno writes once its control socket is bound
/// (connections queue from then on)…
const LISTENING: &str = "listening";
/// …and once it answers them.
const SERVING: &str = "serving";
/// Lines of cogno.log shown when the detached cogno exits before it serves.
const SHOWN_LINES: usize = 20;

#[derive(Args)]
pub struct DetachArgs {
    /// Start the stack in the background and return (its output goes to DATA/logs/)
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Return only once the stack is ready, or fail with the reason as soon as its start fails (the default with --detach; implies it)
    #[arg(long)]
    pub wait: bool,
    /// With --detach: return as soon as cogno has started in the background
    #[arg(long, requires = "detach", conflicts_with_all = ["wait", "wait_timeout"])]
    pub no_wait: bool,
    /// Give up waiting after this long (`90s`, `5m`); the stack goes on starting [default: no limit; implies --detach]
    #[arg(long, value_name = "D", value_parser = crate::config::parse_duration)]
    pub wait_timeout: Option<Duration>,
    /// The pipe a detached cogno reports its progress to (set by --detach itself)
    #[arg(long, hide = true, value_name = "FD")]
    pub detached_notify_fd: Option<i32>,
}

impl DetachArgs {
    /// Whether this command is to start a detached cogno (and not be one).
    pub fn starts_detached(&self) -> bool {
        self.detached_notify_fd.is_none()
            && (self.detach || self.wait || self.wait_timeout.is_some())
    }

    /// In the detached cogno: the pipe to its waiting parent, kept from the
    /// services (close-on-exec).
    pub fn notify_pipe(&self) -> Option<File> {
        let fd = self.detached_notify_fd?;
        // Only a pipe is taken: a wrong number must not make cogno write elsewhere.
        let st = nix::sys::stat::fstat(fd).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return None;
        }
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        // SAFETY: the descriptor was inherited for this purpose and nothing
        // else in this process owns it.
        Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }
}

/// Tells the waiting parent that the control socket is bound.
pub fn listening(pipe: Option<&File>) {
    use std::io::Write;
    if let Some(mut p) = pipe {
        let _ = writeln!(p, "{LISTENING}");
    }
}

/// Tells the waiting parent that the control socket answers (and lets go of the pipe).
pub fn serving(pipe: Option<File>) {
    use std::io::Write;
    if let Some(mut p) = pipe {
        let _ = writeln!(p, "{SERVING}");
    }
}

/// Starts the detached cogno and, unless --no-wait, waits for the stack.
pub fn start(args: &StackArgs, d: &DetachArgs) -> Outcome {
    crate::os::process::ensure_standard_fds();
    // What can be refused at once is refused here, with this command's status.
    let stack = args.config.load()?;
    let data = data_dir(args, &stack);
    control::server::check_not_running(&data)?;
    data.check_usable()?;
    data.create()?;
    let log = logfiles::open_own(&data).map_err(|e| {
        Error::new(format!(
            "cannot open cogno's log file in {}: {e}",
            data.logs().display()
        ))
    })?;
    let log_path = data.logs().join(logfiles::OWN_FILE);
    let from = log.metadata().map(|m| m.len()).unwrap_or(0);
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::new(format!("cannot make a pipe: {e}")))?;
    let child = spawn(log, &write)
        .map_err(|e| Error::new(format!("cannot start cogno in the background: {e}")))?;
    // Only the detached cogno holds the writing end now: its end is the pipe's.
    drop(write);
    let pid = child.id();
    let where_ = format!(
        "cogno runs in the background (pid {pid}, data in {}); its output and the services' are in {}",
        data.root().display(),
        data.logs().display()
    );
    let mut pipe = BufReader::new(File::from(read));
    if d.no_wait {
        // Returned once its socket is bound: `cogno wait` and the other
        // commands can be run at once (their requests queue until served).
        until(&mut pipe, LISTENING, |_| {}).map_err(|()| exited(child, &log_path, from))?;
        println!("{where_}\n`cogno wait` waits until it is ready, `cogno down` stops it");
        return Ok(0);
    }
    let waited_for = data.clone();
    let ready = wait::with_timeout(d.wait_timeout, move || {
        until(&mut pipe, SERVING, |line| print!("{line}"))
            .map_err(|()| exited(child, &log_path, from))?;
        wait::until_ready(&waited_for, &[], None, |ev| println!("{}", ev.text()))
    })?;
    println!("{ready}\n{where_}\n`cogno status` shows it, `cogno logs` its output, `cogno down` stops it");
    Ok(0)
}

/// This cogno again, as the detached `up`: same arguments, a new session,
/// stdin from /dev/null, stdout and stderr to `log`, `notify` its pipe.
fn spawn(log: File, notify: &OwnedFd) -> std::io::Result<Child> {
    let fd = notify.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg0("cogno")
        .args(std::env::args_os().skip(1))
        .arg("--detached-notify-fd")
        .arg(fd.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            // Its own session: no controlling terminal, no SIGHUP when this one closes.
            nix::unistd::setsid()?;
            // The one descriptor it inherits beyond stdio.
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// Reads the detached cogno's pipe until `mark`, handing every progress
/// line to `each`; Err when the pipe ends first (the detached cogno exited).
fn until(pipe: &mut BufReader<File>, mark: &str, mut each: impl FnMut(&str)) -> Result<(), ()> {
    let mut line = String::new();
    loop {
        line.clear();
        if pipe.read_line(&mut line).unwrap_or(0) == 0 {
            return Err(());
        }
        match line.trim_end() {
            l if l == mark => return Ok(()),
            LISTENING | SERVING => {}
            _ => each(&line),
        }
    }
}

/// The error for a detached cogno that exited before it served: its exit
/// status and the lines it wrote to `log` (from offset `from`).
fn exited(mut child: Child, log: &std::path::Path, from: u64) -> Error {
    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(1).max(1);
    let tail = last_lines(log, from);
    Error::new(format!(
        "cogno stopped before the stack was ready (exit status {code}); the end of {}:\n{}",
        log.display(),
        tail.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
    .status(code)
}

/// The last lines appended to `log` since offset `from`.
pub(super) fn last_lines(log: &std::path::Path, from: u64) -> Vec<String> {
    let mut text = String::new();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log);
    if let Ok(mut f) = opened {
        let _ = f.seek(std::io::SeekFrom::Start(from));
        let _ = f.take(1 << 20).read_to_string(&mut text);
    }
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(SHOWN_LINES)..].to_vec()
}
