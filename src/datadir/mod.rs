//! The data directory: the one place that knows its layout, checks it
//! before anything is written, records what created it, and writes files
//! in it crash-safely.
//!
//! ```text
//! DATA/
//!   secrets/.env            the stack's secrets (0600, in a 0700 directory)
//!   run/                    0711: the servers' users reach their sockets in here
//!     cogno.sock            the control socket (0600)
//!     services/             pid and start time of each running service (leftovers)
//!     postgresql/           the bundled PostgreSQL's Unix socket
//!   postgresql/             the bundled PostgreSQL's cluster
//!   postgresql.initdb-tmp/  initdb's scratch until it is renamed into place
//!                           (named by bundled/postgres.rs, beside the cluster)
//!   redis/                  the bundled Redis's working directory
//!   temporal/               the bundled Temporal's database
//!   backups/                `cogno backup`'s archives when no --to is given (0700)
//!   logs/                   file logs: SERVICE.log (rotated: .1, .2), cogno.log (0700)
//!   .cogno/
//!     created, initialized  the stamps (see `stamps`)
//!     layout                the layout version (see `layout`)
//!     postgresql-bin/       PostgreSQL binaries downloaded when none are installed
//! ```
//!
//! Everything else takes a [`DataDir`] and asks it for a path, never joins
//! names onto a bare one: a change of layout (and the code that must know
//! about it — backup, restore, migrations) is then made here alone. For the
//! same reason, what a backup holds of the directory and how an archive is
//! written and read are `archive`'s, and the layout's version is `layout`'s.
//! For the same reason, what root must check or refuse about the directory itself
//! (who owns it, who may write it) belongs in [`DataDir::preflight`] as
//! another [`Problem`], and opening files beneath it without following
//! links belongs in `files`.

pub mod archive;
pub mod files;
mod layout;
mod preflight;
mod stamps;

pub use layout::CURRENT as LAYOUT;
pub use preflight::{Problem, ServiceUser};
pub use stamps::Versions;

use crate::error::Error;
use std::path::{Path, PathBuf};

/// Where a restore builds a data directory: see [`DataDir::restore_work`].
pub struct RestoreWork {
    pub dir: PathBuf,
    /// `dir` is inside the data directory, whose entries are moved up one
    /// by one at the end (the secrets last) instead of one rename.
    pub inside: bool,
    /// Both places an interrupted restore may have left its work.
    pub leftovers: [PathBuf; 2],
}

