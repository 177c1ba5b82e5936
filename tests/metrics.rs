//! `GET /metrics` end to end: scraped from a real `cogno up` over the control
//! socket and over `health_listen`, and parsed by a real Prometheus parser
//! (the Python prometheus_client package, which scripts/install-deps.sh
//! installs).

use crate::common::*;
use crate::control::{cli, http, socket, up};
use serde_json::Value;
use std::process::{Command, Stdio};

/// The scrape parsed by prometheus_client: one `[name, labels, value]` per
/// sample. Fails the test if the text does not parse.
fn parse(text: &str) -> Vec<(String, Value, f64)> {
    const PARSER: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("the Python package prometheus_client is missing: run scripts/install-deps.sh")
out = [[s.name, s.labels, s.value]
       for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    samples
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|s| s.2)
}

fn scrape_unix(s: &Stack) -> (u16, String) {
    http(
        std::os::unix::net::UnixStream::connect(socket(s)).expect("connect"),
        "GET",
        "/metrics",
    )
}

fn scrape_tcp(addr: &str) -> (u16, String) {
    http(
        std::net::TcpStream::connect(addr).expect("connect to health_listen"),
        "GET",
        "/metrics",
    )
}

#[test]
fn a_scrape_parses_and_says_what_happened() {
    let s = Stack::new("metrics");
    let addr = format!("127.0.0.1:{}", free_port());
    s.write(&format!(
        r#"
health_listen: {addr}
metrics: true
services:
  web:
    command: {web}
    health:
      exec: ["true"]
      start_interval: 20ms
      interval: 50ms
  crashy:
    command: {crashy}
    startsecs: 100ms
    backoff:
      initial: 10ms
  idle:
    command: {idle}
    startsecs: 0s
"#,
        web = fx("stamp.py", &[&s.file("web.start")]),
        crashy = fx(
            "exit.py",
            &[
                "--only-first",
                &s.file("crashy.once"),
                "--delay",
                "0.5",
                "3"
            ]
        ),
        idle = fx("stamp.py", &[&s.file("idle.start")]),
    ));
    let c = up(&s);
    c.wait_line("crashy: exited with code 3");
    let stop = cli(&s, &["stop", "idle"]);
    assert_eq!(stop.code, 0, "{stop:?}");

    let mut samples = Vec::new();
    let settled = eventually(TIMEOUT, || {
        let (code, text) = scrape_unix(&s);
        assert_eq!(code, 200, "{text}");
        samples = parse(&text);
        value(&samples, "cogno_service_up", &[("service", "crashy")]) == Some(1.0)
            && value(&samples, "cogno_service_up", &[("service", "web")]) == Some(1.0)
    });
    assert!(
        settled,
        "crashy and web never both up: {samples:?}\n{}",
        c.output()
    );
    let crashy = [("service", "crashy")];
    assert_eq!(
        value(&samples, "cogno_service_restarts_total", &crashy),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "cogno_service_last_exit_code", &crashy),
        Some(3.0)
    );
    assert_eq!(
        value(&samples, "cogno_service_up", &[("service", "idle")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "cogno_service_state",
            &[("service", "idle"), ("state", "stopped")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "cogno_service_state",
            &[("service", "idle"), ("state", "running")]
        ),
        Some(0.0)
    );
    let web = [("service", "web")];
    let checks = value(
        &samples,
        "cogno_health_checks_total",
        &[("service", "web"), ("result", "pass")],
    )
    .expect("web's passed checks");
    let count = value(&samples, "cogno_health_check_duration_seconds_count", &web)
        .expect("web's check latency histogram");
    assert!(
        checks >= 1.0 && count >= checks,
        "{checks} checks, histogram of {count}"
    );
    assert!(value(&samples, "cogno_service_failed_starts_total", &web).is_some());
    assert_eq!(
        value(&samples, "cogno_stack_phase", &[("phase", "degraded")]),
        Some(1.0)
    );
    assert!(value(&samples, "cogno_process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(value(&samples, "cogno_process_open_fds", &[]).unwrap() > 0.0);
    assert_eq!(
        value(
            &samples,
            "cogno_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // metrics: true serves the same on health_listen.
    let (code, text) = scrape_tcp(&addr);
    assert_eq!(code, 200, "{text}");
    assert!(value(&parse(&text), "cogno_service_up", &web).is_some());
}

#[test]
fn health_listen_serves_no_metrics_unless_asked() {
    let s = Stack::new("metrics-off");
    let addr = format!("127.0.0.1:{}", free_port());
    s.write(&format!(
        "health_listen: {addr}\nservices:\n  app:\n    command: {app}\n    startsecs: 0s\n",
        app = fx("stamp.py", &[&s.file("app.start")]),
    ));
    let _c = up(&s);
    assert!(eventually(TIMEOUT, || std::net::TcpStream::connect(&addr).is_ok()));
    let (code, body) = scrape_tcp(&addr);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("metrics: true"), "{body}");
    // The control socket always serves them.
    assert_eq!(scrape_unix(&s).0, 200);
}
