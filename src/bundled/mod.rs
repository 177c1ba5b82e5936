//! Bundled infrastructure: PostgreSQL, Redis and Temporal run by cogno from
//! `kind:` alone. This module is what they share: the secrets they need, the
//! environment handed to the app services, the pre-flight checks made before
//! anything is written, the first-run preparation (with numbered progress
//! lines).

pub mod postgres;
pub mod redis;
pub mod temporal;
#[cfg(test)]
mod test_support;

use crate::config::{Kind, Stack};
use crate::datadir::{DataDir, ServiceUser, Versions};
use crate::error::Error;
use crate::secrets::{self, SecretSpec, Secrets};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::info;

/// The superuser password of the bundled PostgreSQL (cogno's own use only).
pub const POSTGRES_ADMIN_PASSWORD: &str = "POSTGRES_ADMIN_PASSWORD";
/// The role and database the app gets.
pub const APP_DB: &str = "cognobserve";

/// The secrets this stack uses: those the file declares, else the CognObserve
/// set when it has bundled services, plus what the bundled services need.
pub fn secret_specs(stack: &Stack) -> Vec<SecretSpec> {
    let has_bundled = stack.services.iter().any(|s| s.bundled.is_some());
    let mut specs = match &stack.secrets {
        Some(declared) => declared.clone(),
        None if has_bundled => secrets::cognobserve_defaults(),
        None => Vec::new(),
    };
    let mut need = |name: &str, bytes| {
        if !specs.iter().any(|s| s.name == name) {
            specs.push(SecretSpec {
                name: name.to_owned(),
                bytes,
                encoding: secrets::Encoding::Hex,
            });
        }
    };
    if stack.bundled(Kind::Postgres).is_some() {
        need("POSTGRES_PASSWORD", 16);
        need(POSTGRES_ADMIN_PASSWORD, 16);
    }
    if stack.bundled(Kind::Redis).is_some() {
        need("REDIS_PASSWORD", 16);
    }
    specs
}