/// A stack's data directory (`--data`, `$COGNO_DATA_DIR`, `data_dir:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`, taken as given: callers that hand paths
    /// to servers which change directory make it absolute first.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// DATA itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// DATA/secrets: private to cogno's user.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// DATA/secrets/.env
    pub fn secrets_file(&self) -> PathBuf {
        self.secrets_dir().join(".env")
    }

    /// DATA/run: the sockets of this run.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// DATA/run/cogno.sock: the control socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("cogno.sock")
    }

    /// DATA/postgresql: the bundled PostgreSQL's cluster.
    pub fn postgres(&self) -> PathBuf {
        self.root.join("postgresql")
    }

    /// DATA/run/postgresql: where the bundled PostgreSQL puts its socket.
    pub fn postgres_sockets(&self) -> PathBuf {
        self.run_dir().join("postgresql")
    }

    /// DATA/.cogno/postgresql-bin: PostgreSQL binaries cogno downloaded.
    pub fn postgres_bin_cache(&self) -> PathBuf {
        self.cogno_dir().join("postgresql-bin")
    }

    /// DATA/redis: the bundled Redis's working directory.
    pub fn redis(&self) -> PathBuf {
        self.root.join("redis")
    }

    /// DATA/temporal: the bundled Temporal's database.
    pub fn temporal(&self) -> PathBuf {
        self.root.join("temporal")
    }

    /// DATA/backups: where `cogno backup` writes when not told where.
    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }

    /// DATA/logs: the services' and cogno's log files (see `logfiles`).
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// DATA/run/services: what each running service is (pid, start time),
    /// so that the next start recognises its leftovers (see `leftovers`).
    pub fn service_pids(&self) -> PathBuf {
        self.run_dir().join("services")
    }

    /// DATA/.cogno/pg-upgrade: where `cogno upgrade postgres` records the
    /// step it is at, so that a killed upgrade is resumed or refused.
    pub fn pg_upgrade_state(&self) -> PathBuf {
        self.cogno_dir().join("pg-upgrade")
    }

    /// DATA/.cogno: cogno's own records about the data directory.
    fn cogno_dir(&self) -> PathBuf {
        self.root.join(".cogno")
    }

    /// Where `cogno restore` builds this data directory until it is
    /// complete: `.NAME.restore-tmp` beside DATA, renamed into place at the
    /// end; or, when DATA is a mount point (a volume, which no rename can
    /// cross), DATA/.cogno-restore-tmp, whose entries are then moved up.
    pub fn restore_work(&self) -> RestoreWork {
        let inside = self.root.join(".cogno-restore-tmp");
        let beside = match self.root.file_name() {
            Some(name) => self
                .root
                .with_file_name(format!(".{}.restore-tmp", name.to_string_lossy())),
            None => inside.clone(),
        };
        let mount_point = {
            use std::os::unix::fs::MetadataExt;
            let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
            let parent = self.root.parent().unwrap_or(Path::new("/"));
            dev(&self.root).is_some_and(|d| Some(d) != dev(parent))
        };
        RestoreWork {
            dir: if mount_point {
                inside.clone()
            } else {
                beside.clone()
            },
            inside: mount_point,
            leftovers: [beside, inside],
        }
    }

    /// Read-only, before anything is written: the layout is one this cogno
    /// knows ([`DataDir::check_layout`]), no restore was interrupted
    /// part-way inside DATA (a mount point restored into), whose data could
    /// be incomplete, and none beside an absent or empty DATA, which a start
    /// would fill with a new, empty stack while the restored data (and,
    /// after --force, the renamed original) wait elsewhere.
    pub fn check_usable(&self) -> Result<(), Error> {
        self.check_layout()?;
        // `beside` is `inside` for a root without a name (`/`).
        let [beside, work] = self.restore_work().leftovers;
        let empty = std::fs::read_dir(&self.root).map_or(true, |mut d| d.next().is_none());
        if empty && beside != work && beside.exists() {
            return Err(Error::config(format!(
                "{} is {}, and an interrupted `cogno restore` into it left its unfinished work \
                 in {}: a start would make a new, empty stack there, so nothing was started or \
                 changed",
                self.root.display(),
                if self.root.exists() {
                    "empty"
                } else {
                    "missing"
                },
                beside.display()
            ))
            .help(format!(
                "run `cogno restore ARCHIVE` again (it tells what to do with {}); a restore \
                 with --force renamed the directory it replaced to {}.before-restore-TIME",
                beside.display(),
                self.root.display()
            )));
        }
        if std::fs::symlink_metadata(&work).is_ok() {
            return Err(Error::config(format!(
                "{} holds the unfinished work of an interrupted `cogno restore` ({}): the data \
                 directory may be incomplete, so nothing was started or changed",
                self.root.display(),
                work.display()
            ))
            .help(
                "move the data directory's contents aside (delete nothing you have not checked) \
                 and run `cogno restore ARCHIVE` again",
            ));
        }
        Ok(())
    }

    /// Creates DATA (and its parents) and DATA/run (0711) if missing. DATA
    /// is created 0711 whatever the umask, by whichever command comes first
    /// (`cogno env` too): the servers' users must pass through it to their
    /// own directories, and nobody else may list it.
    pub fn create(&self) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let cannot = |e: std::io::Error| {
            Error::config(format!(
                "cannot create the data directory {}: {e}",
                self.root.display()
            ))
            .help("pass --data DIR with a writable directory")
        };
        if self.root.exists() && !self.root.is_dir() {
            return Err(Problem::NotADirectory {
                data: self.root.clone(),
                file: self.root.clone(),
            }
            .into());
        }
        if !self.root.exists() {
            let parents: Vec<&Path> = self
                .root
                .ancestors()
                .skip(1)
                .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
                .collect();
            if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(cannot)?;
            }
            // Made under root's private umask: parents made for DATA stay
            // reachable by the servers' users, as under the usual umask 022.
            for dir in parents {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
            match std::fs::create_dir(&self.root) {
                Ok(()) => {
                    std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o711))
                        .map_err(cannot)?
                }
                // Another cogno command made it meanwhile: its mode is its own.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cannot(e)),
            }
        }
        let run = self.run_dir();
        std::fs::create_dir_all(&run).map_err(|e| {
            Error::config(format!("cannot create {}: {e}", run.display()))
                .help("the data directory must be writable by cogno's user")
        })?;
        // 0711: the bundled servers' users must reach their socket directories in
        // here (DATA/run/postgresql); nobody else may list it, and the control
        // socket itself is 0600.
        let _ = std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o711));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let d = DataDir::new("/data");
        assert_eq!(d.secrets_file(), Path::new("/data/secrets/.env"));
        assert_eq!(d.socket(), Path::new("/data/run/cogno.sock"));
        assert_eq!(d.postgres(), Path::new("/data/postgresql"));
        assert_eq!(d.postgres_sockets(), Path::new("/data/run/postgresql"));
        assert_eq!(
            d.postgres_bin_cache(),
            Path::new("/data/.cogno/postgresql-bin")
        );
        assert_eq!(d.redis(), Path::new("/data/redis"));
        assert_eq!(d.temporal(), Path::new("/data/temporal"));
    }

    #[test]
    fn a_created_data_dir_is_0711() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = crate::testkit::TempDir::new("datadir-mode");
        let d = DataDir::new(tmp.path().join("parent/data"));
        d.create().unwrap();
        let mode = std::fs::metadata(d.root()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711);
    }

    #[test]
    fn run_dir_is_0711() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = crate::testkit::TempDir::new("datadir-run");
        let d = DataDir::new(tmp.path().join("data"));
        d.create().unwrap();
        let mode = std::fs::metadata(d.run_dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711);
    }
}
