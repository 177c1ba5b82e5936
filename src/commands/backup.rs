//! `cogno backup`: one archive of a stack's data, taken in this process
//! from the running servers (through their own protocols and tools, with
//! the credentials in the data directory), never stopping them.
//! Why here rather than inside the running cogno: docs/architecture.md.
//!
//! A stopped stack is backed up the same way, from its bundled servers
//! alone, which this command starts for the purpose as a [`ChildStack`]
//! (a child `cogno up --for-backup SERVER…` on the data directory, no app
//! service) and stops again in order afterwards — also when the backup
//! fails or a stop signal comes (relayed to that stack, which stops).

use super::child_stack::{ChildStack, Launch};
use super::ephemeral::DEFAULT_WAIT;
use super::run::Relay;
use super::{data_dir, env_lookup, Outcome, StackArgs};
use crate::bundled::{self, Job};
use crate::config::{Kind, Selection, Stack};
use crate::control::client::{get_status, Failure};
use crate::control::{ServiceState, StackStatus};
use crate::datadir::archive::{self, Manifest, ServerEntry, Staging};
use crate::datadir::{files, DataDir, LAYOUT};
use crate::error::Error;
use crate::logfiles;
use crate::secrets;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: StackArgs,
    /// Where to write the archive: a file name ending in .tar.zst, or a
    /// directory (created if missing) to put cogno-backup-<time>.tar.zst in
    /// [default: DATA/backups]
    #[arg(long, value_name = "PATH")]
    pub to: Option<PathBuf>,
    /// Leave the secrets file out: an archive safe to hand on (restoring it generates new secrets)
    #[arg(long)]
    pub exclude_secrets: bool,
    /// With the stack stopped: give up when the servers started for the backup are not ready after this long (`90s`, `5m`)
    #[arg(long, value_name = "D", value_parser = crate::config::parse_duration, default_value = DEFAULT_WAIT)]
    pub wait_timeout: std::time::Duration,
}

pub fn run(args: BackupArgs) -> Outcome {
    let started = Instant::now();
    // Before any thread or tool starts, so that they all inherit it.
    crate::os::limits::background_priority();
    let stack = args.target.config.load()?;
    let data = data_dir(&args.target, &stack);
    data.check_usable()?;
    one_of_each_kind(&stack)?;
    let target = match get_status(&data.socket()) {
        Ok(status) => {
            check_running(&stack, &status)?;
            take(&args, &stack, &data, &|| None)?
        }
        Err(Failure::NotRunning(..)) => stopped(&args, &stack, &data)?,
        Err(f) => {
            let why = Error::from(f).message;
            return Err(
                Error::new(format!("cannot back up {}: {why}", data.root().display()))
                    .help("`cogno status` shows whether a stack runs there"),
            );
        }
    };
    eprintln!(
        "cogno backup: done in {}",
        crate::fmt::fmt_latency(started.elapsed())
    );
    println!("{}", target.display());
    Ok(0)
}

/// Takes the backup from the running servers; the archive's path. When
/// `interrupted` names a stop signal once the servers are copied, nothing
/// is packed: the copies may have raced the servers' stop, and a stop
/// asked for is a backup abandoned, whichever finished first.
fn take(
    args: &BackupArgs,
    stack: &Stack,
    data: &DataDir,
    interrupted: &dyn Fn() -> Option<i32>,
) -> Result<PathBuf, Error> {
    let started = Instant::now();
    let now = SystemTime::now();
    let secrets = secrets::read(data, &bundled::secret_specs(stack), &env_lookup)?;
    let target = target(args.to.as_deref(), data, now)?;
    let staging = Staging::new(&target)?;
    let servers = copy_servers(stack, data, &secrets, &staging);
    if let Some(sig) = interrupted() {
        return Err(interrupted_by(sig));
    }
    let servers = servers?;
    staging.add_data_dir(data, !args.exclude_secrets)?;
    if let (Ok(bytes), Some(name)) = (std::fs::read(&stack.file), stack.file.file_name()) {
        staging.add_file(&Path::new("stack").join(name), &bytes)?;
    }
    let created_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let manifest = staging.finish(Manifest {
        format: archive::FORMAT,
        cogno: env!("CARGO_PKG_VERSION").to_owned(),
        created_unix,
        created: crate::fmt::rfc3339(now),
        layout: data.layout_version()?.unwrap_or(LAYOUT),
        secrets_included: !args.exclude_secrets,
        servers,
        members: Vec::new(),
    })?;
    let size = std::fs::metadata(&target).map_or(0, |m| m.len());
    eprintln!(
        "cogno backup: {} members, {} KiB, checked (took {}){}",
        manifest.members.len(),
        size >> 10,
        crate::fmt::fmt_latency(started.elapsed()),
        if args.exclude_secrets {
            "; without the secrets file"
        } else {
            "; it holds the stack's secrets: keep it private"
        }
    );
    Ok(target)
}

