//! The stack file as written: serde types that mirror the YAML one to one,
//! with `deny_unknown_fields` so that a typo is an error, not a silent default.
//! Interpreting them (defaults, cross-references) is `config::build`'s job.

use super::kinds::Kind;
use indexmap::IndexMap;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<String>,
    pub shutdown_budget: Option<Dur>,
    pub health_listen: Option<String>,
    /// Also serve GET /metrics on `health_listen`.
    #[serde(default)]
    pub metrics: bool,
    pub logs: Option<RawLogs>,
    pub secrets: Option<IndexMap<String, RawSecret>>,
    pub env_file: Option<EnvFiles>,
    #[serde(default)]
    pub env: IndexMap<String, EnvValue>,
    pub notify: Option<RawNotify>,
    pub backup: Option<RawBackup>,
    pub services: IndexMap<String, RawService>,
}

/// `backup:`: cogno backs the running stack up on a schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    pub schedule: String,
    pub keep: Option<Lenient<u32>>,
    pub to: Option<String>,
}

/// `logs:`: where the services' output goes besides stdout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    /// Also in DATA/logs/SERVICE.log in the foreground (always when detached).
    #[serde(default)]
    pub files: bool,
}

/// `notify:`: who is told about the stack's troubles, and of which.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub command: Option<Argv>,
    pub webhooks: Option<Vec<String>>,
    pub ca_file: Option<String>,
    pub on: Option<Vec<NotifyOn>>,
    pub user: Option<String>,
    pub timeout: Option<Dur>,
    pub retries: Option<Lenient<u32>>,
}

/// The events a notification can be sent on (docs/configuration.md, `notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// A service gave up restarting (FATAL) or failed for good.
    Fatal,
    /// A critical service's failure is stopping the stack.
    Critical,
    /// A running service failed its health checks.
    Unhealthy,
    /// A service that was unhealthy, crashed or FATAL is healthy again.
    Recovered,
    /// The stack is ready (every service healthy or completed).
    Ready,
    /// The stack is not ready any more, or will not get there.
    Degraded,
    /// A scheduled backup (`backup:`) failed.
    #[serde(rename = "backup_failed")]
    BackupFailed,
}

impl NotifyOn {
    pub const ALL: &[NotifyOn] = &[
        NotifyOn::Fatal,
        NotifyOn::Critical,
        NotifyOn::Unhealthy,
        NotifyOn::Recovered,
        NotifyOn::Ready,
        NotifyOn::Degraded,
        NotifyOn::BackupFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Fatal => "fatal",
            NotifyOn::Critical => "critical",
            NotifyOn::Unhealthy => "unhealthy",
            NotifyOn::Recovered => "recovered",
            NotifyOn::Ready => "ready",
            NotifyOn::Degraded => "degraded",
            NotifyOn::BackupFailed => "backup_failed",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub bytes: Lenient<usize>,
    pub encoding: Option<SecretEncoding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    Hex,
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub kind: Option<Kind>,
    pub port: Option<Lenient<u16>>,
    #[serde(default)]
    pub settings: IndexMap<String, EnvValue>,
    pub bin: Option<String>,
    pub bin_dir: Option<String>,
    pub databases: Option<Vec<String>>,
    pub extensions: Option<Vec<String>>,
    pub namespace: Option<String>,
    pub ui_port: Option<Lenient<u16>>,
    pub command: Option<Argv>,
    pub oneshot: Option<Lenient<bool>>,
    /// A oneshot run on a cron schedule.
    pub schedule: Option<String>,
    /// A scheduled oneshot also runs when the stack starts.
    pub run_at_start: Option<Lenient<bool>>,
    pub priority: Option<Lenient<i64>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub no_new_privs: Option<Lenient<bool>>,
    pub secrets: Option<Vec<String>>,
    pub env_file: Option<EnvFiles>,
    #[serde(default)]
    pub env: IndexMap<String, EnvValue>,
    pub depends_on: Option<DependsOn>,
    /// Compose's `profiles:`: it starts only when one of these is active.
    #[serde(default)]
    pub profiles: Vec<String>,
    pub health: Option<RawHealth>,
    pub restart: Option<RestartPolicy>,
    pub startsecs: Option<Dur>,
    pub backoff: Option<RawBackoff>,
    pub max_restarts: Option<Lenient<u32>>,
    pub critical: Option<Lenient<bool>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Dur>,
    pub start_timeout: Option<Dur>,
    /// Restart it when these paths change (`config::watch`).
    pub watch: Option<super::watch::RawWatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub http: Option<String>,
    /// With `http`: the statuses that pass (numbers, `4xx`, `200-299`).
    pub status: Option<Vec<EnvValue>>,
    pub tcp: Option<String>,
    pub exec: Option<Argv>,
    /// A Temporal task queue that must have a poller (the bundled temporal's).
    pub temporal_task_queue: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub retries: Option<Lenient<u32>>,
    pub start_period: Option<Dur>,
    pub start_interval: Option<Dur>,
    pub on_unhealthy: Option<OnUnhealthy>,
}

/// What a service that was healthy and fails `retries` checks in a row gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    /// Shown as unhealthy, left running.
    #[default]
    Mark,
    /// Stopped and started again, counted as a crash.
    Restart,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub initial: Option<Dur>,
    pub max: Option<Dur>,
    pub multiplier: Option<Lenient<f64>>,
    pub reset_after: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

/// docker compose's spellings are accepted too, so a compose file's
/// `depends_on` can be copied as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    #[serde(alias = "service_started")]
    Started,
    #[serde(alias = "service_healthy")]
    Healthy,
    #[serde(alias = "service_completed_successfully")]
    Completed,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        })
    }
}

