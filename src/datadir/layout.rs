//! The data directory's layout version, in DATA/.cogno/layout: which
//! arrangement of files (`super`'s map) the directory follows. A newer cogno
//! migrates an older layout forward, one step at a time, each step
//! idempotent and the version written last (so a crash mid-step repeats
//! the step); an older cogno refuses a newer layout before touching anything.

use super::{files, DataDir};
use crate::error::Error;

/// The layout this cogno writes and reads.
///
/// 1. Every data directory before layout versions existed (no `layout` file).
/// 2. The same files, with DATA/.cogno/layout recording the version.
pub const CURRENT: u32 = 2;

/// The migrations, `MIGRATIONS[i]` taking layout `i + 1` to `i + 2`. Each is
/// idempotent: it may be run again after a crash part-way.
const MIGRATIONS: &[fn(&DataDir) -> std::io::Result<()>] = &[
    // 1 → 2 moves nothing: what it adds is the layout record itself.
    |_| Ok(()),
];

impl DataDir {
    /// DATA/.cogno/layout
    pub fn layout_file(&self) -> std::path::PathBuf {
        self.cogno_dir().join("layout")
    }

    /// The layout version DATA follows: None for a directory that holds
    /// nothing yet (a new one takes [`CURRENT`]), 1 for one written before
    /// versions were recorded.
    pub fn layout_version(&self) -> Result<Option<u32>, Error> {
        if !self.root().is_dir() {
            // Missing, or not a directory: the pre-flight checks say which.
            return Ok(None);
        }
        let file = self.layout_file();
        match files::read_small(&file, 64).map_err(Error::config)? {
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                Error::config(format!(
                    "{} should hold the data directory's layout version (like `{CURRENT}`) but holds {}",
                    file.display(),
                    files::shown(text.trim())
                ))
                .help("restore the file from a backup of the data directory; cogno changed nothing")
            }),
            None if self.holds_data() => Ok(Some(1)),
            None => Ok(None),
        }
    }

    /// Read-only: refuses a layout newer than this cogno's, naming both
    /// versions and what to do. Called before anything is written.
    pub fn check_layout(&self) -> Result<(), Error> {
        match self.layout_version()? {
            Some(found) if found > CURRENT => Err(Error::config(format!(
                "the data directory {} has layout version {found}, written by a newer cogno; this \
                 cogno ({}) knows layout versions up to {CURRENT} and has changed nothing",
                self.root().display(),
                env!("CARGO_PKG_VERSION")
            ))
            .help(
                "run the newer cogno that wrote it (an older one cannot read what it changed), \
                 or restore a backup taken with this version (docs/backup.md)",
            )),
            _ => Ok(()),
        }
    }

    /// Brings DATA's layout to [`CURRENT`]: a new directory is stamped, an
    /// older one migrated step by step. Returns the versions it migrated
    /// from and to, for the log; None when there was nothing to do.
    pub fn migrate_layout(&self) -> Result<Option<(u32, u32)>, Error> {
        self.check_layout()?;
        let found = self.layout_version()?;
        let cannot = |e: std::io::Error| {
            Error::new(format!(
                "cannot migrate the data directory {} to layout {CURRENT}: {e}",
                self.root().display()
            ))
            .help("free space or fix permissions and start again: the migration resumes where it stopped")
        };
        let from = found.unwrap_or(CURRENT);
        for (i, step) in MIGRATIONS.iter().enumerate().skip(from as usize - 1) {
            step(self).map_err(cannot)?;
            self.write_layout(i as u32 + 2).map_err(cannot)?;
        }
        if found.is_none() {
            self.write_layout(CURRENT).map_err(cannot)?;
        }
        Ok(found.filter(|&f| f < CURRENT).map(|f| (f, CURRENT)))
    }

    fn write_layout(&self, version: u32) -> std::io::Result<()> {
        files::create_private_dir(&self.cogno_dir())?;
        files::write_atomic(&self.layout_file(), format!("{version}\n").as_bytes(), None)
    }

    /// Whether DATA holds what a run of cogno made (a server's data, its
    /// stamps): the run directory and the secrets, which `cogno env`
    /// writes too, do not date a layout.
    fn holds_data(&self) -> bool {
        [
            self.postgres(),
            self.redis(),
            self.temporal(),
            self.cogno_dir(),
        ]
        .iter()
        .any(|p| std::fs::symlink_metadata(p).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_stamped_and_an_old_one_migrated_once() {
        let tmp = crate::testkit::TempDir::new("layout");
        let fresh = DataDir::new(tmp.path().join("fresh"));
        fresh.create().unwrap();
        assert_eq!(fresh.layout_version().unwrap(), None);
        assert_eq!(fresh.migrate_layout().unwrap(), None);
        assert_eq!(fresh.layout_version().unwrap(), Some(CURRENT));

        let old = DataDir::new(tmp.path().join("old"));
        old.create().unwrap();
        std::fs::create_dir(old.redis()).unwrap();
        assert_eq!(old.layout_version().unwrap(), Some(1));
        assert_eq!(old.migrate_layout().unwrap(), Some((1, CURRENT)));
        assert_eq!(old.migrate_layout().unwrap(), None, "idempotent");
    }

    #[test]
    fn a_newer_layout_is_refused_untouched() {
        let tmp = crate::testkit::TempDir::new("layout-newer");
        let d = DataDir::new(tmp.path());
        d.write_layout(CURRENT + 1).unwrap();
        let err = d.migrate_layout().unwrap_err().to_string();
        assert!(
            err.contains(&format!("layout version {}", CURRENT + 1))
                && err.contains(&format!("up to {CURRENT}")),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(d.layout_file()).unwrap(),
            format!("{}\n", CURRENT + 1)
        );
    }
}
