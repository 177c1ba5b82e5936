//! `cogno restore`: a data directory from a `cogno backup` archive. The
//! archive is checked whole first; the new directory is built in a sibling
//! temporary directory and renamed into place only when complete, so a
//! crash leaves the old state (and the unfinished work, which the next
//! restore reports rather than deletes). Existing data is never written
//! over: with --force it is renamed aside.

use super::{data_dir, env_lookup, Outcome, StackArgs};
use crate::bundled::{self, Job};
use crate::config::Kind;
use crate::control;
use crate::datadir::{archive, files, DataDir, LAYOUT};
use crate::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The archive `cogno backup` wrote
    pub archive: PathBuf,
    #[command(flatten)]
    pub target: StackArgs,
    /// Restore even if the data directory is not empty: it is renamed aside (never deleted) first
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: RestoreArgs) -> Outcome {
    let started = Instant::now();
    let stack = args.target.config.load()?;
    let data = data_dir(&args.target, &stack);
    control::server::check_not_running(&data)?;
    let root = data.root().to_path_buf();
    let name = root
        .file_name()
        .ok_or_else(|| Error::config(format!("{} cannot be a data directory", root.display())))?
        .to_string_lossy()
        .into_owned();
    let plan = data.restore_work();
    if let Some(left) = plan
        .leftovers
        .iter()
        .find(|p| fs::symlink_metadata(p).is_ok())
    {
        return Err(Error::config(format!(
            "an earlier restore into {} was interrupted: its unfinished work is in {}; nothing was changed",
            root.display(),
            left.display()
        ))
        .help(format!(
            "cogno does not delete it by itself: look at it, remove it (`rm -rf {}`), then restore again{}",
            left.display(),
            if root.exists() {
                String::new()
            } else {
                // Killed between the two renames of a --force restore.
                format!(
                    "; if that restore ran with --force, the data that was in {} is in {}.before-restore-TIME",
                    root.display(),
                    root.display()
                )
            }
        )));
    }
    // Before anything is unpacked: the servers that load the data must be
    // able to reach where it goes (a 0700 parent is a refusal, not
    // `initdb: Permission denied` half-way).
    bundled::check_data_dir(&stack, &data)?;
    let occupied = occupied(&root)?;
    if occupied && !args.force {
        return Err(Error::config(format!(
            "{} is not empty: a restore never writes over existing data",
            root.display()
        ))
        .help("restore into another directory with --data DIR, or pass --force to rename the existing one aside (it is kept, not deleted)"));
    }
    if occupied && plan.inside {
        return Err(Error::config(format!(
            "{} is a mount point and not empty: it cannot be renamed aside, and a restore never writes over data",
            root.display()
        ))
        .help("move its contents elsewhere yourself (delete nothing you have not checked), then restore again"));
    }

    let work = Work::create(plan.dir.clone())?;
    let extracted = work.0.join("archive");
    let manifest = archive::read(&args.archive, Some(&extracted))?;
    eprintln!(
        "cogno restore: {} checked: {} members, written by cogno {} at {}",
        args.archive.display(),
        manifest.members.len(),
        manifest.cogno,
        manifest.created
    );
    if manifest.layout > LAYOUT {
        return Err(Error::config(format!(
            "the archive holds a data directory of layout version {}, but this cogno ({}) knows layout versions up to {LAYOUT}; nothing was restored",
            manifest.layout,
            env!("CARGO_PKG_VERSION")
        ))
        .help(format!("restore it with cogno {} or newer", manifest.cogno)));
    }

    let new = DataDir::new(work.0.join("data"));
    new.create()?;
    if !manifest.secrets_included {
        // Generated before the stamps arrive: once they say the stack has
        // run, a missing secret is refused, never generated.
        let generated = bundled::load_secrets(&stack, &new, &env_lookup)?.generated;
        eprintln!(
            "cogno restore: the archive holds no secrets: new ones were generated ({})",
            generated.join(", ")
        );
    }
    new.restore_own(&extracted)?;
    let secrets = bundled::load_secrets(&stack, &new, &env_lookup)?;
    for (svc, b) in Kind::all().filter_map(|kind| stack.bundled(kind)) {
        let Some(entry) = manifest.server(b.kind.name) else {
            eprintln!(
                "cogno restore: the archive holds no {} data: `{}` starts empty",
                b.kind.name, svc.name
            );
            continue;
        };
        let t = Instant::now();
        let job = Job {
            bundled: b,
            data: &new,
            run_as: svc.run_as.as_ref(),
            secrets: &secrets,
        };
        bundled::server(b.kind).restore(&job, &extracted.join(b.kind.name), &entry.version)?;
        eprintln!(
            "cogno restore: {} ({} {}) restored (took {})",
            svc.name,
            b.kind.name,
            entry.version,
            crate::fmt::fmt_latency(t.elapsed())
        );
    }
    for entry in &manifest.servers {
        if Kind::find(&entry.kind).is_none_or(|k| stack.bundled(k).is_none()) {
            eprintln!(
                "cogno restore: the archive's {} data (service `{}`) was not restored: this stack has no `kind: {}` service",
                entry.kind, entry.service, entry.kind
            );
        }
    }
    if let Some((from, to)) = new.migrate_layout()? {
        eprintln!("cogno restore: data directory layout migrated from version {from} to {to}");
    }
    // Everything restored is durable before the rename publishes it.
    files::syncfs(new.root())?;

    if occupied {
        let aside = root.with_file_name(format!(
            "{name}.before-restore-{}",
            crate::fmt::file_stamp(SystemTime::now())
        ));
        fs::rename(&root, &aside).map_err(|e| {
            Error::new(format!(
                "cannot rename {} aside to {}: {e}; nothing was changed",
                root.display(),
                aside.display()
            ))
        })?;
        println!(
            "moved the existing {} aside to {}",
            root.display(),
            aside.display()
        );
    }
    if plan.inside {
        move_entries(new.root(), &root, &new.secrets_dir())?;
    } else {
        // rename(2) replaces an empty directory.
        fs::rename(new.root(), &root).map_err(|e| {
            Error::new(format!(
                "cannot move the restored data from {} to {}: {e}",
                new.root().display(),
                root.display()
            ))
        })?;
    }
    let parent = root.parent().unwrap_or(Path::new("."));
    for dir in [parent, root.as_path()] {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::new(format!("cannot sync {}: {e}", dir.display())))?;
    }
    drop(work);
    println!(
        "restored {} into {} (took {}); start it with `cogno up`",
        args.archive.display(),
        root.display(),
        crate::fmt::fmt_latency(started.elapsed())
    );
    Ok(0)
}

