//! The data directory's pre-flight checks, made before anything is written:
//! as root, nobody else can write it or plant links in it
//! ([`DataDir::check_trusted`]); it is on a writable mount, cogno's user can write it, it has room for a first start,
//! and every bundled server's user can reach it.

use super::DataDir;
use crate::error::Error;
use crate::user::RunAs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Free space the data directory needs for a first start (cluster, WAL, Temporal).
const MIN_FREE_BYTES: u64 = 512 << 20;

/// A service that runs as its own user and keeps its data under DATA.
pub struct ServiceUser<'a> {
    pub service: &'a str,
    pub user: &'a RunAs,
}

/// Why the data directory cannot be used. Nothing has been written when one
/// is found; it converts into the [`Error`] users see (exit status 2).
#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    /// DATA, or a directory on its path (`file`), is a file.
    NotADirectory { data: PathBuf, file: PathBuf },
    /// DATA is on a read-only mount; `existing` is its nearest existing ancestor.
    ReadOnly { data: PathBuf, existing: PathBuf },
    /// cogno's user (`uid`) cannot write `existing`, which belongs to `owner`.
    NotWritable {
        data: PathBuf,
        existing: PathBuf,
        uid: u32,
        owner: Option<u32>,
        read_only: bool,
    },
    /// A first start would not fit in `free` bytes under `existing`.
    NoSpace { existing: PathBuf, free: u64 },
    /// cogno runs as root but `path` (DATA, one of its ancestors, or a
    /// directory of cogno's own in it) can be written by another user, who
    /// could then make root write, chown or read through links of theirs.
    ForeignWritable {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
    /// `path`, where cogno keeps something under DATA, is a symbolic link:
    /// root would write, chown or read where it points.
    Symlink { path: PathBuf },
    /// `user` (of `service`) cannot enter `blocked`, on the way to DATA.
    Unreachable {
        data: PathBuf,
        blocked: PathBuf,
        owner: u32,
        mode: u32,
        user: String,
        service: String,
    },
}

impl DataDir {
    /// Checks, without writing anything, that cogno can keep the stack's
    /// data here and that each of `users` can reach it.
    pub fn preflight(&self, users: &[ServiceUser]) -> Result<(), Problem> {
        let data = self.root();
        // DATA itself may not exist yet: what matters is where it will be created.
        let existing = data
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        if !existing.is_dir() {
            return Err(Problem::NotADirectory {
                data: data.to_owned(),
                file: existing.to_owned(),
            });
        }
        let statvfs = nix::sys::statvfs::statvfs(existing);
        if statvfs
            .as_ref()
            .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        {
            return Err(Problem::ReadOnly {
                data: data.to_owned(),
                existing: existing.to_owned(),
            });
        }
        if nix::unistd::access(
            existing,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_err()
        {
            let meta = std::fs::metadata(existing);
            return Err(Problem::NotWritable {
                data: data.to_owned(),
                existing: existing.to_owned(),
                uid: nix::unistd::geteuid().as_raw(),
                owner: meta.as_ref().ok().map(|m| m.uid()),
                read_only: meta.is_ok_and(|m| m.permissions().readonly()),
            });
        }
        if let Ok(st) = statvfs {
            let free = st.blocks_available() * st.fragment_size();
            // An existing cluster is no first start: it needs no new room.
            if free < MIN_FREE_BYTES && !self.postgres().join("PG_VERSION").exists() {
                return Err(Problem::NoSpace {
                    existing: existing.to_owned(),
                    free,
                });
            }
        }
        for u in users {
            if let Some(blocked) = data
                .ancestors()
                .filter(|p| p.exists())
                .find(|p| !can_enter(p, u.user))
            {
                let (owner, mode) = std::fs::metadata(blocked)
                    .map(|m| (m.uid(), m.mode() & 0o7777))
                    .unwrap_or((0, 0));
                return Err(Problem::Unreachable {
                    data: data.to_owned(),
                    blocked: blocked.to_owned(),
                    owner,
                    mode,
                    user: u.user.name.clone(),
                    service: u.service.to_owned(),
                });
            }
        }
        Ok(())
    }
}

impl DataDir {
    /// As root, before anything is read or written under DATA, whatever the
    /// stack: DATA and every directory above it may be written only by root
    /// (a sticky directory such as /tmp excepted), and no place cogno keeps
    /// something under DATA is a symbolic link; cogno's own directories
    /// there are root's alone. The services' directories are theirs to
    /// write: root only ever walks them by file descriptor.
    pub fn check_trusted(&self) -> Result<(), Problem> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(());
        }
        let data = self.root();
        let absolute = std::path::absolute(data).unwrap_or_else(|_| data.to_owned());
        let canonical = absolute
            .ancestors()
            .find_map(|p| std::fs::canonicalize(p).ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        for dir in absolute.ancestors().chain(canonical.ancestors()) {
            let Ok(m) = std::fs::metadata(dir) else {
                continue;
            };
            let sticky = m.mode() & 0o1000 != 0;
            if !trusted_owner(m.uid()) || (m.mode() & 0o022 != 0 && !sticky) {
                return Err(foreign(dir, &m));
            }
        }
        let own = [self.secrets_dir(), self.run_dir(), self.cogno_dir()];
        let services = [
            self.redis(),
            self.temporal(),
            self.postgres(),
            self.postgres_sockets(),
            self.postgres_bin_cache(),
            self.secrets_file(),
            self.socket(),
        ];
        for path in own.iter().chain(&services) {
            let Ok(m) = std::fs::symlink_metadata(path) else {
                continue;
            };
            if m.file_type().is_symlink() {
                return Err(Problem::Symlink { path: path.clone() });
            }
            if own.contains(path) && (!trusted_owner(m.uid()) || m.mode() & 0o022 != 0) {
                return Err(foreign(path, &m));
            }
        }
        Ok(())
    }
}

