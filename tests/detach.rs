//! The stack in the background: `cogno up -d` with its wait (ready, failed,
//! --no-wait, --wait-timeout), `cogno wait`, the log files a detached cogno
//! writes and `cogno logs` reading them after a restart, and what a cogno
//! killed with SIGKILL left running — stopped by the next `up`, and only if
//! it is still the very process recorded.

use crate::bundled::{EXIT, READY};
use crate::common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What a finished command did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A stack in a temp dir whose processes (the detached cogno among them,
/// which inherits the marker) are all killed when the test ends.
struct Detached {
    s: Stack,
}

impl Drop for Detached {
    fn drop(&mut self) {
        kill_within(&self.s.marker());
    }
}

impl Detached {
    fn new(tag: &str, yaml: &str) -> Detached {
        let s = Stack::new(tag);
        s.write(yaml);
        Detached { s }
    }

    /// Runs `cogno ARGS --config F --data D` to completion (within `limit`).
    fn run_for(&self, args: &[&str], limit: Duration) -> Run {
        let mut cmd = Command::new(COGNO);
        cmd.args(args)
            .arg("--config")
            .arg(&self.s.config)
            .arg("--data")
            .arg(&self.s.data)
            .current_dir(self.s.dir.path())
            .env("COGNO_TEST_MARKER", self.s.marker())
            .env_remove("COGNO_DATA_DIR")
            .env_remove("COGNO_CONFIG")
            .env_remove("COGNO_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("run cogno");
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(limit) {
            Ok(out) => out.expect("wait for cogno"),
            Err(_) => {
                signal(pid, Signal::SIGKILL);
                panic!("`cogno {}` did not finish within {limit:?}", args.join(" "));
            }
        };
        Run {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_for(args, TIMEOUT)
    }

    /// `cogno down`, which must succeed.
    fn down(&self) {
        let r = self.run(&["down"]);
        assert_eq!(r.code, 0, "down: {}{}", r.stdout, r.stderr);
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn up_detach_returns_once_ready_and_its_log_files_outlive_a_restart() {
    let d = Detached::new(
        "detach-ready",
        r#"
services:
  web:
    startsecs: 100ms
    command: ["sh", "-c", "echo hello from web; exec sleep 1000"]
"#,
    );
    let r = d.run(&["up", "-d"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("web: starting → running"), "{}", r.stdout);
    assert!(r.stdout.contains("the stack is ready"), "{}", r.stdout);
    // Ready when it returned: status says so at once.
    let status = d.run(&["status"]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    // `-D` is --data's short form now (`-d` is --detach).
    let mut short = Command::new(COGNO);
    short.args(["status", "-D"]).arg(&d.s.data);
    assert!(short.output().unwrap().status.success());
    let logs = d.s.data.join("logs");
    assert_eq!(mode(&logs), 0o700);
    for file in ["web.log", "cogno.log"] {
        assert_eq!(mode(&logs.join(file)), 0o600, "{file}");
    }
    d.down();
    // cogno is gone: the history is read from the files.
    let r = d.run(&["logs", "web"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.matches("hello from web").count(),
        1,
        "{}",
        r.stdout
    );
    // Started again: the first run's lines are still there, before the new ones.
    let r = d.run(&["up", "-d"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        eventually(TIMEOUT, || {
            let r = d.run(&["logs", "--timestamps"]);
            r.stdout.matches("hello from web").count() == 2
        }),
        "{}",
        d.run(&["logs"]).stdout
    );
    d.down();
}

#[test]
fn up_detach_of_a_stack_that_fails_exits_non_zero_with_the_reason_and_last_lines() {
    let d = Detached::new(
        "detach-fail",
        r#"
services:
  db:
    critical: true
    restart: never
    command: ["sh", "-c", "echo connecting to the disk; echo out of luck >&2; exit 3"]
"#,
    );
    let r = d.run(&["up", "-d"]);
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("db"), "{}", r.stderr);
    assert!(r.stderr.contains("out of luck"), "{}", r.stderr);
    // Nothing is left running.
    assert!(
        eventually(TIMEOUT, || pids_within(&d.s.marker()).is_empty()),
        "left running: {:?}",
        pids_within(&d.s.marker())
    );
}

#[test]
fn no_wait_returns_at_once_and_cogno_wait_follows_the_stack() {
    let d = Detached::new("detach-nowait", "");
    let gate = d.s.file("db.gate");
    d.s.write(&format!(
        r#"
services:
  db:
    command: ["sleep", "1000"]
    health:
      exec: ["test", "-e", "{gate}"]
      start_interval: 20ms
  broken:
    restart: never
    command: ["sh", "-c", "echo cannot start broken; exit 1"]
"#
    ));
    let r = d.run(&["up", "-d", "--no-wait"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("runs in the background"), "{}", r.stdout);
    // db waits for its gate: a wait with a timeout gives up, naming it.
    let r = d.run(&["wait", "db", "--timeout", "300ms"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("not ready after 300ms: db is "),
        "{}",
        r.stderr
    );
    // What was waited for only: broken has failed, but nobody asked.
    assert!(!r.stderr.contains("broken"), "{}", r.stderr);
    // A service that has failed fails the wait with its reason and output.
    let r = d.run(&["wait", "broken"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("broken is failed (exited with code 1)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("cannot start broken"), "{}", r.stderr);
    std::fs::write(&gate, "").unwrap();
    let r = d.run(&["wait", "db"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // The whole stack is not ready (broken has exited): said, not waited for.
    let r = d.run(&["wait"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("broken"), "{}", r.stderr);
    d.down();
}

#[test]
fn wait_timeout_gives_up_and_leaves_the_stack_starting() {
    let d = Detached::new("detach-timeout", "");
    let gate = d.s.file("never.gate");
    d.s.write(&format!(
        r#"
services:
  db:
    command: ["sleep", "1000"]
    health:
      exec: ["test", "-e", "{gate}"]
      start_interval: 20ms
"#
    ));
    let r = d.run(&["up", "-d", "--wait-timeout", "500ms"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not ready after 500ms"), "{}", r.stderr);
    // The stack goes on in the background: the wait alone gave up.
    let r = d.run(&["status", "--json"]);
    assert!(
        r.stdout.contains("\"starting\""),
        "{}{}",
        r.stdout,
        r.stderr
    );
    d.down();
}

/// A process of the test, its pid and its start time.
fn sleeper(d: &Detached) -> (std::process::Child, i32, u64) {
    let child = Command::new("sleep")
        .arg("1000")
        .env("COGNO_TEST_MARKER", d.s.marker())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let start = proc_stat(pid).unwrap().start_time;
    (child, pid, start)
}

#[test]
fn up_stops_its_recorded_leftovers_but_never_a_process_whose_start_time_differs() {
    let d = Detached::new(
        "detach-reuse",
        r#"
services:
  web:
    startsecs: 0s
    command: ["sleep", "1000"]
"#,
    );
    let (mut ours, ours_pid, ours_start) = sleeper(&d);
    let (mut other, other_pid, other_start) = sleeper(&d);
    let records = d.s.data.join("run").join("services");
    std::fs::create_dir_all(&records).unwrap();
    // What a killed cogno recorded: `ours` exactly; `other`'s pid with
    // another start time, as when the pid has since gone to another process.
    std::fs::write(
        records.join("web"),
        format!("{ours_pid} {ours_start} 15 5000\n"),
    )
    .unwrap();
    std::fs::write(
        records.join("api"),
        format!("{other_pid} {} 15 5000\n", other_start + 1),
    )
    .unwrap();
    let r = d.run(&["up", "-d"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let mut status = None;
    let ended = eventually(TIMEOUT, || {
        status = ours.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = ours.kill();
        let _ = other.kill();
    }
    assert!(ended, "the recorded leftover was not stopped");
    assert_eq!(
        status.unwrap().signal_of(),
        Some(15),
        "the leftover got its stop signal"
    );
    assert!(
        other.try_wait().unwrap().is_none(),
        "another process is never signalled"
    );
    let log = std::fs::read_to_string(d.s.data.join("logs/cogno.log")).unwrap();
    assert!(
        log.contains(&format!("web: stopped pid {ours_pid}")),
        "{log}"
    );
    assert!(log.contains("is no longer its process"), "{log}");
    d.down();
    let _ = other.kill();
    let _ = other.wait();
}

trait SignalOf {
    fn signal_of(&self) -> Option<i32>;
}

impl SignalOf for std::process::ExitStatus {
    fn signal_of(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

#[test]
fn sigkill_of_a_native_cogno_then_up_again_shuts_postgres_down_cleanly_first() {
    if !std::path::Path::new("/usr/lib/postgresql").exists() {
        eprintln!("skipped: no PostgreSQL installed");
        return;
    }
    let (pg, redis) = (free_port(), free_port());
    let d = Detached::new(
        "detach-pg",
        &format!(
            "services:\n  postgres: {{kind: postgres, port: {pg}}}\n  redis: {{kind: redis, port: {redis}}}\n"
        ),
    );
    std::fs::set_permissions(d.s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut first = Cogno::up(&d.s);
    first.wait_line_by("containing \"stack is ready\"", READY, |l| {
        l.contains("stack is ready")
    });
    let postmaster = first.service_pid("postgres");
    first.signal(Signal::SIGKILL);
    first.wait_exit(EXIT);
    assert!(exists(postmaster), "PostgreSQL outlives a SIGKILLed cogno");
    let second = Cogno::up(&d.s);
    second.wait_line_by("containing \"stack is ready\"", READY, |l| {
        l.contains("stack is ready")
    });
    let out = second.output();
    assert!(out.contains("postgres: stopped pid"), "{out}");
    assert!(!out.contains("already in use"), "{out}");
    let gone = |p: i32| proc_stat(p).is_none_or(|s| s.state == 'Z');
    assert!(gone(postmaster), "the old postmaster is gone");
    // It was shut down, not crashed: no recovery at the next start.
    assert!(!out.contains("not properly shut down"), "{out}");
    assert!(!out.contains("automatic recovery"), "{out}");
    drop(second);
}
