//! Backup archives: what the data directory contributes to one (its secrets,
//! stamps and layout record), how one is written (a private staging
//! directory beside the target, then a zstd-compressed tar under a temporary
//! name, fsynced, read back and checked, and only then renamed) and how one
//! is read (every member's size and SHA-256 checked against the manifest).
//!
//! ```text
//! manifest.json              first: versions, creation time, every member's size and SHA-256
//! data/secrets/.env          the secrets file, byte for byte (unless --exclude-secrets)
//! data/.cogno/…              the stamps and the layout record
//! stack/<file name>          the stack file the backup ran with, for reference
//! <kind>/…                   what each bundled server's `backup` wrote
//! ```
//!
//! It is a plain tar: `tar --zstd -tf ARCHIVE` lists it.

use super::{files, DataDir};
use crate::error::Error;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// The first member: what the archive holds.
pub const MANIFEST: &str = "manifest.json";
/// The archive format this cogno writes. 2: PostgreSQL's dump is stored
/// zstd-compressed as it is made (`postgres/pg_dumpall.sql.zst`); 1 had it
/// plain, compressed only with the whole archive.
pub const FORMAT: u32 = 2;
/// The oldest format this cogno still reads.
const OLDEST_FORMAT: u32 = 1;
/// Where the data directory's own files go in an archive.
const DATA_PREFIX: &str = "data";
/// zstd's default level: a good ratio at far more than disk speed.
const LEVEL: i32 = 3;

/// manifest.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The cogno that wrote it.
    pub cogno: String,
    pub created_unix: u64,
    /// The same, in RFC 3339 (UTC).
    pub created: String,
    /// The data directory's layout version.
    pub layout: u32,
    pub secrets_included: bool,
    pub servers: Vec<ServerEntry>,
    pub members: Vec<Member>,
}

/// A bundled server whose data is in the archive.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerEntry {
    pub kind: String,
    pub service: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// The version of server `kind` recorded when the archive was made.
    pub fn server(&self, kind: &str) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.kind == kind)
    }
}

/// A backup being assembled for the archive `target`: members are written
/// into a private staging directory beside it, then packed.
pub struct Staging {
    target: PathBuf,
    dir: PathBuf,
    partial: PathBuf,
    /// The staging directory, locked while this backup lives: a staging
    /// directory nobody holds is a killed backup's leftover.
    _held: Flock<fs::File>,
}