/// Root, or the user cogno runs as.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

fn foreign(path: &Path, m: &std::fs::Metadata) -> Problem {
    Problem::ForeignWritable {
        path: path.to_owned(),
        owner: m.uid(),
        mode: m.mode() & 0o7777,
    }
}

/// Whether `who` may search directory `dir` (its x bit for owner, group or others).
fn can_enter(dir: &Path, who: &RunAs) -> bool {
    let Ok(m) = std::fs::metadata(dir) else {
        return false;
    };
    let mode = m.mode();
    if m.uid() == who.uid.as_raw() {
        mode & 0o100 != 0
    } else if m.gid() == who.gid.as_raw() || who.groups.iter().any(|g| g.as_raw() == m.gid()) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Error {
        match p {
            Problem::NotADirectory { data, file } => Error::config(if file == data {
                format!("the data directory {} is a file, not a directory", data.display())
            } else {
                format!(
                    "the data directory {} cannot be created: {} is a file, not a directory",
                    data.display(),
                    file.display()
                )
            })
            .help("move the file away, or pass --data DIR naming a directory"),
            Problem::ReadOnly { data, existing } => Error::config(format!(
                "the data directory {} is on a read-only mount ({}): cogno keeps the stack's data there",
                data.display(),
                existing.display()
            ))
            .help("mount it read-write, or pass --data DIR on a writable filesystem"),
            Problem::NotWritable {
                data,
                existing,
                uid,
                owner,
                read_only,
            } => Error::config(format!(
                "the data directory {} cannot be written by cogno's user (uid {uid}): {} belongs to uid {}{}",
                data.display(),
                existing.display(),
                owner.map_or_else(|| "?".to_owned(), |o| o.to_string()),
                if read_only { " and is read-only" } else { "" },
            ))
            .help(format!(
                "give cogno's user a writable directory (e.g. `chown -R {uid} {}`), or pass --data DIR",
                existing.display()
            )),
            Problem::NoSpace { existing, free } => Error::config(format!(
                "only {} MiB free under {}: a first start needs about {} MiB (PostgreSQL, Temporal)",
                free >> 20,
                existing.display(),
                MIN_FREE_BYTES >> 20
            ))
            .help("free some space or use another --data"),
            Problem::ForeignWritable { path, owner, mode } => {
                let p = path.display();
                let fix = if owner == 0 {
                    format!("`chmod go-w {p}`")
                } else {
                    format!("`chown root:root {p} && chmod 755 {p}`")
                };
                Error::config(format!(
                    "{p} belongs to uid {owner} with mode {mode:04o}: cogno runs as root and refuses a \
                     data directory another user can write, who could make root write, chown or read \
                     through links of theirs; nothing was changed"
                ))
                .help(format!(
                    "make it root's alone ({fix}), or run cogno as the user who owns the data directory; \
                     see docs/security.md"
                ))
            }
            Problem::Symlink { path } => {
                // Where it points, and whether that exists: a dangling link
                // where the secrets file goes is usually a volume not mounted.
                let target = std::fs::read_link(&path).unwrap_or_default();
                let dangling = std::fs::metadata(&path).is_err();
                Error::config(format!(
                    "{} is a symbolic link (to {}{}): cogno runs as root and never follows a link \
                     inside the data directory; nothing was changed",
                    path.display(),
                    // DATA is root's (checked first): only root could have
                    // put the link here, so its target is safe to show.
                    target.display(),
                    if dangling {
                        ", which does not exist: is the volume that holds it not mounted?"
                    } else {
                        ""
                    }
                ))
                .help(format!(
                    "put the file or directory itself in its place (move what the link points to into {}), \
                     or point --data at the real location; see docs/security.md",
                    path.display()
                ))
            }
            Problem::Unreachable {
                data,
                blocked,
                owner,
                mode,
                user,
                service,
            } => Error::config(format!(
                "{} belongs to uid {owner} with mode {mode:04o}: user `{user}`, which runs `{service}`, \
                 cannot enter it, so the data directory {} is out of its reach",
                blocked.display(),
                data.display(),
            ))
            .help(if blocked == data {
                // Its owner does not matter: the servers' users must pass through it.
                format!(
                    "`chmod 711 {}` (cogno creates it 0711: the servers' users pass through it \
                     to their own directories, and nobody else may list it)",
                    blocked.display()
                )
            } else {
                format!(
                    "let other users enter it (`chmod o+x {}` on the host), give it to root (`chown 0:0 {}`), \
                     or use a named volume",
                    blocked.display(),
                    blocked.display(),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages as they were when these checks lived in `bundled`.
    #[test]
    fn renders_as_before() {
        let p = PathBuf::from;
        let cases = [
            (
                Problem::ReadOnly {
                    data: p("/ro/data"),
                    existing: p("/ro"),
                },
                "error: the data directory /ro/data is on a read-only mount (/ro): cogno keeps the stack's data there\n  \
                 = help: mount it read-write, or pass --data DIR on a writable filesystem\n",
            ),
            (
                Problem::NotWritable {
                    data: p("/srv/data"),
                    existing: p("/srv"),
                    uid: 1000,
                    owner: Some(0),
                    read_only: true,
                },
                "error: the data directory /srv/data cannot be written by cogno's user (uid 1000): /srv belongs to uid 0 and is read-only\n  \
                 = help: give cogno's user a writable directory (e.g. `chown -R 1000 /srv`), or pass --data DIR\n",
            ),
            (
                Problem::NoSpace {
                    existing: p("/data"),
                    free: 100 << 20,
                },
                "error: only 100 MiB free under /data: a first start needs about 512 MiB (PostgreSQL, Temporal)\n  \
                 = help: free some space or use another --data\n",
            ),
            (
                Problem::Unreachable {
                    data: p("/home/me/data"),
                    blocked: p("/home/me"),
                    owner: 1000,
                    mode: 0o700,
                    user: "postgres".into(),
                    service: "db".into(),
                },
                "error: /home/me belongs to uid 1000 with mode 0700: user `postgres`, which runs `db`, cannot enter it, \
                 so the data directory /home/me/data is out of its reach\n  = help: let other users enter it \
                 (`chmod o+x /home/me` on the host), give it to root (`chown 0:0 /home/me`), or use a named volume\n",
            ),
        ];
        for (problem, text) in cases {
            let e = Error::from(problem);
            assert_eq!(e.to_string(), text);
            assert_eq!(e.status, crate::error::EXIT_CONFIG);
        }
    }

    #[test]
    fn a_file_is_called_a_file_and_a_closed_data_dir_gets_chmod() {
        let tmp = crate::testkit::TempDir::new("datadir-file");
        let file = tmp.path().join("data");
        std::fs::write(&file, "").unwrap();
        let e = Error::from(DataDir::new(&file).preflight(&[]).unwrap_err()).to_string();
        assert!(e.contains("is a file, not a directory"), "{e}");
        let e = Error::from(DataDir::new(file.join("sub")).preflight(&[]).unwrap_err());
        assert!(e.to_string().contains("cannot be created"), "{e}");
        let closed = Error::from(Problem::Unreachable {
            data: PathBuf::from("/data"),
            blocked: PathBuf::from("/data"),
            owner: 0,
            mode: 0o700,
            user: "postgres".into(),
            service: "db".into(),
        });
        assert!(closed.to_string().contains("`chmod 711 /data`"), "{closed}");
    }

    #[test]
    fn a_writable_directory_passes() {
        let tmp = crate::testkit::TempDir::new("datadir-preflight");
        let d = DataDir::new(tmp.path().join("not-yet/data"));
        assert_eq!(d.preflight(&[]), Ok(()));
    }

    #[test]
    fn a_directory_a_service_user_cannot_enter_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = crate::testkit::TempDir::new("datadir-unreachable");
        let private = tmp.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Someone who is neither its owner nor in its group.
        let nobody = RunAs {
            name: "nobody".into(),
            uid: nix::unistd::Uid::from_raw(65534),
            gid: nix::unistd::Gid::from_raw(65534),
            groups: Vec::new(),
            home: PathBuf::from("/nonexistent"),
        };
        let d = DataDir::new(private.join("data"));
        let users = [ServiceUser {
            service: "db",
            user: &nobody,
        }];
        match d.preflight(&users) {
            Err(Problem::Unreachable {
                blocked,
                mode,
                user,
                service,
                ..
            }) => {
                assert_eq!(
                    (blocked, mode, user.as_str(), service.as_str()),
                    (private, 0o700, "nobody", "db")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
