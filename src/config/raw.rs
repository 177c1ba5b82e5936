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
    pub secrets: Option<IndexMap<String, RawSecret>>,
    #[serde(default)]
    pub env: IndexMap<String, EnvValue>,
    pub services: IndexMap<String, RawService>,
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
    pub namespace: Option<String>,
    pub command: Option<Argv>,
    pub oneshot: Option<Lenient<bool>>,
    pub priority: Option<Lenient<i64>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub no_new_privs: Option<Lenient<bool>>,
    pub secrets: Option<Vec<String>>,
    #[serde(default)]
    pub env: IndexMap<String, EnvValue>,
    pub depends_on: Option<DependsOn>,
    pub health: Option<RawHealth>,
    pub restart: Option<RestartPolicy>,
    pub startsecs: Option<Dur>,
    pub backoff: Option<RawBackoff>,
    pub max_restarts: Option<Lenient<u32>>,
    pub critical: Option<Lenient<bool>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Dur>,
    pub start_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub exec: Option<Argv>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Started,
    Healthy,
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
    Map(IndexMap<String, Condition>),
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
        let v = serde_yaml::Value::deserialize(d)?;
        if let serde_yaml::Value::String(s) = &v {
            return s.trim().parse().map(Lenient).map_err(|_| {
                de::Error::custom(format!(
                    "invalid value `{s}`: expected {}",
                    std::any::type_name::<T>()
                ))
            });
        }
        T::deserialize(v)
            .map(Lenient)
            .map_err(|e| de::Error::custom(e.to_string()))
    }
}

/// A duration written with a unit: `500ms`, `5s`, `2m`, `1h`, or `1m30s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        match v {
            serde_yaml::Value::String(s) => parse_duration(&s).map(Dur).map_err(de::Error::custom),
            serde_yaml::Value::Number(n) => Err(de::Error::custom(format!(
                "`{n}` has no unit: write it as `{n}s` or `{n}ms`"
            ))),
            other => Err(de::Error::custom(format!(
                "expected a duration like `500ms`, `5s` or `2m`, found {}",
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            ))),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
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
