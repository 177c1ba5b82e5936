//! `cogno mcp` end to end: a real MCP client (the Python `mcp` SDK, driven
//! by tests/fixtures/mcp_client.py) starts `cogno mcp` over stdio, lists
//! its tools and resources and calls each tool against a real `cogno up`
//! of small shell services — and against no stack at all.

use crate::common::*;
use crate::control::{cli, healthcheck_until, up};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one client session may take: it starts a Python interpreter
/// and waits for restarts on a loaded machine.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

/// The Python with the `mcp` SDK: the virtualenv scripts/install-deps.sh
/// makes for Debian's Python, else python3 in PATH.
fn python() -> &'static str {
    const VENV: &str = "/opt/cogno-test/mcp-venv/bin/python3";
    if std::path::Path::new(VENV).exists() {
        VENV
    } else {
        "python3"
    }
}

/// What one session saw.
struct Session {
    json: Value,
}

impl Session {
    /// The result of call `i`: whether it is an error, and its text.
    fn result(&self, i: usize) -> (bool, &str) {
        let r = &self.json["results"][i];
        (
            r["error"].as_bool().expect("error flag"),
            r["text"].as_str().expect("text"),
        )
    }

    /// Call `i`'s text, which must not be an error.
    fn ok(&self, i: usize) -> &str {
        let (error, text) = self.result(i);
        assert!(!error, "call {i} failed: {text}");
        text
    }

    /// Call `i`'s text, which must be an error.
    fn err(&self, i: usize) -> &str {
        let (error, text) = self.result(i);
        assert!(error, "call {i} should have failed: {text}");
        text
    }

    fn ok_json(&self, i: usize) -> Value {
        let text = self.ok(i);
        serde_json::from_str(text).unwrap_or_else(|e| panic!("call {i}: {e}: {text}"))
    }
}

/// Runs one MCP session with `cogno mcp ARGS`, making `calls` in order.
fn session(args: &[&str], calls: Value) -> Session {
    let mut child = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .arg(COGNO)
        .arg("mcp")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the MCP client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(calls.to_string().as_bytes())
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(SESSION_TIMEOUT) else {
        signal(pid, Signal::SIGKILL);
        panic!("the MCP session did not finish within {SESSION_TIMEOUT:?}: {calls}");
    };
    let out = out.expect("wait for python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Session {
        json: serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")),
    }
}

/// db, and web that depends on it; each prints a line and sleeps.
fn two_services(s: &Stack) {
    s.write(
        r#"
services:
  db:
    command: [sh, -c, "echo db accepting connections; exec sleep 100000"]
    startsecs: 100ms
  web:
    depends_on: [db]
    command: [sh, -c, "echo web listening on port 8080; exec sleep 100000"]
    startsecs: 100ms
"#,
    );
}

fn pid_of(status: &Value, name: &str) -> i64 {
    crate::control::service(status, name)["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no pid: {status}"))
}

