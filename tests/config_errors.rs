//! What a user sees when the stack file is wrong: every malformed file must
//! stop `cogno up` (and `cogno check`) with exit status 2 before anything is
//! started or written, and the error must name the key, point at the right
//! `FILE:LINE:COL` and say what to do (`help:`).
//!
//! Each case writes its stack file into a fresh directory of its own and runs
//! the real binary there.

use crate::common::TempDir;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cogno");

/// Variables the fixtures refer to; removed from every child's environment so
/// that the developer's shell cannot change a test's outcome.
const TEST_VARS: &[&str] = &[
    "COGNO_CONFIG",
    "COGNO_DATA_DIR",
    "COGNO_TEST_DATABASE_URL",
    "COGNO_TEST_ENTRY",
    "COGNO_TEST_BUDGET",
    "COGNO_TEST_WEB_PRIORITY",
    "COGNO_TEST_PORT",
    "COGNO_TEST_EMPTY",
    "PORT",
];

/// A fresh directory holding one stack file; `data` does not exist.
struct Sandbox {
    dir: TempDir,
    file: PathBuf,
    data: PathBuf,
}

impl Sandbox {
    fn new(name: &str, yaml: &str) -> Sandbox {
        Sandbox::with_file_name(name, "stack.yaml", yaml)
    }

