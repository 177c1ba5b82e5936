//! The stack definition: loading a YAML stack file, interpolating `${VAR}`,
//! applying defaults and checking everything a start could trip over, so that
//! a bad file stops cogno before anything is started or written.
//!
//! Every error is a [`Diagnostic`] naming the file, line, column and key.

pub mod diagnostic;
mod envfile;
mod interpolate;
pub mod kinds;
pub mod plan;
mod raw;
pub mod select;
pub mod watch;
mod yaml;

use crate::fmt::fmt_duration;
use crate::secrets::Credentials;
use crate::user::RunAs;
use diagnostic::{display_path, Diagnostic, Seg};
use nix::sys::signal::Signal;
use plan::Plan;
use raw::{
    Argv, DependsOn, EnvFiles, EnvValue, RawBackup, RawConfig, RawHealth, RawNotify, RawService,
};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use yaml::Node;

pub use envfile::{interpolation_vars, lookup as env_file_lookup};
pub use kinds::Kind;
pub use raw::{parse_duration, Condition, NotifyOn, OnUnhealthy, RestartPolicy};
pub use select::Selection;

/// A validated stack, ready to run.
#[derive(Debug, Clone)]
pub struct Stack {
    pub file: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub shutdown_budget: Duration,
    /// Also serve the health document over TCP here (off by default).
    pub health_listen: Option<std::net::SocketAddr>,
    /// Also serve Prometheus metrics on `health_listen` (`metrics: true`).
    pub metrics: bool,
    /// The services' output in DATA/logs in the foreground too (`logs: {files: true}`).
    pub log_files: bool,
    pub env: Vec<(String, String)>,
    /// Declared `secrets:`; None means the defaults of the bundled services.
    pub secrets: Option<Vec<crate::secrets::SecretSpec>>,
    pub services: Vec<Service>,
    pub plan: Plan,
    /// Who is told about the stack's troubles (`notify:`); None: nobody.
    pub notify: Option<Notify>,
    /// Backups cogno takes itself (`backup:`); None: only `cogno backup`.
    pub backup: Option<BackupPlan>,
}

/// `backup:`, validated (see `crate::backups`).
#[derive(Debug, Clone)]
pub struct BackupPlan {
    pub schedule: crate::schedule::Schedule,
    /// How many of cogno's archives in `to` a scheduled backup leaves.
    pub keep: u32,
    /// Where the archives go, relative to the stack file's directory; None:
    /// DATA/backups, as for `cogno backup`.
    pub to: Option<PathBuf>,
}

/// `notify:`, validated: a hook command and/or webhooks, and the events
/// they are told about (see `crate::notify`).
#[derive(Debug, Clone)]
pub struct Notify {
    pub command: Option<Vec<String>>,
    pub webhooks: Vec<Webhook>,
    /// Certificate authorities trusted for webhooks besides Mozilla's
    /// roots (`ca_file:`): an internal endpoint's private CA.
    pub ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub on: Vec<NotifyOn>,
    /// The hook's user: `user:`, or `nobody` when cogno is root. None when
    /// cogno is not root (the hook runs as cogno's user).
    pub run_as: Option<RunAs>,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// Further attempts after a failed delivery.
    pub retries: u32,
}

/// A webhook's URL. Its path and query are often the secret (a Slack or
/// Discord incoming-webhook URL is its own credential): only `host` is
/// ever shown.
#[derive(Clone)]
pub struct Webhook {
    pub url: hyper::Uri,
    /// `scheme://host[:port]`, what logs and events name it by.
    pub host: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Webhook({})", self.host)
    }
}

/// What `notify.on` defaults to: the troubles, and their end.
pub const DEFAULT_NOTIFY_ON: &[NotifyOn] = &[
    NotifyOn::Fatal,
    NotifyOn::Critical,
    NotifyOn::Unhealthy,
    NotifyOn::Recovered,
    NotifyOn::BackupFailed,
];
const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_NOTIFY_RETRIES: u32 = 3;
/// A week of daily backups.
const DEFAULT_BACKUP_KEEP: u32 = 7;
/// The hook's user when cogno is root and `notify.user` is not set.
const DEFAULT_NOTIFY_USER: &str = "nobody";

impl Stack {
    /// The first service of `kind`.
    pub fn bundled(&self, kind: Kind) -> Option<(&Service, &Bundled)> {
        self.services.iter().find_map(|s| {
            s.bundled
                .as_ref()
                .filter(|b| b.kind == kind)
                .map(|b| (s, b))
        })
    }
}

/// A service whose program, files and health check cogno knows (`kind:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundled {
    pub kind: Kind,
    pub port: u16,
    /// The program (redis-server, temporal) or, for postgres, its bin directory.
    pub bin: Option<PathBuf>,
    pub settings: Vec<(String, String)>,
    /// Postgres: databases created for the app besides `cognobserve`.
    pub databases: Vec<String>,
    /// Postgres: extensions created as the superuser in each app database.
    pub extensions: Vec<String>,
    /// Temporal: the namespace the dev server creates.
    pub namespace: String,
    /// Temporal: the port of its Web UI, on the same address; None: no UI.
    pub ui_port: Option<u16>,
}

impl Bundled {
    /// Every port it listens on that the stack chooses: `port`, and the
    /// Web UI's when it has one.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        std::iter::once(self.port).chain(self.ui_port)
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// Empty for a bundled service until its files are prepared.
    pub command: Vec<String>,
    pub bundled: Option<Bundled>,
    pub oneshot: bool,
    /// A oneshot's `schedule:`: run at those times (see `supervisor`).
    pub schedule: Option<crate::schedule::Schedule>,
    /// A scheduled oneshot runs when the stack starts too (`run_at_start: true`).
    pub run_at_start: bool,
    pub priority: i64,
    pub working_dir: Option<PathBuf>,
    /// The `user:` as written (or a bundled server's default user).
    pub user: Option<String>,
    /// That user, resolved when the stack was loaded; None when cogno is not
    /// root (services then run as cogno's user).
    pub run_as: Option<RunAs>,
    /// Start it with PR_SET_NO_NEW_PRIVS (the default): nothing it runs can
    /// gain privileges through setuid binaries or file capabilities.
    pub no_new_privs: bool,
    /// Which of the stack's secrets it gets (`secrets:`); None: all of them.
    /// A bundled server gets none: its credentials reach it through its files.
    pub secrets: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub depends_on: Vec<Dependency>,
    /// `profiles:`: it starts only when one of these is active (empty: always).
    pub profiles: Vec<String>,
    pub health: Option<Health>,
    /// With a health check: how long a start may take to become healthy
    /// (`start_timeout`, or derived from the check's settings); None: no limit.
    pub start_timeout: Option<Duration>,
    pub restart: RestartPolicy,
    pub startsecs: Duration,
    pub backoff: Backoff,
    pub max_restarts: u32,
    pub critical: bool,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    /// `watch:`: restart it when these paths change; None: no watching.
    pub watch: Option<watch::Watch>,
}

