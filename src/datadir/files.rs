//! Files cogno creates in the data directory: written crash-safely (a crash
//! leaves the old version or the new one, never a torn one) and given to the
//! user of the service that reads them; and the only ways root walks or reads
//! what a service user can write: by file descriptor, never through a
//! symbolic link, never blocking, capped in size (docs/security.md).

use crate::user::RunAs;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `dir` and any missing parent, private to cogno's user (0700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replaces `path` by a fully written 0600 file owned by `owner` (cogno's
/// user when None): temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], owner: Option<&RunAs>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // A fixed name: as PID 1 cogno's pid is the same every run, so nothing
    // would be more unique, and a leftover from a crash is cogno's own.
    let tmp = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = (|| {
        file.write_all(bytes)?;
        if let Some(user) = owner {
            // The descriptor, not the name: the directory may be the service
            // user's, who could put a link in place of the name meanwhile.
            nix::unistd::fchown(file.as_raw_fd(), Some(user.uid), Some(user.gid))?;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk must not also leave a half-written file behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

/// Flushes the whole filesystem holding `dir`: what was written below it
/// (a new cluster, a restored data directory) is durable before a rename
/// makes it visible. Cheaper than an fsync of every file.
pub fn syncfs(dir: &Path) -> Result<(), String> {
    fs::File::open(dir)
        .map_err(|e| format!("cannot open {}: {e}", dir.display()))
        .and_then(|d| {
            nix::unistd::syncfs(d.as_raw_fd())
                .map_err(|e| format!("cannot sync the filesystem of {}: {e}", dir.display()))
        })
}

/// Gives directory `path` and everything under it to `user`, walking by
/// file descriptor: the directory's parent is DATA (root's, checked by the
/// pre-flight), and below it every directory is opened with O_NOFOLLOW from
/// its parent's descriptor. A service user who swaps a subdirectory for a
/// symbolic link while the walk runs (renameat2 RENAME_EXCHANGE) then makes
/// an open fail or a link itself change owner — never a file outside.
pub fn chown_tree(path: &Path, user: &RunAs) -> Result<(), String> {
    let dir = open_dir_nofollow(None, path).map_err(|e| {
        format!(
            "cannot open {}: {}",
            path.display(),
            nofollow_error(path, e)
        )
    })?;
    chown_dir(dir, path, user)
}

/// Opens directory `name` (relative to `at`, or a path) without following a
/// symbolic link as its last component.
fn open_dir_nofollow<P: ?Sized + nix::NixPath>(at: Option<RawFd>, name: &P) -> nix::Result<Dir> {
    Dir::openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn chown_dir(mut dir: Dir, path: &Path, user: &RunAs) -> Result<(), String> {
    let give = |e: Errno| format!("cannot give {} to user {}: {e}", path.display(), user.name);
    let fd = dir.as_raw_fd();
    nix::unistd::fchown(fd, Some(user.uid), Some(user.gid)).map_err(give)?;
    let names: Vec<CString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        let child = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        match open_dir_nofollow(Some(fd), name.as_c_str()) {
            Ok(sub) => chown_dir(sub, &child, user)?,
            // Not a directory (or a link to one, or gone since the listing):
            // the entry itself, relative to the directory held open.
            Err(Errno::ENOTDIR | Errno::ELOOP) => {
                match nix::unistd::fchownat(
                    Some(fd),
                    name.as_c_str(),
                    Some(user.uid),
                    Some(user.gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => {
                        return Err(format!(
                            "cannot give {} to user {}: {e}",
                            child.display(),
                            user.name
                        ))
                    }
                }
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(format!("cannot open {}: {e}", child.display())),
        }
    }
    Ok(())
}

/// Reads a small file root finds in a directory a service user can write
/// (PG_VERSION, postmaster.pid, cli-version): never through a symbolic
/// link, never blocking on a FIFO or device, only a regular file, and at
/// most `cap` bytes. Ok(None) when it does not exist.
pub fn read_small(path: &Path, cap: u64) -> Result<Option<String>, String> {
    Ok(read_small_bytes(path, cap)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// [`read_small`], byte for byte.
pub fn read_small_bytes(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, String> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ELOOP) => "it is a symbolic link".to_owned(),
                _ => e.to_string(),
            };
            return Err(format!(
                "cannot read {}: {why}; cogno reads it only as a regular file",
                path.display()
            ));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "cannot read {}: it is not a regular file; cogno reads it only as a regular file",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "cannot read {}: it is larger than the {cap} bytes it can hold",
            path.display()
        ));
    }
    Ok(Some(bytes))
}

/// What an error message may show of text read from a file that failed
/// validation: a short prefix, escaped, so that neither a long file nor
/// control characters reach the terminal.
pub fn shown(text: &str) -> String {
    const MAX: usize = 24;
    let mut out: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// The reason an O_NOFOLLOW open of `path` failed, in words.
fn nofollow_error(path: &Path, e: Errno) -> String {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        "it is a symbolic link, which cogno does not follow here".to_owned()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TempDir;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let tmp = crate::testkit::TempDir::new("files-atomic");
        // The rename cannot replace a non-empty directory: it fails after the write.
        let target = tmp.path().join("cogno.conf");
        fs::create_dir_all(target.join("in-the-way")).unwrap();
        assert!(write_atomic(&target, b"port = 5432\n", None).is_err());
        let left: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["cogno.conf"], "only what was there before");
    }

    fn nobody() -> RunAs {
        RunAs {
            name: "nobody".into(),
            uid: nix::unistd::Uid::from_raw(65534),
            gid: nix::unistd::Gid::from_raw(65534),
            groups: Vec::new(),
            home: "/nonexistent".into(),
        }
    }

    #[test]
    fn chown_tree_gives_the_tree_but_never_what_a_link_points_to() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = TempDir::new("files-chown");
        let tree = tmp.path().join("tree");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(tree.join("sub/file"), "x").unwrap();
        fs::write(outside.join("secret"), "x").unwrap();
        symlink(&outside, tree.join("link")).unwrap();
        chown_tree(&tree, &nobody()).unwrap();
        let uid = |p: &Path| fs::symlink_metadata(p).unwrap().uid();
        assert_eq!(uid(&tree.join("sub/file")), 65534);
        assert_eq!(uid(&tree.join("link")), 65534, "the link itself");
        assert_eq!(uid(&outside), 0);
        assert_eq!(uid(&outside.join("secret")), 0);
        // Nor does a tree that is itself a link.
        let err = chown_tree(&tree.join("link"), &nobody()).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(uid(&outside), 0);
    }

    #[test]
    fn read_small_reads_only_small_regular_files() {
        let tmp = TempDir::new("files-read");
        let file = tmp.path().join("PG_VERSION");
        fs::write(&file, "15\n").unwrap();
        assert_eq!(read_small(&file, 16).unwrap().as_deref(), Some("15\n"));
        assert_eq!(read_small(&tmp.path().join("none"), 16).unwrap(), None);
        let err = read_small(&file, 2).unwrap_err();
        assert!(err.contains("larger than the 2 bytes"), "{err}");
        let link = tmp.path().join("link");
        symlink(&file, &link).unwrap();
        let err = read_small(&link, 16).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_small(&fifo, 16).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn shown_is_short_and_escaped() {
        assert_eq!(shown("15"), "\"15\"");
        assert_eq!(shown("a\x1b[2Jb"), "\"a\\u{1b}[2Jb\"");
        assert_eq!(shown(&"x".repeat(100)), format!("\"{}…\"", "x".repeat(24)));
    }
}