#[test]
fn an_agent_inspects_and_drives_a_running_stack() {
    let s = Stack::new("mcp-session");
    two_services(&s);
    let c = up(&s);
    healthcheck_until(&s, &c, 0);
    let (data, config) = (s.data.to_str().unwrap(), s.config.to_str().unwrap());

    let m = session(
        &["--data", data, "--config", config],
        json!([
            {"tool": "wait_until_ready", "args": {"timeout_seconds": 60}},
            {"tool": "list_services"},
            {"tool": "service_details", "args": {"service": "web"}},
            {"tool": "logs", "args": {"grep": "listening on port", "lines": 1000}},
            {"tool": "logs", "args": {"services": ["db"], "grep": "no such text"}},
            {"tool": "health"},
            {"tool": "restart", "args": {"service": "web"}},
            {"tool": "list_services"},
            {"tool": "service_details", "args": {"service": "web"}},
            {"tool": "start", "args": {"service": "nope"}},
            {"tool": "logs", "args": {"since": "yesterday"}},
            {"resource": "cogno://status"},
            {"resource": "cogno://stack-file"},
            {"tool": "restart", "args": {"service": "db", "force": true}},
            {"tool": "wait_until_ready", "args": {"timeout_seconds": 60}},
            {"tool": "list_services"},
        ]),
    );

    assert_eq!(m.json["server"], "cogno");
    let tools: Vec<&str> = m.json["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in [
        "list_services",
        "service_details",
        "logs",
        "health",
        "start",
        "stop",
        "restart",
        "wait_until_ready",
    ] {
        assert!(tools.contains(&name), "no tool {name} in {tools:?}");
    }
    // Written for an agent that knows nothing of cogno: each says what it does.
    for t in m.json["tools"].as_array().unwrap() {
        assert!(t["description"].as_str().unwrap().len() > 80, "{t}");
    }
    let resources: Vec<&str> = m.json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(resources, ["cogno://stack-file", "cogno://status"]);

    assert_eq!(m.ok(0), "the stack is ready: 2 services");
    let before = m.ok_json(1);
    assert_eq!(before["phase"], "ready");
    assert_eq!(crate::control::service(&before, "web")["state"], "running");
    let details = m.ok_json(2);
    assert_eq!(details["service"]["name"], "web");
    assert_eq!(details["service"]["restarts"], 0);
    assert!(
        details["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains(" web: starting → running")),
        "{details}"
    );

    // The log search finds the line, and only it.
    let found = m.ok(3);
    assert_eq!(found.lines().count(), 1, "{found}");
    assert!(
        found
            .trim_end()
            .ends_with(" web: web listening on port 8080"),
        "{found}"
    );
    assert_eq!(m.ok(4), "no line matches\n");
    assert_eq!(m.ok_json(5)["status"], "healthy", "{}", m.ok(5));

    // The restart waited until web was healthy again, with a new process.
    assert!(m.ok(6).starts_with("web: restarted, "), "{}", m.ok(6));
    let after = m.ok_json(7);
    assert_ne!(pid_of(&before, "web"), pid_of(&after, "web"));
    assert_eq!(pid_of(&before, "db"), pid_of(&after, "db"));
    let details = m.ok_json(8);
    assert_eq!(details["service"]["restarts"], 1, "{details}");

    // Errors are the CLI's words.
    assert_eq!(
        m.err(9),
        "there is no service named `nope`; known services: db, web"
    );
    let cli_since = cli(&s, &["logs", "--since", "yesterday"]);
    assert!(
        cli_since.stderr.contains(m.err(10)),
        "{}\n{cli_since:?}",
        m.err(10)
    );

    let status: Value = serde_json::from_str(m.ok(11)).unwrap();
    assert_eq!(status["services"].as_array().unwrap().len(), 2);
    assert_eq!(m.ok(12), std::fs::read_to_string(&s.config).unwrap());

    // `force` stops the dependants first and starts them again after, as
    // --with-dependents does.
    assert!(m.ok(13).starts_with("db: restarted, "), "{}", m.ok(13));
    // web comes back after it: wait for the whole stack.
    assert_eq!(m.ok(14), "the stack is ready: 2 services");
    let last = m.ok_json(15);
    assert_eq!(last["phase"], "ready", "{last}");
    assert_ne!(pid_of(&after, "db"), pid_of(&last, "db"));
    assert_ne!(pid_of(&after, "web"), pid_of(&last, "web"));
}

#[test]
fn a_refused_stop_says_why_as_the_cli_does() {
    let s = Stack::new("mcp-refused");
    two_services(&s);
    let c = up(&s);
    healthcheck_until(&s, &c, 0);
    let data = s.data.to_str().unwrap();

    let m = session(
        &["--data", data],
        json!([
            {"tool": "stop", "args": {"service": "db"}},
            {"tool": "restart", "args": {"service": "db"}},
            {"tool": "list_services"},
        ]),
    );
    let why = m.err(0);
    assert!(
        why.starts_with("db is needed by web (running)") && why.contains("--with-dependents"),
        "{why}"
    );
    // Word for word what `cogno stop db` prints after `error: `.
    let r = cli(&s, &["stop", "db"]);
    assert_eq!(r.stderr.trim_end(), format!("error: {why}"), "{r:?}");
    assert!(m.err(1).starts_with("db is needed by web (running)"));
    // Nothing was stopped.
    let st = m.ok_json(2);
    assert_eq!(st["phase"], "ready", "{st}");
}

#[test]
fn without_a_stack_every_tool_says_none_runs_and_how_to_start_one() {
    let dir = TempDir::new("mcp-none");
    let data = dir.path().join("data");
    let m = session(
        &["--data", data.to_str().unwrap()],
        json!([
            {"tool": "list_services"},
            {"tool": "logs", "args": {"grep": "x"}},
            {"tool": "restart", "args": {"service": "web"}},
            {"tool": "wait_until_ready", "args": {"timeout_seconds": 1}},
            {"resource": "cogno://status"},
        ]),
    );
    let socket = data.join("run").join("cogno.sock");
    let expected = format!("no cogno is running on {}", socket.display());
    for i in 0..4 {
        let text = m.err(i);
        assert!(
            text.starts_with(&expected) && text.contains("cogno up"),
            "call {i}: {text}"
        );
    }
    assert!(m.err(4).contains(&expected), "{}", m.err(4));
}