/// The connection settings the app services get, derived from the bundled
/// services' actual settings (change the postgres port and DATABASE_URL
/// follows), and the secrets. Services' own and cogno's environment win.
pub fn derived_env(stack: &Stack, secrets: &Secrets) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let secret = |name: &str| secrets.get(name).unwrap_or_default().to_owned();
    if let Some((_, pg)) = stack.bundled(Kind::Postgres) {
        env.push((
            "DATABASE_URL".into(),
            format!(
                "postgresql://{APP_DB}:{}@127.0.0.1:{}/{APP_DB}",
                secret("POSTGRES_PASSWORD"),
                pg.port
            ),
        ));
    }
    if let Some((_, r)) = stack.bundled(Kind::Redis) {
        env.push((
            "REDIS_URL".into(),
            format!("redis://:{}@127.0.0.1:{}", secret("REDIS_PASSWORD"), r.port),
        ));
    }
    if let Some((_, t)) = stack.bundled(Kind::Temporal) {
        env.push(("TEMPORAL_ADDRESS".into(), format!("127.0.0.1:{}", t.port)));
        env.push(("TEMPORAL_NAMESPACE".into(), t.namespace.clone()));
        env.push(("TEMPORAL_TASK_QUEUE".into(), "cognobserve-tasks".into()));
    }
    if stack.services.iter().any(|s| s.bundled.is_some()) {
        env.push(("NEXTAUTH_URL".into(), "http://localhost:3000".into()));
        env.push(("WEB_API_URL".into(), "http://127.0.0.1:3000".into()));
    }
    for (k, v) in secrets.pairs() {
        if k != POSTGRES_ADMIN_PASSWORD {
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

/// What pre-flight found, for `prepare`.
#[derive(Default)]
pub struct Located {
    postgres: Option<postgres::Binaries>,
}

/// Checks made before anything is written: the data directory can be
/// written, has room and is reachable by the servers' users, the bundled
/// services' ports are free, their binaries exist and can open the existing
/// data, the secrets file is usable. Each failure is one error saying what to do.
pub fn preflight(stack: &Stack, data: &DataDir) -> Result<Located, Error> {
    let mut located = Located::default();
    if !stack.services.iter().any(|s| s.bundled.is_some()) {
        return Ok(located);
    }
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
    for svc in &stack.services {
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
        match b.kind {
            Kind::Postgres => {
                let bins = postgres::locate(b.bin.as_deref(), &data.postgres_bin_cache())
                    .map_err(Error::config)?;
                postgres::check_existing(&data.postgres(), &bins).map_err(Error::config)?;
                located.postgres = Some(bins);
            }
            Kind::Redis => redis::check(b.bin.as_deref()).map_err(Error::config)?,
            Kind::Temporal => {
                temporal::check(&data.temporal(), b.bin.as_deref()).map_err(Error::config)?
            }
        }
    }
    secrets::check_existing(data).map_err(|e| Error::config(e.0))?;
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

/// Prepares every bundled service's files (first run: creates them) and
/// fills in its command. Runs before the supervisor starts; blocking.
pub fn prepare(
    stack: &mut Stack,
    data: &DataDir,
    secrets: &Secrets,
    located: &Located,
    progress: &mut Progress,
) -> Result<Versions, String> {
    let mut versions = Versions {
        postgres_major: None,
        temporal_cli: None,
    };
    for svc in &mut stack.services {
        let Some(b) = svc.bundled.clone() else {
            continue;
        };
        let run_as = svc.run_as.clone();
        let started = Instant::now();
        let took = || crate::fmt::fmt_latency(started.elapsed());
        match b.kind {
            Kind::Postgres => {
                let bins = located
                    .postgres
                    .clone()
                    .ok_or("internal error: PostgreSQL was not located during pre-flight")?;
                let cluster = data.postgres();
                let prepared = postgres::prepare(&postgres::Setup {
                    cluster: &cluster,
                    socket_dir: &data.postgres_sockets(),
                    port: b.port,
                    bins: &bins,
                    settings: &b.settings,
                    run_as: run_as.as_ref(),
                    admin_password: secrets.get(POSTGRES_ADMIN_PASSWORD).unwrap_or_default(),
                })?;
                progress.step(format!(
                    "{}: PostgreSQL {} {} in {} (took {})",
                    svc.name,
                    bins.version,
                    if prepared.initialized {
                        "cluster created"
                    } else {
                        "cluster found"
                    },
                    cluster.display(),
                    took()
                ));
                if prepared.removed_stale_pid {
                    info!(
                        "{}: removed a stale postmaster.pid left by an unclean stop",
                        svc.name
                    );
                }
                versions.postgres_major = Some(bins.major);
                svc.command = prepared.command;
            }
            Kind::Redis => {
                let dir = data.redis();
                svc.command = redis::prepare(&redis::Setup {
                    dir: &dir,
                    port: b.port,
                    password: secrets.get("REDIS_PASSWORD").unwrap_or_default(),
                    bin: b.bin.as_deref(),
                    settings: &b.settings,
                    run_as: run_as.as_ref(),
                })?;
                progress.step(format!(
                    "{}: redis.conf written in {} (took {})",
                    svc.name,
                    dir.display(),
                    took()
                ));
            }
            Kind::Temporal => {
                let dir = data.temporal();
                svc.command = temporal::prepare(&temporal::Setup {
                    dir: &dir,
                    port: b.port,
                    bin: b.bin.as_deref(),
                    namespace: &b.namespace,
                    run_as: run_as.as_ref(),
                })?;
                versions.temporal_cli = std::fs::read_to_string(dir.join("cli-version"))
                    .ok()
                    .map(|v| v.trim().to_owned());
                progress.step(format!(
                    "{}: Temporal dev server in {} (took {})",
                    svc.name,
                    dir.display(),
                    took()
                ));
            }
        }
    }
    Ok(versions)
}
