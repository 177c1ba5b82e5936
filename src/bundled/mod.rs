//! Bundled infrastructure: PostgreSQL, Redis and Temporal run by cogno from
//! `kind:` alone. Each is a [`Server`] in its own file, listed once in
//! [`SERVERS`]; its static facts (default port, user, priority…) are its row
//! in `config::kinds::KINDS`. This module is what they share: the secrets
//! they need, the environment handed to the app services, the pre-flight
//! checks made before anything is written and the first-run preparation
//! (with numbered progress lines). The data directory itself (its layout,
//! its own checks, its stamps) is [`crate::datadir`]'s. The CognObserve
//! product's own defaults are in [`product`].

mod auth_guard;
pub mod postgres;
pub mod product;
pub mod redis;
pub mod temporal;
#[cfg(test)]
mod test_support;

use crate::config::{Bundled, Health, Kind, Probe, Service, Stack};
use crate::datadir::{DataDir, ServiceUser, Versions};
use crate::error::Error;
use crate::os::procfs;
use crate::secrets::{self, Credentials, Dependent, SecretSpec, Secrets};
use crate::user::RunAs;
use nix::unistd::Pid;
use std::any::Any;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;
use tracing::info;

/// A bundled server: what cogno does for a `kind:`, from its secrets to its
/// health probe. Adding one is a file implementing this, an entry in
/// [`SERVERS`] and a row in `config::kinds::KINDS` (docs/architecture.md, "Adding a bundled server").
pub trait Server: Sync {
    /// Its row's name in `config::kinds::KINDS`.
    fn name(&self) -> &'static str;

    /// The secrets it needs, generated with the stack's; its probe gets them.
    fn secrets(&self) -> &'static [ServerSecret];

    /// The connection settings the app services get, derived from its actual
    /// settings (change the port and the URL follows) and the secrets.
    fn app_env(&self, b: &Bundled, secrets: &Secrets) -> Vec<AppVar>;

    /// Its `settings:`, checked before anything is written: a name cogno
    /// reserves or one the server cannot read is refused.
    fn check_settings(&self, b: &Bundled) -> Result<(), String>;

    /// The paths that exist once it keeps data made with its
    /// [`Server::secrets`] (a cluster, a dataset): while one exists, a lost
    /// secret is refused instead of generated.
    fn data_marks(&self, data: &DataDir) -> Vec<PathBuf>;

    /// Its pre-flight check, reading only: its program exists and can open
    /// the data an earlier run left in `data`. What it found goes to `prepare`.
    /// `user` is who the server will run as (None: cogno's own user).
    fn preflight(&self, b: &Bundled, user: Option<&RunAs>, data: &DataDir) -> Result<Found, Error>;

    /// Creates (first run) or updates its files and builds its command.
    /// Blocking, before the supervisor starts; it may wait for processes it
    /// runs, so never call it while the reaper runs.
    fn prepare(
        &self,
        job: &Job,
        found: &dyn Any,
        versions: &mut Versions,
    ) -> Result<Prepared, Error>;

    /// For a reload: renders its files again from `job.bundled`'s settings
    /// over the data a [`Server::prepare`] made, and returns its new
    /// command; `program` is the one it runs now (its command's first word).
    /// Files only — no process is run: the supervisor's reaper would take
    /// its status. What the data cannot take is refused before ([`live_change`]).
    fn reconfigure(&self, job: &Job, program: &Path) -> Result<Vec<String>, Error>;

    /// Its health check, in its own protocol, logging in with `credentials`
    /// (its [`Server::secrets`]); `data` is where its files are.
    fn probe<'a>(
        &'a self,
        b: &'a Bundled,
        credentials: &'a Credentials,
        data: &'a DataDir,
    ) -> ProbeFuture<'a>;

    /// Where it is, for the ready banner (never a secret).
    fn banner(&self, b: &Bundled) -> String;

    /// Writes a consistent copy of its data into `out` (an empty private
    /// directory of the backup being made), taken from the running server
    /// without stopping it or changing its files; `job.data` is the
    /// stack's data directory. Returns its version, for the manifest.
    fn backup(&self, job: &Job, out: &Path) -> Result<String, Error>;

    /// Recreates its data in `job.data` (a new data directory, not yet in
    /// place) from what its [`Server::backup`] wrote, extracted into `from`;
    /// `recorded` is the version the backup recorded. Blocking; it may run
    /// and wait for the server's own tools, never while the reaper runs.
    fn restore(&self, job: &Job, from: &Path, recorded: &str) -> Result<(), Error>;
}

/// Every bundled server, one for each row of `config::kinds::KINDS`.
pub static SERVERS: &[&dyn Server] = &[&postgres::Postgres, &redis::Redis, &temporal::Temporal];