impl Staging {
    /// Prepares to write `target`, which must not exist: its staging
    /// directory `.NAME.staging` (0700) and temporary name `.NAME.partial`
    /// are cogno's own, so the leftovers of an interrupted backup are
    /// removed — those of `target` and those of any archive of cogno's
    /// default name beside it, unless a running backup holds them.
    pub fn new(target: &Path) -> Result<Staging, Error> {
        let (dir, partial) = (sibling(target, "staging"), sibling(target, "partial"));
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if fs::symlink_metadata(target).is_ok() {
            return Err(Error::config(format!(
                "{} already exists: a backup never replaces a file",
                target.display()
            ))
            .help("choose another name with --to, or move the file away"));
        }
        let cannot = |p: &Path, e: io::Error| {
            Error::new(format!("cannot prepare {}: {e}", p.display()))
                .help("check that the target directory exists, is writable and has room")
        };
        // Held while leftovers are told from live work and this backup's
        // own is created and locked: no other backup can take it for a
        // leftover in between.
        let _dir_held = fs::File::open(parent)
            .map_err(|e| (e, parent))
            .and_then(|f| lock(f, FlockArg::LockExclusive).map_err(|e| (e, parent)))
            .map_err(|(e, p)| cannot(p, e))?;
        if fs::symlink_metadata(&dir).is_ok()
            && lock_dir(&dir, FlockArg::LockExclusiveNonblock).is_err()
        {
            return Err(Error::config(format!(
                "another `cogno backup` is writing {} now",
                target.display()
            ))
            .help("wait until it has finished, or choose another name with --to"));
        }
        for (staging, its_partial) in leftovers(parent, &dir)? {
            for leftover in [&staging, &its_partial] {
                let gone = match fs::symlink_metadata(leftover) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(leftover),
                    Ok(_) => fs::remove_file(leftover),
                    Err(_) => continue,
                };
                gone.map_err(|e| cannot(leftover, e))?;
                eprintln!(
                    "cogno backup: removed {}, left by an interrupted backup",
                    leftover.display()
                );
            }
        }
        files::create_private_dir(&dir).map_err(|e| cannot(&dir, e))?;
        let held = lock_dir(&dir, FlockArg::LockExclusiveNonblock).map_err(|e| cannot(&dir, e))?;
        Ok(Staging {
            target: target.to_path_buf(),
            dir,
            partial,
            _held: held,
        })
    }

    /// The staging directory of member prefix `name` (a server's kind),
    /// created empty and private.
    pub fn part(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.dir.join(name);
        files::create_private_dir(&dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Copies the data directory's own files: its secrets (when `secrets`),
    /// stamps and layout record.
    pub fn add_data_dir(&self, data: &DataDir, secrets: bool) -> Result<(), Error> {
        let mut own = vec![
            data.created_stamp(),
            data.initialized_stamp(),
            data.layout_file(),
        ];
        if secrets {
            own.push(data.secrets_file());
        }
        for file in own {
            let Ok(relative) = file.strip_prefix(data.root()) else {
                continue;
            };
            let Some(bytes) = files::read_small_bytes(&file, 1 << 20).map_err(Error::new)? else {
                continue;
            };
            self.add_file(&Path::new(DATA_PREFIX).join(relative), &bytes)?;
        }
        Ok(())
    }

    /// Writes `bytes` as member `path` (0600).
    pub fn add_file(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let file = self.dir.join(path);
        let parent = file.parent().unwrap_or(&self.dir);
        files::create_private_dir(parent)
            .and_then(|()| files::write_atomic(&file, bytes, None))
            .map_err(|e| Error::new(format!("cannot write {}: {e}", file.display())))
    }

    /// Packs everything staged (with the manifest's other fields from
    /// `manifest`) into the temporary name, fsyncs it, reads it back and
    /// checks every member, then renames it into place (0600) and removes
    /// the staging directory. Returns the manifest written.
    pub fn finish(self, mut manifest: Manifest) -> Result<Manifest, Error> {
        let at = |what: &str, e: io::Error| {
            Error::new(format!("cannot {what} {}: {e}", self.partial.display())).help(
                "check free space in the target directory; nothing was left under the final name",
            )
        };
        manifest.members = staged_members(&self.dir)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", self.dir.display())))?;
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::new(format!("cannot write the manifest: {e}")))?;
        self.pack(&json, &manifest).map_err(|e| at("write", e))?;
        let checked = read(&self.partial, None)?;
        if checked.members.len() != manifest.members.len() {
            return Err(Error::new(format!(
                "{} read back with {} members instead of {}",
                self.partial.display(),
                checked.members.len(),
                manifest.members.len()
            )));
        }
        fs::rename(&self.partial, &self.target).map_err(|e| at("rename", e))?;
        let parent = self.target.parent().unwrap_or(Path::new("."));
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| at("sync the directory of", e))?;
        fs::remove_dir_all(&self.dir)
            .map_err(|e| Error::new(format!("cannot remove {}: {e}", self.dir.display())))?;
        Ok(manifest)
    }

    fn pack(&self, json: &[u8], manifest: &Manifest) -> io::Result<()> {
        let mut tar = tar::Builder::new(compressed_file(&self.partial)?);
        let header = |size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o600);
            h.set_mtime(manifest.created_unix);
            h.set_entry_type(tar::EntryType::Regular);
            h
        };
        tar.append_data(&mut header(json.len() as u64), MANIFEST, json)?;
        for m in &manifest.members {
            let f = fs::File::open(self.dir.join(&m.path))?;
            tar.append_data(&mut header(m.size), &m.path, f)?;
        }
        finish_synced(tar)
    }
}

/// A zstd stream into a file, as [`compressed_file`] makes it.
pub type Compressed = zstd::Encoder<'static, io::BufWriter<fs::File>>;

/// Ends the tar and its compressed stream, and syncs the file: it is
/// complete on disk when this returns.
pub fn finish_synced(tar: tar::Builder<Compressed>) -> io::Result<()> {
    let file = tar
        .into_inner()?
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    file.sync_all()
}

/// A zstd stream into `file`, as everything a backup compresses is made:
/// with its frame checksum (damage is caught by zstd itself too, not only
/// by the manifest) and on every CPU, as `zstd -T0` (compression is most
/// of a backup's own work; the format is the same whatever the threads).
pub fn encoder(file: fs::File) -> io::Result<Compressed> {
    let mut encoder = zstd::Encoder::new(io::BufWriter::new(file), LEVEL)?;
    encoder.include_checksum(true)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    encoder.multithread(u32::try_from(threads).unwrap_or(1))?;
    Ok(encoder)
}

/// A new private (0600) file at `path`, written through [`encoder`];
/// `finish` it, then sync what it returns.
pub fn compressed_file(path: &Path) -> io::Result<zstd::Encoder<'static, io::BufWriter<fs::File>>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    encoder(file)
}

impl Drop for Staging {
    /// A backup that failed leaves nothing behind (one killed leaves its
    /// temporary names, which the next backup to the same name removes).
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.partial);
    }
}