/// `depends_on: [a, b]` or `depends_on: {a: completed, b: healthy}`.
#[derive(Debug)]
pub enum DependsOn {
    List(Vec<String>),
    Map(IndexMap<String, DependsOnEntry>),
}

/// One entry of the map form: a condition, or compose's long form
/// `{condition: service_healthy}`.
#[derive(Debug, Clone, Copy)]
pub struct DependsOnEntry(pub Condition);

/// compose's long form of a `depends_on` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongForm {
    condition: Condition,
}

impl<'de> Deserialize<'de> for DependsOnEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DependsOnEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("started | healthy | completed, or {condition: …}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DependsOnEntry, E> {
                Condition::deserialize(de::value::StrDeserializer::new(s)).map(DependsOnEntry)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<DependsOnEntry, A::Error> {
                LongForm::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|l| DependsOnEntry(l.condition))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DependsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of service names, or a map of service name to started | healthy | completed")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<DependsOn, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(DependsOn::List)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<DependsOn, A::Error> {
                IndexMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(DependsOn::Map)
            }
        }
        d.deserialize_any(V)
    }
}

/// `env_file:`: one file, or a list; an entry may be `{path: FILE, required: false}`
/// (compose's form) for a file that may be absent.
#[derive(Debug, Clone)]
pub struct EnvFiles {
    pub files: Vec<EnvFileRef>,
    /// Written as a list (an error about one file points at its item).
    pub list: bool,
}

#[derive(Debug, Clone)]
pub struct EnvFileRef {
    pub path: String,
    pub required: bool,
}

fn required_by_default() -> bool {
    true
}