/// The server of `kind`.
pub fn server(kind: Kind) -> &'static dyn Server {
    *SERVERS
        .iter()
        .find(|s| s.name() == kind.name)
        .expect("every kind has a server (tested)")
}

/// A variable of the apps' environment, and the secret its value carries (a
/// connection URL with a password): a service that may not have that secret
/// does not get the variable either.
pub struct AppVar {
    pub name: String,
    pub value: String,
    pub carries: Option<String>,
}

/// A secret a server needs: `bytes` random bytes, hex.
pub struct ServerSecret {
    pub name: &'static str,
    pub bytes: usize,
    /// Only cogno uses it (a superuser's password): the services never get it.
    pub private: bool,
}

/// What a server's pre-flight found, handed back to its `prepare`
/// (PostgreSQL: the binaries it located, perhaps by downloading them).
pub type Found = Box<dyn Any + Send>;

/// One run of a bundled server's probe.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What a server's `prepare` works with.
pub struct Job<'a> {
    pub bundled: &'a Bundled,
    /// The data directory.
    pub data: &'a DataDir,
    /// The user it runs as (None: cogno's own).
    pub run_as: Option<&'a RunAs>,
    pub secrets: &'a Secrets,
}

/// What a server's `prepare` did.
pub struct Prepared {
    /// The command to supervise.
    pub command: Vec<String>,
    /// What was prepared and where, for its progress line.
    pub progress: String,
    /// Anything else worth a line in the log.
    pub notes: Vec<String>,
}

/// The secrets this stack uses: those the file declares, else the CognObserve
/// set when it has bundled services, plus what the bundled services need.
pub fn secret_specs(stack: &Stack) -> Vec<SecretSpec> {
    let has_bundled = stack.services.iter().any(|s| s.bundled.is_some());
    let mut specs = match &stack.secrets {
        Some(declared) => declared.clone(),
        None if has_bundled => product::secrets(),
        None => Vec::new(),
    };
    for (_, b) in bundled_kinds(stack) {
        for need in server(b.kind).secrets() {
            if !specs.iter().any(|s| s.name == need.name) {
                specs.push(SecretSpec {
                    name: need.name.to_owned(),
                    bytes: need.bytes,
                    encoding: secrets::Encoding::Hex,
                });
            }
        }
    }
    specs
}

/// What earlier runs left in `data` that was made with the stack's secrets:
/// every bundled server's data (whatever the stack now declares) and the
/// stamp of a stack that was once healthy.
pub fn secret_dependents(data: &DataDir) -> Vec<Dependent> {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let mut out: Vec<Dependent> = SERVERS
        .iter()
        .flat_map(|s| {
            s.data_marks(data)
                .into_iter()
                .filter(|p| exists(p))
                .map(|path| Dependent {
                    what: format!("the bundled {}'s data", s.name()),
                    path,
                    names: s.secrets().iter().map(|n| n.name.to_owned()).collect(),
                })
        })
        .collect();
    let stamp = data.initialized_stamp();
    if exists(&stamp) {
        out.push(Dependent {
            what: "a stack that has run (its app's data and sessions)".into(),
            path: stamp,
            names: Vec::new(),
        });
    }
    out
}