/// The staging directories (with their temporary names) in `parent` that
/// no running backup holds: `own` (this backup's, if a killed one left it)
/// and those of archives of cogno's default name. Called with `parent` locked.
fn leftovers(parent: &Path, own: &Path) -> Result<Vec<(PathBuf, PathBuf)>, Error> {
    let entries = fs::read_dir(parent)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", parent.display())))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(archive) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".staging"))
        else {
            continue;
        };
        let path = entry.path();
        let ours = archive.starts_with(DEFAULT_PREFIX) && archive.ends_with(DEFAULT_SUFFIX);
        if (path == own || ours) && lock_dir(&path, FlockArg::LockExclusiveNonblock).is_ok() {
            found.push((path, parent.join(format!(".{archive}.partial"))));
        }
    }
    Ok(found)
}

/// How `cogno backup` names an archive when given a directory (or none):
/// `cogno-backup-<time>.tar.zst`.
pub const DEFAULT_PREFIX: &str = "cogno-backup-";
pub const DEFAULT_SUFFIX: &str = ".tar.zst";

/// `dir` opened and flock(2)ed: the lock goes with the holder, even killed.
fn lock_dir(dir: &Path, how: FlockArg) -> io::Result<Flock<fs::File>> {
    lock(fs::File::open(dir)?, how)
}

fn lock(file: fs::File, how: FlockArg) -> io::Result<Flock<fs::File>> {
    Flock::lock(file, how).map_err(|(_, e)| io::Error::from(e))
}

/// `.NAME.what` beside `path`.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{what}"))
}

/// Every file under `dir`, as members (relative paths, sorted).
fn staged_members(dir: &Path) -> io::Result<Vec<Member>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Member>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let (size, sha256) = digest(fs::File::open(&path)?, &mut io::sink())?;
                let relative = path.strip_prefix(root).unwrap_or(&path);
                out.push(Member {
                    path: relative.to_string_lossy().into_owned(),
                    size,
                    sha256,
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Copies `from` into `to`, returning the size and the SHA-256 (hex).
fn digest(mut from: impl Read, to: &mut impl Write) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, hex))
}

