//! Health that does something (issue 14): liveness restarts, start
//! deadlines, and the exit status of a stack stopped by a critical service,
//! through the real binary. Health is driven by gate files (`test -e FILE`),
//! so a service is healthy or not exactly when the test says.

use crate::common::*;
use crate::control::{cli, service, status_json, up};
use nix::sys::signal::Signal;

/// A service that was healthy and stops answering is restarted after
/// `retries` failed checks, through its stop (here its first instance
/// ignores SIGTERM, so SIGKILL after stop_timeout) and the crash path.
#[test]
fn a_service_that_stops_answering_is_restarted() {
    let s = Stack::new("liveness");
    let gate = s.file("gate");
    let first = s.file("first");
    std::fs::write(&gate, "").unwrap();
    s.write(&format!(
        r#"
services:
  web:
    command: ["sh", "-c", "if [ -e {first} ]; then exec sleep 3600; fi; touch {first}; trap '' TERM; exec sleep 3600"]
    stop_timeout: 3s
    health:
      exec: ["test", "-e", "{gate}"]
      start_interval: 20ms
      interval: 50ms
      retries: 3
      on_unhealthy: restart
"#
    ));
    let mut c = up(&s);
    c.wait_line("web: healthy after");
    let first = c.service_pid("web");
    std::fs::remove_file(&gate).unwrap();
    let line = c.wait_line("web: unhealthy after");
    assert!(
        line.contains("web: unhealthy after 3 failed checks: `test -e")
            && line.ends_with("; restarting it (health.on_unhealthy: restart)"),
        "{line}"
    );
    let st = status_json(&s);
    let web = service(&st, "web");
    assert_eq!(web["state"], "stopping", "{st}");
    let reason = web["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("unhealthy: 3 failed checks in a row: `test -e"),
        "{st}"
    );
    c.wait_line("web: still running 3s after SIGTERM; sending SIGKILL");
    c.wait_line("web: unhealthy: 3 failed checks in a row: `test -e");
    c.wait_count("web: started, pid", 2);
    std::fs::write(&gate, "").unwrap();
    c.wait_count("web: healthy after", 2);
    assert!(!exists(first) || proc_stat(first).is_some_and(|p| p.state == 'Z'));
    let st = status_json(&s);
    assert_eq!(service(&st, "web")["restarts"], 1, "{st}");
    assert_eq!(st["phase"], "ready", "{st}");
    // A restart for health, even with a SIGKILL, is no failed stop: a
    // clean shutdown exits 0.
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());
}

/// A service that never gets healthy hits its start deadline: it is stopped
/// and retried as a failed start, its dependants are blocked naming it, the
/// stack is degraded (never `starting` forever), and in the end it is FATAL.
#[test]
fn a_start_that_never_gets_healthy_hits_its_deadline() {
    let s = Stack::new("deadline");
    s.write(
        r#"
services:
  migrate:
    command: ["sleep", "3600"]
    start_timeout: 2s
    max_restarts: 3
    backoff:
      initial: 100ms
    health:
      exec: ["false"]
      start_period: 0s
      start_interval: 50ms
  web:
    depends_on: [migrate]
    command: ["sleep", "3601"]
"#,
    );
    let mut c = up(&s);
    c.wait_line("migrate: not healthy within its start_timeout (2s) (last check: `false` exited with code 1): stopping it; this counts as a failed start");
    c.wait_line("web: blocked: migrate not healthy after 2s");
    // While it is being retried: through the control API…
    let st = status_json(&s);
    assert_eq!(st["phase"], "degraded", "{st}");
    let web = service(&st, "web");
    assert_eq!(web["state"], "blocked", "{st}");
    assert_eq!(web["reason"], "migrate not healthy after 2s", "{st}");
    let migrate = service(&st, "migrate")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(migrate.starts_with("not healthy after 2s"), "{st}");
    let r = cli(&s, &["status"]);
    assert!(
        r.stdout.starts_with("degraded: ")
            && r.stdout
                .contains("\n  - web is blocked (migrate not healthy after 2s)\n"),
        "{r:?}"
    );
    // …and in `cogno healthcheck`'s one line.
    let r = cli(&s, &["healthcheck"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.starts_with("not ready: degraded (migrate is ")
            && r.stdout.contains("(not healthy after 2s")
            && r.stdout
                .contains("; web is blocked (migrate not healthy after 2s))"),
        "{r:?}"
    );
    c.wait_line("migrate: FATAL: gave up after 3 failed starts in a row: not healthy within its start_timeout (2s)");
    c.wait_line("web: blocked: migrate is fatal (not healthy within its start_timeout (2s))");
    // Nothing is left that could ever run: cogno ends, with a failure.
    assert_eq!(c.wait_code(TIMEOUT), 1, "{}", c.output());
}

/// The stack stopped by a critical service exits with that service's
/// status, as tini does: its code, or 128 + the signal.
#[test]
fn a_critical_failure_is_the_stacks_exit_status() {
    let s = Stack::new("exit7");
    s.write(
        r#"
services:
  core:
    critical: true
    restart: never
    startsecs: 100ms
    command: ["sh", "-c", "sleep 0.5; exit 7"]
  other:
    command: ["sleep", "3600"]
"#,
    );
    let mut c = Cogno::up(&s);
    assert_eq!(c.wait_code(TIMEOUT), 7, "{}", c.output());
    assert!(c.output().contains("(exit status 7)"), "{}", c.output());

    let s = Stack::new("segv");
    s.write(
        r#"
services:
  core:
    critical: true
    restart: never
    startsecs: 100ms
    command: ["sleep", "3600"]
  other:
    command: ["sleep", "3601"]
"#,
    );
    let mut c = Cogno::up(&s);
    c.wait_line("core: healthy after");
    signal(c.service_pid("core"), Signal::SIGSEGV);
    assert_eq!(c.wait_code(TIMEOUT), 139, "{}", c.output());
    assert!(
        c.output().contains("core: killed by SIGSEGV after"),
        "{}",
        c.output()
    );
}