    fn with_file_name(name: &str, file_name: &str, yaml: &str) -> Sandbox {
        let dir = TempDir::new(&format!("config-errors-{name}"));
        let file = dir.path().join(file_name);
        std::fs::write(&file, yaml).expect("write the stack file");
        let data = dir.path().join("data");
        assert!(!data.exists());
        Sandbox { dir, file, data }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for v in TEST_VARS {
            cmd.env_remove(v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cogno")
    }

    fn file_arg(&self) -> &str {
        self.file.to_str().expect("utf-8 temp path")
    }

    fn up(&self) -> Output {
        self.run(&[
            "up",
            "--config",
            self.file_arg(),
            "--data",
            self.data.to_str().expect("utf-8 temp path"),
        ])
    }

    fn check(&self) -> Output {
        self.run(&["check", "--config", self.file_arg()])
    }

    /// Nothing but the stack file is in the sandbox.
    fn assert_untouched(&self, context: &str) {
        assert!(
            !self.data.exists(),
            "{context}: the data directory {} was created",
            self.data.display()
        );
        let mut entries: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("list the sandbox")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        let file_name = self
            .file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            entries,
            vec![file_name],
            "{context}: cogno wrote into {}",
            self.dir.path().display()
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where the error must point.
pub(crate) enum At {
    /// The line holding `line`, and the column where `item` starts on that line.
    Item {
        line: &'static str,
        item: &'static str,
    },
    /// The line holding `line`, and the column where that text starts.
    Text(&'static str),
    /// Only the line holding this text (its column is not pinned down).
    Line(&'static str),
    /// The `n`-th (1-based) line holding this text, and the column where it starts.
    Nth(&'static str, usize),
    /// The error cannot have a position (the file has no lines); only the file is named.
    FileOnly,
}

/// 1-based line of the first line of `yaml` containing `needle`, and the
/// 1-based column where `item` starts on it.
fn position(yaml: &str, needle: &str, item: &str) -> (usize, usize) {
    nth_position(yaml, needle, item, 1)
}

fn nth_position(yaml: &str, needle: &str, item: &str, n: usize) -> (usize, usize) {
    let (idx, line) = yaml
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(n - 1)
        .unwrap_or_else(|| panic!("fixture has no line #{n} with {needle:?}"));
    let col = line
        .find(item)
        .unwrap_or_else(|| panic!("line {line:?} has no {item:?}"));
    (idx + 1, col + 1)
}

/// Runs `cogno up` (and `cogno check`) on `yaml` and checks everything a user
/// relies on: exit status 2, the key(s) in `expect`, the position, a help
/// line, and no trace left on disk. Returns stderr for further checks.
pub(crate) fn config_error(name: &str, yaml: &str, expect: &[&str], at: At) -> String {
    let sb = Sandbox::new(name, yaml);
    let out = sb.up();
    let stderr = text(&out.stderr);
    let ctx = format!("{name}: `cogno up` stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(2), "{ctx}");
    assert!(
        text(&out.stdout).is_empty(),
        "{ctx}\nstdout:\n{}",
        text(&out.stdout)
    );
    assert!(
        stderr.starts_with("error: "),
        "{ctx}\nexpected it to start with `error: `"
    );
    for e in expect {
        assert!(stderr.contains(e), "{ctx}\nexpected it to contain {e:?}");
    }
    let file = sb.file.display().to_string();
    match at {
        At::Item { line, item } => {
            let (l, c) = position(yaml, line, item);
            let want = format!("--> {file}:{l}:{c}\n");
            assert!(
                stderr.contains(&want),
                "{ctx}\nexpected the position {want:?}"
            );
        }
        At::Text(t) => {
            let (l, c) = position(yaml, t, t);
            let want = format!("--> {file}:{l}:{c}\n");
            assert!(
                stderr.contains(&want),
                "{ctx}\nexpected the position {want:?}"
            );
        }
        At::Nth(t, n) => {
            let (l, c) = nth_position(yaml, t, t, n);
            let want = format!("--> {file}:{l}:{c}\n");
            assert!(
                stderr.contains(&want),
                "{ctx}\nexpected the position {want:?}"
            );
        }
        At::Line(t) => {
            let (l, _) = position(yaml, t, t);
            let want = format!("--> {file}:{l}:");
            assert!(
                stderr.contains(&want),
                "{ctx}\nexpected the position {want:?}COL"
            );
        }
        At::FileOnly => {
            assert!(
                stderr.contains(&format!("--> {file}")),
                "{ctx}\nexpected the file name"
            );
        }
    }
    let help = stderr
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("= help:"))
        .unwrap_or_else(|| panic!("{ctx}\nexpected a `= help:` line"));
    assert!(!help.trim().is_empty(), "{ctx}\nthe help line is empty");
    sb.assert_untouched(name);

    let out = sb.check();
    let check_err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name}: `cogno check` stderr:\n{check_err}"
    );
    assert!(
        text(&out.stdout).is_empty(),
        "{name}: `cogno check` printed a plan for a bad file"
    );
    assert_eq!(
        check_err, stderr,
        "{name}: `cogno check` and `cogno up` report differently"
    );
    sb.assert_untouched(name);
    stderr
}

// ------------------------------------------------------------ unknown keys

#[test]
fn unknown_top_level_key() {
    let yaml = "\
# a stack with a stray key

services:
  web:
    command: node server.js
bogus: 1
";
    config_error(
        "top-level",
        yaml,
        &["`bogus`", "unknown field", "services"],
        At::Text("bogus"),
    );
}

#[test]
fn unknown_service_key_typo() {
    let yaml = "\
services:
  web:
    command: node server.js
    helth:
      http: http://127.0.0.1:3000/health
";
    let err = config_error(
        "helth",
        yaml,
        &["services.web.helth", "unknown field `helth`"],
        At::Text("helth"),
    );
    // The message names the key that was meant.
    assert!(err.contains("did you mean `health`?"), "{err}");
}

#[test]
fn unknown_key_in_health_block() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      http: http://127.0.0.1:3000/health
      intervall: 5s
";
    config_error(
        "health-key",
        yaml,
        &["services.web.health.intervall", "unknown field"],
        At::Text("intervall"),
    );
}

// ------------------------------------------------------------- wrong types

#[test]
fn priority_is_not_a_number() {
    let yaml = "\
services:
  web:
    command: node server.js
    priority: \"abc\"
";
    config_error(
        "priority",
        yaml,
        &["services.web.priority", "abc"],
        At::Text("priority"),
    );
}

#[test]
fn max_restarts_is_negative() {
    let yaml = "\
services:
  web:
    command: node server.js
    max_restarts: -1
";
    config_error(
        "max-restarts",
        yaml,
        &["services.web.max_restarts", "-1"],
        At::Text("max_restarts"),
    );
}

#[test]
fn command_is_a_number() {
    let yaml = "\
services:
  web:
    command: 42
";
    config_error(
        "command-42",
        yaml,
        &["services.web.command", "42"],
        At::Text("command"),
    );
}

#[test]
fn critical_is_not_a_boolean() {
    let yaml = "\
services:
  web:
    command: node server.js
    critical: maybe
";
    config_error(
        "critical",
        yaml,
        &["services.web.critical", "maybe"],
        At::Text("critical"),
    );
}

#[test]
fn unknown_restart_policy() {
    let yaml = "\
services:
  web:
    command: node server.js
    restart: sometimes
";
    config_error(
        "restart",
        yaml,
        &["services.web.restart", "sometimes", "on-failure"],
        At::Text("restart"),
    );
}

#[test]
fn services_is_a_list() {
    let yaml = "\
services:
  - web
";
    config_error(
        "services-list",
        yaml,
        &["`services`", "sequence"],
        At::Text("services"),
    );
}

#[test]
fn command_with_unterminated_quote() {
    let yaml = "\
services:
  web:
    command: \"sh -c 'oops\"
";
    config_error(
        "quote",
        yaml,
        &["services.web.command", "unterminated single quote"],
        At::Text("command"),
    );
}

// --------------------------------------------------------------- durations

#[test]
fn duration_without_unit() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      tcp: 127.0.0.1:3000
      interval: 5
";
    let err = config_error(
        "duration-5",
        yaml,
        &["services.web.health.interval", "no unit"],
        At::Text("interval"),
    );
    assert!(err.contains("`5s`"), "the fix is suggested: {err}");
}

#[test]
fn duration_with_unknown_unit() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      tcp: 127.0.0.1:3000
      interval: 5 parsecs
";
    config_error(
        "parsecs",
        yaml,
        &["services.web.health.interval", "5 parsecs"],
        At::Text("interval"),
    );
}

#[test]
fn bad_duration_in_the_second_of_two_services_points_at_the_second() {
    let yaml = "\
# comments and blank lines count as lines too

services:
  web:
    command: node server.js
    health:
      tcp: 127.0.0.1:3000
      interval: 5s
  worker:
    command: worker
    health:
      exec: [\"true\"]
      interval: 10
";
    config_error(
        "second-service",
        yaml,
        &["services.worker.health.interval", "no unit"],
        At::Text("interval: 10"),
    );
}

#[test]
fn bad_shutdown_budget() {
    let yaml = "\
shutdown_budget: ten seconds
services:
  web:
    command: node server.js
";
    config_error(
        "budget-duration",
        yaml,
        &["`shutdown_budget`", "ten seconds"],
        At::Text("shutdown_budget"),
    );
}

// ------------------------------------------------------------ dependencies

#[test]
fn unknown_dependency_list_form() {
    let yaml = "\
services:
  db:
    command: postgres
  web:
    command: node server.js
    depends_on: [db, redis]
";
    let err = config_error(
        "dep-list",
        yaml,
        &["`web`", "`redis`", "not defined"],
        At::Item {
            line: "depends_on",
            item: "redis",
        },
    );
    assert!(
        err.contains("db, web"),
        "help lists the known services: {err}"
    );
}

#[test]
fn unknown_dependency_block_list_form() {
    let yaml = "\
services:
  web:
    command: node server.js
    depends_on:
      - ghost
";
    config_error(
        "dep-block",
        yaml,
        &["`web`", "`ghost`", "not defined"],
        At::Text("ghost"),
    );
}

#[test]
fn unknown_dependency_map_form() {
    let yaml = "\
services:
  db:
    command: postgres
  web:
    command: node server.js
    depends_on:
      db: healthy
      cache: started
";
    config_error(
        "dep-map",
        yaml,
        &["`web`", "`cache`", "not defined"],
        At::Text("cache"),
    );
}

#[test]
fn depends_on_itself() {
    let yaml = "\
services:
  web:
    command: node server.js
    depends_on: [web]
";
    config_error(
        "self",
        yaml,
        &["`web`", "depends on itself"],
        At::Item {
            line: "depends_on",
            item: "web",
        },
    );
}

#[test]
fn dependency_listed_twice() {
    let yaml = "\
services:
  db:
    command: postgres
  web:
    command: node server.js
    depends_on:
      - db
      - db
";
    // The second entry is the offending one.
    config_error("dup-dep", yaml, &["`db`", "twice"], At::Nth("db", 3));
}

#[test]
fn unknown_condition_block_map() {
    let yaml = "\
services:
  db:
    command: postgres
  web:
    command: node server.js
    depends_on:
      db: ready
";
    config_error(
        "cond-block",
        yaml,
        &["services.web.depends_on.db", "ready", "healthy"],
        At::Text("db: ready"),
    );
}

#[test]
fn unknown_condition_flow_map() {
    let yaml = "\
services:
  db:
    command: postgres
  web:
    command: node server.js
    depends_on: {db: ready}
";
    config_error(
        "cond-flow",
        yaml,
        &["services.web.depends_on.db", "ready", "healthy"],
        At::Line("depends_on"),
    );
}

#[test]
fn depends_on_is_a_string() {
    let yaml = "\
services:
  db:
    command: postgres
  web:
    command: node server.js
    depends_on: db
";
    config_error(
        "dep-string",
        yaml,
        &["services.web.depends_on", "list of service names"],
        At::Text("depends_on"),
    );
}

#[test]
fn dependency_cycle_block_map() {
    let yaml = "\
services:
  a:
    command: sleep 1
    depends_on:
      b: started
  b:
    command: sleep 1
    depends_on:
      a: started
";
    config_error(
        "cycle-map",
        yaml,
        &["dependency cycle", "a → b → a"],
        At::Text("b: started"),
    );
}

#[test]
fn dependency_cycle_list_form() {
    let yaml = "\
services:
  a:
    command: sleep 1
    depends_on: [b]
  b:
    command: sleep 1
    depends_on: [a]
";
    config_error(
        "cycle-list",
        yaml,
        &["dependency cycle", "a → b → a"],
        At::Line("depends_on: [b]"),
    );
}

#[test]
fn dependency_cycle_through_priority() {
    // worker (400) implicitly waits for web (300), which explicitly waits for worker.
    let yaml = "\
services:
  worker:
    command: worker
    priority: 400
  web:
    command: node server.js
    priority: 300
    depends_on: [worker]
";
    let err = config_error(
        "cycle-priority",
        yaml,
        &["dependency cycle", "web", "worker", "priority 400", "300"],
        At::Line("depends_on: [worker]"),
    );
    assert!(
        err.contains("web → worker"),
        "the explicit edge is shown: {err}"
    );
    assert!(
        err.contains("priority"),
        "the help mentions priority: {err}"
    );
}

// ------------------------------------------------------------ health checks

#[test]
fn two_health_probes() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      http: http://127.0.0.1:3000/health
      tcp: 127.0.0.1:3000
";
    config_error(
        "two-probes",
        yaml,
        &["`web`", "2 probes", "http, tcp"],
        At::Text("tcp"),
    );
}

#[test]
fn health_without_probe() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      interval: 5s
";
    config_error(
        "no-probe",
        yaml,
        &["health check of `web`", "no probe", "health:"],
        At::Text("health"),
    );
}

#[test]
fn https_health_url() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      http: https://127.0.0.1:3000/health
";
    config_error(
        "https",
        yaml,
        &["https", "not supported", "http:"],
        At::Item {
            line: "https://",
            item: "http:",
        },
    );
}