impl<'de> Deserialize<'de> for EnvFileRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvFileRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file name, or {path: FILE, required: false}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EnvFileRef, E> {
                Ok(EnvFileRef {
                    path: s.to_owned(),
                    required: true,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EnvFileRef, A::Error> {
                EnvFileEntry::deserialize(de::value::MapAccessDeserializer::new(map)).map(|e| {
                    EnvFileRef {
                        path: e.path,
                        required: e.required,
                    }
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The map form of an `env_file` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFileEntry {
    path: String,
    #[serde(default = "required_by_default")]
    required: bool,
}

impl EnvFiles {
    fn one(file: EnvFileRef) -> EnvFiles {
        EnvFiles {
            files: vec![file],
            list: false,
        }
    }
}

impl<'de> Deserialize<'de> for EnvFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvFiles;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file name or a list of them")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EnvFiles, E> {
                EnvFileRef::deserialize(de::value::StrDeserializer::new(s)).map(EnvFiles::one)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EnvFiles, A::Error> {
                EnvFileRef::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(EnvFiles::one)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<EnvFiles, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(|files| EnvFiles { files, list: true })
            }
        }
        d.deserialize_any(V)
    }
}

/// A command: an argv list, or a string split like a shell would split words
/// (quotes and backslashes are honoured; no expansion, pipes or redirections).
#[derive(Debug, Clone)]
pub struct Argv(pub Vec<String>);

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Argv;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command: a list of arguments, or a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Argv, E> {
                split_words(s).map(Argv).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Argv, A::Error> {
                Vec::<EnvValue>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(|v| Argv(v.into_iter().map(|e| e.0).collect()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Splits a command line into words the way `sh` would, without any expansion.
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated single quote in `{s}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unterminated double quote in `{s}`")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated double quote in `{s}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// An environment value: YAML strings, numbers and booleans all become text,
/// so `PORT: 3000` works as well as `PORT: "3000"`.
#[derive(Debug, Clone)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(s.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(b.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number or boolean that may also be written as a string, so that
/// `priority: ${PRIORITY:-100}` works after interpolation.
#[derive(Debug, Clone, Copy)]
pub struct Lenient<T>(pub T);

impl<'de, T> Deserialize<'de> for Lenient<T>
where
    T: FromStr + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use de::value::{BoolDeserializer, F64Deserializer, I64Deserializer, U64Deserializer};
        let expected = std::any::type_name::<T>();
        match Scalar::deserialize(d)? {
            Scalar::Str(s) => s.trim().parse().map(Lenient).map_err(|_| {
                de::Error::custom(format!("invalid value `{s}`: expected {expected}"))
            }),
            Scalar::Bool(b) => T::deserialize(BoolDeserializer::<D::Error>::new(b)).map(Lenient),
            Scalar::Int(n) => T::deserialize(I64Deserializer::<D::Error>::new(n)).map(Lenient),
            Scalar::UInt(n) => T::deserialize(U64Deserializer::<D::Error>::new(n)).map(Lenient),
            Scalar::Float(n) => T::deserialize(F64Deserializer::<D::Error>::new(n)).map(Lenient),
            Scalar::Other(what) => Err(de::Error::custom(format!(
                "invalid type: {what}, expected {expected}"
            ))),
        }
    }
}

/// A scalar as written, for the types that take more than one form; lists
/// and maps are only named (`Other`), for the error.
enum Scalar {
    Str(String),
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(s.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar::UInt(n))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(n))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other("nothing (null)"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
                de::IgnoredAny::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Scalar::Other("a list"))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
                de::IgnoredAny::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Scalar::Other("a map"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written with a unit: `500ms`, `5s`, `2m`, `1h`, or `1m30s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let no_unit = |n: String| format!("`{n}` has no unit: write it as `{n}s` or `{n}ms`");
        let found = match Scalar::deserialize(d)? {
            Scalar::Str(s) => return parse_duration(&s).map(Dur).map_err(de::Error::custom),
            Scalar::Int(n) => return Err(de::Error::custom(no_unit(n.to_string()))),
            Scalar::UInt(n) => return Err(de::Error::custom(no_unit(n.to_string()))),
            Scalar::Float(n) => return Err(de::Error::custom(no_unit(n.to_string()))),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Other(what) => what.to_owned(),
        };
        Err(de::Error::custom(format!(
            "expected a duration like `500ms`, `5s` or `2m`, found {found}"
        )))
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{s}`: write it like `500ms`, `5s`, `2m` or `1h`");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{s}` has no unit: write it as `{s}s` or `{s}ms`"))?;
        if digits == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let secs = match &rest[digits..unit_end] {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"node "a b" 'c d' e\ f"#).unwrap(),
            ["node", "a b", "c d", "e f"]
        );
        assert!(split_words("sh -c 'oops").is_err());
    }
}
