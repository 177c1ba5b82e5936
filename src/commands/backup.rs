//! `cogno backup`: one archive of a running stack's data, taken in this
//! process from the running servers (through their own protocols and tools,
//! with the credentials in the data directory), never stopping them.
//! Why here rather than inside the running cogno: docs/architecture.md.

use super::{data_dir, env_lookup, Outcome, StackArgs};
use crate::bundled::{self, Job};
use crate::config::{Kind, Stack};
use crate::control::client::get_status;
use crate::control::ServiceState;
use crate::datadir::archive::{self, Manifest, ServerEntry, Staging};
use crate::datadir::{files, DataDir, LAYOUT};
use crate::error::Error;
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
}

pub fn run(args: BackupArgs) -> Outcome {
    let started = Instant::now();
    let now = SystemTime::now();
    let stack = args.target.config.load()?;
    let data = data_dir(&args.target, &stack);
    data.check_usable()?;
    check_running(&stack, &data)?;
    let secrets = secrets::read(&data, &bundled::secret_specs(&stack), &env_lookup)?;
    let target = target(args.to.as_deref(), &data, now)?;
    let staging = Staging::new(&target)?;
    let servers = copy_servers(&stack, &data, &secrets, &staging)?;
    staging.add_data_dir(&data, !args.exclude_secrets)?;
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
    println!("{}", target.display());
    Ok(0)
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

/// The stack runs on `data` (its control socket answers) and every bundled
/// server it has is running: the backup reads from them.
fn check_running(stack: &Stack, data: &DataDir) -> Result<(), Error> {
    let status = get_status(&data.socket()).map_err(|f| {
        let why = Error::from(f).message;
        Error::config(format!("cannot back up {}: {why}", data.root().display())).help(
            "`cogno backup` copies from the running servers: start the stack with `cogno up` \
             first (backing up a stopped stack is not implemented yet, see docs/backup.md)",
        )
    })?;
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
    let name = format!("cogno-backup-{}.tar.zst", crate::fmt::file_stamp(now));
    let dir = match to {
        Some(p) if p.is_dir() => return Ok(p.join(name)),
        Some(p) if p.to_string_lossy().ends_with(".tar.zst") => return Ok(p.to_path_buf()),
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