/// Each bundled server's copy, all at once: they read from different
/// servers, and Redis's snapshot waits `repl-diskless-sync-delay` (5 s) on
/// the server's side, which then hides behind PostgreSQL's dump. The first
/// failure is returned once every copy has ended (each writes only in its
/// own staging part, which the staging directory's removal takes along).
/// Each copy waits for its tools on the thread that started them: their
/// parent-death signal ([`bundled::dies_with_cogno`]) follows that thread.
fn copy_servers(
    stack: &Stack,
    data: &DataDir,
    secrets: &secrets::Secrets,
    staging: &Staging,
) -> Result<Vec<ServerEntry>, Error> {
    let parts: Vec<_> = Kind::all()
        .filter_map(|kind| stack.bundled(kind))
        .map(|(svc, b)| Ok((svc, b, staging.part(b.kind.name)?)))
        .collect::<Result<_, Error>>()?;
    std::thread::scope(|scope| {
        let copies: Vec<_> = parts
            .iter()
            .map(|(svc, b, part)| {
                scope.spawn(move || {
                    let t = Instant::now();
                    let job = Job {
                        bundled: b,
                        data,
                        run_as: svc.run_as.as_ref(),
                        secrets,
                    };
                    let version = bundled::server(b.kind).backup(&job, part)?;
                    eprintln!(
                        "cogno backup: {} ({} {version}) copied (took {})",
                        svc.name,
                        b.kind.name,
                        crate::fmt::fmt_latency(t.elapsed())
                    );
                    Ok(ServerEntry {
                        kind: b.kind.name.to_owned(),
                        service: svc.name.clone(),
                        version,
                    })
                })
            })
            .collect();
        // Joined in the stack's order, so the manifest lists them so.
        copies
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap_or_else(|_| Err(Error::new("a server's copy panicked")))
            })
            .collect()
    })
}

/// Backs up a stopped stack: starts its bundled servers alone, takes the
/// backup, stops them again (whatever happened); the archive's path.
fn stopped(args: &BackupArgs, stack: &Stack, data: &DataDir) -> Result<PathBuf, Error> {
    // Nothing to start a server on: refused before anything is written.
    if !data.created_stamp().exists() {
        return Err(Error::config(format!(
            "cannot back up {}: no stack has run there (it has no {})",
            data.root().display(),
            data.created_stamp().display()
        ))
        .help(
            "check that --data (or $COGNO_DATA_DIR, or `data_dir:` in the stack file) names the \
             data directory of the stack to back up; a stack that never ran has no data to back up",
        ));
    }
    let servers = servers_alone(stack)?;
    if servers.is_empty() {
        return take(args, stack, data, &|| None);
    }
    // From here on a stop signal stops the servers in order (relayed to
    // their cogno) and fails the backup, rather than ending this process.
    let relay = Relay::start()?;
    // No cogno runs here: what a killed one left running (a killed
    // backup's servers too) goes first, said here rather than in the log.
    for line in crate::leftovers::stop(data) {
        eprintln!("cogno backup: {line}");
    }
    let list = servers.join(", ");
    eprintln!(
        "cogno backup: the stack is stopped: starting {list} for the backup (no other service), \
         output in {}",
        data.logs().join(logfiles::OWN_FILE).display()
    );
    let t = Instant::now();
    let log = logfiles::open_own(data).map_err(|e| {
        Error::new(format!(
            "cannot open cogno's log file in {}: {e}",
            data.logs().display()
        ))
    })?;
    let launch = Launch {
        name: "the servers started for the backup",
        aftermath: "nothing was backed up; whatever of them had started is stopped again"
            .to_owned(),
        target: &args.target,
        data: data.clone(),
        log,
        log_path: data.logs().join(logfiles::OWN_FILE),
        up_args: vec!["--for-backup".to_owned()],
        services: &servers,
        timeout: args.wait_timeout,
    };
    let taken = ChildStack::start(launch, &relay).and_then(|mut child| {
        eprintln!(
            "cogno backup: {list} ready (took {})",
            crate::fmt::fmt_latency(t.elapsed())
        );
        let taken = take(args, stack, data, &|| relay.received());
        let exit = child.stop().filter(|s| !s.success());
        eprintln!(
            "cogno backup: stopped {list} again{}",
            exit.map(|s| format!(
                " (their cogno ended with {s}; its output is in {})",
                data.logs().display()
            ))
            .unwrap_or_default()
        );
        taken
    });
    match (taken, relay.received()) {
        (Err(_), Some(sig)) => Err(interrupted_by(sig)),
        (taken, _) => taken,
    }
}