#[test]
fn tcp_probe_without_port() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      tcp: localhost
";
    config_error(
        "tcp-port",
        yaml,
        &["`localhost`", "HOST:PORT", "tcp:"],
        At::Text("tcp"),
    );
}

#[test]
fn zero_health_interval() {
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      exec: [\"true\"]
      interval: 0s
";
    config_error(
        "interval-0",
        yaml,
        &["interval", "more than 0"],
        At::Text("interval"),
    );
}

// -------------------------------------------------- service-level semantics

#[test]
fn oneshot_with_restart_always() {
    let yaml = "\
services:
  migrate:
    command: migrate up
    oneshot: true
    restart: always
";
    config_error(
        "oneshot-always",
        yaml,
        &["oneshot service `migrate`", "restart: always"],
        At::Text("restart"),
    );
}

#[test]
fn stop_timeouts_over_shutdown_budget() {
    let yaml = "\
shutdown_budget: 10s
services:
  db:
    command: postgres
    stop_timeout: 6s
  api:
    command: api
    depends_on: [db]
    stop_timeout: 3s
  web:
    command: web
    depends_on: [api]
    stop_timeout: 4s
";
    config_error(
        "budget",
        yaml,
        &[
            "web (4s) → api (3s) → db (6s)",
            "13s",
            "shutdown_budget (10s)",
            "stop_timeout",
        ],
        // The largest timeout of the chain is the one to look at first.
        At::Text("stop_timeout: 6s"),
    );
}

#[test]
fn empty_services_map() {
    let yaml = "\
# nothing to run yet
services: {}
";
    config_error(
        "empty-services",
        yaml,
        &["`services` is empty"],
        At::Text("services"),
    );
}

#[test]
fn missing_command() {
    let yaml = "\
services:
  db:
    command: postgres
  web:
    priority: 200
";
    config_error(
        "no-command",
        yaml,
        &["`web`", "no `command`"],
        At::Text("web:"),
    );
}

#[test]
fn empty_command_list() {
    let yaml = "\
services:
  web:
    command: []
";
    config_error(
        "empty-command",
        yaml,
        &["`web`", "empty command"],
        At::Text("command"),
    );
}

#[test]
fn invalid_service_name() {
    let yaml = "\
services:
  web server:
    command: node server.js
";
    config_error(
        "name",
        yaml,
        &["`web server`", "letters, digits"],
        At::Text("web server"),
    );
}

#[test]
fn unknown_stop_signal() {
    let yaml = "\
services:
  web:
    command: node server.js
    stop_signal: SIGFOO
";
    config_error(
        "signal",
        yaml,
        &["`SIGFOO`", "stop_signal"],
        At::Text("stop_signal"),
    );
}

#[test]
fn sigkill_as_stop_signal_is_explained() {
    // SIGKILL is a real signal: it is refused because cogno sends it itself
    // after stop_timeout, and the message must not claim it does not exist.
    let yaml = "\
services:
  web:
    command: node server.js
    stop_signal: SIGKILL
";
    let err = config_error(
        "sigkill",
        yaml,
        &["SIGKILL", "stop_signal"],
        At::Text("stop_signal"),
    );
    assert!(
        !err.contains("is not a signal name"),
        "SIGKILL is a signal name; the message should say it cannot be a stop_signal:\n{err}"
    );
}

#[test]
fn backoff_multiplier_below_one() {
    let yaml = "\
services:
  web:
    command: node server.js
    backoff:
      initial: 1s
      multiplier: 0.5
";
    config_error(
        "multiplier",
        yaml,
        &["multiplier", "0.5", "at least 1"],
        At::Text("multiplier"),
    );
}

#[test]
fn health_listen_with_a_host_name() {
    let yaml = "\
health_listen: localhost:8099
services:
  web:
    command: node server.js
";
    config_error(
        "health-listen",
        yaml,
        &["`localhost:8099`", "IP address and port", "health_listen"],
        At::Text("health_listen"),
    );
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn unknown_user() {
    let yaml = "\
services:
  web:
    command: node server.js
    user: cogno-test-no-such-user
";
    if running_as_root() {
        // As root the user is switched to, so it must exist.
        config_error(
            "user",
            yaml,
            &["`cogno-test-no-such-user`", "does not exist", "user"],
            At::Text("user"),
        );
    } else {
        // Otherwise `user` is ignored (with a warning at `up`).
        let sb = Sandbox::new("user", yaml);
        check_ok(&sb, &[]);
    }
}

// ------------------------------------------------------------ interpolation

#[test]
fn unset_variable_without_default() {
    let yaml = "\
services:
  web:
    command: node server.js
    env:
      DATABASE_URL: ${COGNO_TEST_DATABASE_URL}
";
    let err = config_error(
        "unset",
        yaml,
        &[
            "`COGNO_TEST_DATABASE_URL` is not set",
            "services.web.env.DATABASE_URL",
        ],
        At::Text("DATABASE_URL:"),
    );
    assert!(
        err.contains("${COGNO_TEST_DATABASE_URL:-value}"),
        "the help shows the default syntax: {err}"
    );
}

#[test]
fn unset_variable_in_a_command_item() {
    let yaml = "\
services:
  web:
    command: [\"node\", \"${COGNO_TEST_ENTRY}\"]
";
    config_error(
        "unset-command",
        yaml,
        &["`COGNO_TEST_ENTRY` is not set", "services.web.command[1]"],
        At::Item {
            line: "command",
            item: "\"${COGNO_TEST_ENTRY}\"",
        },
    );
}

#[test]
fn unclosed_interpolation() {
    let yaml = "\
services:
  web:
    command: node server.js
    env:
      PORT: ${PORT
";
    config_error(
        "unclosed",
        yaml,
        &["`${`", "closing", "services.web.env.PORT"],
        At::Text("PORT:"),
    );
}

#[test]
fn interpolation_that_is_not_a_name() {
    let yaml = "\
services:
  web:
    command: node server.js
    env:
      X: ${COGNO_TEST_PORT=3000}
";
    config_error(
        "not-a-name",
        yaml,
        &["not a variable reference", "services.web.env.X"],
        At::Text("X:"),
    );
}

// --------------------------------------------------------------- YAML itself

#[test]
fn invalid_yaml_indentation() {
    let yaml = "\
services:
  web:
    command: node server.js
   priority: 5
";
    // serde_yaml stops at the misindented key: line 4, column 4.
    config_error("indent", yaml, &["invalid YAML"], At::Text("priority"));
}

#[test]
fn duplicate_service_name() {
    let yaml = "\
services:
  web:
    command: node server.js
  worker:
    command: worker
  web:
    command: other
";
    // The duplicate is the second `web:`, on line 6.
    config_error(
        "duplicate",
        yaml,
        &["invalid YAML", "duplicate", "web"],
        At::Nth("web:", 2),
    );
}

/// Positions come from the parser: a key inside a flow map, an item of a
/// flow list written over several lines and a repeated key on one line are
/// pointed at exactly (the old text re-scan placed the first two on the key
/// that holds them).
#[test]
fn flow_forms_are_placed_exactly() {
    let yaml = "\
services:
  db: {command: postgres}
  web:
    command: node server.js
    depends_on: {db: ready}
";
    config_error(
        "flow-map-key",
        yaml,
        &["ready"],
        At::Item {
            line: "{db: ready}",
            item: "db: ready",
        },
    );
    let yaml = "\
services:
  db: {command: postgres}
  web:
    command: node server.js
    depends_on: [
      db,
      ghost]
";
    config_error(
        "flow-list-lines",
        yaml,
        &["`ghost`", "not defined"],
        At::Text("ghost"),
    );
    let yaml = "\
services:
  web: {command: a, command: b}
";
    let err = config_error(
        "flow-duplicate",
        yaml,
        &["duplicate key `command`", "`services.web`"],
        At::Item {
            line: "web:",
            item: "command: b",
        },
    );
    assert!(
        err.contains("line 2, column 9"),
        "the first one is located too: {err}"
    );
}

#[test]
fn empty_file() {
    let err = config_error("empty", "", &["empty"], At::FileOnly);
    assert!(err.contains("services"), "{err}");
}

#[test]
fn file_of_comments_only() {
    config_error(
        "comments",
        "# TODO: write the stack\n",
        &["empty"],
        At::FileOnly,
    );
}

#[test]
fn missing_stack_file() {
    let sb = Sandbox::new("missing", "services: {}\n");
    let missing = sb.dir.path().join("nope.yaml");
    for args in [
        vec!["check", "--config", missing.to_str().unwrap()],
        vec![
            "up",
            "--config",
            missing.to_str().unwrap(),
            "--data",
            sb.data.to_str().unwrap(),
        ],
    ] {
        let out = sb.run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("nope.yaml"), "{err}");
        assert!(err.contains("--config"), "the help says how: {err}");
        sb.assert_untouched("missing file");
    }
}

// ---------------------------------------------------------------- valid files

/// Runs `cogno check` on a valid file and returns stdout.
fn check_ok(sb: &Sandbox, envs: &[(&str, &str)]) -> String {
    let mut cmd = sb.command(&["check", "--config", sb.file_arg()]);
    cmd.envs(envs.iter().copied());
    let out = cmd.output().expect("run cogno");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    sb.assert_untouched("check of a valid file");
    stdout
}

#[test]
fn interpolation_with_defaults() {
    let yaml = "\
shutdown_budget: ${COGNO_TEST_BUDGET:-20s}
env:
  PORT: ${COGNO_TEST_PORT:-3000}
services:
  db:
    command: [\"postgres\", \"-p\", \"${COGNO_TEST_PORT:-5432}\"]
    health:
      tcp: 127.0.0.1:${COGNO_TEST_PORT:-5432}
  web:
    command: node server.js --price '$$5' $HOME
    priority: ${COGNO_TEST_WEB_PRIORITY:-300}
    stop_timeout: ${COGNO_TEST_EMPTY:-2s}
    depends_on: [db]
";
    let sb = Sandbox::new("interpolation", yaml);
    let out = check_ok(&sb, &[]);
    assert!(
        out.contains("ok, 2 services in 2 tiers"),
        "defaults apply:\n{out}"
    );
    assert!(out.contains("shutdown_budget 20s"), "{out}");
    assert!(out.contains("priority 300"), "{out}");
    assert!(out.contains("tier 1"), "{out}");
    assert!(out.contains("tier 2"), "{out}");
    assert!(out.contains("waits for: db healthy"), "{out}");

    // A set variable wins over the default; an empty one takes the default.
    let out = check_ok(
        &sb,
        &[
            ("COGNO_TEST_BUDGET", "45s"),
            ("COGNO_TEST_WEB_PRIORITY", "250"),
            ("COGNO_TEST_EMPTY", ""),
        ],
    );
    assert!(out.contains("shutdown_budget 45s"), "{out}");
    assert!(out.contains("priority 250"), "{out}");
}

#[test]
fn check_prints_tiers_in_priority_order() {
    // Written in reverse, to show the order comes from the priorities.
    let yaml = "\
services:
  worker:
    command: worker
    priority: 400
  web:
    command: node server.js
    priority: 300
  migrate:
    command: migrate up
    oneshot: true
    priority: 250
  cache:
    command: redis-server
    priority: 200
  db:
    command: postgres
    priority: 100
";
    let sb = Sandbox::new("tiers", yaml);
    let out = check_ok(&sb, &[]);
    assert!(out.contains("ok, 5 services in 5 tiers"), "{out}");
    let expected = [
        ("tier 1", "db", "service, priority 100"),
        ("tier 2", "cache", "service, priority 200"),
        ("tier 3", "migrate", "oneshot, priority 250"),
        ("tier 4", "web", "service, priority 300"),
        ("tier 5", "worker", "service, priority 400"),
    ];
    let mut last = 0;
    for (tier, name, what) in expected {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(tier))
            .unwrap_or_else(|| panic!("no {tier} in:\n{out}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[2], name, "{tier} should be {name}:\n{out}");
        assert!(line.contains(what), "{line}");
        let at = out.find(line).unwrap();
        assert!(at > last, "tiers out of order:\n{out}");
        last = at;
    }
    // Implicit dependencies are shown as such.
    let worker = out.lines().find(|l| l.contains("tier 5")).unwrap();
    let waits = worker
        .split("waits for: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{worker}"));
    assert!(waits.ends_with("(lower priority)"), "{worker}");
    for name in ["db", "cache", "migrate", "web"] {
        assert!(waits.contains(name), "worker waits for {name}: {worker}");
    }
    assert!(out.contains("worker → web → migrate → cache → db"), "{out}");
}

#[test]
fn check_shows_resolved_conditions() {
    let yaml = "\
services:
  db:
    command: postgres
  migrate:
    command: migrate up
    oneshot: true
    depends_on: [db]
  web:
    command: node server.js
    depends_on:
      migrate: healthy
      db: started
";
    let sb = Sandbox::new("conditions", yaml);
    let out = check_ok(&sb, &[]);
    // List form means healthy; `healthy` on a oneshot means completed.
    assert!(out.contains("waits for: db healthy"), "{out}");
    assert!(
        out.contains("waits for: migrate completed; db started"),
        "{out}"
    );
}

#[test]
fn default_stop_timeouts_are_not_held_against_the_budget() {
    // Three services in a chain with the default 5s each would be 15s > 10s,
    // but only stop_timeouts written in the file are checked at load time.
    let yaml = "\
services:
  db:
    command: postgres
  api:
    command: api
    depends_on: [db]
  web:
    command: web
    depends_on: [api]
";
    let sb = Sandbox::new("default-timeouts", yaml);
    let out = check_ok(&sb, &[]);
    assert!(out.contains("shutdown_budget 10s"), "{out}");
}

#[test]
fn config_found_through_cogno_config_and_cogno_yaml() {
    let yaml = "services:\n  web:\n    command: node server.js\n";
    let sb = Sandbox::with_file_name("cogno-yaml", "cogno.yaml", yaml);
    // ./cogno.yaml in the working directory.
    let out = sb.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cogno.yaml: ok"));
    // $COGNO_CONFIG, from elsewhere.
    let mut cmd = sb.command(&["check"]);
    cmd.current_dir(std::env::temp_dir())
        .env("COGNO_CONFIG", &sb.file);
    let out = cmd.output().expect("run cogno");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&sb.file.display().to_string()));
    sb.assert_untouched("check");
}

#[test]
fn up_resolves_data_dir_relative_to_the_file_and_sets_cogno_service() {
    let sb = Sandbox::new("data-dir", "");
    let sub = sb.dir.path().join("conf");
    std::fs::create_dir(&sub).unwrap();
    let file = sub.join("stack.yaml");
    std::fs::write(
        &file,
        "\
data_dir: state
services:
  hello:
    command: [\"sh\", \"-c\", \"echo hello from $COGNO_SERVICE\"]
    oneshot: true
",
    )
    .unwrap();
    let mut child = sb
        .command(&["up", "--config", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cogno");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cogno up did not finish a stack of one oneshot");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("hello from hello"), "{stdout}");
    assert!(
        sub.join("state").is_dir(),
        "data_dir is relative to the stack file"
    );
    assert!(!sb.dir.path().join("state").exists() && !sb.data.exists());
}

#[test]
fn version_and_help() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().expect("run cogno");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let v = run(&["--version"]);
    assert!(v.starts_with("cogno "), "{v}");
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    let up = run(&["up", "--help"]);
    assert!(up.contains("--config"), "{up}");
    assert!(up.contains("--data"), "{up}");
    let check = run(&["check", "--help"]);
    assert!(check.contains("--config"), "{check}");
    assert!(!check.contains("--data"), "{check}");
}

#[test]
fn unknown_command_line_option_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["up", "--frobnicate"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run cogno");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn secrets_of_a_bundled_service() {
    let yaml = "\
services:
  cache:
    kind: redis
    secrets: [REDIS_PASSWORD]
";
    config_error(
        "bundled-secrets",
        yaml,
        &["`cache` is a bundled service", "its files"],
        At::Text("secrets"),
    );
}

#[test]
fn a_secret_name_a_shell_cannot_take() {
    let yaml = "\
services:
  web:
    command: node server.js
    secrets: [GOOD, 'x; rm -rf /']
";
    config_error(
        "secret-name",
        yaml,
        &["`x; rm -rf /` is not a secret's name", "letters, digits"],
        At::Item {
            line: "secrets:",
            item: "'x; rm -rf /'",
        },
    );
}

// ------------------------------------------------ names `cogno env` prints

/// `cogno env`'s output is sourced by a shell: a variable or secret name
/// that is not a shell name (`NAME=` would be a command) is refused at load.
#[test]
fn env_and_secret_names_must_be_shell_names() {
    let cases = [
        (
            "env-name",
            "env:\n  \"X=1;touch /tmp/pwned;Y\": v\nservices:\n  web:\n    command: node server.js\n",
            "variable name `X=1;touch /tmp/pwned;Y`",
            "touch",
        ),
        (
            "service-env-name",
            "services:\n  web:\n    command: node server.js\n    env:\n      \"$(reboot)\": v\n",
            "variable name `$(reboot)`",
            "reboot",
        ),
        (
            "secret-name",
            "secrets:\n  1ST_KEY: {bytes: 16}\nservices:\n  web:\n    command: node server.js\n",
            "secret name `1ST_KEY`",
            "1ST_KEY",
        ),
    ];
    for (name, yaml, message, line) in cases {
        let stderr = config_error(name, yaml, &[message], At::Line(line));
        assert!(stderr.contains("not starting with a digit"), "{stderr}");
    }
}

// ------------------------------------------------ coming from docker compose

/// Writes `name` beside the sandbox's stack file.
fn write_beside(sb: &Sandbox, name: &str, text: &str) {
    std::fs::write(sb.dir.path().join(name), text).expect("write a file beside the stack file");
}

/// Runs `cogno check` with `args` after the stack file, expecting a
/// configuration error; returns stderr.
fn check_refused(sb: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["check", "--config", sb.file_arg()];
    all.extend_from_slice(args);
    let out = sb.run(&all);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("= help:"), "{stderr}");
    assert!(text(&out.stdout).is_empty(), "{stderr}");
    stderr
}

const PRIORITY_AND_BUDGET: &str = "\
shutdown_budget: ${COGNO_TEST_BUDGET:-20s}
services:
  web:
    command: node server.js
    priority: ${COGNO_TEST_WEB_PRIORITY:-300}
";

#[test]
fn dot_env_beside_the_stack_file_feeds_interpolation_and_cogno_env_wins() {
    let sb = Sandbox::new("dot-env", PRIORITY_AND_BUDGET);
    write_beside(
        &sb,
        ".env",
        "# compose-style\nexport COGNO_TEST_WEB_PRIORITY=250\nCOGNO_TEST_BUDGET=\"45s\"\n",
    );
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut all = vec!["check", "--config", sb.file_arg()];
        all.extend_from_slice(args);
        let mut cmd = sb.command(&all);
        cmd.envs(envs.iter().copied());
        let out = cmd.output().expect("run cogno");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let out = run(&[], &[]);
    assert!(out.contains("priority 250"), "{out}");
    assert!(out.contains("shutdown_budget 45s"), "{out}");
    // cogno's own environment wins over the file.
    let out = run(&[], &[("COGNO_TEST_WEB_PRIORITY", "260")]);
    assert!(out.contains("priority 260"), "{out}");
    assert!(out.contains("shutdown_budget 45s"), "{out}");
    // --env-file replaces .env (later files win), it does not add to it.
    write_beside(&sb, "a.env", "COGNO_TEST_BUDGET=30s\n");
    write_beside(&sb, "b.env", "COGNO_TEST_BUDGET=31s\n");
    let out = run(&["--env-file", "a.env", "--env-file", "b.env"], &[]);
    assert!(out.contains("shutdown_budget 31s"), "{out}");
    assert!(out.contains("priority 300"), ".env was not read: {out}");
}

#[test]
fn env_file_option_works_for_cogno_env_and_up() {
    let yaml = "\
env:
  FROM_FILE: ${COGNO_TEST_PORT}
services:
  web:
    command: [\"sh\", \"-c\", \"echo port=$$FROM_FILE\"]
    oneshot: true
";
    let sb = Sandbox::new("env-file-option", yaml);
    write_beside(&sb, "ports.env", "COGNO_TEST_PORT=4321\n");
    let data = sb.data.to_str().expect("utf-8 temp path");
    for command in ["env", "up"] {
        let out = sb.run(&[
            command,
            "--config",
            sb.file_arg(),
            "--data",
            data,
            "--env-file",
            "ports.env",
        ]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command}: {}",
            text(&out.stderr)
        );
        let want = if command == "env" {
            "FROM_FILE='4321'"
        } else {
            "port=4321"
        };
        assert!(stdout.contains(want), "{command}: {stdout}");
    }
}

#[test]
fn a_malformed_env_line_is_named_with_file_and_line() {
    let sb = Sandbox::new("dot-env-malformed", PRIORITY_AND_BUDGET);
    write_beside(&sb, ".env", "A=1\n# fine\nB=two words\n");
    let err = check_refused(&sb, &[]);
    let env = sb.dir.path().join(".env");
    assert!(err.contains(&format!("--> {}:3:", env.display())), "{err}");
    assert!(
        err.contains("malformed line in env file: `B=two words`"),
        "{err}"
    );
    assert!(err.contains("NAME=\"a b\""), "the fix is shown: {err}");
    // The same through --env-file, and through a service's env_file.
    let err = check_refused(&sb, &["--env-file", ".env"]);
    assert!(err.contains(":3:"), "{err}");
    let yaml = "services:\n  web:\n    command: node server.js\n    env_file: bad.env\n";
    let sb = Sandbox::new("env-file-malformed", yaml);
    write_beside(&sb, "bad.env", "OK=1\nNOT A LINE\n");
    let err = check_refused(&sb, &[]);
    let bad = sb.dir.path().join("bad.env");
    assert!(err.contains(&format!("--> {}:2:", bad.display())), "{err}");
}

#[test]
fn a_missing_env_file_is_an_error_naming_it_unless_optional() {
    let yaml = "\
services:
  web:
    command: node server.js
    env_file:
      - base.env
      - missing.env
";
    let sb = Sandbox::new("env-file-missing", yaml);
    write_beside(&sb, "base.env", "A=1\n");
    let err = check_refused(&sb, &[]);
    assert!(err.contains("missing.env` does not exist"), "{err}");
    let (l, c) = position(yaml, "missing.env", "missing.env");
    assert!(
        err.contains(&format!("{}:{l}:{c}", sb.file.display())),
        "{err}"
    );
    assert!(err.contains("required: false"), "{err}");
    // compose's optional form.
    let yaml = "\
services:
  web:
    command: node server.js
    env_file:
      - base.env
      - {path: missing.env, required: false}
";
    let sb = Sandbox::new("env-file-optional", yaml);
    write_beside(&sb, "base.env", "A=1\n");
    let out = sb.run(&["check", "--config", sb.file_arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // --env-file names a file that must exist.
    let err = check_refused(&sb, &["--env-file", "nope.env"]);
    assert!(err.contains("nope.env"), "{err}");
}

#[test]
fn required_variable_forms_say_what_the_file_asks_for() {
    let yaml = "\
services:
  web:
    command: node server.js
    env:
      DATABASE_URL: ${COGNO_TEST_DATABASE_URL:?point it at your database}
";
    let err = config_error(
        "required",
        yaml,
        &[
            "`COGNO_TEST_DATABASE_URL` is not set",
            "services.web.env.DATABASE_URL",
            "point it at your database",
        ],
        At::Text("DATABASE_URL:"),
    );
    assert!(
        err.contains("--env-file"),
        "the help names env files: {err}"
    );
}

#[test]
fn compose_interpolation_forms_in_a_stack_file() {
    let yaml = "\
shutdown_budget: ${COGNO_TEST_BUDGET-20s}
services:
  web:
    command: node server.js ${COGNO_TEST_PORT:+--port=${COGNO_TEST_PORT}}
    priority: ${COGNO_TEST_WEB_PRIORITY:?set a priority}
    stop_timeout: ${COGNO_TEST_EMPTY+2s}
";
    let sb = Sandbox::new("compose-forms", yaml);
    let out = check_ok(
        &sb,
        &[("COGNO_TEST_WEB_PRIORITY", "250"), ("COGNO_TEST_EMPTY", "")],
    );
    assert!(out.contains("shutdown_budget 20s"), "{out}");
    assert!(out.contains("priority 250"), "{out}");
    // `-` without `:` keeps a set but empty value: an empty duration is refused.
    let mut cmd = sb.command(&["check", "--config", sb.file_arg()]);
    cmd.envs([("COGNO_TEST_WEB_PRIORITY", "1"), ("COGNO_TEST_BUDGET", "")]);
    let out = cmd.output().expect("run cogno");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("shutdown_budget"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn merge_keys_x_keys_and_compose_conditions() {
    let yaml = "\
x-app: &app
  priority: 250
  stop_timeout: 2s
x-wait: &wait
  depends_on:
    db: service_healthy
    migrate: {condition: service_completed_successfully}
    logger: service_started
services:
  db:
    command: postgres
  logger:
    command: logger
  migrate:
    command: migrate up
    oneshot: true
  web:
    <<: [*app, *wait]
    command: node server.js
  worker:
    <<: *app
    priority: 260
    command: worker
";
    let sb = Sandbox::new("compose-idioms", yaml);
    let out = check_ok(&sb, &[]);
    let web = out
        .lines()
        .skip_while(|l| !l.contains("web"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.contains("priority 250"), "merged from x-app: {out}");
    assert!(out.contains("priority 260"), "an explicit key wins: {out}");
    assert!(
        out.contains("waits for: db healthy; migrate completed; logger started"),
        "compose's conditions: {web}\n{out}"
    );
}

#[test]
fn an_error_in_a_merged_anchor_points_at_the_anchor() {
    let yaml = "\
x-app: &app
  stop_timeout: 5
services:
  web:
    <<: *app
    command: node server.js
";
    config_error(
        "merged-error",
        yaml,
        &["services.web.stop_timeout", "no unit"],
        At::Text("stop_timeout"),
    );
}

#[test]
fn env_files_reach_a_running_service_below_env() {
    use crate::common::{fx, service_output, Cogno, Stack};
    let s = Stack::new("env-files-run");
    let write = |name: &str, text: &str| std::fs::write(s.file(name), text).unwrap();
    write(
        "stack.env",
        "COGNO_T_A=stack-file\nCOGNO_T_B=stack-file\nCOGNO_T_C=stack-file\n",
    );
    write(
        "svc.env",
        "COGNO_T_C=svc-file\nCOGNO_T_D=svc-file\nexport COGNO_T_E=\"two\nlines\"\n",
    );
    // The .env beside the stack file is for ${...} only: it does not reach services.
    write(".env", "COGNO_T_F=dot-env\n");
    s.write(&format!(
        "\
env_file: stack.env
env:
  COGNO_T_B: stack-env
services:
  envsvc:
    oneshot: true
    command: {cmd}
    env_file: [svc.env, {{path: absent.env, required: false}}]
    env:
      COGNO_T_D: service-env
      COGNO_T_G: ${{COGNO_T_F}}
",
        cmd = fx(
            "printenv.py",
            &[
                "COGNO_T_A",
                "COGNO_T_B",
                "COGNO_T_C",
                "COGNO_T_D",
                "COGNO_T_E",
                "COGNO_T_F",
                "COGNO_T_G"
            ]
        ),
    ));
    let mut cmd = s.up_command();
    for k in [
        "COGNO_T_A",
        "COGNO_T_B",
        "COGNO_T_C",
        "COGNO_T_D",
        "COGNO_T_E",
        "COGNO_T_F",
        "COGNO_T_G",
    ] {
        cmd.env_remove(k);
    }
    let mut cogno = Cogno::spawn(&s, cmd);
    assert_eq!(
        cogno.wait_code(Duration::from_secs(30)),
        0,
        "{}",
        cogno.output()
    );
    let got: Vec<String> = service_output(&cogno.lines(), "envsvc")
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        got,
        [
            "COGNO_T_A=stack-file",  // stack env_file
            "COGNO_T_B=stack-env",   // stack env over stack env_file
            "COGNO_T_C=svc-file",    // service env_file over stack-level
            "COGNO_T_D=service-env", // service env over service env_file
            "COGNO_T_E=two",         // a quoted value over two lines…
            "lines",                 // …printed as two lines
            "COGNO_T_F is unset",    // .env only feeds interpolation
            "COGNO_T_G=dot-env",
        ],
        "{}",
        cogno.output()
    );
}

// ------------------------------------------------------------ health semantics (issue 14)

#[test]
fn start_timeout_without_a_health_check() {
    let yaml = "\
services:
  web:
    command: node server.js
    start_timeout: 30s
";
    config_error(
        "start-timeout-no-health",
        yaml,
        &["`web` has a start_timeout but no health check"],
        At::Text("start_timeout"),
    );
}

#[test]
fn liveness_on_a_service_that_is_never_restarted() {
    let yaml = "\
services:
  web:
    command: node server.js
    restart: never
    health:
      tcp: 127.0.0.1:3000
      on_unhealthy: restart
";
    config_error(
        "liveness-never",
        yaml,
        &["on_unhealthy: restart cannot apply: `web` has `restart: never`"],
        At::Text("restart: never"),
    );
    let yaml = "\
services:
  migrate:
    command: migrate up
    oneshot: true
    health:
      tcp: 127.0.0.1:3000
      on_unhealthy: restart
";
    config_error(
        "liveness-oneshot",
        yaml,
        &["on_unhealthy: restart cannot apply: `migrate` is a oneshot"],
        At::Text("on_unhealthy"),
    );
    let yaml = "\
services:
  web:
    command: node server.js
    health:
      tcp: 127.0.0.1:3000
      on_unhealthy: reboot
";
    config_error(
        "liveness-unknown",
        yaml,
        &["services.web.health.on_unhealthy", "reboot"],
        At::Line("on_unhealthy"),
    );
}

// ------------------------------------------------------------------ notify

#[test]
fn notify_key_typo_and_event_typo() {
    let yaml = "\
notify:
  webhook: [https://hooks.example.com/x]
services:
  web:
    command: node server.js
";
    let err = config_error(
        "notify-key",
        yaml,
        &["notify.webhook", "unknown field `webhook`"],
        At::Text("webhook"),
    );
    assert!(err.contains("did you mean `webhooks`?"), "{err}");

    let yaml = "\
notify:
  webhooks: [https://hooks.example.com/x]
  on: [fatal, unhealty]
services:
  web:
    command: node server.js
";
    let err = config_error(
        "notify-on",
        yaml,
        &["notify.on[1]", "unknown variant `unhealty`"],
        At::Text("unhealty"),
    );
    assert!(err.contains("did you mean `unhealthy`?"), "{err}");
}

#[test]
fn notify_webhook_is_checked_without_being_shown() {
    let yaml = "\
notify:
  webhooks:
    - https://hooks.example.com/ok
    - ftp://files.example.com/T0KEN
services:
  web:
    command: node server.js
";
    let err = config_error(
        "notify-url",
        yaml,
        &["webhook 2 is not an http:// or https:// URL"],
        At::Text("ftp://"),
    );
    // A webhook URL is a credential: the message does not repeat it (the
    // source line shown under it is the user's own file).
    let message = err.lines().find(|l| l.contains("webhook 2")).unwrap();
    assert!(!message.contains("T0KEN"), "{err}");
}

#[test]
fn notify_with_nobody_to_tell() {
    let yaml = "\
notify:
  on: [fatal]
services:
  web:
    command: node server.js
";
    config_error(
        "notify-empty",
        yaml,
        &["neither a `command` nor `webhooks`"],
        At::Text("notify"),
    );
}

#[test]
fn notify_ca_file_that_is_missing_or_holds_no_certificate() {
    let yaml = "\
notify:
  webhooks: [https://hooks.example.com/x]
  ca_file: certs/internal-ca.pem
services:
  web:
    command: node server.js
";
    config_error(
        "notify-ca-missing",
        yaml,
        &[
            "cannot read the CA file `",
            "certs/internal-ca.pem`: No such file",
        ],
        At::Text("ca_file"),
    );

    // A key is not a certificate: the file is read when the stack file is.
    let yaml = "\
notify:
  webhooks: [https://hooks.example.com/x]
  ca_file: /etc/hostname
services:
  web:
    command: node server.js
";
    config_error(
        "notify-ca-empty",
        yaml,
        &["the CA file `/etc/hostname` holds no certificate"],
        At::Text("ca_file"),
    );
}

// ------------------------------------------------------------------ watch:

#[test]
fn watch_unknown_key_gets_the_closest() {
    let yaml = "\
services:
  web:
    command: node server.js
    watch:
      paths: [.]
      debounse: 200ms
";
    let err = config_error(
        "watch-key",
        yaml,
        &["services.web.watch.debounse", "unknown field `debounse`"],
        At::Text("debounse"),
    );
    assert!(err.contains("did you mean `debounce`?"), "{err}");
}

#[test]
fn watch_path_that_does_not_exist() {
    let yaml = "\
services:
  web:
    command: node server.js
    watch:
      paths: [., srcc]
";
    config_error(
        "watch-missing",
        yaml,
        &[
            "watched path `srcc`",
            "does not exist",
            "relative to the stack file's directory",
        ],
        At::Item {
            line: "paths:",
            item: "srcc",
        },
    );
}

#[test]
fn watch_empty_paths() {
    let yaml = "\
services:
  web:
    command: node server.js
    watch:
      paths: []
";
    config_error(
        "watch-empty",
        yaml,
        &["`web` watches nothing: `paths` is empty"],
        At::Text("paths:"),
    );
}

#[test]
fn watch_bad_ignore_glob() {
    let yaml = "\
services:
  web:
    command: node server.js
    watch:
      paths: [.]
      ignore: ['*.log', 'gen/[abc']
";
    config_error(
        "watch-glob",
        yaml,
        &["`gen/[abc` is not a glob", "unclosed character class"],
        At::Item {
            line: "ignore:",
            item: "'gen/[abc'",
        },
    );
}

#[test]
fn watch_before_is_not_a_oneshot() {
    let yaml = "\
services:
  build:
    command: make
  web:
    command: node server.js
    watch:
      paths: [.]
      before: build
";
    config_error(
        "watch-before-service",
        yaml,
        &[
            "`web` runs `build` before a restart",
            "`build` is not a oneshot",
            "oneshot: true",
        ],
        At::Text("before: build"),
    );
}

#[test]
fn watch_before_names_no_service() {
    let yaml = "\
services:
  build:
    command: make
    oneshot: true
  web:
    command: node server.js
    watch:
      paths: [.]
      before: biuld
";
    let err = config_error(
        "watch-before-unknown",
        yaml,
        &[
            "`web` runs `biuld` before a restart",
            "there is no service `biuld`",
        ],
        At::Text("before: biuld"),
    );
    assert!(
        err.contains("the oneshots of this stack are: build"),
        "{err}"
    );
}

/// The stack files users start from are valid as shipped: the built-in
/// quick-start, the example, and the development stack that
/// docs/local-development.md shows (with the folders it watches, which
/// `check` requires, made in a sandbox), so a doc that drifts from the
/// config rules fails here. (config/cognobserve.yaml names the image's
/// users; the container test runs it.)
#[test]
fn the_shipped_and_documented_stack_files_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).expect(p);
    for (name, yaml, expect) in [
        ("quickstart", read("config/quickstart.yaml"), "temporal"),
        ("example", read("config/example.yaml"), "tier 1"),
    ] {
        let out = check_ok(&Sandbox::new(name, &yaml), &[]);
        assert!(out.contains(expect), "{name}:\n{out}");
    }

    let doc = read("docs/local-development.md");
    let start = doc
        .find("```yaml\n# cogno.yaml")
        .expect("the stack file block")
        + 8;
    let yaml = &doc[start..start + doc[start..].find("```").expect("its end")];
    let sb = Sandbox::with_file_name("local-development", "cogno.yaml", yaml);
    for dir in ["packages/db/prisma", "apps/ingest", "apps/worker/src"] {
        std::fs::create_dir_all(sb.dir.path().join(dir)).unwrap();
    }
    std::fs::write(sb.dir.path().join(".env.development"), "").unwrap();
    // Not check_ok: the sandbox holds more than the stack file here.
    let check = |extra: &[&str]| {
        let mut args = vec!["check", "--config", sb.file_arg()];
        args.extend_from_slice(extra);
        let out = sb.command(&args).output().expect("run cogno");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let out = check(&[]);
    // The app's services come after the infrastructure's tiers, and a
    // subset of web starts what it needs and nothing else.
    for line in [
        "tier 3  temporal",
        "worker            service, priority 300  waits for: temporal healthy",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    let subset = check(&["web"]);
    assert!(
        subset.contains("starts postgres, redis, temporal, migrate, web\n"),
        "{subset}"
    );
}