/// "Start me only once service `on` is in `condition`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependency {
    pub on: usize,
    pub condition: Condition,
    /// Derived from a lower `priority` rather than written in `depends_on`.
    pub implicit: bool,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub on_unhealthy: OnUnhealthy,
}

impl Health {
    /// The default `start_timeout`: the start period, then `retries` checks
    /// that each wait `start_interval` and may take `timeout` — the moment
    /// a start that keeps failing would be marked unhealthy —, rounded up
    /// to a whole second.
    pub fn default_start_timeout(&self) -> Duration {
        let checks = (self.start_interval + self.timeout) * self.retries;
        let t = self.start_period + checks;
        Duration::from_secs(t.as_secs() + u64::from(t.subsec_nanos() > 0))
    }
}

/// The HTTP statuses a health check counts as passing (`health.status`):
/// ranges, each written as a number, a class (`2xx`) or `LOW-HIGH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStatuses(Vec<(u16, u16)>);

impl Default for HttpStatuses {
    /// Any 2xx or 3xx, as before `status` existed: a redirect to a login
    /// page still says the server answers.
    fn default() -> HttpStatuses {
        HttpStatuses(vec![(200, 299), (300, 399)])
    }
}

impl HttpStatuses {
    pub fn pass(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }

    /// One item of `status`: `401`, `4xx` or `200-204`.
    fn parse_item(item: &str) -> Result<(u16, u16), String> {
        let code = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let bad = || {
            format!("`{item}` is not an HTTP status (100 to 599), a class like `2xx` or a range like `200-204`")
        };
        if let Some(class) = item.strip_suffix("xx").and_then(code_class) {
            return Ok((class * 100, class * 100 + 99));
        }
        match item.split_once('-') {
            Some((low, high)) => match (code(low), code(high)) {
                (Some(l), Some(h)) if l <= h => Ok((l, h)),
                _ => Err(bad()),
            },
            None => code(item).map(|c| (c, c)).ok_or_else(bad),
        }
    }
}

/// The first digit of a status class (`2` of `2xx`).
fn code_class(digit: &str) -> Option<u16> {
    digit.parse::<u16>().ok().filter(|d| (1..=5).contains(d))
}

impl std::fmt::Display for HttpStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|&(low, high)| match (low, high) {
                (l, h) if l == h => l.to_string(),
                (l, h) if l % 100 == 0 && h == l + 99 => format!("{}xx", l / 100),
                (l, h) => format!("{l}-{h}"),
            })
            .collect();
        f.write_str(&items.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET http://host:port/path`; a status of `statuses` passes.
    Http {
        url: String,
        authority: String,
        path: String,
        statuses: HttpStatuses,
    },
    /// A TCP connection to `host:port` is accepted.
    Tcp(String),
    /// The command exits 0.
    Exec(Vec<String>),
    /// The bundled Temporal server has a poller on task queue `queue` of
    /// `namespace` (a worker is polling it): DescribeTaskQueue on `port`.
    TemporalTaskQueue {
        port: u16,
        namespace: String,
        queue: String,
    },
    /// The bundled server's own check, in its protocol (`bundled::Server::probe`).
    Bundled {
        server: Bundled,
        /// The secrets it logs in with: none until `bundled::prepare` has
        /// loaded them, before the supervisor starts.
        credentials: Credentials,
        /// The data directory, where a server records its own state (the
        /// postmaster's status line): set by `bundled::prepare` too.
        data: Option<crate::datadir::DataDir>,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub reset_after: Duration,
}

impl Backoff {
    /// The delay before attempt `n` of a streak (n = 1 is the first retry).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = self.multiplier.powi(n.saturating_sub(1).min(64) as i32);
        self.initial.mul_f64(factor).min(self.max)
    }
}

pub const DEFAULT_SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);
const DEFAULT_PRIORITY: i64 = 100;
const DEFAULT_STARTSECS: Duration = Duration::from_secs(1);
const DEFAULT_MAX_RESTARTS: u32 = 5;
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// An app's: a service crashing on a bad deploy is not hammered (bundled
/// servers have their own, see `KindFacts::backoff_max`).
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Reads and validates the stack file at `path`.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Stack, Diagnostic> {
    let text = read_text(
        path,
        "the stack file",
        "pass --config FILE, set COGNO_CONFIG, or create ./cogno.yaml (see docs/configuration.md)",
    )?;
    parse(&text, path, env)
}

/// Reads a configuration file (the stack file, an env file) as UTF-8 text; a
/// byte that is not UTF-8 is shown where it is, like any other error in it.
fn read_text(path: &Path, what: &str, not_found: &str) -> Result<String, Diagnostic> {
    let bytes = std::fs::read(path).map_err(|e| {
        let help = if e.kind() == std::io::ErrorKind::NotFound {
            not_found
        } else {
            "check the path and its permissions"
        };
        Diagnostic::in_stack_file(path, format!("cannot read {what}: {e}")).help(help)
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(e.as_bytes());
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let span = diagnostic::Span {
            line: valid.iter().filter(|b| **b == b'\n').count() + 1,
            column: String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1,
            len: 1,
        };
        Diagnostic::in_stack_file(path, format!("{what} is not UTF-8 text"))
            .help("save it as UTF-8 (iconv -t UTF-8, or your editor's encoding setting)")
            .at(&text, Some(span))
    })
}

