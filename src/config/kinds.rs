//! The bundled kinds' static facts: one row per `kind:` in [`KINDS`], read
//! by the config builder for a bundled service's defaults (port, user,
//! priority, critical, stop signal) and for the keys it may use. What a
//! kind *does* (its files, command, probe) is its server in `crate::bundled`,
//! found by the same name.

use nix::sys::signal::Signal;
use serde::de::{self, Deserialize, Deserializer};
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

/// What cogno knows about a kind before running anything.
#[derive(Debug)]
pub struct KindFacts {
    /// What `kind:` says, and its server's name in `crate::bundled`.
    pub name: &'static str,
    pub port: u16,
    /// The user it runs as when cogno is root and `user:` is not set: a
    /// bundled server never runs as root by default.
    pub user: DefaultUser,
    pub priority: i64,
    pub critical: bool,
    pub stop_signal: Signal,
    /// Its default `backoff.max`. A bundled server recovers from a crash by
    /// itself (PostgreSQL replays its WAL, Redis its AOF) and every app waits
    /// on it: waiting longer than it takes to start gains nothing, unlike an
    /// app that may be crashing on a bad deploy.
    pub backoff_max: Duration,
    /// The kind-specific keys it takes (listed in `config::kind_keys`).
    pub keys: &'static [&'static str],
}

/// A server's own system user (or `nobody`, for a server with none), and
/// the Debian package that creates it.
#[derive(Debug)]
pub struct DefaultUser {
    pub name: &'static str,
    pub package: &'static str,
}

/// A crashed bundled server is back within about this long, however many
/// times in a row it crashed (bench/killstorm.sh measures it).
const BUNDLED_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Every kind. Bundled servers run as their own users when cogno is root
/// (initdb refuses root); Temporal, which has no system user of its own, as
/// `nobody` (the quick-start image gives it a `temporal` user). PostgreSQL
/// and Redis start before the apps (priority 100) and Temporal, which
/// stores nothing of the apps', after them (200).
pub static KINDS: &[KindFacts] = &[
    KindFacts {
        name: "postgres",
        port: 5432,
        user: DefaultUser {
            name: "postgres",
            package: "postgresql",
        },
        priority: 100,
        critical: true,
        // Its "fast" shutdown: a clean checkpoint, no recovery next start.
        stop_signal: Signal::SIGINT,
        backoff_max: BUNDLED_BACKOFF_MAX,
        keys: &["port", "settings", "bin_dir", "databases", "extensions"],
    },
    KindFacts {
        name: "redis",
        port: 6379,
        user: DefaultUser {
            name: "redis",
            package: "redis-server",
        },
        priority: 100,
        critical: true,
        stop_signal: Signal::SIGTERM,
        backoff_max: BUNDLED_BACKOFF_MAX,
        keys: &["port", "settings", "bin"],
    },
    KindFacts {
        name: "temporal",
        port: 7233,
        // Its gRPC and HTTP ports are unauthenticated: as root, any local
        // user could otherwise drive a root process through them.
        user: DefaultUser {
            name: "nobody",
            package: "base-passwd",
        },
        priority: 200,
        critical: true,
        stop_signal: Signal::SIGTERM,
        backoff_max: BUNDLED_BACKOFF_MAX,
        keys: &["port", "bin", "namespace", "ui_port"],
    },
];

/// Keys that some kinds spell differently: (key, the other spelling).
const SPELLED_ALSO: &[(&str, &str)] = &[("bin", "bin_dir")];

/// A bundled kind: a row of [`KINDS`].
#[derive(Clone, Copy)]
pub struct Kind(&'static KindFacts);

impl Kind {
    pub fn find(name: &str) -> Option<Kind> {
        KINDS.iter().find(|k| k.name == name).map(Kind)
    }

    /// Every kind, in table order.
    pub fn all() -> impl Iterator<Item = Kind> {
        KINDS.iter().map(Kind)
    }

    /// Its row, for as long as the program runs.
    pub fn facts(self) -> &'static KindFacts {
        self.0
    }

    pub fn takes(self, key: &str) -> bool {
        self.keys.contains(&key)
    }
}

impl std::ops::Deref for Kind {
    type Target = KindFacts;
    fn deref(&self) -> &KindFacts {
        self.0
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.name == other.name
    }
}

impl Eq for Kind {}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        // serde wants the names as a 'static slice.
        static NAMES: LazyLock<Vec<&str>> =
            LazyLock::new(|| KINDS.iter().map(|k| k.name).collect());
        let name = String::deserialize(d)?;
        Kind::find(&name).ok_or_else(|| de::Error::unknown_variant(&name, NAMES.as_slice()))
    }
}

/// Which services `key` applies to, for the error when another one sets it:
/// "kind: postgres and kind: redis", or "bundled services (kind: …)" when
/// every kind takes it.
pub fn applies_to(key: &str) -> String {
    let taking: Vec<&str> = KINDS
        .iter()
        .filter(|k| k.keys.contains(&key))
        .map(|k| k.name)
        .collect();
    if taking.len() == KINDS.len() {
        return format!("bundled services (kind: {})", joined(&taking, "or"));
    }
    let kinds: Vec<String> = taking.iter().map(|n| format!("kind: {n}")).collect();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let mut what = joined(&kinds, "and");
    for (k, other) in SPELLED_ALSO.iter().filter(|(k, _)| *k == key) {
        let instead: Vec<&str> = KINDS
            .iter()
            .filter(|kind| !kind.keys.contains(k) && kind.keys.contains(other))
            .map(|kind| kind.name)
            .collect();
        if !instead.is_empty() {
            let verb = if instead.len() == 1 { "uses" } else { "use" };
            what.push_str(&format!(" ({} {verb} {other})", joined(&instead, "and")));
        }
    }
    what
}

/// "a", "a and b", "a, b and c" (with `last` as the last joint).
fn joined(items: &[&str], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., end] => format!("{} {last} {end}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_kind_is_a_kind_key_and_names_are_unique() {
        let empty = serde_saphyr::from_str("{}").unwrap();
        let keys = super::super::kind_keys(&empty).map(|(k, _)| k);
        for k in KINDS {
            for key in k.keys {
                assert!(keys.contains(key), "{}: unknown key `{key}`", k.name);
            }
            assert_eq!(KINDS.iter().filter(|o| o.name == k.name).count(), 1);
        }
    }

    #[test]
    fn the_keys_say_which_kinds_take_them() {
        assert_eq!(
            applies_to("port"),
            "bundled services (kind: postgres, redis or temporal)"
        );
        assert_eq!(applies_to("settings"), "kind: postgres and kind: redis");
        assert_eq!(
            applies_to("bin"),
            "kind: redis and kind: temporal (postgres uses bin_dir)"
        );
        assert_eq!(applies_to("bin_dir"), "kind: postgres");
        assert_eq!(applies_to("databases"), "kind: postgres");
        assert_eq!(applies_to("extensions"), "kind: postgres");
        assert_eq!(applies_to("namespace"), "kind: temporal");
        assert_eq!(applies_to("ui_port"), "kind: temporal");
    }
}