/// Reads the archive at `path`, checking the manifest and every member's
/// size and SHA-256 against it (and that nothing is missing or added). With
/// `into`, the members are also extracted there (a new private directory).
/// Every failure names the archive and the member.
pub fn read(path: &Path, into: Option<&Path>) -> Result<Manifest, Error> {
    let damaged = |member: &str, why: String| {
        Error::config(format!(
            "the archive {} is damaged: member `{member}` {why}",
            path.display()
        ))
        .help("nothing was restored; use another copy of the backup")
    };
    let file = fs::File::open(path)
        .map_err(|e| Error::config(format!("cannot open the archive {}: {e}", path.display())))?;
    let decoder =
        zstd::Decoder::new(file).map_err(|e| damaged(MANIFEST, format!("cannot be read: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive
        .entries()
        .map_err(|e| damaged(MANIFEST, format!("cannot be read: {e}")))?;
    let mut json = Vec::new();
    entries
        .next()
        .ok_or_else(|| damaged(MANIFEST, "is missing (the archive is empty)".into()))
        .and_then(|e| {
            let mut e = e.map_err(|e| damaged(MANIFEST, format!("cannot be read: {e}")))?;
            if e.path_bytes().as_ref() != MANIFEST.as_bytes() {
                return Err(damaged(MANIFEST, "is not the first member".into()));
            }
            e.read_to_end(&mut json)
                .map_err(|e| damaged(MANIFEST, format!("cannot be read: {e}")))
        })?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| damaged(MANIFEST, format!("is not a cogno manifest: {e}")))?;
    if !(OLDEST_FORMAT..=FORMAT).contains(&manifest.format) {
        return Err(Error::config(format!(
            "the archive {} has format {}, but this cogno ({}) reads formats {OLDEST_FORMAT} to {FORMAT}",
            path.display(),
            manifest.format,
            env!("CARGO_PKG_VERSION")
        ))
        .help("restore it with the cogno that wrote it (its version is in the manifest)"));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut last = MANIFEST.to_owned();
    for entry in entries {
        let mut entry = entry
            .map_err(|e| damaged(&last, format!("or the one after it cannot be read: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(want) = manifest.members.iter().find(|m| m.path == name) else {
            return Err(damaged(&name, "is not listed in the manifest".into()));
        };
        let relative = Path::new(&want.path);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
            || entry.header().entry_type() != tar::EntryType::Regular
        {
            return Err(damaged(
                &name,
                "is not a plain file with a relative path".into(),
            ));
        }
        let (size, sha256) = match into {
            Some(dir) => {
                let out = dir.join(relative);
                files::create_private_dir(out.parent().unwrap_or(dir))
                    .and_then(|()| {
                        use std::os::unix::fs::OpenOptionsExt;
                        let f = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&out)?;
                        let mut w = io::BufWriter::new(f);
                        let got = digest(&mut entry, &mut w)?;
                        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                        Ok(got)
                    })
                    .map_err(|e| damaged(&name, format!("cannot be read or extracted: {e}")))?
            }
            None => digest(&mut entry, &mut io::sink())
                .map_err(|e| damaged(&name, format!("cannot be read: {e}")))?,
        };
        if size != want.size || sha256 != want.sha256 {
            return Err(damaged(
                &name,
                format!(
                    "does not match the manifest ({size} bytes with SHA-256 {sha256}, expected {} bytes with {})",
                    want.size, want.sha256
                ),
            ));
        }
        seen.push(&want.path);
        last = name;
    }
    if let Some(missing) = manifest
        .members
        .iter()
        .find(|m| !seen.contains(&m.path.as_str()))
    {
        return Err(damaged(
            &missing.path,
            "is listed in the manifest but missing".into(),
        ));
    }
    Ok(manifest)
}

impl DataDir {
    /// Puts the data directory's own files from an extracted archive
    /// (`from`) into this (new) data directory, byte for byte.
    pub fn restore_own(&self, from: &Path) -> Result<(), Error> {
        let own = from.join(DATA_PREFIX);
        for file in [
            self.created_stamp(),
            self.initialized_stamp(),
            self.layout_file(),
            self.secrets_file(),
        ] {
            let Ok(relative) = file.strip_prefix(self.root()) else {
                continue;
            };
            let source = own.join(relative);
            if !source.exists() {
                continue;
            }
            let bytes = fs::read(&source)
                .map_err(|e| Error::new(format!("cannot read {}: {e}", source.display())))?;
            files::create_private_dir(file.parent().unwrap_or(self.root()))
                .and_then(|()| files::write_atomic(&file, &bytes, None))
                .map_err(|e| Error::new(format!("cannot write {}: {e}", file.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            cogno: "test".into(),
            created_unix: 1,
            created: "1970-01-01T00:00:01.000Z".into(),
            layout: super::super::layout::CURRENT,
            secrets_included: false,
            servers: Vec::new(),
            members: Vec::new(),
        }
    }

    #[test]
    fn an_archive_reads_back_and_a_flipped_byte_is_refused_naming_a_member() {
        let tmp = crate::testkit::TempDir::new("archive");
        let target = tmp.path().join("b.tar.zst");
        let staging = Staging::new(&target).unwrap();
        let part = staging.part("redis").unwrap();
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        fs::write(part.join("dump.rdb"), &big).unwrap();
        staging
            .add_file(Path::new("stack/cogno.yaml"), b"services: {}\n")
            .unwrap();
        let written = staging.finish(manifest()).unwrap();
        assert_eq!(written.members.len(), 2);
        assert!(!sibling(&target, "staging").exists() && !sibling(&target, "partial").exists());

        let out = tmp.path().join("out");
        let read_back = read(&target, Some(&out)).unwrap();
        assert_eq!(read_back.members.len(), 2);
        assert_eq!(fs::read(out.join("redis/dump.rdb")).unwrap(), big);

        let mut bytes = fs::read(&target).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&target, &bytes).unwrap();
        let err = read(&target, None).unwrap_err().to_string();
        assert!(err.contains("is damaged: member `"), "{err}");
    }

    #[test]
    fn a_killed_backups_leftovers_are_removed_and_a_running_ones_work_is_not() {
        let tmp = crate::testkit::TempDir::new("archive-leftovers");
        let dead = tmp.path().join(".cogno-backup-1.tar.zst.staging");
        let dead_partial = tmp.path().join(".cogno-backup-1.tar.zst.partial");
        fs::create_dir(&dead).unwrap();
        fs::write(&dead_partial, "half").unwrap();
        let foreign = tmp.path().join(".notes.staging");
        fs::create_dir(&foreign).unwrap();
        let running = Staging::new(&tmp.path().join("cogno-backup-2.tar.zst")).unwrap();
        assert!(!dead.exists() && !dead_partial.exists(), "a killed one's");
        assert!(
            foreign.exists(),
            "only cogno's names are taken for leftovers"
        );

        let next = Staging::new(&tmp.path().join("cogno-backup-3.tar.zst")).unwrap();
        assert!(running.dir.exists(), "a running backup's work is kept");
        let err = Staging::new(&tmp.path().join("cogno-backup-2.tar.zst"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("another `cogno backup` is writing"), "{err}");
        assert!(running.dir.exists());
        drop((running, next));
    }

    #[test]
    fn an_existing_target_is_never_replaced() {
        let tmp = crate::testkit::TempDir::new("archive-exists");
        let target = tmp.path().join("b.tar.zst");
        fs::write(&target, "mine").unwrap();
        let err = Staging::new(&target).err().unwrap().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "mine");
    }
}