/// Parses and validates a stack file's text; `file` names it in errors, and
/// `env_file:` paths are relative to its directory.
pub fn parse(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Stack, Diagnostic> {
    let doc = yaml::parse(text).map_err(|e| {
        Diagnostic::in_stack_file(file, format!("invalid YAML: {}", e.message))
            .help("fix the YAML syntax at this position (indentation, quoting, a missing `:`)")
            .at(text, e.span)
    })?;
    let Some(mut doc) = doc else {
        return Err(Diagnostic::in_stack_file(file, "the stack file is empty")
            .help("declare at least one service under `services:` (see docs/configuration.md)"));
    };
    if let Some((within, first, again)) = doc.duplicate() {
        let within = if within.is_empty() {
            "the document".to_owned()
        } else {
            format!("`{}`", display_path(&within))
        };
        return Err(Diagnostic::in_stack_file(
            file,
            format!("invalid YAML: duplicate key `{}` in {within}", again.key),
        )
        .help(format!(
            "the first `{}` is on line {}, column {}; keep one of them (YAML would silently keep only one)",
            first.key, first.key_span.line, first.key_span.column
        ))
        .at(text, Some(again.key_span)));
    }
    // docker compose's extension keys: a place for anchors, ignored otherwise.
    doc.retain_top_level(|k| !k.starts_with("x-"));
    if let Err((path, err)) = interpolate::interpolate_tree(&mut doc, env, &mut Vec::new()) {
        // Interpolation rewrites strings only: every position is still the file's.
        return Err(interpolation_error(file, &path, err).at_path(text, &doc, &path));
    }
    let raw: RawConfig = serde_path_to_error::deserialize(&doc).map_err(|e| {
        let path = path_segments(e.path());
        let inner = e.into_inner().to_string();
        let message = if path.is_empty() {
            inner
        } else {
            format!("`{}`: {inner}", display_path(&path))
        };
        let listed = "every key, its type and its default are listed in docs/configuration.md";
        let help = match did_you_mean(&message) {
            Some(meant) => format!("did you mean `{meant}`? ({listed})"),
            None => listed.to_owned(),
        };
        Diagnostic::in_stack_file(file, message)
            .help(help)
            .at_path(text, &doc, &path)
    })?;
    Builder {
        text,
        file,
        doc: &doc,
    }
    .build(raw)
}

/// What a failed `${…}` means for the user, and what to do.
fn interpolation_error(
    file: &Path,
    path: &[Seg],
    err: interpolate::InterpolateError,
) -> Diagnostic {
    let used_in = display_path(path);
    let set_it = |name: &str| {
        format!(
            "set {name} in cogno's environment or in an env file \
             (.env beside the stack file, or --env-file)"
        )
    };
    match err {
        interpolate::InterpolateError::Unset(name) => Diagnostic::in_stack_file(
            file,
            format!("environment variable `{name}` is not set (used in `{used_in}`)"),
        )
        .help(format!(
            "{}, or give a default: ${{{name}:-value}}",
            set_it(&name)
        )),
        interpolate::InterpolateError::Required {
            name,
            empty,
            message,
        } => {
            let state = if empty { "is empty" } else { "is not set" };
            let why = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            Diagnostic::in_stack_file(
                file,
                format!("environment variable `{name}` {state} (used in `{used_in}`){why}"),
            )
            .help(set_it(&name))
        }
        interpolate::InterpolateError::Malformed(msg) => {
            Diagnostic::in_stack_file(file, format!("{msg} in `{used_in}`"))
                .help("write a literal `$` as `$$`")
        }
    }
}

/// For serde's "unknown field `helth`, expected one of `a`, `b`…": the
/// expected name closest to the one written, if it is close enough to be a
/// typo (as clap suggests for a mistyped flag).
fn did_you_mean(message: &str) -> Option<String> {
    // A mistyped key, or a mistyped value of a fixed set (`on: [fatl]`).
    let (_, rest) = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?;
    let (written, rest) = rest.split_once('`')?;
    let (_, expected) = rest.split_once("expected ")?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::jaro(written, name), name))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name.to_owned())
}

fn path_segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

/// Checks a webhook URL: http or https, with a host. The error says why
/// without repeating the URL.
fn webhook(url: &str) -> Result<Webhook, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("is not a URL ({e})"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        _ => return Err("is not an http:// or https:// URL".into()),
    };
    let Some(authority) = uri.authority() else {
        return Err("has no host".into());
    };
    if authority.as_str().contains('@') {
        return Err("carries a user and password: put the credential in the path or a query, as Slack and Discord do".into());
    }
    Ok(Webhook {
        host: format!("{scheme}://{authority}"),
        url: uri,
    })
}

/// Whether `name` is a portable environment variable name
/// (`[A-Za-z_][A-Za-z0-9_]*`): one a shell reads as an assignment.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// Turns the raw document into a [`Stack`], checking cross-references.
struct Builder<'a> {
    text: &'a str,
    file: &'a Path,
    /// The parsed document, for the position of a key path.
    doc: &'a Node,
}

