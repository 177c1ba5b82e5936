//! The control plane end to end: a real `cogno up` with fixture services,
//! driven by the `cogno status | logs | start | stop | restart | healthcheck
//! | shutdown` commands and by raw HTTP on the control socket and the TCP
//! health listener.
//!
//! Readiness is made deterministic by gate files: a service whose health
//! check is `test -e FILE` becomes healthy exactly when the test creates
//! FILE. Nothing here asserts how fast anything is (bench/control.sh does).

use crate::common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// What a finished CLI command did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `cogno ARGS[0] --data DATA ARGS[1..]`; fails the test if it does not
/// finish within [`TIMEOUT`].
pub(crate) fn cli(s: &Stack, args: &[&str]) -> Run {
    cli_on(&s.data, args)
}

fn cli_on(data: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(COGNO);
    cmd.arg(args[0])
        .arg("--data")
        .arg(data)
        .args(&args[1..])
        .env_remove("COGNO_DATA_DIR")
        .env_remove("COGNO_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("run cogno");
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait for cogno"),
        Err(_) => {
            signal(pid, Signal::SIGKILL);
            panic!(
                "`cogno {}` did not finish within {TIMEOUT:?}",
                args.join(" ")
            );
        }
    };
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn socket(s: &Stack) -> std::path::PathBuf {
    s.data.join("run").join("cogno.sock")
}

/// Starts `cogno up` and waits until its control socket exists (it listens
/// from then on: connections queue until they are served).
pub(crate) fn up(s: &Stack) -> Cogno {
    let c = Cogno::up(s);
    let sock = socket(s);
    assert!(
        eventually(TIMEOUT, || sock.exists()),
        "no control socket at {}; output:\n{}",
        sock.display(),
        c.output()
    );
    c
}

/// Polls `cogno healthcheck` until it exits with `code`; returns its last run.
pub(crate) fn healthcheck_until(s: &Stack, c: &Cogno, code: i32) -> Run {
    healthcheck_until_says(s, c, code, "")
}

/// Polls `cogno healthcheck` until it exits with `code` saying `what`.
fn healthcheck_until_says(s: &Stack, c: &Cogno, code: i32, what: &str) -> Run {
    let mut last = None;
    let ok = eventually(TIMEOUT, || {
        let r = cli(s, &["healthcheck"]);
        let hit = r.code == code && r.stdout.contains(what);
        last = Some(r);
        hit
    });
    let last = last.expect("ran healthcheck");
    assert!(
        ok,
        "healthcheck never exited {code}; last: {last:?}; output:\n{}",
        c.output()
    );
    last
}

pub(crate) fn status_json(s: &Stack) -> Value {
    let r = cli(s, &["status", "--json"]);
    assert!(r.stderr.is_empty(), "status --json: {r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {r:?}"))
}

pub(crate) fn service<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {status}"))
}

/// One HTTP/1.1 request on `stream`; returns the status and the body
/// (the server answers these with a Content-Length).
pub(crate) fn http(mut stream: impl Read + Write, method: &str, path: &str) -> (u16, String) {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

pub(crate) fn unix_http(s: &Stack, method: &str, path: &str) -> (u16, Value) {
    let stream = std::os::unix::net::UnixStream::connect(socket(s)).expect("connect");
    let (code, body) = http(stream, method, path);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, json)
}

fn tcp_health(addr: &str) -> (u16, Value) {
    let stream = std::net::TcpStream::connect(addr).expect("connect to health_listen");
    let (code, body) = http(stream, "GET", "/health");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health: {e}: {body}"));
    (code, json)
}

/// `2024-05-01T12:00:00.123Z`
fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    b.len() == 24
        && digits.iter().all(|&i| b[i].is_ascii_digit())
        && (b[4], b[7], b[10], b[13], b[16], b[19], b[23])
            == (b'-', b'-', b'T', b':', b':', b'.', b'Z')
}

