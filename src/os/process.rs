//! Starting and ending service processes: spawning into a fresh session and
//! process group with a clean environment and the service's user, killing a
//! whole group, finding the strays a dead service left behind, and naming the
//! way a process ended.

use super::procfs;
use crate::user::RunAs;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};
use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Marks every process of a service (inherited by its descendants) so that
/// daemons that left the service's process group can still be found.
pub const SERVICE_ENV: &str = "COGNO_SERVICE";

/// A started process, the read ends of its stdout and stderr pipes (when
/// captured), and what tells whether its exec failed.
pub struct Spawned {
    pub pid: Pid,
    pub output: Option<[OwnedFd; 2]>,
    pub report: ExecReport,
}

/// What to run: a service's command, or one of its health probes.
pub struct Launch<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub working_dir: Option<&'a Path>,
    pub run_as: Option<&'a RunAs>,
    /// Its stdin (a notification hook reads its notice there); /dev/null otherwise.
    pub stdin: Option<&'a OwnedFd>,
    /// Capture stdout/stderr into pipes; otherwise they go to /dev/null.
    pub capture: bool,
    /// PR_SET_NO_NEW_PRIVS: neither the program nor anything it runs can
    /// gain privileges (setuid binaries, file capabilities).
    pub no_new_privs: bool,
}

/// Why a process could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// Something about the service that another attempt may not meet: a
    /// working directory not made yet, a user not resolvable for now.
    Failed(String),
    /// The program cannot be run as it is (not found, not executable): no
    /// other attempt can succeed until someone installs it or fixes `command`.
    Permanent(String),
    /// cogno is out of descriptors (EMFILE, ENFILE) or the system out of
    /// processes (EAGAIN from fork): nothing the service did, and the same
    /// spawn may well work a moment later.
    Starved(String),
}

impl From<String> for SpawnError {
    fn from(why: String) -> SpawnError {
        SpawnError::Failed(why)
    }
}

impl SpawnError {
    /// `what` failed with `errno`: starved when it says a resource ran out.
    fn os(what: &str, errno: Errno) -> SpawnError {
        let why = format!("{what}: {errno}");
        match errno {
            Errno::EMFILE | Errno::ENFILE | Errno::EAGAIN => SpawnError::Starved(why),
            _ => SpawnError::Failed(why),
        }
    }

    pub fn starved(&self) -> bool {
        matches!(self, SpawnError::Starved(_))
    }

    pub fn permanent(&self) -> bool {
        matches!(self, SpawnError::Permanent(_))
    }

    pub fn why(&self) -> &str {
        match self {
            SpawnError::Failed(why) | SpawnError::Permanent(why) | SpawnError::Starved(why) => why,
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why())
    }
}

/// Finds `prog` the way execvp would, in the child's PATH, so that a missing
/// binary is reported with where it was looked for.
fn resolve(prog: &str, env: &[(String, String)]) -> Result<PathBuf, SpawnError> {
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(prog);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(SpawnError::Permanent(format!(
        "`{prog}` was not found in PATH ({path}); install it or give its full path in `command`"
    )))
}

/// Catches in the parent, with a clear message, what would certainly make
/// the exec fail; rarer failures are reported by the child (see [`ExecReport`]).
fn precheck(program: &Path, working_dir: Option<&Path>) -> Result<(), SpawnError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = working_dir {
        if !dir.is_dir() {
            return Err(SpawnError::Failed(format!(
                "working_dir {} does not exist or is not a directory",
                dir.display()
            )));
        }
    }
    let errno = match std::fs::metadata(program) {
        Err(e) => e.raw_os_error().unwrap_or(libc::ENOENT),
        Ok(m) if m.is_dir() => libc::EISDIR,
        Ok(m) if m.permissions().mode() & 0o111 == 0 => libc::EACCES,
        Ok(_) => return Ok(()),
    };
    Err(exec_failure(program, errno))
}