impl Builder<'_> {
    fn err(&self, path: &[Seg], message: impl Into<String>, help: impl Into<String>) -> Diagnostic {
        Diagnostic::in_stack_file(self.file, message)
            .help(help)
            .at_path(self.text, self.doc, path)
    }

    /// A service's (or, with `within` empty, the stack's) environment: its
    /// `env_file:` files in order, then its `env:`, each later one winning.
    fn environment(
        &self,
        within: &[Seg],
        files: Option<&EnvFiles>,
        env: &indexmap::IndexMap<String, EnvValue>,
    ) -> Result<Vec<(String, String)>, Diagnostic> {
        let mut vars: indexmap::IndexMap<String, String> = indexmap::IndexMap::new();
        let listed = files.map_or(&[][..], |f| &f.files[..]);
        let base = self.file.parent().unwrap_or(Path::new(""));
        for (i, f) in listed.iter().enumerate() {
            let path = base.join(&f.path);
            if !f.required && !path.exists() {
                continue;
            }
            if !path.exists() {
                let mut at = within.to_vec();
                at.push(key("env_file"));
                if files.is_some_and(|f| f.list) {
                    at.push(Seg::Index(i));
                }
                return Err(self.err(
                    &at,
                    format!("env file `{}` does not exist", path.display()),
                    format!(
                        "create it, fix the path (relative to the stack file), or mark it optional: \
                         {{path: {}, required: false}}",
                        f.path
                    ),
                ));
            }
            vars.extend(envfile::read(&path)?);
        }
        vars.extend(env.iter().map(|(k, v)| (k.clone(), v.0.clone())));
        Ok(vars.into_iter().collect())
    }

    /// An environment variable's or secret's `name` must be a shell name:
    /// `cogno env`'s output is sourced, and `NAME=` must never be a command.
    fn check_env_name(&self, path: &[Seg], name: &str, what: &str) -> Result<(), Diagnostic> {
        if is_env_name(name) {
            return Ok(());
        }
        Err(self.err(
            path,
            format!(
                "{what} name `{}` is not an environment variable name",
                name.escape_debug()
            ),
            "use letters, digits and `_` only, not starting with a digit (like DATABASE_URL)",
        ))
    }

    fn svc_path(&self, name: &str, rest: &[&str]) -> Vec<Seg> {
        let mut p = vec![key("services"), key(name)];
        p.extend(rest.iter().map(|k| key(k)));
        p
    }

    fn build(&self, raw: RawConfig) -> Result<Stack, Diagnostic> {
        if raw.services.is_empty() {
            return Err(self.err(
                &[key("services")],
                "`services` is empty: there is nothing to run",
                "declare at least one service (see docs/configuration.md)",
            ));
        }
        let names: Vec<String> = raw.services.keys().cloned().collect();
        // Where a task-queue probe asks: the (first) bundled Temporal.
        let temporal = raw.services.values().find_map(|rs| {
            let kind = rs.kind.filter(|k| k.name == "temporal")?;
            Some((
                rs.port.map_or(kind.port, |p| p.0),
                rs.namespace.clone().unwrap_or_else(|| "default".into()),
            ))
        });
        let mut services = Vec::with_capacity(names.len());
        for (name, rs) in &raw.services {
            services.push(self.service(name, rs, &names, temporal.as_ref())?);
        }
        let shutdown_budget = raw.shutdown_budget.map_or(DEFAULT_SHUTDOWN_BUDGET, |d| d.0);
        let explicit_stop: Vec<bool> = raw
            .services
            .values()
            .map(|s| s.stop_timeout.is_some())
            .collect();
        for svc in &services {
            for dep in &svc.depends_on {
                let target = &services[dep.on];
                if dep.condition == Condition::Completed && !target.oneshot {
                    return Err(self.err(
                        &self.svc_path(&svc.name, &["depends_on", &target.name]),
                        format!(
                            "`{}` waits for `{}` to complete, but `{}` is not a oneshot: it is not meant to finish",
                            svc.name, target.name, target.name
                        ),
                        format!("wait for it to be `healthy` (or `started`), or mark `{}` as oneshot: true", target.name),
                    ));
                }
            }
        }
        for (i, rs) in raw.services.values().enumerate() {
            if let Some(before) = rs.watch.as_ref().and_then(|w| w.before.as_deref()) {
                self.watch_before(&mut services, i, before)?;
            }
        }
        let list_form: Vec<bool> = raw
            .services
            .values()
            .map(|s| matches!(s.depends_on, Some(DependsOn::List(_))))
            .collect();
        let plan = plan::Plan::build(&mut services)
            .map_err(|e| self.plan_error(e, &services, &list_form))?;
        self.check_budget(&services, &plan, &explicit_stop, shutdown_budget)?;
        let health_listen = match &raw.health_listen {
            None => None,
            Some(addr) => Some(addr.parse().map_err(|_| {
                self.err(
                    &[key("health_listen")],
                    format!("`{addr}` is not an IP address and port"),
                    "write it like 127.0.0.1:8099 (an address and a port, no host name)",
                )
            })?),
        };
        for name in raw.env.keys() {
            self.check_env_name(&[key("env"), key(name)], name, "variable")?;
        }
        if let Some(m) = &raw.secrets {
            for name in m.keys() {
                self.check_env_name(&[key("secrets"), key(name)], name, "secret")?;
            }
            if let Some((name, _)) = m.iter().find(|(_, s)| !(8..=1024).contains(&s.bytes.0)) {
                return Err(self.err(
                    &[key("secrets"), key(name), key("bytes")],
                    format!("secret `{name}` must have between 8 and 1024 random bytes"),
                    "16 bytes (128 bits) is plenty for a password, 32 for a signing key",
                ));
            }
        }
        let secrets = raw.secrets.as_ref().map(|m| {
            m.iter()
                .map(|(name, sp)| crate::secrets::SecretSpec {
                    name: name.clone(),
                    bytes: sp.bytes.0,
                    encoding: match sp.encoding {
                        Some(raw::SecretEncoding::Base64) => crate::secrets::Encoding::Base64,
                        _ => crate::secrets::Encoding::Hex,
                    },
                })
                .collect()
        });
        Ok(Stack {
            file: self.file.to_path_buf(),
            data_dir: raw.data_dir.map(PathBuf::from),
            secrets,
            shutdown_budget,
            health_listen,
            metrics: raw.metrics,
            log_files: raw.logs.as_ref().is_some_and(|l| l.files),
            env: self.environment(&[], raw.env_file.as_ref(), &raw.env)?,
            services,
            plan,
            notify: raw.notify.as_ref().map(|n| self.notify(n)).transpose()?,
            backup: raw.backup.as_ref().map(|b| self.backup(b)).transpose()?,
        })
    }

    /// `backup:`: a schedule croner reads, and at least one archive kept.
    fn backup(&self, rb: &RawBackup) -> Result<BackupPlan, Diagnostic> {
        let at = |k: &str| [key("backup"), key(k)];
        let schedule = self.schedule(&at("schedule"), &rb.schedule)?;
        let keep = rb.keep.map_or(DEFAULT_BACKUP_KEEP, |k| k.0);
        if keep == 0 {
            return Err(self.err(
                &at("keep"),
                "`backup.keep` is 0: every backup would be deleted as soon as it is made",
                format!("keep at least 1 archive (the default is {DEFAULT_BACKUP_KEEP})"),
            ));
        }
        let to = rb.to.as_ref().map(|to| {
            // As `ca_file`: relative to the stack file, not to wherever cogno was started.
            self.file.parent().unwrap_or(Path::new("")).join(to)
        });
        Ok(BackupPlan { schedule, keep, to })
    }

    /// A cron expression at `at`, or an error saying why it is not one.
    fn schedule(&self, at: &[Seg], text: &str) -> Result<crate::schedule::Schedule, Diagnostic> {
        crate::schedule::Schedule::parse(text).map_err(|why| {
            self.err(
                at,
                format!(
                    "`{}`: `{text}` is not a cron schedule: {why}",
                    display_path(at)
                ),
                "write 5 fields, minute hour day-of-month month day-of-week (`0 3 * * *`: \
                 every day at 03:00 local time), or 6 with seconds first (`*/30 * * * * *`)",
            )
        })
    }

    /// `notify:`: at least one target, URLs cogno can post to, a user that
    /// exists (never root unless written).
    fn notify(&self, rn: &RawNotify) -> Result<Notify, Diagnostic> {
        let at = |k: &[Seg]| [&[key("notify")], k].concat();
        let command = match &rn.command {
            Some(Argv(argv)) if argv.is_empty() => {
                return Err(self.err(
                    &at(&[key("command")]),
                    "`notify.command` is empty",
                    "give the program to run, e.g. `command: /usr/local/bin/page-me`",
                ))
            }
            other => other.as_ref().map(|a| a.0.clone()),
        };
        let mut webhooks = Vec::new();
        for (i, url) in rn.webhooks.iter().flatten().enumerate() {
            webhooks.push(webhook(url).map_err(|why| {
                // The URL itself is not repeated: it may be a credential.
                self.err(
                    &at(&[key("webhooks"), Seg::Index(i)]),
                    format!("webhook {} {why}", i + 1),
                    "write the whole URL, e.g. https://hooks.slack.com/services/…",
                )
            })?);
        }
        let ca = match &rn.ca_file {
            Some(f) => self.ca_file(&at(&[key("ca_file")]), f)?,
            None => Vec::new(),
        };
        if command.is_none() && webhooks.is_empty() {
            return Err(self.err(
                &at(&[]),
                "`notify` has neither a `command` nor `webhooks`: nobody would be told",
                "add `webhooks: [URL]` or `command: PROGRAM`, or remove `notify`",
            ));
        }
        let on = match &rn.on {
            Some(on) if on.is_empty() => {
                return Err(self.err(
                    &at(&[key("on")]),
                    "`notify.on` is empty: nothing would ever be sent",
                    format!(
                        "list events among {}, or leave `on` out for the default",
                        NotifyOn::ALL
                            .iter()
                            .map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
            Some(on) => on.clone(),
            None => DEFAULT_NOTIFY_ON.to_vec(),
        };
        // As for services: resolved once, here; as root, a hook without
        // `user:` runs as nobody, never as root.
        let root = nix::unistd::geteuid().is_root();
        let user = rn.user.as_deref().unwrap_or(DEFAULT_NOTIFY_USER);
        let run_as = match root && command.is_some() {
            false => None,
            true => Some(RunAs::lookup(user).map_err(|_| {
                self.err(
                    &at(&[key("user")]),
                    format!("user `{user}` of `notify` does not exist on this system"),
                    format!("create it (useradd --system {user}) or set `notify.user` to an existing user"),
                )
            })?),
        };
        Ok(Notify {
            command,
            webhooks,
            ca,
            on,
            run_as,
            timeout: rn.timeout.map_or(DEFAULT_NOTIFY_TIMEOUT, |d| d.0),
            retries: rn.retries.map_or(DEFAULT_NOTIFY_RETRIES, |r| r.0),
        })
    }

    /// `notify.ca_file`: PEM certificates, relative to the stack file, read
    /// now so that a wrong path is a config error, not a failed delivery.
    fn ca_file(
        &self,
        at: &[Seg],
        file: &str,
    ) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Diagnostic> {
        use rustls::pki_types::pem::PemObject;
        let path = self.file.parent().unwrap_or(Path::new("")).join(file);
        let pem = std::fs::read(&path).map_err(|e| {
            self.err(
                at,
                format!("cannot read the CA file `{}`: {e}", path.display()),
                "give the path (relative to the stack file) of a PEM file of CA certificates",
            )
        })?;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                self.err(
                    at,
                    format!("the CA file `{}` is not valid PEM: {e:?}", path.display()),
                    "it must hold `-----BEGIN CERTIFICATE-----` blocks (openssl x509 -outform PEM)",
                )
            })?;
        if certs.is_empty() {
            return Err(self.err(
                at,
                format!("the CA file `{}` holds no certificate", path.display()),
                "it must hold `-----BEGIN CERTIFICATE-----` blocks (openssl x509 -outform PEM)",
            ));
        }
        Ok(certs)
    }

    fn service(
        &self,
        name: &str,
        rs: &RawService,
        names: &[String],
        temporal: Option<&(u16, String)>,
    ) -> Result<Service, Diagnostic> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err(
                &self.svc_path(name, &[]),
                format!("service name `{name}` may only contain letters, digits, `-` and `_`"),
                "rename the service: its name is used in log prefixes and on the command line",
            ));
        }
        for var in rs.env.keys() {
            self.check_env_name(&self.svc_path(name, &["env", var]), var, "variable")?;
        }
        let bundled = self.bundled(name, rs)?;
        if rs.secrets.is_some() && bundled.is_some() {
            return Err(self.err(
                &self.svc_path(name, &["secrets"]),
                format!(
                    "`{name}` is a bundled service (kind): it gets no secrets in its environment"
                ),
                "remove `secrets:`; a bundled server's own credentials reach it through its files",
            ));
        }
        if let Some((i, bad)) = rs
            .secrets
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, n)| !is_env_name(n))
        {
            let mut path = self.svc_path(name, &["secrets"]);
            path.push(Seg::Index(i));
            return Err(self.err(
                &path,
                format!("`{bad}` is not a secret's name"),
                "secrets are environment variables: letters, digits and _, not starting with a digit",
            ));
        }
        let kind = bundled.as_ref().map(|b| b.kind);
        let command = match &rs.command {
            Some(_) if bundled.is_some() => {
                return Err(self.err(
                    &self.svc_path(name, &["command"]),
                    format!("`{name}` is a bundled service (kind): cogno builds its command"),
                    "remove `command`; to change the program use `bin` (bin_dir for postgres), \
                     to change its settings use `settings`",
                ))
            }
            None if bundled.is_some() => Vec::new(),
            Some(Argv(argv)) if !argv.is_empty() => argv.clone(),
            Some(_) => {
                return Err(self.err(
                    &self.svc_path(name, &["command"]),
                    format!("service `{name}` has an empty command"),
                    "give the program to run and its arguments, e.g. command: [\"node\", \"server.js\"]",
                ))
            }
            None => {
                return Err(self.err(
                    &self.svc_path(name, &[]),
                    format!("service `{name}` has no `command`"),
                    "add command: [\"program\", \"arg\"] (see docs/configuration.md)",
                ))
            }
        };
        let oneshot = rs.oneshot.is_some_and(|b| b.0);
        let restart = rs.restart.unwrap_or(if oneshot {
            RestartPolicy::Never
        } else {
            RestartPolicy::OnFailure
        });
        if oneshot && restart == RestartPolicy::Always {
            return Err(self.err(
                &self.svc_path(name, &["restart"]),
                format!("oneshot service `{name}` cannot have `restart: always`"),
                "a oneshot runs to completion once; use `restart: on-failure` to retry a failed run, or drop `oneshot`",
            ));
        }
        let schedule = match &rs.schedule {
            Some(_) if !oneshot => {
                return Err(self.err(
                    &self.svc_path(name, &["schedule"]),
                    format!("`{name}` has a `schedule` but is not a oneshot: a schedule starts a command that runs to completion, and `{name}` is kept running"),
                    "add `oneshot: true` if it finishes on its own (a backup, a cleanup job), or remove `schedule`",
                ))
            }
            Some(text) => Some(self.schedule(&self.svc_path(name, &["schedule"]), text)?),
            None => None,
        };
        let run_at_start = rs.run_at_start.is_some_and(|b| b.0);
        if rs.run_at_start.is_some() && schedule.is_none() {
            return Err(self.err(
                &self.svc_path(name, &["run_at_start"]),
                format!("`{name}` has `run_at_start` but no `schedule`"),
                "a service without a schedule always runs at start: remove `run_at_start`, or add `schedule:`",
            ));
        }
        let depends_on = self.dependencies(name, rs, names)?;
        let health = match (&rs.health, &bundled) {
            (Some(h), _) => Some(self.health(name, h, temporal)?),
            (None, Some(b)) => Some(bundled_health(b)),
            (None, None) => None,
        };
        let start_timeout = self.start_timeout(name, rs, health.as_ref(), oneshot)?;
        self.check_liveness(name, rs, health.as_ref(), oneshot, restart)?;
        let stop_signal = match &rs.stop_signal {
            None => kind.map_or(Signal::SIGTERM, |k| k.stop_signal),
            Some(s) => match parse_signal(s) {
                Some(Signal::SIGKILL | Signal::SIGSTOP) => {
                    return Err(self.err(
                        &self.svc_path(name, &["stop_signal"]),
                        format!("{s} cannot be a stop_signal: a service must get the chance to stop cleanly"),
                        "use the signal the program shuts down on (SIGTERM, SIGINT, SIGQUIT…); \
                         cogno sends SIGKILL itself once stop_timeout has passed",
                    ))
                }
                Some(sig) => sig,
                None => {
                    return Err(self.err(
                        &self.svc_path(name, &["stop_signal"]),
                        format!("`{s}` is not a signal name"),
                        "use a name like SIGTERM, SIGINT, SIGQUIT or SIGHUP",
                    ))
                }
            },
        };
        let b = rs.backoff.as_ref();
        let backoff = Backoff {
            initial: b
                .and_then(|b| b.initial)
                .map_or(Duration::from_millis(100), |d| d.0),
            max: b
                .and_then(|b| b.max)
                .map_or(kind.map_or(DEFAULT_BACKOFF_MAX, |k| k.backoff_max), |d| d.0),
            multiplier: b.and_then(|b| b.multiplier).map_or(2.0, |m| m.0),
            reset_after: b
                .and_then(|b| b.reset_after)
                .map_or(Duration::from_secs(60), |d| d.0),
        };
        if !(backoff.multiplier >= 1.0 && backoff.multiplier.is_finite()) {
            return Err(self.err(
                &self.svc_path(name, &["backoff", "multiplier"]),
                format!(
                    "backoff multiplier {} must be at least 1",
                    backoff.multiplier
                ),
                "use 1 for a constant delay, 2 to double it after each failure",
            ));
        }
        let default_user = kind.map(|k| &k.facts().user);
        let user = rs.user.clone().or(default_user.map(|u| u.name.to_owned()));
        let root = nix::unistd::geteuid().is_root();
        // Looked up once, here: a service never runs as anyone but the user
        // resolved now (a later lookup failing must not run it as root).
        let mut run_as = None;
        if let Some(user) = user.as_ref().filter(|_| root) {
            run_as = RunAs::lookup(user).ok();
            if run_as.is_none() {
                let help = match default_user.filter(|_| rs.user.is_none()) {
                    Some(u) => format!(
                        "install Debian's {} package (it creates the {} user) \
                         or set `user:` to an existing user",
                        u.package, u.name
                    ),
                    None => format!("create it (useradd --system {user}) or remove `user`"),
                };
                return Err(self.err(
                    &self.svc_path(name, &["user"]),
                    format!("user `{user}` of service `{name}` does not exist on this system"),
                    help,
                ));
            }
        }
        let (default_priority, default_critical) =
            kind.map_or((DEFAULT_PRIORITY, false), |k| (k.priority, k.critical));
        Ok(Service {
            name: name.to_owned(),
            command,
            bundled,
            oneshot,
            schedule,
            run_at_start,
            priority: rs.priority.map_or(default_priority, |p| p.0),
            working_dir: rs.working_dir.as_ref().map(PathBuf::from),
            user,
            run_as,
            no_new_privs: rs.no_new_privs.is_none_or(|b| b.0),
            secrets: rs.secrets.clone(),
            env: self.environment(&self.svc_path(name, &[]), rs.env_file.as_ref(), &rs.env)?,
            depends_on,
            profiles: rs.profiles.clone(),
            health,
            start_timeout,
            restart,
            startsecs: rs.startsecs.map_or(DEFAULT_STARTSECS, |d| d.0),
            backoff,
            max_restarts: rs.max_restarts.map_or(DEFAULT_MAX_RESTARTS, |m| m.0),
            critical: rs.critical.map_or(default_critical, |c| c.0),
            stop_signal,
            stop_timeout: rs.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |d| d.0),
            watch: rs.watch.as_ref().map(|w| self.watch(name, w)).transpose()?,
        })
    }

    /// The bundled part of a service (`kind:` and its keys), checking that
    /// kind-specific keys are only used where they mean something.
    fn bundled(&self, name: &str, rs: &RawService) -> Result<Option<Bundled>, Diagnostic> {
        for (k, _) in kind_keys(rs).iter().filter(|(_, set)| *set) {
            if !rs.kind.is_some_and(|kind| kind.takes(k)) {
                return Err(self.err(
                    &self.svc_path(name, &[k]),
                    format!("`{k}` only applies to {}", kinds::applies_to(k)),
                    "remove it, or set the service's `kind`",
                ));
            }
        }
        let Some(kind) = rs.kind else { return Ok(None) };
        if let Some(db) = rs.databases.iter().flatten().find(|d| {
            d.is_empty()
                || d.len() > 63
                || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return Err(self.err(
                &self.svc_path(name, &["databases"]),
                format!("`{db}` is not a database name cogno creates"),
                "use letters, digits and _ only (at most 63 characters)",
            ));
        }
        // An extension's name is its control file's: `uuid-ossp` has a dash.
        if let Some(ext) = rs.extensions.iter().flatten().find(|e| {
            e.is_empty()
                || e.len() > 63
                || !e
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(self.err(
                &self.svc_path(name, &["extensions"]),
                format!("`{ext}` is not an extension name cogno creates"),
                "use the name of its control file (e.g. `vector`, `uuid-ossp`): letters, digits, _ and - only (at most 63 characters)",
            ));
        }
        Ok(Some(Bundled {
            kind,
            port: rs.port.map_or(kind.port, |p| p.0),
            bin: rs.bin.as_ref().or(rs.bin_dir.as_ref()).map(PathBuf::from),
            settings: rs
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            databases: rs.databases.clone().unwrap_or_default(),
            extensions: rs.extensions.clone().unwrap_or_default(),
            namespace: rs.namespace.clone().unwrap_or_else(|| "default".into()),
            ui_port: rs.ui_port.map(|p| p.0),
        }))
    }

    fn dependencies(
        &self,
        name: &str,
        rs: &RawService,
        names: &[String],
    ) -> Result<Vec<Dependency>, Diagnostic> {
        let entries: Vec<(String, Option<Condition>, Vec<Seg>)> = match &rs.depends_on {
            None => Vec::new(),
            Some(DependsOn::List(list)) => list
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut p = self.svc_path(name, &["depends_on"]);
                    p.push(Seg::Index(i));
                    (d.clone(), None, p)
                })
                .collect(),
            Some(DependsOn::Map(map)) => map
                .iter()
                .map(|(d, c)| {
                    (
                        d.clone(),
                        Some(c.0),
                        self.svc_path(name, &["depends_on", d]),
                    )
                })
                .collect(),
        };
        let mut deps: Vec<Dependency> = Vec::new();
        for (dep, condition, path) in entries {
            let Some(on) = names.iter().position(|n| *n == dep) else {
                return Err(self.err(
                    &path,
                    format!("service `{name}` depends on `{dep}`, which is not defined"),
                    format!(
                        "known services are: {}; fix the name or add the service",
                        names.join(", ")
                    ),
                ));
            };
            if dep == name {
                return Err(self.err(
                    &path,
                    format!("service `{name}` depends on itself"),
                    "remove it from its own depends_on",
                ));
            }
            if deps.iter().any(|d| d.on == on) {
                return Err(self.err(
                    &path,
                    format!("service `{name}` lists `{dep}` twice in depends_on"),
                    "keep one entry",
                ));
            }
            deps.push(Dependency {
                on,
                // Resolved against the target's kind once all services are known.
                condition: condition.unwrap_or(Condition::Healthy),
                implicit: false,
            });
        }
        Ok(deps)
    }

    /// `start_timeout`: written (`0s`: no limit), or derived from the health
    /// check; it needs one, since without a check a service is up once it has
    /// run for `startsecs`. A oneshot gets none unless it says so: it is done
    /// when it completes, and a long migration must not be cut short.
    fn start_timeout(
        &self,
        name: &str,
        rs: &RawService,
        health: Option<&Health>,
        oneshot: bool,
    ) -> Result<Option<Duration>, Diagnostic> {
        match (rs.start_timeout, health) {
            (Some(_), None) => Err(self.err(
                &self.svc_path(name, &["start_timeout"]),
                format!("`{name}` has a start_timeout but no health check"),
                "without `health`, a service is up once it has run for `startsecs`: \
                 add a health check, or remove start_timeout",
            )),
            (Some(t), Some(_)) => Ok(Some(t.0).filter(|t| !t.is_zero())),
            (None, h) => Ok(h.filter(|_| !oneshot).map(Health::default_start_timeout)),
        }
    }

    /// `on_unhealthy: restart` needs a service that is restarted at all.
    fn check_liveness(
        &self,
        name: &str,
        rs: &RawService,
        health: Option<&Health>,
        oneshot: bool,
        restart: RestartPolicy,
    ) -> Result<(), Diagnostic> {
        if health.is_none_or(|h| h.on_unhealthy != OnUnhealthy::Restart) {
            return Ok(());
        }
        let why = if oneshot {
            format!("`{name}` is a oneshot: it runs to completion and is never restarted")
        } else if restart == RestartPolicy::Never {
            format!("`{name}` has `restart: never`")
        } else {
            return Ok(());
        };
        let path = if oneshot || rs.restart.is_none() {
            self.svc_path(name, &["health", "on_unhealthy"])
        } else {
            self.svc_path(name, &["restart"])
        };
        Err(self.err(
            &path,
            format!("on_unhealthy: restart cannot apply: {why}"),
            "remove on_unhealthy (an unhealthy service is then only marked), \
             or let the service be restarted (restart: on-failure or always)",
        ))
    }

    fn health(
        &self,
        name: &str,
        h: &RawHealth,
        temporal: Option<&(u16, String)>,
    ) -> Result<Health, Diagnostic> {
        let path = self.svc_path(name, &["health"]);
        let given: Vec<&str> = [
            ("http", h.http.is_some()),
            ("tcp", h.tcp.is_some()),
            ("exec", h.exec.is_some()),
            ("temporal_task_queue", h.temporal_task_queue.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        let probe = match given.as_slice() {
            [] => {
                return Err(self.err(
                    &path,
                    format!("the health check of `{name}` names no probe"),
                    "add one of http: URL, tcp: HOST:PORT, exec: [cmd, args] or temporal_task_queue: NAME",
                ))
            }
            [_] => {
                if let Some(url) = &h.http {
                    let statuses = self.http_statuses(name, h.status.as_deref())?;
                    parse_http_probe(url, statuses).map_err(|why| {
                        self.err(
                            &self.svc_path(name, &["health", "http"]),
                            why,
                            "write it like http://127.0.0.1:3000/api/health",
                        )
                    })?
                } else if let Some(addr) = &h.tcp {
                    if addr
                        .rsplit_once(':')
                        .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                    {
                        return Err(self.err(
                            &self.svc_path(name, &["health", "tcp"]),
                            format!("`{addr}` is not HOST:PORT"),
                            "write it like 127.0.0.1:8080",
                        ));
                    }
                    Probe::Tcp(addr.clone())
                } else if let Some(queue) = &h.temporal_task_queue {
                    self.task_queue_probe(name, queue, temporal)?
                } else {
                    let argv = h.exec.clone().map(|a| a.0).unwrap_or_default();
                    if argv.is_empty() {
                        return Err(self.err(
                            &self.svc_path(name, &["health", "exec"]),
                            "the exec health check has an empty command",
                            "give the command and its arguments",
                        ));
                    }
                    Probe::Exec(argv)
                }
            }
            many => {
                return Err(self.err(
                    &self.svc_path(name, &["health", many[1]]),
                    format!(
                        "the health check of `{name}` has {} probes ({})",
                        many.len(),
                        many.join(", ")
                    ),
                    "a service has one health check: keep one of http, tcp, exec or temporal_task_queue",
                ))
            }
        };
        if h.status.is_some() && h.http.is_none() {
            return Err(self.err(
                &self.svc_path(name, &["health", "status"]),
                "`status` only applies to an http health check",
                "remove it, or probe with http: URL",
            ));
        }
        let interval = h.interval.map_or(Duration::from_secs(5), |d| d.0);
        if interval.is_zero() {
            return Err(self.err(
                &self.svc_path(name, &["health", "interval"]),
                "health check interval must be more than 0",
                "use e.g. 5s",
            ));
        }
        Ok(Health {
            on_unhealthy: h.on_unhealthy.unwrap_or_default(),
            probe,
            interval,
            timeout: h.timeout.map_or(Duration::from_secs(2), |d| d.0),
            retries: h.retries.map_or(3, |r| r.0).max(1),
            start_period: h.start_period.map_or(Duration::from_secs(60), |d| d.0),
            start_interval: h
                .start_interval
                .map_or(Duration::from_millis(200), |d| d.0)
                .max(Duration::from_millis(10)),
        })
    }

    /// `health.temporal_task_queue`: asked of the stack's bundled Temporal.
    fn task_queue_probe(
        &self,
        name: &str,
        queue: &str,
        temporal: Option<&(u16, String)>,
    ) -> Result<Probe, Diagnostic> {
        let path = self.svc_path(name, &["health", "temporal_task_queue"]);
        let Some((port, namespace)) = temporal else {
            return Err(self.err(
                &path,
                format!("`{name}` waits for a poller on Temporal task queue `{queue}`, but the stack has no `kind: temporal` service to ask"),
                "add a bundled temporal service, or probe the worker another way (exec, tcp, http)",
            ));
        };
        if queue.trim().is_empty() {
            return Err(self.err(
                &path,
                "the task queue name is empty",
                "give the queue the worker polls, e.g. temporal_task_queue: cognobserve-tasks",
            ));
        }
        Ok(Probe::TemporalTaskQueue {
            port: *port,
            namespace: namespace.clone(),
            queue: queue.to_owned(),
        })
    }

    /// `health.status`: the statuses an http check passes on (default: any
    /// 2xx or 3xx).
    fn http_statuses(
        &self,
        name: &str,
        items: Option<&[raw::EnvValue]>,
    ) -> Result<HttpStatuses, Diagnostic> {
        let Some(items) = items else {
            return Ok(HttpStatuses::default());
        };
        let mut path = self.svc_path(name, &["health", "status"]);
        if items.is_empty() {
            return Err(self.err(
                &path,
                "`status` lists no status, so the check could never pass",
                "list the statuses that pass, e.g. status: [200, 401], or remove `status` for any 2xx or 3xx",
            ));
        }
        let mut ranges = Vec::new();
        for (i, item) in items.iter().enumerate() {
            path.push(Seg::Index(i));
            ranges.push(HttpStatuses::parse_item(item.0.trim()).map_err(|why| {
                self.err(
                    &path,
                    why,
                    "write e.g. status: [200, 401] or status: [2xx, 401]",
                )
            })?);
            path.pop();
        }
        Ok(HttpStatuses(ranges))
    }

    fn plan_error(
        &self,
        e: plan::PlanError,
        services: &[Service],
        list_form: &[bool],
    ) -> Diagnostic {
        match e {
            plan::PlanError::Cycle {
                cycle,
                at,
                explicit_on,
            } => {
                let mut path = self.svc_path(&at, &[]);
                if let Some(on) = explicit_on {
                    let i = services
                        .iter()
                        .position(|s| s.name == at)
                        .expect("cycle names a service");
                    path.push(key("depends_on"));
                    if list_form[i] {
                        // Explicit dependencies keep the file's order, ahead of implicit ones.
                        let k = services[i]
                            .depends_on
                            .iter()
                            .position(|d| services[d.on].name == on);
                        path.extend(k.map(Seg::Index));
                    } else {
                        path.push(key(&on));
                    }
                }
                self.err(
                    &path,
                    format!("dependency cycle: {}", cycle.join(" → ")),
                    "a service cannot wait for something that waits for it; remove one dependency, \
                     or raise the priority number of the dependant (lower priorities start first)",
                )
            }
        }
    }

    fn check_budget(
        &self,
        services: &[Service],
        plan: &Plan,
        explicit: &[bool],
        budget: Duration,
    ) -> Result<(), Diagnostic> {
        let timeouts: Vec<Duration> = services
            .iter()
            .zip(explicit)
            .map(|(s, e)| if *e { s.stop_timeout } else { Duration::ZERO })
            .collect();
        let (total, chain) = plan.longest_stop_chain(&timeouts);
        if total <= budget {
            return Ok(());
        }
        let worst = chain
            .iter()
            .copied()
            .max_by_key(|i| timeouts[*i])
            .expect("a chain over budget is not empty");
        let steps: Vec<String> = chain
            .iter()
            .map(|i| format!("{} ({})", services[*i].name, fmt_duration(timeouts[*i])))
            .collect();
        Err(self.err(
            &self.svc_path(&services[worst].name, &["stop_timeout"]),
            format!(
                "stopping {} can take {}, more than shutdown_budget ({})",
                steps.join(" → "),
                fmt_duration(total),
                fmt_duration(budget)
            ),
            "services stop one after another along their dependencies: lower these stop_timeout values, \
             or raise shutdown_budget (and docker stop's --time to match)",
        ))
    }
}

/// The keys only some kinds take (which ones: [`kinds::KINDS`]), each with
/// whether `rs` sets it, in the order they are checked.
fn kind_keys(rs: &RawService) -> [(&'static str, bool); 8] {
    [
        ("port", rs.port.is_some()),
        ("settings", !rs.settings.is_empty()),
        ("bin", rs.bin.is_some()),
        ("bin_dir", rs.bin_dir.is_some()),
        ("databases", rs.databases.is_some()),
        ("extensions", rs.extensions.is_some()),
        ("namespace", rs.namespace.is_some()),
        ("ui_port", rs.ui_port.is_some()),
    ]
}

/// The health check a bundled service gets unless the file gives one: its
/// own protocol, probed often until the first success so dependants start fast.
fn bundled_health(b: &Bundled) -> Health {
    Health {
        probe: Probe::Bundled {
            server: b.clone(),
            credentials: Credentials::default(),
            data: None,
        },
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        retries: 3,
        start_period: Duration::from_secs(120),
        start_interval: Duration::from_millis(50),
        on_unhealthy: OnUnhealthy::Mark,
    }
}

fn parse_signal(s: &str) -> Option<Signal> {
    let upper = s.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).ok()
}

fn parse_http_probe(url: &str, statuses: HttpStatuses) -> Result<Probe, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("`{url}`: https health checks are not supported")
        } else {
            format!("`{url}` is not an http:// URL")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Probe::Http {
        url: url.to_owned(),
        authority,
        path: path.to_owned(),
        statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_numbers_classes_and_ranges() {
        let parse = HttpStatuses::parse_item;
        assert_eq!(parse("401"), Ok((401, 401)));
        assert_eq!(parse("2xx"), Ok((200, 299)));
        assert_eq!(parse("200-204"), Ok((200, 204)));
        for bad in ["600", "99", "6xx", "xx", "204-200", "abc", "-1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let default = HttpStatuses::default();
        assert!(default.pass(200) && default.pass(302) && !default.pass(401));
        assert_eq!(default.to_string(), "2xx, 3xx");
        let s = HttpStatuses(vec![(200, 200), (401, 401), (500, 503)]);
        assert!(s.pass(401) && s.pass(502) && !s.pass(204));
        assert_eq!(s.to_string(), "200, 401, 500-503");
    }

    #[test]
    fn a_typo_gets_the_closest_key_and_nonsense_gets_none() {
        let msg = "`services.web`: unknown field `helth`, expected one of `kind`, `health`, `env`";
        assert_eq!(did_you_mean(msg).as_deref(), Some("health"));
        let msg = "unknown field `zzzzzz`, expected one of `kind`, `health`, `env`";
        assert_eq!(did_you_mean(msg), None);
        assert_eq!(did_you_mean("invalid type: string, expected u16"), None);
    }

    #[test]
    fn the_default_start_timeout_is_when_a_failing_start_would_be_unhealthy() {
        let ms = Duration::from_millis;
        let mut h = Health {
            probe: Probe::Tcp("127.0.0.1:3000".into()),
            interval: ms(5000),
            timeout: ms(2000),
            retries: 3,
            start_period: ms(120_000),
            start_interval: ms(200),
            on_unhealthy: OnUnhealthy::Mark,
        };
        // 120s + 3 × (200ms + 2s) = 126.6s, rounded up.
        assert_eq!(h.default_start_timeout(), ms(127_000));
        h.start_period = Duration::ZERO;
        h.start_interval = ms(1000);
        assert_eq!(h.default_start_timeout(), ms(9000));
    }
}