fn interrupted_by(sig: i32) -> Error {
    let name = nix::sys::signal::Signal::try_from(sig).map_or("a signal", |s| s.as_str());
    Error::new(format!("interrupted by {name}: no archive was written"))
        .help("the servers started for the backup are stopped again; run `cogno backup` again")
        .status(128 + sig)
}

/// The bundled servers of `stack` by name, which a backup of the stopped
/// stack starts: refused if they need any other service.
fn servers_alone(stack: &Stack) -> Result<Vec<String>, Error> {
    let named: Vec<usize> = (0..stack.services.len())
        .filter(|&i| stack.services[i].bundled.is_some())
        .collect();
    let needs_other = Selection::new(&stack.services, &named, Vec::new())
        .map(|s| {
            stack
                .services
                .iter()
                .zip(&s.chosen)
                .find(|(svc, &chosen)| chosen && svc.bundled.is_none())
                .map(|(svc, _)| svc.name.clone())
        })
        .unwrap_or_else(|e| Some(stack.services[e.on].name.clone()));
    if let Some(other) = needs_other {
        return Err(Error::config(format!(
            "cannot back up the stopped stack: its bundled servers depend on `{other}`, which is \
             not one, and a backup of a stopped stack starts the bundled servers alone"
        ))
        .help("start the stack with `cogno up`, then run `cogno backup` against it"));
    }
    Ok(named
        .into_iter()
        .map(|i| stack.services[i].name.clone())
        .collect())
}

/// Every bundled server the stack has is running in `status`.
fn check_running(stack: &Stack, status: &StackStatus) -> Result<(), Error> {
    for (svc, _) in Kind::all().filter_map(|kind| stack.bundled(kind)) {
        let state = status
            .services
            .iter()
            .find(|s| s.name == svc.name)
            .map(|s| s.state);
        if state != Some(ServiceState::Running) {
            return Err(Error::config(format!(
                "cannot back up: service `{}` is {} rather than running",
                svc.name,
                state.map_or_else(|| "unknown to the running cogno".to_owned(), |s| format!("{s:?}").to_lowercase())
            ))
            .help("wait until `cogno status` shows it running (or start it with `cogno start`), then back up again"));
        }
    }
    Ok(())
}

/// One service of each bundled kind at most: the archive has one place for each.
fn one_of_each_kind(stack: &Stack) -> Result<(), Error> {
    let more = stack
        .services
        .iter()
        .filter_map(|s| s.bundled.as_ref())
        .filter(|b| {
            stack
                .bundled(b.kind)
                .is_some_and(|(_, first)| !std::ptr::eq(first, *b))
        })
        .map(|b| b.kind.name)
        .next();
    if let Some(kind) = more {
        return Err(Error::config(format!(
            "the stack has more than one `kind: {kind}` service; `cogno backup` handles one of each kind"
        )));
    }
    Ok(())
}

/// The archive's path: `to` itself when it names a `.tar.zst` file, else
/// cogno-backup-<time>.tar.zst in the directory `to` names (DATA/backups
/// by default), created private if missing. `--to /backups` thus never
/// becomes an archive called `backups`.
fn target(to: Option<&Path>, data: &DataDir, now: SystemTime) -> Result<PathBuf, Error> {
    let name = format!(
        "{}{}{}",
        archive::DEFAULT_PREFIX,
        crate::fmt::file_stamp(now),
        archive::DEFAULT_SUFFIX
    );
    let dir = match to {
        Some(p) if p.is_dir() => return Ok(p.join(name)),
        Some(p) if p.to_string_lossy().ends_with(archive::DEFAULT_SUFFIX) => {
            return Ok(p.to_path_buf())
        }
        Some(p) => p.to_path_buf(),
        None => data.backups(),
    };
    files::create_private_dir(&dir).map_err(|e| {
        Error::config(format!(
            "cannot create the directory {}: {e}",
            dir.display()
        ))
        .help("pass --to with a writable directory, or a file name ending in .tar.zst")
    })?;
    Ok(dir.join(name))
}
