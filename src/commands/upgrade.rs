//! `cogno upgrade postgres`: the stopped stack's PostgreSQL cluster moved to
//! the major version of the binaries cogno would use (or back again, with
//! --rollback), and `cogno up`'s COGNO_PG_UPGRADE=auto, which runs the same
//! upgrade before starting. The steps and their crash safety are
//! `bundled::postgres::upgrade`'s; this file finds the stack, the secrets
//! and the backup, and tells the user what happened.

use super::{data_dir, env_lookup, Outcome, StackArgs};
use crate::bundled::postgres::upgrade::{self, Options, Upgraded};
use crate::bundled::Job;
use crate::config::{Kind, Stack};
use crate::control;
use crate::datadir::{files, DataDir};
use crate::error::Error;
use crate::secrets;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct UpgradeArgs {
    /// What to upgrade (only `postgres` for now)
    #[arg(value_enum)]
    pub what: What,
    #[command(flatten)]
    pub target: StackArgs,
    /// The old major's bin directory [default: found like cogno finds binaries, for the cluster's major]
    #[arg(long, value_name = "DIR", conflicts_with = "rollback")]
    pub from_bin_dir: Option<PathBuf>,
    /// pg_upgrade --link: near-instant and little extra space, but the old cluster cannot be started again (no --rollback)
    #[arg(long, conflicts_with = "rollback")]
    pub link: bool,
    /// Take no backup first (only if you have one of your own)
    #[arg(long, conflicts_with = "rollback")]
    pub no_backup: bool,
    /// Put the old cluster back in place and the upgraded one aside
    #[arg(long)]
    pub rollback: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum What {
    Postgres,
}

pub fn run(args: UpgradeArgs) -> Outcome {
    let What::Postgres = args.what;
    let stack = args.target.config.load()?;
    let data = data_dir(&args.target, &stack);
    // A running stack has the cluster open: it must be stopped first.
    control::server::check_not_running(&data).map_err(|e| {
        Error::from(e).help("stop it first (`cogno down`), then run `cogno upgrade postgres` again")
    })?;
    data.check_usable()?;
    if args.rollback {
        let done = upgrade::rollback(&data)?;
        eprintln!(
            "cogno upgrade: rolled back: {} is the PostgreSQL {} cluster again; the upgraded one is kept in {}",
            done.cluster.display(),
            done.from,
            done.aside.display()
        );
        eprintln!(
            "  start it with PostgreSQL {}'s binaries: set `bin_dir: {}` under the postgres \
             service (cogno otherwise picks the newest installation), then `cogno up`",
            done.from,
            done.from_bin.display()
        );
        eprintln!(
            "  once satisfied, delete the upgraded cluster: rm -rf {}",
            done.aside.display()
        );
        return Ok(0);
    }
    let backup = || backup_stopped(&data);
    let opts = Options {
        from_bin_dir: args.from_bin_dir.as_deref(),
        link: args.link,
        backup: (!args.no_backup).then_some(&backup as &dyn Fn() -> Result<PathBuf, Error>),
    };
    with_job(&stack, &data, |job| report(upgrade::upgrade(job, &opts)?))?;
    Ok(0)
}

/// `cogno up` with COGNO_PG_UPGRADE=auto: the upgrade, with a backup and
/// without --link, when the cluster is older than the binaries (or an
/// upgrade was interrupted). Any other value but `off` is refused.
pub fn auto(stack: &Stack, data: &DataDir) -> Result<(), Error> {
    match env_lookup("COGNO_PG_UPGRADE").as_deref() {
        None | Some("") | Some("off") => return Ok(()),
        Some("auto") => {}
        Some(other) => {
            return Err(Error::config(format!(
                "COGNO_PG_UPGRADE is {}, which cogno does not know",
                files::shown(other)
            ))
            .help("set it to `auto` (upgrade PostgreSQL's cluster on start when the binaries are a newer major) or `off` (the default)"))
        }
    }
    // The variable is the image's: a stack of its own without PostgreSQL starts as ever.
    let Some((_, bundled)) = Kind::find("postgres").and_then(|k| stack.bundled(k)) else {
        return Ok(());
    };
    // Decided before the secrets are read: a fresh data directory has
    // neither a cluster nor secrets yet (`cogno up` generates them later).
    if !upgrade::wanted(bundled, data)? {
        return Ok(());
    }
    with_job(stack, data, |job| {
        eprintln!("cogno: COGNO_PG_UPGRADE=auto: upgrading the PostgreSQL cluster before starting");
        let backup = || backup_stopped(data);
        let opts = Options {
            from_bin_dir: None,
            link: false,
            backup: Some(&backup),
        };
        report(upgrade::upgrade(job, &opts)?)
    })
}

/// Runs `f` with the stack's postgres service as a job; nothing to do for a
/// stack without one.
fn with_job(
    stack: &Stack,
    data: &DataDir,
    f: impl FnOnce(&Job) -> Result<(), Error>,
) -> Result<(), Error> {
    let postgres = Kind::find("postgres").and_then(|k| stack.bundled(k));
    let Some((svc, b)) = postgres else {
        return Err(Error::config(format!(
            "the stack in {} has no `kind: postgres` service: there is no PostgreSQL cluster to upgrade",
            stack.file.display()
        )));
    };
    // Root is about to create and move directories under DATA.
    data.check_trusted()?;
    let secrets = secrets::read(data, &crate::bundled::secret_specs(stack), &env_lookup)?;
    f(&Job {
        bundled: b,
        data,
        run_as: svc.run_as.as_ref(),
        secrets: &secrets,
    })
}

fn report(done: Upgraded) -> Result<(), Error> {
    match done {
        Upgraded::Nothing { major } => {
            eprintln!("cogno upgrade: the cluster already is PostgreSQL {major}: nothing to do");
        }
        Upgraded::Done {
            from,
            to,
            old,
            link,
            backup,
            proof,
        } => {
            eprintln!("cogno upgrade: PostgreSQL {from} → {to} done: the new cluster started and answered ({proof})");
            if link {
                eprintln!(
                    "  --link: the old cluster in {} shares its files with the new one and cannot \
                     be started again; there is no rollback{}",
                    old.display(),
                    backup
                        .as_ref()
                        .map(|b| format!(" but the backup {}", b.display()))
                        .unwrap_or_default()
                );
            } else {
                eprintln!(
                    "  the old cluster is kept in {}: to go back, `cogno upgrade postgres --rollback`",
                    old.display()
                );
            }
            if let Some(b) = backup {
                eprintln!("  the backup taken before the upgrade: {}", b.display());
            }
            eprintln!(
                "  once the app works, delete the old cluster: rm -rf {}",
                old.display()
            );
        }
    }
    Ok(())
}

/// The backup taken before an upgrade. `cogno backup` copies from running
/// servers, so this is a file-level copy of the stopped cluster: a
/// tar.zst of DATA/postgresql in DATA/backups, written under a temporary
/// name and renamed only when complete.
fn backup_stopped(data: &DataDir) -> Result<PathBuf, Error> {
    let dir = data.backups();
    files::create_private_dir(&dir)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    let name = format!(
        "postgresql-before-upgrade-{}.tar.zst",
        crate::fmt::file_stamp(std::time::SystemTime::now())
    );
    let target = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    eprintln!(
        "cogno upgrade: backing up {} (a file-level copy of the stopped cluster) into {}",
        data.postgres().display(),
        target.display()
    );
    let cannot = |e: std::io::Error| {
        let _ = fs::remove_file(&partial);
        Error::new(format!("cannot write {}: {e}", partial.display()))
            .help("check the free space in the data directory, or pass --no-backup if you have a backup of your own")
    };
    write_tar(&data.postgres(), &partial).map_err(cannot)?;
    fs::rename(&partial, &target).map_err(cannot)?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(cannot)?;
    Ok(target)
}

fn write_tar(cluster: &Path, to: &Path) -> std::io::Result<()> {
    use crate::datadir::archive;
    let mut tar = tar::Builder::new(archive::compressed_file(to)?);
    // The cluster's user can write in it: a link is stored as a link.
    tar.follow_symlinks(false);
    tar.append_dir_all("postgresql", cluster)?;
    archive::finish_synced(tar)
}