/// Moves every entry of `from` into `to` (the same file system), the
/// secrets directory `last` of all: until it is there, a data directory
/// interrupted part-way holds data without its secrets, which `cogno up`
/// refuses rather than generating new ones.
fn move_entries(from: &Path, to: &Path, last: &Path) -> Result<(), Error> {
    let cannot = |e: std::io::Error| {
        Error::new(format!(
            "cannot move the restored data from {} into {}: {e}",
            from.display(),
            to.display()
        ))
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(from)
        .map_err(cannot)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(cannot)?;
    entries.sort_by_key(|p| p == last);
    for entry in entries {
        let name = entry.file_name().unwrap_or_default();
        fs::rename(&entry, to.join(name)).map_err(cannot)?;
    }
    Ok(())
}

/// Whether `root` holds anything (a file there counts too).
fn occupied(root: &Path) -> Result<bool, Error> {
    match fs::read_dir(root) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(true),
        Err(e) => Err(Error::config(format!(
            "cannot read {}: {e}",
            root.display()
        ))),
    }
}

/// The restore's temporary directory ([`DataDir::restore_work`]): removed
/// when this run ends, in success or failure; a killed run leaves it for
/// the next restore (and, inside DATA, `cogno up`) to report.
struct Work(PathBuf);

impl Work {
    fn create(dir: PathBuf) -> Result<Work, Error> {
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| Error::config(format!("cannot create {}: {e}", parent.display())))?;
        }
        fs::create_dir(&dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
            })
            .map_err(|e| {
                Error::config(format!("cannot create {}: {e}", dir.display()))
                    .help("the directory holding the data directory must be writable")
            })?;
        files::create_private_dir(&dir.join("archive"))
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Work(dir))
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
