//! Bundled infrastructure: PostgreSQL, Redis and Temporal run by cogno from
//! `kind:` alone. Each is a [`Server`] in its own file, listed once in
//! [`SERVERS`]; its static facts (default port, user, priority…) are its row
//! in `config::kinds::KINDS`. This module is what they share: the secrets
//! they need, the environment handed to the app services, the pre-flight
//! checks made before anything is written and the first-run preparation
//! (with numbered progress lines). The data directory itself (its layout,
//! its own checks, its stamps) is [`crate::datadir`]'s. The CognObserve
//! product's own defaults are in [`product`].

pub mod postgres;
pub mod product;
pub mod redis;
pub mod temporal;
#[cfg(test)]
mod test_support;

use crate::config::{Bundled, Health, Kind, Probe, Stack};
use crate::datadir::{DataDir, ServiceUser, Versions};
use crate::error::Error;
use crate::secrets::{self, Credentials, SecretSpec, Secrets};
use crate::user::RunAs;
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
    fn app_env(&self, b: &Bundled, secrets: &Secrets) -> Vec<(String, String)>;

    /// Its pre-flight check, reading only: its program exists and can open
    /// the data an earlier run left in `data`. What it found goes to `prepare`.
    fn preflight(&self, b: &Bundled, data: &DataDir) -> Result<Found, Error>;

    /// Creates (first run) or updates its files and builds its command.
    /// Blocking, before the supervisor starts; it may wait for processes it
    /// runs, so never call it while the reaper runs.
    fn prepare(
        &self,
        job: &Job,
        found: &dyn Any,
        versions: &mut Versions,
    ) -> Result<Prepared, Error>;

    /// Its health check, in its own protocol, logging in with `credentials`
    /// (its [`Server::secrets`]).
    fn probe<'a>(&'a self, b: &'a Bundled, credentials: &'a Credentials) -> ProbeFuture<'a>;

    /// Where it is, for the ready banner (never a secret).
    fn banner(&self, b: &Bundled) -> String;
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

/// The connection settings the app services get, derived from the bundled
/// services' actual settings and the secrets (all but the servers' private
/// ones). Services' own and cogno's environment win.
pub fn derived_env(stack: &Stack, secrets: &Secrets) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (_, b) in bundled_kinds(stack) {
        env.extend(server(b.kind).app_env(b, secrets));
    }
    if stack.services.iter().any(|s| s.bundled.is_some()) {
        env.extend(product::app_env());
    }
    let private = |name: &str| {
        SERVERS
            .iter()
            .flat_map(|s| s.secrets())
            .any(|n| n.private && n.name == name)
    };
    for (k, v) in secrets.pairs() {
        if !private(k) {
            env.push((k.clone(), v.clone()));
        }
    }
    env
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
pub fn preflight(stack: &Stack, data: &DataDir) -> Result<Located, Error> {
    if !stack.services.iter().any(|s| s.bundled.is_some()) {
        return Ok(Located::default());
    }
    let mut located = Located(stack.services.iter().map(|_| None).collect());
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
    data.preflight(&users)?;
    for (svc, found) in stack.services.iter().zip(&mut located.0) {
        let Some(b) = &svc.bundled else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", b.port)).is_err() {
            let holder = crate::os::procfs::port_holder(b.port)
                .map(|h| format!(" by {h}"))
                .unwrap_or_default();
            return Err(Error::config(format!(
                "port {} (service `{}`) is already in use{holder}",
                b.port, svc.name
            ))
            .help(format!(
                "stop what holds it, or set `port:` for `{}` in the stack file",
                svc.name
            )));
        }
        *found = Some(server(b.kind).preflight(b, data)?);
    }
    secrets::check_existing(data)?;
    Ok(located)
}

/// The program a bundled service runs (`name`, described as `what`): the
/// service's `bin:`, else the first `name` in PATH; `install` says how to get it.
pub(crate) fn find_program(
    bin: Option<&Path>,
    name: &str,
    what: &str,
    install: &str,
) -> Result<PathBuf, String> {
    if let Some(bin) = bin {
        return if bin.is_file() {
            Ok(bin.to_path_buf())
        } else {
            Err(format!(
                "the {what} binary {} (the service's `bin:`) does not exist; fix the path, \
                 or remove `bin:` to use {name} from PATH",
                bin.display()
            ))
        };
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "the {what} (`{name}`) was not found in PATH ({path}); install it ({install}) \
                 or set the service's `bin:` to its path"
            )
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
}

impl Progress {
    pub fn new(start: Instant) -> Progress {
        Progress { start, n: 0 }
    }

    pub fn step(&mut self, msg: impl std::fmt::Display) {
        self.n += 1;
        info!(
            "[{} at {}] {msg}",
            self.n,
            crate::fmt::fmt_latency(self.start.elapsed())
        );
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
        if let Some(Health {
            probe: Probe::Bundled { credentials, .. },
            ..
        }) = &mut svc.health
        {
            *credentials = secrets.credentials(server.secrets().iter().map(|n| n.name));
        }
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn apps_get_connection_settings_but_never_a_private_secret() {
        let yaml = "services:\n  db: {kind: postgres, port: 5999}\n  cache: {kind: redis}\n";
        let stack = crate::config::parse(yaml, Path::new("stack.yaml"), &|_| None).unwrap();
        let tmp = crate::testkit::TempDir::new("derived");
        let specs = secret_specs(&stack);
        let secrets =
            secrets::load_or_create(&DataDir::new(tmp.path()), &specs, &|_| None).unwrap();
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