/// Why `program` could not be executed; permanent when the file itself is
/// the problem (missing, not executable, not a program, a directory).
fn exec_failure(program: &Path, errno: i32) -> SpawnError {
    let why = match errno {
        libc::ENOENT if program.exists() => {
            "its interpreter (the `#!` line) or dynamic loader was not found".to_owned()
        }
        libc::ENOENT => "no such file".to_owned(),
        libc::EACCES => {
            "permission denied (is it executable, and readable by the service's user?)".to_owned()
        }
        libc::ENOEXEC => "exec format error (not a program this machine can run)".to_owned(),
        e => nix::errno::Errno::from_raw(e).desc().to_lowercase(),
    };
    let why = format!("cannot execute {}: {why}", program.display());
    match errno {
        libc::ENOENT | libc::EACCES | libc::ENOEXEC | libc::EISDIR => SpawnError::Permanent(why),
        _ => SpawnError::Failed(why),
    }
}

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Failed(format!("{what} contains a NUL byte")))
}

/// A pipe whose both ends are close-on-exec: the child's end is made its
/// stdout or stderr by `dup2`, which clears the flag on the copy.
fn pipe(flags: OFlag) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC | flags)
        .map_err(|e| SpawnError::os("cannot create a pipe", e))
}

/// What the forked child does, step by step; a failed step is reported to
/// the parent by its number and errno.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Step {
    Setsid = 1,
    Setgroups,
    Setgid,
    Setuid,
    Chdir,
    Dup2,
    NoNewPrivs,
    Exec,
}

/// The read end of a close-on-exec pipe the child writes to only if it fails
/// before its program runs. The spawn does not wait for the exec (so many
/// services start in parallel on all cores); instead, once the child has
/// exited, this says whether it ever ran its program.
pub struct ExecReport {
    fd: OwnedFd,
    program: PathBuf,
    working_dir: Option<PathBuf>,
    user: Option<String>,
}

impl ExecReport {
    /// Why the child never ran its program, if so. Only meaningful once the
    /// child has exited: until then the pipe may still be empty.
    pub fn failure(&self) -> Option<SpawnError> {
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(self.fd.as_raw_fd(), &mut buf).ok()?;
        if n != buf.len() {
            return None;
        }
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let err = nix::errno::Errno::from_raw(errno).desc().to_lowercase();
        let user = self.user.as_deref().unwrap_or("?");
        if buf[0] == Step::Exec as u8 {
            return Some(exec_failure(&self.program, errno));
        }
        Some(SpawnError::from(match buf[0] {
            s if s == Step::Chdir as u8 => format!(
                "cannot enter working_dir {}: {err}",
                self.working_dir
                    .as_deref()
                    .unwrap_or(Path::new("?"))
                    .display()
            ),
            s if s == Step::Dup2 as u8 => format!("cannot set up its output: {err}"),
            s if s == Step::Setsid as u8 => format!("cannot start a new session: {err}"),
            s if s == Step::NoNewPrivs as u8 => {
                format!(
                    "cannot set no_new_privs: {err} (set `no_new_privs: false` to run without it)"
                )
            }
            _ => format!("cannot switch to user `{user}`: {err}"),
        }))
    }
}

/// Everything the child needs, built before the fork: between fork and exec
/// a multi-threaded process may only make async-signal-safe calls, so there
/// is no allocation, no lock and no formatting in the child.
struct Prepared {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    dir: Option<CString>,
    ids: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    no_new_privs: bool,
    /// The soft RLIMIT_NOFILE to give back (cogno raised its own).
    nofile: Option<libc::rlimit>,
    /// The umask to give back (cogno made its own private).
    umask: Option<libc::mode_t>,
    /// Stdin, stdout, stderr of the child.
    stdio: [RawFd; 3],
    report: RawFd,
}