/// The stack's secrets (DATA/secrets/.env, `env` winning), generated only
/// while nothing made with them exists: `cogno up` and `cogno env` alike.
pub fn load_secrets(
    stack: &Stack,
    data: &DataDir,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secrets, Error> {
    secrets::load_or_create(data, &secret_specs(stack), env, &secret_dependents(data))
}

/// The connection settings the app services get, derived from the bundled
/// services' actual settings and the secrets (all but the servers' private
/// ones), as `cogno env` prints them. Services' own and cogno's environment win.
pub fn derived_env(stack: &Stack, secrets: &Secrets) -> Vec<(String, String)> {
    app_env(stack, secrets)
        .into_iter()
        .map(|v| (v.name, v.value))
        .collect()
}

/// What each service of the stack gets of [`derived_env`]: a bundled server
/// nothing (its own credentials reach it through its files), an app service
/// every variable unless its `secrets:` lists which secrets it may have —
/// then only those, and no variable that carries another one.
pub fn derived_envs(stack: &Stack, secrets: &Secrets) -> Vec<Vec<(String, String)>> {
    let vars = app_env(stack, secrets);
    stack
        .services
        .iter()
        .map(|svc| {
            if svc.bundled.is_some() {
                return Vec::new();
            }
            let listed = |secret: &String| {
                svc.secrets
                    .as_ref()
                    .is_some_and(|allowed| allowed.contains(secret))
            };
            vars.iter()
                .filter(|v| {
                    v.carries.as_ref().is_none_or(|secret| {
                        if v.name == *secret && server_password(stack, secret) {
                            listed(secret)
                        } else {
                            svc.secrets.is_none() || listed(secret)
                        }
                    })
                })
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect()
        })
        .collect()
}

/// Whether `name` is the password of one of the stack's bundled servers
/// (POSTGRES_PASSWORD, REDIS_PASSWORD). As a variable of its own it is
/// given only to a service whose `secrets:` lists it: DATABASE_URL and
/// REDIS_URL carry it already, and an app that needs no more should not
/// hold it loose in its environment (and pass it on to its children).
fn server_password(stack: &Stack, name: &str) -> bool {
    bundled_kinds(stack)
        .flat_map(|(_, b)| server(b.kind).secrets())
        .any(|s| !s.private && s.name == name)
}

/// Every variable of the apps' environment, with the secret it carries.
fn app_env(stack: &Stack, secrets: &Secrets) -> Vec<AppVar> {
    let mut vars: Vec<AppVar> = Vec::new();
    for (_, b) in bundled_kinds(stack) {
        vars.extend(server(b.kind).app_env(b, secrets));
    }
    if stack.services.iter().any(|s| s.bundled.is_some()) {
        vars.extend(product::app_env(stack));
    }
    let private = |name: &str| {
        SERVERS
            .iter()
            .flat_map(|s| s.secrets())
            .any(|n| n.private && n.name == name)
    };
    for (k, v) in secrets.pairs() {
        if !private(k) {
            vars.push(AppVar {
                name: k.clone(),
                value: v.clone(),
                carries: Some(k.clone()),
            });
        }
    }
    vars
}

/// A service's `secrets:` that the stack does not have, as an error naming
/// the service and the secrets it has.
pub fn check_service_secrets(stack: &Stack, specs: &[SecretSpec]) -> Result<(), Error> {
    for svc in &stack.services {
        for name in svc.secrets.iter().flatten() {
            if !specs.iter().any(|s| &s.name == name) {
                let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::config(format!(
                    "service `{}` lists secret `{name}` under `secrets:`, but the stack has no such secret",
                    svc.name
                ))
                .in_file(&stack.file)
                .help(format!(
                    "the stack's secrets are: {}; fix the name, or declare it under the top-level `secrets:`",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// The first service of each kind the stack has, in table order: the one
/// whose connection settings the apps get.
fn bundled_kinds(stack: &Stack) -> impl Iterator<Item = (&crate::config::Service, &Bundled)> {
    Kind::all().filter_map(|kind| stack.bundled(kind))
}

/// What pre-flight found, for `prepare`: one entry per service.
#[derive(Default)]
pub struct Located(Vec<Option<Found>>);

/// Checks made before anything is written: the data directory can be
/// written, has room and is reachable by the servers' users, the bundled
/// services' ports are free, their binaries exist and can open the existing
/// data, the secrets file is usable. Each failure is one error saying what to do.
pub fn preflight(
    stack: &Stack,
    data: &DataDir,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Located, Error> {
    // Whatever the stack: root is about to create and write under DATA.
    data.check_trusted()?;
    if !stack.services.iter().any(|s| s.bundled.is_some()) {
        return Ok(Located::default());
    }
    // First, before any server's pre-flight may fetch or create anything.
    for (_, b) in stack
        .services
        .iter()
        .filter_map(|s| Some((s, s.bundled.as_ref()?)))
    {
        server(b.kind).check_settings(b)?;
    }
    check_service_secrets(stack, &secret_specs(stack))?;
    let mut located = Located(stack.services.iter().map(|_| None).collect());
    check_data_dir(stack, data)?;
    for (svc, found) in stack.services.iter().zip(&mut located.0) {
        let Some(b) = &svc.bundled else { continue };
        for port in b.ports() {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                continue;
            }
            let holder = crate::os::procfs::port_holder(port)
                .map(|h| format!(" by {h}"))
                .unwrap_or_default();
            let key = if port == b.port { "port" } else { "ui_port" };
            return Err(Error::config(format!(
                "port {port} (service `{}`) is already in use{holder}",
                svc.name
            ))
            .help(format!(
                "stop what holds it, or set `{key}:` for `{}` in the stack file",
                svc.name
            )));
        }
        *found = Some(server(b.kind).preflight(b, svc.run_as.as_ref(), data)?);
    }
    secrets::check(data, &secret_specs(stack), env, &secret_dependents(data))?;
    Ok(located)
}

/// The data directory (or where it will be created) can be written, has
/// room, and the bundled servers' users can reach it: what `up` and
/// `restore` check before writing anything there.
pub fn check_data_dir(stack: &Stack, data: &DataDir) -> Result<(), Error> {
    let users: Vec<ServiceUser> = stack
        .services
        .iter()
        .filter(|s| s.bundled.is_some())
        .filter_map(|s| {
            s.run_as.as_ref().map(|user| ServiceUser {
                service: &s.name,
                user,
            })
        })
        .collect();
    Ok(data.preflight(&users)?)
}

/// The program a bundled service runs (`name`, described as `what`): the
/// service's `bin:`, else the first `name` in PATH that `user` (who the
/// service runs as) can execute; `install` says how to get it. As root, it
/// must be one no other user could have replaced ([`trusted`]).
pub(crate) fn find_program(
    bin: Option<&Path>,
    name: &str,
    what: &str,
    install: &str,
    user: Option<&RunAs>,
) -> Result<PathBuf, String> {
    let found = match bin {
        Some(bin) if bin.is_file() => {
            if let Some(why) = user.and_then(|u| not_runnable_by(bin, u)) {
                return Err(format!(
                    "the {what} binary {} (the service's `bin:`) cannot be run by its user: {why}; \
                     install it where that user can run it, or give `bin:` such a path",
                    bin.display()
                ));
            }
            bin.to_path_buf()
        }
        Some(bin) => {
            return Err(format!(
                "the {what} binary {} (the service's `bin:`) does not exist; fix the path, \
                 or remove `bin:` to use {name} from PATH",
                bin.display()
            ))
        }
        None => {
            let path = std::env::var("PATH").unwrap_or_default();
            // A binary its user cannot reach (pip's under /root, a pyenv
            // shim) is passed over for the next one in PATH, and named if
            // none is left: the service would only fail at exec.
            let mut passed_over = Vec::new();
            let found = path
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(name))
                .filter(|p| p.is_file())
                .find(|p| match user.and_then(|u| not_runnable_by(p, u)) {
                    Some(why) => {
                        passed_over.push(format!("{} ({why})", p.display()));
                        false
                    }
                    None => true,
                });
            match found {
                Some(p) => p,
                None if !passed_over.is_empty() => {
                    return Err(format!(
                        "the {what} (`{name}`) in PATH cannot be run by the service's user: {}; \
                         install it where that user can run it ({install}, as root, puts it under \
                         /usr/local or /opt) or set the service's `bin:` to such a path",
                        passed_over.join(", ")
                    ))
                }
                None => {
                    return Err(format!(
                    "the {what} (`{name}`) was not found in PATH ({path}); install it ({install}) \
                         or set the service's `bin:` to its path"
                ))
                }
            }
        }
    };
    trusted(&found)?;
    Ok(found)
}

/// Why `user` could not execute `program`, if it could not: every directory
/// on the way to it (and to what a symlink points at) must let the user
/// search it, and the file must be executable (and readable, as a script
/// must be) by the user's class — owner, one of its groups, or other.
fn not_runnable_by(program: &Path, user: &RunAs) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if user.uid.is_root() {
        return None;
    }
    let allows = |m: &std::fs::Metadata, bits: u32| {
        let class = if m.uid() == user.uid.as_raw() {
            6
        } else if m.gid() == user.gid.as_raw() || user.groups.iter().any(|g| g.as_raw() == m.gid())
        {
            3
        } else {
            0
        };
        (m.mode() >> class) & bits == bits
    };
    let real = std::fs::canonicalize(program).ok()?;
    for p in [program, real.as_path()] {
        for dir in p.ancestors().skip(1) {
            match std::fs::metadata(dir) {
                Ok(m) if allows(&m, 0o1) => {}
                Ok(m) => {
                    return Some(format!(
                        "`{}` cannot enter {} (mode {:04o}, uid {})",
                        user.name,
                        dir.display(),
                        m.mode() & 0o7777,
                        m.uid()
                    ))
                }
                Err(e) => return Some(format!("cannot inspect {}: {e}", dir.display())),
            }
        }
    }
    let m = std::fs::metadata(&real).ok()?;
    (!allows(&m, 0o5)).then(|| {
        format!(
            "`{}` cannot read and execute {} (mode {:04o}, uid {})",
            user.name,
            real.display(),
            m.mode() & 0o7777,
            m.uid()
        )
    })
}

/// What a probe's error says when another process holds the server's port.
pub const IMPOSTOR: &str = "is served by another process";

/// What a probe's error says when the server lacks something the stack
/// asks of it (a PostgreSQL extension that is not installed).
pub const NOT_INSTALLED: &str = "is not installed for";

/// Whether a probe's error will not go away by waiting, so that it is worth
/// a line at once rather than after the start period: someone else holds
/// the port, or something the stack asks for is not installed.
pub fn needs_an_operator(error: &str) -> bool {
    error.contains(IMPOSTOR) || error.contains(NOT_INSTALLED)
}

/// Before a probe sends credentials to 127.0.0.1:`port`: every socket that
/// takes connections there must belong to the service's own process `main`
/// or one of its descendants. A process of another user that bound the port
/// before the server (or beside it) gets nothing, and the error says who it is.
///
/// Where cogno cannot see into the service's descriptor table (root without
/// CAP_SYS_PTRACE, as in a container with docker's default capabilities,
/// and a server that dropped to its own user), the socket must at least
/// belong to the service's user: a process of that user could read the
/// server's data and credentials anyway.
pub fn check_listener(port: u16, main: Pid, server: &str) -> Result<(), String> {
    let sockets = procfs::loopback_listeners(port);
    if sockets.is_empty() {
        return Err(format!(
            "cannot connect to {server} on 127.0.0.1:{port}: nothing listens there yet"
        ));
    }
    let tree = procfs::process_tree(main);
    let blind = !procfs::fds_visible(main);
    let service_uid = procfs::uid_of(main);
    for socket in &sockets {
        let own = if blind {
            service_uid == Some(socket.uid)
        } else {
            procfs::holder_of(&socket.inode, tree.iter().copied()).is_some()
        };
        if !own {
            let who = procfs::holder_of(&socket.inode, procfs::all_pids())
                .map(|pid| format!("pid {pid}, `{}`", procfs::comm(pid)))
                .unwrap_or_else(|| {
                    format!("a process of uid {} cogno cannot see in /proc", socket.uid)
                });
            return Err(format!(
                "port {port} {IMPOSTOR} ({who}), not {server} (pid {main}): \
                 no credentials were sent to it; stop that process, or give `{server}` another `port:`"
            ));
        }
    }
    Ok(())
}

/// A command for one of the bundled servers' own tools (`postgres --version`,
/// `initdb`, `pg_config`…), run before the supervisor starts: with no
/// environment but PATH, so that nothing of cogno's own — secrets given to
/// it among them — reaches a program that needs none of it.
pub(crate) fn tool(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null());
    cmd
}

/// When cogno is root: `program` (after links) and its directory belong to
/// root and are writable by nobody else. A binary another user could
/// replace would otherwise have root start it for them — as root for the
/// moment before it drops to its user, and with its data.
pub(crate) fn trusted(program: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let real = std::fs::canonicalize(program)
        .map_err(|e| format!("cannot resolve {}: {e}", program.display()))?;
    let dir = real.parent().unwrap_or(Path::new("/"));
    for path in [real.as_path(), dir] {
        let m = std::fs::metadata(path)
            .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        let writable_by_others = m.mode() & 0o022 != 0 && !(m.is_dir() && m.mode() & 0o1000 != 0);
        if m.uid() != 0 || writable_by_others {
            return Err(format!(
                "{} belongs to uid {} with mode {:04o}: another user could replace {}, and cogno \
                 runs as root; give it to root and make it writable by root only \
                 (`chown root:root {} && chmod go-w {}`), or install the program where only root can write",
                path.display(),
                m.uid(),
                m.mode() & 0o7777,
                real.display(),
                path.display(),
                path.display()
            ));
        }
    }
    Ok(())
}

/// A process of a bundled server's own tools run for a backup or a restore
/// ([`tool`]) that dies with cogno: a `cogno backup` killed part-way leaves
/// no dump still being written behind it.
pub(crate) fn dies_with_cogno(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Runs `cmd` (described as `what`) to completion, its stderr captured:
/// an error with what it printed when it fails (for the caller to make an
/// `Error::new`: a failed step, exit status 1, not a refusal).
pub(crate) fn run_tool(cmd: &mut std::process::Command, what: &str) -> Result<(), String> {
    let out = dies_with_cogno(cmd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    ))
}

/// [`run_tool`], its standard output copied into `into` as it comes (a
/// dump streamed into a compressor). Its stderr is read meanwhile, on
/// another thread: a tool blocked on a full stderr pipe would never finish
/// its stdout.
pub(crate) fn run_tool_into(
    cmd: &mut std::process::Command,
    what: &str,
    into: &mut dyn std::io::Write,
) -> Result<(), String> {
    use std::io::Read;
    let mut child = dies_with_cogno(cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let (copied, errors) = std::thread::scope(|scope| {
        let errors = scope.spawn(move || {
            let mut text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.take(1 << 16).read_to_string(&mut text);
                // Whatever follows is drained, not kept.
                let _ = std::io::copy(e, &mut std::io::sink());
            }
            text
        });
        let copied = stdout
            .as_mut()
            .map_or(Ok(0), |out| std::io::copy(out, into));
        (copied, errors.join().unwrap_or_default())
    });
    if let Err(e) = copied {
        // The tool must not outlive a copy that failed (a full disk).
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("cannot store the output of {what}: {e}"));
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {what}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    Err(format!("{what} failed ({status}): {}", errors.trim_end()))
}

/// `cmd`'s output (as [`std::process::Command::output`]), its standard
/// input read from `input` by another thread meanwhile (a dump loaded as it
/// is decompressed).
pub(crate) fn output_fed(
    cmd: &mut std::process::Command,
    mut input: impl std::io::Read + Send,
) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take();
    std::thread::scope(|scope| {
        let feeding = scope.spawn(move || match stdin {
            // Dropping stdin at the end is the end of input for the tool.
            Some(mut stdin) => std::io::copy(&mut input, &mut stdin).map(drop),
            None => Ok(()),
        });
        let out = child.wait_with_output()?;
        match feeding.join() {
            // The tool stopped reading (it failed): its output says why.
            Ok(Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
            _ => Ok(out),
        }
    })
}

/// Creates the data directory `dir` of the bundled server `server` (0700).
pub(crate) fn create_server_dir(dir: &Path, server: &str) -> Result<(), String> {
    crate::datadir::files::create_private_dir(dir).map_err(|e| {
        format!(
            "cannot create {server}'s data directory {}: {e}; check that the data directory is writable",
            dir.display()
        )
    })
}

/// Numbered progress lines with the time since cogno started.
pub struct Progress {
    start: Instant,
    n: u32,
    /// Where each line goes too: the `cogno up --detach` waiting for this
    /// detached cogno (see `commands::detach`).
    mirror: Option<std::fs::File>,
}

impl Progress {
    pub fn new(start: Instant, mirror: Option<std::fs::File>) -> Progress {
        Progress {
            start,
            n: 0,
            mirror,
        }
    }

    pub fn step(&mut self, msg: impl std::fmt::Display) {
        use std::io::Write;
        self.n += 1;
        let line = format!(
            "[{} at {}] {msg}",
            self.n,
            crate::fmt::fmt_latency(self.start.elapsed())
        );
        if let Some(m) = &mut self.mirror {
            // The waiting process may have gone (--wait-timeout): not an error here.
            let _ = writeln!(m, "{line}");
        }
        info!("{line}");
    }
}

/// Prepares every bundled service's files (first run: creates them), fills
/// in its command and gives its probe its credentials. Runs before the
/// supervisor starts; blocking.
pub fn prepare(
    stack: &mut Stack,
    data: &DataDir,
    secrets: &Secrets,
    located: &Located,
    progress: &mut Progress,
) -> Result<Versions, Error> {
    let mut versions = Versions {
        postgres_major: None,
        temporal_cli: None,
    };
    auth_guard::use_dir(data.run_dir());
    for (i, svc) in stack.services.iter_mut().enumerate() {
        let Some(b) = &svc.bundled else {
            continue;
        };
        let server = server(b.kind);
        let found = located.0.get(i).and_then(Option::as_deref).ok_or_else(|| {
            format!(
                "internal error: `{}` was not checked by pre-flight",
                svc.name
            )
        })?;
        let started = Instant::now();
        let job = Job {
            bundled: b,
            data,
            run_as: svc.run_as.as_ref(),
            secrets,
        };
        let prepared = server.prepare(&job, found, &mut versions)?;
        progress.step(format!(
            "{}: {} (took {})",
            svc.name,
            prepared.progress,
            crate::fmt::fmt_latency(started.elapsed())
        ));
        for note in &prepared.notes {
            info!("{}: {note}", svc.name);
        }
        svc.command = prepared.command;
        arm_probe(svc, data, secrets);
    }
    Ok(versions)
}

/// Gives a bundled service's probe its credentials and where its files are.
fn arm_probe(svc: &mut Service, data: &DataDir, secrets: &Secrets) {
    let Some(b) = &svc.bundled else { return };
    let names = server(b.kind).secrets().iter().map(|n| n.name);
    if let Some(Health {
        probe:
            Probe::Bundled {
                credentials,
                data: probe_data,
                ..
            },
        ..
    }) = &mut svc.health
    {
        *credentials = secrets.credentials(names);
        *probe_data = Some(data.clone());
    }
}

/// Whether a reload may apply `new` to the running service `old` (same
/// name) when either is a bundled server: its files can be rendered again
/// and the server restarted over the data it has in use, unless the change
/// is to what that data belongs to — the kind, the program (another
/// PostgreSQL may be another major version, which cannot open the cluster),
/// the user owning the files — or its new settings are refused. The error
/// says what to do; nothing has been changed then.
pub fn live_change(old: &Service, new: &Service) -> Result<(), Error> {
    let full_restart = |why: String| {
        Error::config(format!(
            "`{}`: {why}; a running stack cannot take that change",
            new.name
        ))
        .help(
            "apply it with a full restart (`cogno down`, then `cogno up`), whose pre-flight \
             checks the server against its data; the running stack was not changed",
        )
    };
    let (was, now) = match (&old.bundled, &new.bundled) {
        (None, None) => return Ok(()),
        (Some(was), Some(now)) => (was, now),
        (Some(was), None) => {
            return Err(full_restart(format!(
                "it is no longer a bundled server (it was kind: {})",
                was.kind.name
            )))
        }
        (None, Some(now)) => {
            return Err(full_restart(format!(
                "it became a bundled server (kind: {})",
                now.kind.name
            )))
        }
    };
    let shown = |bin: &Option<PathBuf>| {
        bin.as_ref().map_or_else(
            || "unset, from PATH".to_owned(),
            |b| b.display().to_string(),
        )
    };
    // PostgreSQL's is a directory of programs.
    let key = if now.kind.keys.contains(&"bin_dir") {
        "bin_dir"
    } else {
        "bin"
    };
    if was.kind != now.kind {
        return Err(full_restart(format!(
            "its kind changed from {} to {}",
            was.kind.name, now.kind.name
        )));
    }
    if was.bin != now.bin {
        return Err(full_restart(format!(
            "its `{key}:` changed ({} → {}): another program may not open the data the \
             running one has in use",
            shown(&was.bin),
            shown(&now.bin)
        )));
    }
    if old.user != new.user {
        return Err(full_restart(format!(
            "its `user:` changed ({} → {}): its data belongs to the user it runs as",
            old.user.as_deref().unwrap_or("cogno's own"),
            new.user.as_deref().unwrap_or("cogno's own")
        )));
    }
    server(now.kind).check_settings(now).map_err(|e| {
        Error::config(format!("`{}`: {e}", new.name))
            .help("fix its `settings:`; the running stack was not changed")
    })
}

/// For a reload that changed the bundled server `new` (checked by
/// [`live_change`] against `old`, the running one): its files rendered
/// again from its new settings, its command and probe filled in as
/// [`prepare`] did at the start. Blocking, but files only.
pub fn reconfigure(
    new: &mut Service,
    old: &Service,
    data: &DataDir,
    secrets: &Secrets,
) -> Result<(), Error> {
    let Some(b) = &new.bundled else {
        return Ok(());
    };
    let program = old.command.first().ok_or_else(|| {
        Error::new(format!(
            "internal error: the running `{}` has no prepared command",
            old.name
        ))
    })?;
    let job = Job {
        bundled: b,
        data,
        run_as: new.run_as.as_ref(),
        secrets,
    };
    new.command = server(b.kind).reconfigure(&job, Path::new(program))?;
    arm_probe(new, data, secrets);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_root_a_program_another_user_could_replace_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = crate::testkit::TempDir::new("trusted");
        let prog = tmp.path().join("server");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        trusted(&prog).expect("root's 0755 program in root's 0755 directory");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = trusted(&prog).unwrap_err();
        assert!(
            err.contains("mode 0775") && err.contains("chmod go-w"),
            "{err}"
        );
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = trusted(&prog).unwrap_err();
        assert!(err.contains("mode 0777"), "{err}");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&prog, Some(65534), None).unwrap();
        let err = trusted(&prog).unwrap_err();
        assert!(err.contains("uid 65534"), "{err}");
    }

    /// A binary its service's user cannot reach (pip's under /root 0700, a
    /// pyenv shim) is named with the directory that stops it, and
    /// `find_program` passes over it for the next one in PATH.
    #[test]
    fn a_program_its_user_cannot_reach_is_told_apart() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        let nobody = RunAs::lookup("nobody").expect("the nobody user");
        let tmp = crate::testkit::TempDir::new("runnable");
        mode(tmp.path(), 0o755).unwrap();
        let (closed, open) = (tmp.path().join("closed"), tmp.path().join("open"));
        for (dir, m) in [(&closed, 0o700), (&open, 0o755)] {
            std::fs::create_dir(dir).unwrap();
            mode(dir, m).unwrap();
            std::fs::write(dir.join("server"), "#!/bin/sh\n").unwrap();
            mode(&dir.join("server"), 0o755).unwrap();
        }
        let why = not_runnable_by(&closed.join("server"), &nobody).expect("refused");
        assert!(
            why.contains(&format!("cannot enter {} (mode 0700", closed.display())),
            "{why}"
        );
        assert_eq!(not_runnable_by(&open.join("server"), &nobody), None);
        // A symlink is followed: its target's directories count too.
        std::os::unix::fs::symlink(closed.join("server"), open.join("link")).unwrap();
        assert!(not_runnable_by(&open.join("link"), &nobody).is_some());
        mode(&open.join("server"), 0o700).unwrap();
        let why = not_runnable_by(&open.join("server"), &nobody).expect("refused");
        assert!(why.contains("cannot read and execute"), "{why}");
        // Its own user, or root, may.
        let root = RunAs::lookup("root").unwrap();
        assert_eq!(not_runnable_by(&closed.join("server"), &root), None);
        // Given as `bin:`, the refusal says so and what to do.
        let err = find_program(
            Some(&closed.join("server")),
            "server",
            "test",
            "-",
            Some(&nobody),
        )
        .unwrap_err();
        assert!(err.contains("cannot be run by its user"), "{err}");
    }

    #[test]
    fn a_listener_outside_the_services_process_tree_is_named_and_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = nix::unistd::getpid();
        // This test's process holds the socket: as its own service, it passes.
        check_listener(port, me, "redis").unwrap();
        // A service that is some other process: the holder is named.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let err = check_listener(port, Pid::from_raw(other.id() as i32), "redis").unwrap_err();
        let _ = other.kill();
        let _ = other.wait();
        assert!(
            err.contains(&format!("port {port} {IMPOSTOR} (pid {me}, `"))
                && err.contains("not redis"),
            "{err}"
        );
        drop(listener);
        let err = check_listener(port, me, "redis").unwrap_err();
        assert!(err.contains("nothing listens"), "{err}");
    }

    #[test]
    fn every_kind_has_one_server_and_every_server_a_kind() {
        for kind in Kind::all() {
            assert_eq!(server(kind).name(), kind.name);
        }

        for s in SERVERS {
            assert!(Kind::find(s.name()).is_some(), "{} has no row", s.name());
        }
        assert_eq!(SERVERS.len(), Kind::all().count());
    }

    /// What a reload may apply to a running bundled server: new settings
    /// and ports, never another kind, program or user, nor settings its
    /// server refuses.
    #[test]
    fn a_live_bundled_server_takes_new_settings_but_not_another_identity() {
        let service = |yaml: &str| {
            let file = format!("services:\n  s: {yaml}\n");
            let stack = crate::config::parse(&file, Path::new("stack.yaml"), &|_| None)
                .unwrap_or_else(|e| panic!("{yaml}: {e}"));
            stack.services[0].clone()
        };
        let running = service("{kind: redis, port: 7001, settings: {maxmemory: 16mb}}");
        for ok in [
            "{kind: redis, port: 7001, settings: {maxmemory: 32mb}}",
            "{kind: redis, port: 7002}",
        ] {
            live_change(&running, &service(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (refused, why) in [
            (
                "{kind: postgres, port: 7001}",
                "its kind changed from redis to postgres",
            ),
            (
                "{kind: redis, port: 7001, bin: /opt/redis-server}",
                "its `bin:` changed (unset, from PATH → /opt/redis-server)",
            ),
            (
                "{command: [sleep, '1']}",
                "it is no longer a bundled server (it was kind: redis)",
            ),
            ("{kind: redis, port: 7001, settings: {port: 1}}", "`s`: "),
        ] {
            let e = live_change(&running, &service(refused)).expect_err(refused);
            assert!(e.message.contains(why), "{refused}: {e}");
            assert!(
                e.to_string().contains("the running stack was not changed"),
                "{e}"
            );
        }
        let app = service("{command: [sleep, '1']}");
        live_change(&app, &service("{command: [sleep, '2']}")).unwrap();
        let e = live_change(&app, &running).unwrap_err();
        assert!(e.message.contains("it became a bundled server"), "{e}");
    }

    #[test]
    fn apps_get_connection_settings_but_never_a_private_secret() {
        let yaml = "services:\n  db: {kind: postgres, port: 5999}\n  cache: {kind: redis}\n";
        let stack = crate::config::parse(yaml, Path::new("stack.yaml"), &|_| None).unwrap();
        let tmp = crate::testkit::TempDir::new("derived");
        let specs = secret_specs(&stack);
        let secrets = load_secrets(&stack, &DataDir::new(tmp.path()), &|_| None).unwrap();
        assert!(specs.iter().any(|s| s.name == "POSTGRES_ADMIN_PASSWORD"));
        let env = derived_env(&stack, &secrets);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names[..4],
            ["DATABASE_URL", "REDIS_URL", "NEXTAUTH_URL", "WEB_API_URL"]
        );
        assert!(
            env[0].1.ends_with("@127.0.0.1:5999/cognobserve"),
            "{}",
            env[0].1
        );
        assert!(!names.contains(&"POSTGRES_ADMIN_PASSWORD"), "{names:?}");

        let admin = secrets.get("POSTGRES_ADMIN_PASSWORD").unwrap();
        let credentials = secrets.credentials(["POSTGRES_PASSWORD", "POSTGRES_ADMIN_PASSWORD"]);
        assert_eq!(credentials.get("POSTGRES_ADMIN_PASSWORD"), admin);
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("POSTGRES_ADMIN_PASSWORD") && !shown.contains(admin),
            "{shown}"
        );
    }
}
