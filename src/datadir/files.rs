//! Files cogno creates in the data directory: written crash-safely (a crash
//! leaves the old version or the new one, never a torn one) and given to the
//! user of the service that reads them.

use crate::user::RunAs;
use nix::fcntl::AtFlags;
use std::fs;
use std::io::{self, Write};
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
            nix::unistd::fchownat(
                None,
                &tmp,
                Some(user.uid),
                Some(user.gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
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

/// Gives `path` and everything under it to `user`, without following links.
pub fn chown_tree(path: &Path, user: &RunAs) -> Result<(), String> {
    nix::unistd::fchownat(
        None,
        path,
        Some(user.uid),
        Some(user.gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("cannot give {} to user {}: {e}", path.display(), user.name))?;
    let meta = fs::symlink_metadata(path)
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if meta.is_dir() {
        let entries =
            fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", path.display()))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