/// A running `cogno logs -f`, its stdout read line by line by a thread.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(s: &Stack, args: &[&str]) -> Follower {
        Follower::command(s, "logs", args)
    }

    /// Runs `cogno COMMAND --data DATA ARGS`, reading its stdout.
    fn command(s: &Stack, command: &str, args: &[&str]) -> Follower {
        let mut child = Command::new(COGNO)
            .args([command, "--data"])
            .arg(&s.data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run cogno");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Lines up to and including the first one containing `needle`.
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(TIMEOUT) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!("cogno did not show {needle:?}; it showed {seen:?}"),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_subcommand_against_a_real_stack() {
    let s = Stack::new("ctl-all");
    let (gate, feed) = (s.file("db.gate"), s.file("web.feed"));
    std::fs::write(&feed, "").unwrap();
    s.write(&format!(
        r#"
services:
  setup:
    oneshot: true
    priority: 10
    command: {setup}
  db:
    command: {db}
    critical: true
    health:
      exec: ["test", "-e", "{gate}"]
      start_interval: 20ms
  web:
    depends_on: [db]
    startsecs: 100ms
    command: ["sh", "-c", "echo careful >&2; exec tail -n +1 -f {feed}"]
"#,
        setup = fx("exit.py", &["--out", "setup done", "0"]),
        db = fx("stamp.py", &[&s.file("db.start")]),
    ));
    let mut c = up(&s);

    // The socket and its directory are private to cogno's user.
    let me = nix::unistd::geteuid().as_raw();
    let run = std::fs::metadata(s.data.join("run")).unwrap();
    assert_eq!(
        run.permissions().mode() & 0o777,
        0o711,
        "DATA/run: traversable, not listable"
    );
    assert_eq!(run.uid(), me);
    let sock = std::fs::symlink_metadata(socket(&s)).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&sock.file_type()));
    assert_eq!(sock.permissions().mode() & 0o777, 0o600, "the socket");
    assert_eq!(sock.uid(), me);

    // db cannot be healthy before the gate exists: the stack is starting.
    let r = healthcheck_until_says(&s, &c, 1, "db is starting");
    assert_eq!(r.stdout.lines().count(), 1, "one line: {r:?}");
    assert!(
        r.stdout.starts_with("not ready: starting (") && r.stdout.contains("db is starting"),
        "{r:?}"
    );
    assert!(r.stdout.contains("web is waiting"), "{r:?}");
    let r = cli(&s, &["status"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.starts_with("starting: 3 services"), "{r:?}");
    assert!(r.stdout.contains("  - web is waiting"), "{r:?}");

    std::fs::write(&gate, "").unwrap();
    let r = healthcheck_until(&s, &c, 0);
    assert_eq!(r.stdout, "ready: 3 services healthy\n");
    assert!(r.stderr.is_empty());

    // The table.
    let r = cli(&s, &["status"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("ready: 3 services, up "), "{r:?}");
    let header = lines
        .iter()
        .position(|l| l.starts_with("SERVICE"))
        .expect("header");
    let cols: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(
        cols,
        ["SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "LAST", "EXIT"]
    );
    let row = |name: &str| -> Vec<String> {
        let l = lines[header + 1..]
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {r:?}"));
        l.split_whitespace().map(str::to_owned).collect()
    };
    let db_pid = c.service_pid("db");
    let db = row("db");
    assert_eq!(db[1], "running");
    assert_eq!(db[2], db_pid.to_string());
    assert_eq!(db[4], "0");
    assert_eq!(db[5], "pass", "{db:?}");
    assert!(db[6].ends_with("ms"), "latency: {db:?}");
    assert_eq!(row("setup")[1..3], ["completed", "-"]);
    assert_eq!(
        row("setup").last().unwrap(),
        "0",
        "exited with code 0: {r:?}"
    );
    assert_eq!(row("web")[1], "running");

    let st = status_json(&s);
    assert_eq!(st["phase"], "ready");
    assert_eq!(st["pid"], c.pid());
    assert_eq!(service(&st, "db")["pid"], db_pid);
    assert_eq!(service(&st, "db")["health"]["status"], "pass");
    assert_eq!(service(&st, "setup")["state"], "completed");

    // Logs: time order across services, stderr marked `!`, names padded
    // to the longest name (here `cogno`), as `cogno up` prints them.
    std::fs::write(&feed, "first\n").unwrap();
    c.wait_line("web   | first");
    let r = cli(&s, &["logs"]);
    assert_eq!(r.code, 0, "{r:?}");
    let setup_at = r.stdout.find("setup | setup done\n").expect("setup's line");
    let warn_at = r
        .stdout
        .find("web   ! careful\n")
        .expect("web's stderr line");
    let first_at = r.stdout.find("web   | first\n").expect("web's line");
    assert!(setup_at < warn_at && setup_at < first_at, "{r:?}");
    let r = cli(&s, &["logs", "web", "-n", "1"]);
    assert_eq!(r.stdout, "web   | first\n");
    let r = cli(&s, &["logs", "nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no service named `nope`") && r.stderr.contains("setup, db, web"),
        "{r:?}"
    );

    // Follow: lines written after it started arrive as they are written.
    let f = Follower::start(&s, &["web", "-f", "-n", "1"]);
    assert_eq!(f.wait_for("first"), ["web   | first"]);
    let mut feed_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&feed)
        .unwrap();
    for i in 0..3 {
        writeln!(feed_file, "fresh {i}").unwrap();
        assert_eq!(
            f.wait_for(&format!("fresh {i}")),
            [format!("web   | fresh {i}")]
        );
    }
    drop(f);

    // A second `up` on the same data directory is refused; the first goes on.
    let r = cli(&s, &["up", "--config", s.config.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("another cogno is already running"),
        "{r:?}"
    );
    assert_eq!(cli(&s, &["healthcheck"]).code, 0);

    // Shutdown: requested, then the stack stops in order and cogno exits 0.
    let r = cli(&s, &["shutdown"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with(&format!("shutdown requested: cogno (pid {})", c.pid())),
        "{r:?}"
    );
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());
    c.wait_line("shutdown requested through the control socket");

    // With no cogno: one line naming the socket and how to start the stack.
    for args in [
        &["status"][..],
        &["healthcheck"],
        &["logs"],
        &["restart", "web"],
        &["shutdown"],
    ] {
        let r = cli(&s, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.starts_with(&format!(
                "error: no cogno is running on {}",
                socket(&s).display()
            )) && r.stderr.contains("start the stack with `cogno up`"),
            "{args:?}: {r:?}"
        );
    }
}

#[test]
fn no_cogno_running_is_one_line() {
    let dir = TempDir::new("ctl-none");
    let data = dir.path().join("data");
    let r = cli_on(&data, &["status"]);
    assert_eq!(r.code, 1);
    let sock = data.join("run").join("cogno.sock");
    assert_eq!(
        r.stderr,
        format!(
            "error: no cogno is running on {} (no socket there): start the stack with `cogno up`, \
             or pass --data DIR (or set COGNO_DATA_DIR) if it runs with another data directory\n",
            sock.display()
        )
    );
    let r = cli_on(&data, &["healthcheck"]);
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{r:?}");
}

#[test]
fn start_stop_restart_respect_dependants() {
    let s = Stack::new("ctl-deps");
    let (db_start, db_log) = (s.file("db.start"), s.file("db.log"));
    let (web_start, web_log) = (s.file("web.start"), s.file("web.log"));
    let (stamp, trap) = (fixture("stamp.py"), fixture("trap.py"));
    s.write(&format!(
        r#"
services:
  db:
    command: {db}
    startsecs: 100ms
  web:
    depends_on: [db]
    startsecs: 100ms
    command: {web}
"#,
        db = argv(&[&stamp, &db_start, "--", &trap, &db_log]),
        web = argv(&[&stamp, &web_start, "--", &trap, &web_log]),
    ));
    let c = up(&s);
    healthcheck_until(&s, &c, 0);
    wait_ready(&c, &["db", "web"], 1);
    wait_lines(&db_start, 1);

    // db has a running dependant: refused, naming it and the way out.
    for verb in ["restart", "stop"] {
        let r = cli(&s, &[verb, "db"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.starts_with("error: db is needed by web (running)")
                && r.stderr.contains("--with-dependents"),
            "{r:?}"
        );
    }
    assert_eq!(read_lines_of(&db_start).len(), 1, "nothing was restarted");
    let r = cli(&s, &["restart", "nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("no service named `nope`; known services: db, web"),
        "{r:?}"
    );

    // With it: web stops first, db restarts, web comes back after db.
    let r = cli(&s, &["restart", "db", "--with-dependents"]);
    wait_ready(&c, &["db", "web"], 2);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.output());
    assert!(
        r.stdout.starts_with("db: restarted, healthy after "),
        "{r:?}"
    );
    let web_exit = event_time(&web_log, "EXIT");
    let db_term = event_time(&db_log, "SIGTERM");
    assert!(
        web_exit <= db_term,
        "web exited at {web_exit}, db got SIGTERM at {db_term}"
    );
    assert_eq!(wait_lines(&db_start, 2).len(), 2);
    assert_eq!(wait_lines(&web_start, 2).len(), 2);
    c.wait_count("web: started, pid", 2);
    // web started again only once db was healthy again (the fixtures'
    // own times cannot show it: startsecs counts from the spawn, before
    // Python has run a line).
    let lines = c.lines();
    let asked = lines
        .iter()
        .rposition(|l| l.contains("db: restart requested"))
        .expect("the request was logged");
    let order = [
        "web: stopped",
        "db: stopped",
        "db: started, pid",
        "db: healthy after",
        "web: started, pid",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|needle| {
            asked
                + lines[asked..]
                    .iter()
                    .position(|l| l.contains(needle))
                    .unwrap_or_else(|| panic!("no {needle:?} in:\n{}", c.output()))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "{order:?} at {at:?}:\n{}",
        c.output()
    );
    healthcheck_until(&s, &c, 0);

    // A leaf service can be stopped and started on its own.
    let r = cli(&s, &["stop", "web"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("web: stopped in "), "{r:?}");
    let st = status_json(&s);
    assert_eq!(service(&st, "web")["state"], "stopped");
    assert_eq!(st["phase"], "degraded");
    let r = cli(&s, &["healthcheck"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "not ready: degraded (web is stopped)\n");
    let r = cli(&s, &["start", "web"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("web: started, healthy after "),
        "{r:?}"
    );
    let r = cli(&s, &["start", "web", "db"]);
    assert_eq!(
        r.stdout,
        "web: already running and healthy\ndb: already running and healthy\n"
    );
    assert_eq!(cli(&s, &["healthcheck"]).code, 0);
}

/// Waits until each of `names` (trap.py) has said "ready" `n` times: its
/// signal handlers are installed.
fn wait_ready(c: &Cogno, names: &[&str], n: usize) {
    for name in names {
        c.wait_count(&format!("{name:<5} | ready"), n);
    }
}

/// The timestamp of the first line of a trap.py log whose event is `what`.
fn event_time(log: &str, what: &str) -> f64 {
    let mut found = None;
    let ok = eventually(TIMEOUT, || {
        found = read_lines_of(log)
            .iter()
            .find(|l| l.ends_with(&format!(" {what}")))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap());
        found.is_some()
    });
    assert!(ok, "{log} has no {what}: {:?}", read_lines_of(log));
    found.unwrap()
}

#[test]
fn health_document_over_tcp_flips_with_the_stack() {
    let s = Stack::new("ctl-health");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let gate = s.file("db.gate");
    s.write(&format!(
        r#"
health_listen: {addr}
services:
  db:
    command: {db}
    critical: true
    restart: never
    health:
      exec: ["test", "-e", "{gate}"]
      start_interval: 20ms
  side:
    command: {side}
    restart: never
    startsecs: 100ms
  slow:
    command: {slow}
    startsecs: 100ms
    stop_timeout: 10s
"#,
        db = fx("stamp.py", &[&s.file("db.start")]),
        side = fx("stamp.py", &[&s.file("side.start")]),
        slow = fx("trap.py", &[&s.file("slow.log"), "--exit-delay", "2"]),
    ));
    let mut c = up(&s);
    assert!(eventually(TIMEOUT, || std::net::TcpStream::connect(&addr).is_ok()));
    wait_ready(&c, &["slow"], 1);

    let (code, doc) = tcp_health(&addr);
    assert_eq!(code, 503, "{doc}");
    assert_eq!(doc["status"], "unhealthy", "starting: {doc}");
    assert_eq!(doc["services"]["db"]["status"], "fail");
    assert!(doc["services"]["db"]["error"]
        .as_str()
        .unwrap()
        .starts_with("starting"));

    std::fs::write(&gate, "").unwrap();
    healthcheck_until(&s, &c, 0);
    let (code, doc) = tcp_health(&addr);
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["status"], "healthy");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(is_rfc3339(doc["timestamp"].as_str().unwrap()), "{doc}");
    let names: Vec<&String> = doc["services"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["db", "side", "slow"], "in the stack's order");
    assert_eq!(doc["services"]["db"]["status"], "pass");
    assert!(doc["services"]["db"]["latencyMs"].as_f64().unwrap() >= 0.0);
    assert!(doc["services"]["db"].get("error").is_none());
    assert!(
        doc["services"]["side"].get("latencyMs").is_none(),
        "no probe: {doc}"
    );
    // The same document on the socket; nothing but it over TCP.
    let (code, same) = unix_http(&s, "GET", "/health");
    assert_eq!((code, &same["status"]), (200, &Value::from("healthy")));
    let (code, body) = http(
        std::net::TcpStream::connect(&addr).unwrap(),
        "GET",
        "/status",
    );
    assert_eq!(code, 404, "{body}");
    let (code, _) = http(
        std::net::TcpStream::connect(&addr).unwrap(),
        "POST",
        "/health",
    );
    assert_eq!(code, 405);

    // A non-critical service is gone for good: degraded.
    signal(c.service_pid("side"), Signal::SIGKILL);
    let r = healthcheck_until(&s, &c, 1);
    assert!(
        r.stdout.starts_with("not ready: degraded (side is "),
        "{r:?}"
    );
    let (code, doc) = tcp_health(&addr);
    assert_eq!(code, 503);
    assert_eq!(doc["status"], "degraded", "{doc}");
    assert_eq!(doc["services"]["side"]["status"], "fail");
    assert!(doc["services"]["side"]["error"].as_str().is_some(), "{doc}");
    assert_eq!(doc["services"]["db"]["status"], "pass");

    // The critical one: the stack stops (slow takes two seconds to go).
    signal(c.service_pid("db"), Signal::SIGKILL);
    let r = healthcheck_until(&s, &c, 1);
    assert!(r.stdout.starts_with("not ready: "), "{r:?}");
    let mut saw_unhealthy = false;
    let _ = eventually(TIMEOUT, || match std::net::TcpStream::connect(&addr) {
        Ok(stream) => {
            let (code, body) = http(stream, "GET", "/health");
            let doc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if doc["status"] == "unhealthy" {
                assert_eq!(code, 503);
                saw_unhealthy = true;
            }
            saw_unhealthy
        }
        Err(_) => true,
    });
    assert!(saw_unhealthy, "never unhealthy; output:\n{}", c.output());
    // Issue 14: the stack ends with the status of what stopped it (SIGKILL).
    assert_eq!(c.wait_code(TIMEOUT), 137, "{}", c.output());
}

#[test]
fn api_errors_are_json() {
    let s = Stack::new("ctl-api");
    s.write(&format!(
        r#"
services:
  a:
    command: {a}
    startsecs: 0s
"#,
        a = fx("stamp.py", &[&s.file("a.start")]),
    ));
    let c = up(&s);
    healthcheck_until(&s, &c, 0);
    wait_lines(&s.file("a.start"), 1);
    let (code, v) = unix_http(&s, "GET", "/services/a");
    assert_eq!(code, 200);
    assert_eq!(
        (&v["name"], &v["state"]),
        (&Value::from("a"), &Value::from("running"))
    );
    let (code, v) = unix_http(&s, "GET", "/services/b");
    assert_eq!(code, 404);
    assert_eq!(v["known"], serde_json::json!(["a"]));
    let (code, v) = unix_http(&s, "GET", "/nowhere/at/all");
    assert_eq!(code, 404);
    assert!(v["error"].as_str().unwrap().contains("/nowhere/at/all"));
    let (code, _) = unix_http(&s, "DELETE", "/status");
    assert_eq!(code, 405);
    let (code, _) = unix_http(&s, "GET", "/services/a/restart");
    assert_eq!(code, 405);
    let (code, v) = unix_http(&s, "POST", "/services/a/explode");
    assert_eq!(code, 404, "{v}");
    let (code, v) = unix_http(&s, "GET", "/logs?n=lots");
    assert_eq!(code, 400, "{v}");
    let (code, v) = unix_http(&s, "GET", "/logs?service=zz");
    assert_eq!(code, 404, "{v}");
    // Not HTTP at all: the connection is closed, and cogno carries on.
    let mut raw = std::os::unix::net::UnixStream::connect(socket(&s)).unwrap();
    raw.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    let (code, v) = unix_http(&s, "POST", "/services/a/restart");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ok"], true);
    wait_lines(&s.file("a.start"), 2);
}

#[test]
fn concurrent_clients_do_not_hold_up_a_crash_loop() {
    let s = Stack::new("ctl-load");
    s.write(
        r#"
services:
  steady:
    command: ["sleep", "3600"]
    startsecs: 0s
  crashy:
    command: ["sh", "-c", "exit 3"]
    startsecs: 0s
    restart: always
    backoff:
      initial: 10ms
      max: 20ms
"#,
    );
    let c = up(&s);
    let restarts = || {
        service(&status_json(&s), "crashy")["restarts"]
            .as_u64()
            .unwrap()
    };
    assert!(eventually(TIMEOUT, || restarts() >= 3), "{}", c.output());

    // Clients that connect and then do nothing, or follow logs and never read.
    let idle: Vec<_> = (0..5)
        .map(|_| {
            let mut u = std::os::unix::net::UnixStream::connect(socket(&s)).unwrap();
            u.write_all(b"GET /sta").unwrap();
            u
        })
        .collect();
    let mut stalled = std::os::unix::net::UnixStream::connect(socket(&s)).unwrap();
    stalled
        .write_all(b"GET /logs?follow=1&n=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    let before = restarts();
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|_| scope.spawn(|| cli(&s, &["status"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        assert!(r.stderr.is_empty(), "{r:?}");
        assert!(r.code == 0 || r.code == 1, "{r:?}");
        assert!(r.stdout.contains("\ncrashy "), "{r:?}");
    }
    // Supervision went on meanwhile, and still does.
    let during = restarts();
    assert!(
        during > before,
        "crashy restarted {before} then {during} times"
    );
    assert!(eventually(TIMEOUT, || restarts() > during + 2));
    drop((idle, stalled));
}

/// Two dependants of one service: both must stay down until it has been
/// restarted. Ignored until the supervisor is fixed: the first dependant to
/// stop is set waiting at once and its gate counts the dependency (still
/// `running`, only marked to go down) as healthy, so it starts again, the
/// dependency then never gets its stop signal, and the request never finishes.
#[test]
fn restart_with_sibling_dependants() {
    let s = Stack::new("ctl-siblings");
    s.write(
        r#"
services:
  db:
    command: ["sleep", "3600"]
    startsecs: 100ms
  a:
    depends_on: [db]
    command: ["sleep", "3601"]
    startsecs: 100ms
  b:
    depends_on: [db]
    command: ["sleep", "3602"]
    startsecs: 100ms
"#,
    );
    let c = up(&s);
    healthcheck_until(&s, &c, 0);
    let r = cli(&s, &["restart", "db", "--with-dependents"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.output());
    let st = status_json(&s);
    assert_eq!(service(&st, "db")["restarts"], 1, "{st}");
}

/// Issue 16.5: a service that ignores SIGTERM while its exec probe runs is
/// SIGKILLed at its `stop_timeout`, stop after stop: the probe's process
/// (which carries the service's mark) was once counted among the service's
/// leftovers, never reaped for it, and the stop waited forever. Then a
/// whole-stack stop lets what it depends on stop in its turn, within the budget.
#[test]
fn stops_escalate_whatever_the_exec_probe_is_doing() {
    const STOPS: usize = 200;
    let s = Stack::new("escalate");
    s.write(
        r#"
shutdown_budget: 20s
services:
  db:
    command: ["sh", "-c", "echo up; exec sleep 3600"]
    startsecs: 0s
  worker:
    depends_on: [db]
    command: ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]
    stop_timeout: 100ms
    health:
      exec: ["sh", "-c", "sleep 0.02"]
      start_interval: 10ms
      interval: 10ms
"#,
    );
    let mut c = up(&s);
    for n in 1..=STOPS {
        // Each instance has set its trap (and its probe runs) before it is stopped.
        c.wait_count("worker | ready", n);
        let r = cli(&s, &["restart", "worker"]);
        assert_eq!(r.code, 0, "restart {n}: {r:?}\n{}", c.output());
    }
    assert_eq!(c.count("worker: still running 100ms after SIGTERM"), STOPS);
    assert_eq!(c.count("moving on after"), 0, "{}", c.output());

    c.wait_count("worker | ready", STOPS + 1);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(TIMEOUT), 1, "{}", c.output());
    let out = c.output();
    assert!(!out.contains("shutdown_budget of"), "{out}");
    assert!(out.contains("db: stopped (killed by SIGTERM)"), "{out}");
}

/// Issue 16.9: a status request (`cogno status`, `cogno healthcheck`, GET
/// /health) never reports a check older than a second: with a 30 s interval,
/// a service that stopped passing shows its failed check at once.
#[test]
fn a_status_request_asks_for_a_fresh_check_when_the_last_is_old() {
    let s = Stack::new("fresh-check");
    let gate = s.file("gate");
    std::fs::write(&gate, "").unwrap();
    s.write(&format!(
        r#"
services:
  db:
    command: ["sleep", "3600"]
    health:
      exec: ["test", "-e", "{gate}"]
      start_interval: 10ms
      interval: 30s
"#
    ));
    let c = up(&s);
    c.wait_line("db: healthy");
    std::fs::remove_file(&gate).unwrap();
    // The last check (passed) is now over a second old.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let v = status_json(&s);
    let health = &v["services"][0]["health"];
    assert_eq!(health["status"], "fail", "{v}");
    assert!(
        health["error"].as_str().unwrap_or("").contains("test -e"),
        "{v}"
    );
    // And `cogno healthcheck` (a container's HEALTHCHECK) is not green on it.
    let r = cli(&s, &["healthcheck"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .starts_with("not ready: degraded (db: its last health check failed:"),
        "{r:?}"
    );
}

/// `cogno ps` is `cogno status`; `cogno down` stops the stack in order like
/// `shutdown` but returns only once cogno has exited, with every service
/// gone: here a service that takes a second to stop, after its dependant.
#[test]
fn ps_is_status_and_down_returns_once_everything_is_gone() {
    let s = Stack::new("ctl-down");
    let (base_log, top_log) = (s.file("base.log"), s.file("top.log"));
    s.write(&format!(
        "services:\n  base:\n    command: {}\n    startsecs: 0s\n  \
         top:\n    command: {}\n    startsecs: 0s\n    depends_on: [base]\n",
        fx("trap.py", &[&base_log, "--exit-delay", "1"]),
        fx("trap.py", &[&top_log]),
    ));
    let mut c = up(&s);
    wait_ready(&c, &["base", "top"], 1);
    let status = cli(&s, &["status"]);
    let ps = cli(&s, &["ps"]);
    assert_eq!((ps.code, status.code), (0, 0), "{ps:?}");
    // The same rows (uptimes and latencies aside).
    fn rows(r: &Run) -> Vec<Vec<&str>> {
        r.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(2).collect())
            .collect()
    }
    assert_eq!(rows(&ps), rows(&status), "{ps:?}");
    assert!(ps.stdout.contains("SERVICE"), "{ps:?}");

    let down = cli(&s, &["down"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(down.stdout.contains("the stack is down"), "{down:?}");
    assert!(c.exited(), "cogno still runs after `down` returned");
    assert!(pids_within(&s.marker()).is_empty(), "{}", c.output());
    // In order: the dependant stopped before the service it needs.
    assert!(event_time(&top_log, "EXIT") <= event_time(&base_log, "SIGTERM"));
    assert!(read_lines_of(&base_log)
        .iter()
        .any(|l| l.ends_with(" EXIT")));
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());

    let again = cli(&s, &["down"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("no cogno is running"), "{again:?}");
}

/// Issue 15.7: a service whose running dependants depend on it only through
/// priority can be restarted alone — they live through a crash of it and
/// its restart just the same (docs/behaviour.md) —; a stop is still refused,
/// and the refusal says the dependency is implied by priority.
#[test]
fn a_dependency_by_priority_only_does_not_hold_a_restart_up() {
    let s = Stack::new("ctl-priority");
    s.write(
        r#"
services:
  redis:
    command: ["sleep", "3600"]
    startsecs: 100ms
    priority: 100
  temporal:
    command: ["sleep", "3601"]
    startsecs: 100ms
    priority: 200
  web:
    depends_on: [temporal]
    command: ["sleep", "3602"]
    startsecs: 100ms
    priority: 300
"#,
    );
    let c = up(&s);
    healthcheck_until(&s, &c, 0);
    let temporal = c.service_pid("temporal");
    let web = c.service_pid("web");

    let r = cli(&s, &["restart", "redis"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.output());
    assert!(
        r.stdout.starts_with("redis: restarted, healthy after "),
        "{r:?}"
    );
    c.wait_line("redis: restarting it alone: temporal, web depend on it only through priority");
    let st = status_json(&s);
    assert_eq!(service(&st, "redis")["restarts"], 1, "{st}");
    for (name, pid) in [("temporal", temporal), ("web", web)] {
        assert_eq!(service(&st, name)["pid"], pid, "{name} kept running: {st}");
        assert_eq!(service(&st, name)["restarts"], 0, "{st}");
    }

    let r = cli(&s, &["stop", "redis"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with(
            "error: redis is needed by temporal, web (running): add --with-dependents to stop them first. \
             temporal, web depend on redis only through priority"
        ) && r.stderr.contains("stops before them): `cogno restart redis` would restart it alone and leave them running"),
        "{r:?}"
    );
    // An explicit dependant still needs --with-dependents for a restart.
    let r = cli(&s, &["restart", "temporal"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: temporal is needed by web (running): add --with-dependents"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("priority"), "{r:?}");
}

/// `cogno events --json` across a crash: the service's transitions arrive
/// in order, each with a timestamp, and an operator's restart is an event.
#[test]
fn events_stream_across_a_crash() {
    let s = Stack::new("events");
    let (first, crash) = (s.file("first.flag"), s.file("crash.flag"));
    // Its first run crashes (exit 1) when the test says so; later ones run on.
    let cmd = argv(&[
        "sh",
        "-c",
        &format!(
            "[ -e {first} ] && exec sleep 1000; touch {first}; \
             while [ ! -e {crash} ]; do sleep 0.05; done; exit 1"
        ),
    ]);
    s.write(&format!(
        r#"
services:
  crashy:
    command: {cmd}
    startsecs: 300ms
"#
    ));
    let mut c = Cogno::up(&s);
    c.wait_line("crashy: healthy");
    let events = subscribed(&s, &["--json"]);
    std::fs::write(&crash, "").unwrap();
    let seen = events.wait_for(r#""to":"running""#);
    // Across the crash: it leaves running, is started again, and runs.
    assert!(seen[0].contains(r#""from":"running""#), "{seen:?}");
    assert!(seen[0].contains("exited with code 1"), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains(r#""to":"starting""#)),
        "{seen:?}"
    );
    let all: Vec<Value> = seen
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let times: Vec<&str> = all.iter().map(|e| e["t"].as_str().unwrap()).collect();
    assert!(times.is_sorted(), "{times:?}");
    assert!(
        times.iter().all(|t| t.len() == 24 && t.ends_with('Z')),
        "{times:?}"
    );
    // The crash made the stack degraded: a `phase` event says so, between
    // the service's transitions.
    let (phases, transitions): (Vec<&Value>, Vec<&Value>) =
        all.iter().partition(|e| e["kind"] == "phase");
    assert!(
        transitions
            .iter()
            .all(|e| e["kind"] == "transition" && e["service"] == "crashy"),
        "{all:?}"
    );
    assert!(
        phases.iter().any(|e| e["from"] == "ready"
            && e["to"] == "degraded"
            && e["reason"].as_str().unwrap_or("").contains("crashy is ")),
        "{all:?}"
    );
    let back = events.wait_for(r#""kind":"phase""#);
    assert!(
        back.last()
            .unwrap()
            .contains(r#""from":"degraded","to":"ready""#),
        "{back:?}"
    );

    // An operator's action, and the human format.
    let human = subscribed(&s, &[]);
    assert_eq!(cli(&s, &["restart", "crashy"]).code, 0);
    let lines = human.wait_for("→ running");
    assert!(
        lines[0].ends_with(" crashy: action (restart requested)"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(" crashy: running → stopping"),
        "{lines:?}"
    );
    // The same events are the `cogno` stream of `cogno logs`.
    let r = cli(&s, &["logs", "cogno"]);
    assert!(
        r.stdout
            .contains("cogno  | crashy: running → exiting (exited with code 1)\n"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("cogno  | stack: ready → degraded (crashy is "),
        "{r:?}"
    );

    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());
}

/// `cogno events ARGS`, once it is surely subscribed: events are live only,
/// so `cogno start crashy` (already running: a no-op, but an operator
/// action all the same) is repeated until the stream shows it.
fn subscribed(s: &Stack, args: &[&str]) -> Follower {
    let f = Follower::command(s, "events", args);
    let synced = eventually(TIMEOUT, || {
        assert_eq!(cli(s, &["start", "crashy"]).code, 0);
        let seen = f.lines.recv_timeout(std::time::Duration::from_millis(500));
        seen.is_ok_and(|l| l.contains("start requested"))
    });
    assert!(synced, "`cogno events` showed no event");
    f
}
/// `cogno logs --grep / --since / --json / --timestamps` on known lines.
#[test]
fn logs_filters_and_formats() {
    let s = Stack::new("logflags");
    let cmd = argv(&[
        "sh",
        "-c",
        "echo alpha one; echo beta two >&2; exec sleep 1000",
    ]);
    s.write(&format!("services:\n  svc:\n    command: {cmd}\n"));
    let mut c = Cogno::up(&s);
    c.wait_line("svc   ! beta two");

    let r = cli(&s, &["logs", "--grep", "beta"]);
    assert_eq!(r.stdout, "svc   ! beta two\n", "{r:?}");

    let r = cli(&s, &["logs", "svc", "--timestamps", "--grep", "alpha"]);
    let (t, rest) = r.stdout.split_once(' ').expect("a time first");
    assert_eq!(rest, "svc   | alpha one\n", "{r:?}");
    assert!(t.len() == 24 && t.ends_with('Z'), "{r:?}");

    let r = cli(&s, &["logs", "svc", "--json"]);
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    assert!(lines.iter().any(|l| l["line"] == "alpha one"
        && l["stream"] == "stdout"
        && l["service"] == "svc"
        && l["t"] == t));

    for (since, shown) in [
        ("1h", true),
        ("2000-01-01T00:00:00Z", true),
        ("2999-01-01T00:00:00+01:00", false),
    ] {
        let r = cli(&s, &["logs", "svc", "--since", since]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            r.stdout.contains("alpha one"),
            shown,
            "--since {since}: {r:?}"
        );
    }
    let r = cli(&s, &["logs", "--since", "yesterday"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("neither a duration"), "{r:?}");

    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());
}