impl Prepared {
    /// Runs in the forked child and never returns.
    ///
    /// # Safety
    /// Must only be called in the child of a fork, with every pointer in
    /// `self` valid (the parent keeps them alive; the child has a copy).
    unsafe fn exec(&self) -> ! {
        // The parent blocked every signal around the fork so that none runs
        // cogno's handlers here; the program starts with defaults and an
        // empty mask (Rust ignores SIGPIPE, and a blocked SIGTERM would make
        // `stop` do nothing).
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if libc::setsid() < 0 {
            self.fail(Step::Setsid);
        }
        if let Some((groups, gid, uid)) = &self.ids {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                self.fail(Step::Setgroups);
            }
            if libc::setgid(*gid) < 0 {
                self.fail(Step::Setgid);
            }
            if libc::setuid(*uid) < 0 {
                self.fail(Step::Setuid);
            }
        }
        if let Some(dir) = &self.dir {
            if libc::chdir(dir.as_ptr()) < 0 {
                self.fail(Step::Chdir);
            }
        }
        // Every source is >= 3 (ensure_standard_fds), so none is overwritten
        // before it is copied.
        for (target, src) in self.stdio.iter().enumerate() {
            if libc::dup2(*src, target as RawFd) < 0 {
                self.fail(Step::Dup2);
            }
        }
        // Descriptors cogno inherited without close-on-exec (a wrapper's, a
        // terminal's) must not reach services: everything above stderr is
        // closed at exec. Close-on-exec rather than close: the report pipe
        // must work until the exec.
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) < 0
        {
            // Kernels before 5.11: one fcntl per possible descriptor.
            let mut lim: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            for fd in 3..lim.rlim_cur.min(1 << 16) as RawFd {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        if let Some(lim) = &self.nofile {
            libc::setrlimit(libc::RLIMIT_NOFILE, lim);
        }
        if let Some(mask) = self.umask {
            libc::umask(mask);
        }
        if self.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            self.fail(Step::NoNewPrivs);
        }
        libc::execve(
            self.program.as_ptr(),
            self.argv.as_ptr(),
            self.envp.as_ptr(),
        );
        self.fail(Step::Exec)
    }

    unsafe fn fail(&self, step: Step) -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[0] = step as u8;
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(self.report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// Makes sure file descriptors 0, 1 and 2 are open (on /dev/null if they
/// were closed), so that no pipe cogno creates can take one of their
/// numbers and be clobbered when a child's stdio is set up.
pub fn ensure_standard_fds() {
    for fd in 0..3 {
        // SAFETY: fcntl and open with valid arguments; open returns the
        // lowest free number, which is `fd` itself.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

/// Spawns a process as the leader of a new session and process group.
///
/// Returns as soon as the child exists, without waiting for its exec: what
/// can be checked beforehand (a missing or non-executable program, a missing
/// working directory) is an error here; anything else that stops the exec
/// makes the child exit with 127 and is told by [`ExecReport::failure`].
pub fn spawn(l: &Launch) -> Result<Spawned, SpawnError> {
    let program = resolve(&l.argv[0], l.env)?;
    precheck(&program, l.working_dir)?;
    let c_program = cstring("the program path", program.as_os_str().as_bytes())?;
    // argv[0] stays as written, as execvp would leave it (busybox-style tools dispatch on it).
    let argv = l
        .argv
        .iter()
        .map(|a| cstring("an argument", a.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = l
        .env
        .iter()
        .map(|(k, v)| cstring("an environment variable", format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let null_terminated = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect::<Vec<_>>()
    };
    let dir = l
        .working_dir
        .map(|d| cstring("working_dir", d.as_os_str().as_bytes()))
        .transpose()?;
    let null: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            SpawnError::os("cannot open /dev/null", errno)
        })?
        .into();
    let (output, child_ends) = if l.capture {
        let (out_r, out_w) = pipe(OFlag::empty())?;
        let (err_r, err_w) = pipe(OFlag::empty())?;
        (Some([out_r, err_r]), Some([out_w, err_w]))
    } else {
        (None, None)
    };
    let stdin = l.stdin.unwrap_or(&null).as_raw_fd();
    let stdio = match &child_ends {
        Some([out, err]) => [stdin, out.as_raw_fd(), err.as_raw_fd()],
        None => [stdin, null.as_raw_fd(), null.as_raw_fd()],
    };
    // Non-blocking, so that reading it can never stall the event loop; the
    // child's one small write to an empty pipe never blocks either way.
    let (report_r, report_w) = pipe(OFlag::O_NONBLOCK)?;
    let prepared = Prepared {
        program: c_program,
        argv: null_terminated(&argv),
        envp: null_terminated(&envp),
        dir,
        ids: l.run_as.map(|u| {
            (
                u.groups.iter().map(|g| g.as_raw()).collect(),
                u.gid.as_raw(),
                u.uid.as_raw(),
            )
        }),
        no_new_privs: l.no_new_privs,
        umask: super::limits::original_umask(),
        nofile: super::limits::original_nofile().map(|soft| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit on a valid struct.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            lim.rlim_cur = soft.min(lim.rlim_max);
            lim
        }),
        stdio,
        report: report_w.as_raw_fd(),
    };
    let old_mask = SigSet::all().thread_swap_mask(SigmaskHow::SIG_SETMASK).ok();
    // SAFETY: the child only runs `Prepared::exec`, which makes
    // async-signal-safe calls on data prepared above.
    let forked = unsafe { nix::unistd::fork() };
    if let Ok(ForkResult::Child) = forked {
        // SAFETY: we are the child; `prepared` and what it points to are intact.
        unsafe { prepared.exec() }
    }
    if let Some(mask) = old_mask {
        let _ = mask.thread_set_mask();
    }
    let pid = match forked {
        Ok(ForkResult::Parent { child }) => child,
        Ok(ForkResult::Child) => unreachable!("the child never returns from exec"),
        Err(e) => return Err(SpawnError::os("cannot fork", e)),
    };
    // The child's ends are closed here (they live on in the child only), so
    // the pipes reach end-of-file when the child and its descendants are done.
    drop((null, child_ends, report_w, argv, envp));
    Ok(Spawned {
        pid,
        output,
        report: ExecReport {
            fd: report_r,
            program,
            working_dir: l.working_dir.map(Path::to_path_buf),
            user: l.run_as.map(|u| u.name.clone()),
        },
    })
}

/// Kills a process group when dropped, unless disarmed (`.0 = None`): a
/// child abandoned by a timeout (an exec probe, a notification hook) never
/// lingers, and such children never pile up.
pub struct KillOnDrop(pub Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}

impl KillOnDrop {
    /// How the short-lived child it guards ended (a probe, a notification
    /// hook): its exit as the reaper reports it (`exited`), or the exec
    /// failure `report` carries; None when the status was lost. Disarmed
    /// once it has ended; dropped before that (a timeout), the child is
    /// killed.
    pub async fn finished(
        mut self,
        exited: tokio::sync::oneshot::Receiver<ExitReason>,
        report: &ExecReport,
    ) -> Option<ExitReason> {
        let reason = exited.await.ok()?;
        self.0 = None;
        Some(match report.failure() {
            Some(e) => ExitReason::SpawnFailed(e),
            None => reason,
        })
    }
}

/// Sends `sig` to the process group led by `pgid`. Returns false when the
/// group no longer has any member.
pub fn signal_group(pgid: Pid, sig: Signal) -> bool {
    !matches!(signal::killpg(pgid, sig), Err(nix::errno::Errno::ESRCH))
}

/// Sends `sig` to the process group of a service's main process `leader`,
/// which must not have been reaped yet (so its pid cannot have been reused).
/// [`spawn`] returns before the child has made its own session; a child
/// that has not yet done so has no descendants, and gets `sig` directly
/// (blocked until it has reset its signals, then acted on).
pub fn signal_service(leader: Pid, sig: Signal) {
    if !signal_group(leader, sig) {
        let _ = signal::kill(leader, sig);
    }
}

/// A process held by a pidfd, so that waiting for its end can never follow
/// its pid to another process that reuses it.
pub struct Watched {
    fd: OwnedFd,
    pub pid: Pid,
}

impl Watched {
    /// The process at the other end of a connected Unix socket (the one that
    /// listens on it), as the kernel names it in this PID namespace: right
    /// even when cogno runs in a container whose socket is reached from outside.
    pub fn peer_of(stream: &std::os::unix::net::UnixStream) -> std::io::Result<Watched> {
        let cred =
            nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
        if cred.pid() <= 0 {
            return Err(std::io::Error::other(
                "the peer is in another PID namespace",
            ));
        }
        Watched::of(Pid::from_raw(cred.pid()))
    }

    /// Process `pid`, held from now on: whatever is checked about it after
    /// this (its start time) is about the process held, not a successor.
    pub fn of(pid: Pid) -> std::io::Result<Watched> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; nothing is borrowed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor pidfd_open just returned, owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(Watched { fd, pid })
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> std::io::Result<()> {
        self.wait_for(None).map(|_| ())
    }

    /// Blocks until the process has exited (true) or `limit` has passed (false).
    pub fn wait_for(&self, limit: Option<std::time::Duration>) -> std::io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let deadline = limit.map(|l| std::time::Instant::now() + l);
        loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `sig` to the process held (never to a successor of its pid).
    pub fn signal(&self, sig: Signal) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal takes a descriptor, a signal number and
        // no siginfo; nothing is borrowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Readable once the process has exited: for a `poll` that waits for other things too.
impl std::os::fd::AsFd for Watched {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Code(i32),
    Signal {
        signal: Signal,
        core: bool,
    },
    /// Killed by a SIGKILL that cogno did not send, while the kernel's
    /// count of OOM kills in cogno's memory cgroup rose.
    LikelyOom,
    /// It could not be started at all.
    SpawnFailed(SpawnError),
    /// cogno stopped it: its health check said it was not healthy (see
    /// `health.on_unhealthy` and `start_timeout`). Says how.
    NotHealthy(String),
}

impl ExitReason {
    pub fn from_wait(status: WaitStatus) -> Option<(Pid, ExitReason)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, ExitReason::Code(code))),
            WaitStatus::Signaled(pid, signal, core) => {
                Some((pid, ExitReason::Signal { signal, core }))
            }
            _ => None,
        }
    }

    pub fn success(&self) -> bool {
        *self == ExitReason::Code(0)
    }

    /// The exit status a shell would show for it, as tini passes its
    /// child's on: the code, or 128 + the signal; 127 for a program that
    /// could not be run; 1 where there is no such number (an exit with 0
    /// counted as a failure, a stop for bad health, a start that failed for
    /// something other than the program), so that it always reads as a failure.
    pub fn status(&self) -> i32 {
        match self {
            ExitReason::Code(0) | ExitReason::NotHealthy(_) => 1,
            ExitReason::Code(c) => *c,
            ExitReason::Signal { signal, .. } => 128 + *signal as i32,
            ExitReason::LikelyOom => 128 + Signal::SIGKILL as i32,
            // As a shell says it: the program cannot be run at all.
            ExitReason::SpawnFailed(e) if e.permanent() => 127,
            ExitReason::SpawnFailed(_) => 1,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Code(c) => write!(f, "exited with code {c}"),
            ExitReason::Signal { signal, core } => {
                write!(f, "killed by {}", signal.as_str())?;
                if *core {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            ExitReason::LikelyOom => f.write_str(
                "killed by SIGKILL, likely by the kernel's OOM killer \
                 (the oom_kill count of cogno's memory cgroup rose)",
            ),
            ExitReason::SpawnFailed(e) => write!(f, "could not start: {e}"),
            ExitReason::NotHealthy(why) => f.write_str(why),
        }
    }
}

/// The processes a service left behind when its main process `leader`
/// ended: members of its process group or session, and daemons that left
/// both but carry the service's marker and were adopted by cogno. They are
/// all sent SIGKILL; the returned pids are the ones to wait for.
pub fn kill_strays(leader: Pid, service: &str, known: &HashSet<Pid>) -> HashSet<Pid> {
    signal_group(leader, Signal::SIGKILL);
    let me = nix::unistd::getpid();
    let mut strays = HashSet::new();
    for pid in procfs::children_of(me) {
        if known.contains(&pid) {
            continue;
        }
        let Some(stat) = procfs::ProcStat::read(pid) else {
            continue;
        };
        if stat.pgrp == leader.as_raw()
            || stat.session == leader.as_raw()
            || procfs::environ_has(pid, &format!("{SERVICE_ENV}={service}"))
        {
            let _ = signal::kill(pid, Signal::SIGKILL);
            // A daemon that made itself a group leader takes its group with it.
            if stat.pgrp == pid.as_raw() {
                signal_group(pid, Signal::SIGKILL);
            }
            strays.insert(pid);
        }
    }
    strays
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stack's exit status when a critical service ends it: 127 only
    /// for a program that cannot run, as a shell would say.
    #[test]
    fn exit_statuses_read_as_a_shell_would_show_them() {
        let spawn = |e| ExitReason::SpawnFailed(e).status();
        assert_eq!(spawn(SpawnError::Permanent("no such file".into())), 127);
        assert_eq!(spawn(SpawnError::Failed("no working_dir".into())), 1);
        assert_eq!(ExitReason::Code(7).status(), 7);
        assert_eq!(ExitReason::Code(0).status(), 1);
        let segv = ExitReason::Signal {
            signal: Signal::SIGSEGV,
            core: false,
        };
        assert_eq!(segv.status(), 139);
    }
}
