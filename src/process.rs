//! Starting and ending service processes: spawning into a fresh session and
//! process group with a clean environment and the service's user, killing a
//! whole group, finding the strays a dead service left behind, and naming the
//! way a process ended.

use crate::config::Service;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{Gid, Pid, Uid};
use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Marks every process of a service (inherited by its descendants) so that
/// daemons that left the service's process group can still be found.
pub const SERVICE_ENV: &str = "COGNO_SERVICE";

/// The user a service runs as, resolved before forking (nothing that
/// allocates or reads files may run between fork and exec).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
}

impl RunAs {
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up user `{name}`: {e}"))?
            .ok_or_else(|| format!("user `{name}` does not exist"))?;
        let cname = CString::new(name).map_err(|_| format!("invalid user name `{name}`"))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).unwrap_or_else(|_| vec![user.gid]);
        Ok(RunAs {
            name: name.to_owned(),
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
        })
    }
}

/// A started process and the read ends of its output pipes.
pub struct Spawned {
    pub pid: Pid,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What to run: a service's command, or one of its health probes.
pub struct Launch<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub working_dir: Option<&'a Path>,
    pub run_as: Option<&'a RunAs>,
    /// Capture stdout/stderr into pipes; otherwise they go to /dev/null.
    pub capture: bool,
}

/// The environment a service's processes get: what cogno derives for the
/// bundled services, then cogno's own, then the stack's `env`, then the
/// service's `env` (later wins), plus the service marker.
pub fn service_env(
    derived: &[(String, String)],
    base: &[(String, String)],
    stack_env: &[(String, String)],
    svc: &Service,
    run_as: Option<&RunAs>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        Vec::with_capacity(base.len() + stack_env.len() + svc.env.len() + 4);
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for (k, v) in derived.iter().chain(base).chain(stack_env).chain(&svc.env) {
        set(k, v);
    }
    if let Some(u) = run_as {
        set("HOME", &u.home.to_string_lossy());
        set("USER", &u.name);
        set("LOGNAME", &u.name);
    }
    set(SERVICE_ENV, &svc.name);
    env
}

/// Why a process could not be started.
#[derive(Debug)]
pub struct SpawnError(pub String);

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    Err(SpawnError(format!(
        "`{prog}` was not found in PATH ({path}); install it or give its full path in `command`"
    )))
}

/// Spawns a process as the leader of a new session and process group.
pub fn spawn(l: &Launch) -> Result<Spawned, SpawnError> {
    let program = resolve(&l.argv[0], l.env)?;
    if let Some(dir) = l.working_dir {
        if !dir.is_dir() {
            return Err(SpawnError(format!(
                "working_dir {} does not exist or is not a directory",
                dir.display()
            )));
        }
    }
    let mut cmd = Command::new(&program);
    // argv[0] stays as written, as execvp would leave it (busybox-style tools dispatch on it).
    cmd.arg0(&l.argv[0]);
    cmd.args(&l.argv[1..])
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null());
    if l.capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    if let Some(dir) = l.working_dir {
        cmd.current_dir(dir);
    }
    let run_as = l.run_as.cloned();
    // SAFETY: the closure only makes async-signal-safe system calls (setsid,
    // setgroups, setgid, setuid) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some(u) = &run_as {
                nix::unistd::setgroups(&u.groups)?;
                nix::unistd::setgid(u.gid)?;
                nix::unistd::setuid(u.uid)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (is it executable, and readable by the service's user?)"
                    .to_owned()
            }
            _ => e.to_string(),
        };
        SpawnError(format!("cannot execute {}: {why}", program.display()))
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    let (stdout, stderr) = if l.capture {
        (
            OwnedFd::from(child.stdout.take().expect("piped stdout")),
            OwnedFd::from(child.stderr.take().expect("piped stderr")),
        )
    } else {
        let null = || std::fs::File::open("/dev/null").map(OwnedFd::from);
        match (null(), null()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(SpawnError("cannot open /dev/null".into())),
        }
    };
    // The child is reaped by the supervisor's reaper, never through `Child`.
    drop(child);
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

/// Sends `sig` to the process group led by `pgid`. Returns false when the
/// group no longer has any member.
pub fn signal_group(pgid: Pid, sig: Signal) -> bool {
    !matches!(signal::killpg(pgid, sig), Err(nix::errno::Errno::ESRCH))
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Code(i32),
    Signal {
        signal: Signal,
        core: bool,
    },
    /// It could not be started at all.
    SpawnFailed(String),
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
            ExitReason::SpawnFailed(why) => write!(f, "could not start: {why}"),
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
    for pid in children_of(me) {
        if known.contains(&pid) {
            continue;
        }
        let Some(stat) = ProcStat::read(pid) else {
            continue;
        };
        if stat.pgrp == leader.as_raw()
            || stat.session == leader.as_raw()
            || has_marker(pid, service)
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

/// Direct children of `parent`: services, probes and adopted orphans.
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .map(Pid::from_raw),
                );
            }
        }
        if !out.is_empty()
            || std::path::Path::new(&format!("/proc/{parent}/task/{parent}/children")).exists()
        {
            return out;
        }
    }
    // Kernels without /proc/PID/task/TID/children: scan every process.
    all_pids()
        .filter(|p| ProcStat::read(*p).is_some_and(|s| s.ppid == parent.as_raw()))
        .collect()
}

pub fn all_pids() -> impl Iterator<Item = Pid> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
}

fn has_marker(pid: Pid, service: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{SERVICE_ENV}={service}");
    environ.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

/// The fields of /proc/PID/stat that cogno needs.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
}

impl ProcStat {
    pub fn read(pid: Pid) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses: parse after the last ')'.
        let rest = &text[text.rfind(')')? + 2..];
        let mut f = rest.split(' ');
        f.next()?; // state
        let ppid = f.next()?.parse().ok()?;
        let pgrp = f.next()?.parse().ok()?;
        let session = f.next()?.parse().ok()?;
        Some(ProcStat {
            ppid,
            pgrp,
            session,
        })
    }
}
