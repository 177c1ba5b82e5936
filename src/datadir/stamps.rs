//! The data directory's stamps in DATA/.cogno: what created it (`created`,
//! written once after the first preparation) and when it first ran complete
//! (`initialized`, written once when every service was first healthy).

use super::{files, DataDir};

/// What created this data directory, recorded once in DATA/.cogno/created.
pub struct Versions {
    pub postgres_major: Option<u32>,
    pub temporal_cli: Option<String>,
}

impl DataDir {
    /// Records, once, which versions created this data directory.
    pub fn record_creation(&self, v: &Versions) -> std::io::Result<()> {
        let text = format!(
            "# What created this data directory (written once by cogno).\ncogno={}\npostgresql_major={}\ntemporal_cli={}\ncreated_unix={}\n",
            env!("CARGO_PKG_VERSION"),
            v.postgres_major.map(|m| m.to_string()).unwrap_or_default(),
            v.temporal_cli.clone().unwrap_or_default(),
            unix_now()
        );
        self.stamp_once("created", &text)
    }

    /// After a major upgrade (or its rollback) of PostgreSQL, `created`
    /// says which major the cluster now is, so that it never names a version
    /// the data no longer has. A data directory without the stamp has none
    /// to correct.
    pub fn record_postgres_major(&self, major: u32) -> Result<(), crate::error::Error> {
        let file = self.created_stamp();
        let rewrite = || -> std::io::Result<()> {
            let Some(text) = files::read_small(&file, 1 << 16).map_err(std::io::Error::other)?
            else {
                return Ok(());
            };
            let text: String = text
                .lines()
                .map(|l| match l.starts_with("postgresql_major=") {
                    true => format!("postgresql_major={major}\n"),
                    false => format!("{l}\n"),
                })
                .collect();
            files::write_atomic(&file, text.as_bytes(), None)
        };
        rewrite()
            .map_err(|e| crate::error::Error::new(format!("cannot update {}: {e}", file.display())))
    }

    /// DATA/.cogno/created
    pub fn created_stamp(&self) -> std::path::PathBuf {
        self.cogno_dir().join("created")
    }

    /// DATA/.cogno/initialized: the stack has been healthy once (its app's
    /// data, sessions and tokens were made with its secrets).
    pub fn initialized_stamp(&self) -> std::path::PathBuf {
        self.cogno_dir().join("initialized")
    }

    /// Marks the first complete start (every service healthy), once.
    pub fn mark_initialized(&self) -> std::io::Result<()> {
        self.stamp_once("initialized", &format!("first_ready_unix={}\n", unix_now()))
    }

    /// Writes DATA/.cogno/`name` unless it exists: a stamp is never rewritten.
    fn stamp_once(&self, name: &str, text: &str) -> std::io::Result<()> {
        let file = self.cogno_dir().join(name);
        if file.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(self.cogno_dir())?;
        files::write_atomic(&file, text.as_bytes(), None)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_written_once() {
        let tmp = crate::testkit::TempDir::new("datadir-stamps");
        let d = DataDir::new(tmp.path());
        let v = |major| Versions {
            postgres_major: Some(major),
            temporal_cli: None,
        };
        d.record_creation(&v(15)).unwrap();
        d.record_creation(&v(17)).unwrap();
        let created = std::fs::read_to_string(tmp.path().join(".cogno/created")).unwrap();
        assert!(created.contains("postgresql_major=15\n"), "{created}");
        d.mark_initialized().unwrap();
        let first = std::fs::read(tmp.path().join(".cogno/initialized")).unwrap();
        d.mark_initialized().unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join(".cogno/initialized")).unwrap(),
            first
        );
    }
}
