//! Notifications (`notify:`) end to end: webhooks received by a local HTTP
//! server (tests/fixtures/webhook.py), a hook command run with the event in
//! its environment and its JSON on stdin (tests/fixtures/hook.py), and
//! endpoints that fail or hang without holding supervision up.

use crate::common::*;
use crate::control::cli;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};

/// A webhook receiver on a free port; killed when dropped.
struct Receiver {
    child: Child,
    url: String,
    out: String,
}

impl Receiver {
    /// `webhook.py` answering with `args` (`--status 500`, `--hang`,
    /// `--tls CERT KEY`).
    fn start(s: &Stack, name: &str, args: &[&str]) -> Receiver {
        let port = free_port();
        let out = s.file(&format!("{name}.jsonl"));
        let child = Command::new(fixture("webhook.py"))
            .arg(port.to_string())
            .arg(&out)
            .args(args)
            .spawn()
            .expect("start webhook.py");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            eventually(TIMEOUT, || std::net::TcpStream::connect(&addr).is_ok()),
            "webhook.py never listened on {addr}"
        );
        Receiver {
            child,
            // The path stands for the credential a Slack or Discord URL carries.
            url: format!(
                "{}://{addr}/hooks/S3CRET-TOKEN",
                if args.contains(&"--tls") {
                    "https"
                } else {
                    "http"
                }
            ),
            out,
        }
    }

    /// What `n` requests it has received carried, once it has.
    fn wait(&self, n: usize) -> Vec<Value> {
        wait_lines(&self.out, n)
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private certificate authority, and a server certificate it signed for
/// 127.0.0.1, made with the openssl command: (ca.pem, server.pem, server.key).
fn private_ca(s: &Stack) -> (String, String, String) {
    let (ca, ca_key) = (s.file("ca.pem"), s.file("ca.key"));
    let (cert, key, csr) = (
        s.file("server.pem"),
        s.file("server.key"),
        s.file("server.csr"),
    );
    let ext = s.file("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for args in [
        [
            &["req", "-x509"][..],
            &ec[..],
            &["-keyout", &ca_key, "-out", &ca, "-days", "2"],
            &[
                "-subj",
                "/CN=cogno test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec[..],
            &["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (ca, cert, key)
}

/// Over HTTPS, with rustls: a webhook whose certificate a private CA signed
/// gets its notice when `ca_file` names that CA, and is refused as
/// untrusted without it (the certificate really is checked).
#[test]
fn an_https_webhook_is_verified_against_mozillas_roots_and_ca_file() {
    let s = Stack::new("notify-https");
    let (ca, cert, key) = private_ca(&s);
    let hook = Receiver::start(&s, "hook", &["--tls", &cert, &key]);
    let stack = |ca_file: &str| {
        format!(
            r#"
notify:
  webhooks: ["{url}"]
  on: [ready]
  retries: 0
{ca_file}
services:
  web:
    command: ["sleep", "3600"]
"#,
            url = hook.url
        )
    };
    let host = hook.url.trim_end_matches("/hooks/S3CRET-TOKEN");
    assert!(host.starts_with("https://"), "{host}");

    s.write(&stack(""));
    let mut c = Cogno::up(&s);
    let line = c.wait_line(&format!("notification ready to webhook {host}: "));
    assert!(line.contains("UnknownIssuer"), "{line}");
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());

    s.write(&stack(&format!("  ca_file: {ca}")));
    let mut c = Cogno::up(&s);
    let got = hook.wait(1);
    assert_eq!(got[0]["path"], "/hooks/S3CRET-TOKEN");
    assert_eq!(got[0]["body"]["event"], "ready", "{}", got[0]);
    c.wait_line(&format!("notification ready to webhook {host}: delivered"));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());
}

/// A crash that ends in FATAL is POSTed as JSON with the Slack and Discord
/// text fields; logs and events name the webhook by its host only.
#[test]
fn a_webhook_hears_of_a_fatal_service() {
    let s = Stack::new("notify-fatal");
    let hook = Receiver::start(&s, "hook", &[]);
    s.write(&format!(
        r#"
notify:
  webhooks: ["{url}"]
  on: [fatal]
services:
  crashy:
    command: {crashy}
    startsecs: 1s
    max_restarts: 1
    backoff:
      initial: 10ms
  web:
    command: ["sleep", "3600"]
"#,
        url = hook.url,
        crashy = fx("exit.py", &["3"]),
    ));
    let c = Cogno::up(&s);
    let got = hook.wait(1);
    let req = &got[0];
    assert_eq!(req["path"], "/hooks/S3CRET-TOKEN");
    assert_eq!(req["content_type"], "application/json");
    let body = &req["body"];
    assert_eq!(body["event"], "fatal", "{body}");
    assert_eq!(body["service"], "crashy");
    assert_eq!(body["to"], "fatal");
    let text = body["text"].as_str().expect("Slack's text field");
    assert!(text.contains("crashy has failed for good"), "{text}");
    assert!(text.contains("exited with code 3"), "{text}");
    assert_eq!(body["content"], body["text"], "Discord's content field");
    assert!(
        body["t"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );

    let host = hook.url.trim_end_matches("/hooks/S3CRET-TOKEN");
    c.wait_line(&format!("notification fatal to webhook {host}: delivered"));
    // The delivery is an event of its own, in the `cogno` log stream.
    let logs = cli(&s, &["logs", "cogno"]).stdout;
    assert!(
        logs.contains(&format!(
            "crashy: notification (fatal to webhook {host}: delivered)"
        )),
        "{logs}"
    );
    assert!(!c.output().contains("S3CRET"), "{}", c.output());
    assert!(!logs.contains("S3CRET"), "{logs}");
}

/// The hook command runs with the event in its environment and the JSON on
/// stdin — as nobody when cogno is root, and without the stack's variables —,
/// and the notice of the critical failure that stops the stack is delivered
/// before cogno exits.
#[test]
fn a_hook_command_hears_of_a_critical_failure() {
    let s = Stack::new("notify-hook");
    let out = s.dir.path().join("hook-out");
    std::fs::create_dir(&out).unwrap();
    // The hook's user may write its record there; the data directory's
    // parent stays root's alone, as cogno demands of it.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    s.write(&format!(
        r#"
env:
  API_TOKEN: do-not-leak
notify:
  command: {hook}
  on: [ready, critical]
services:
  core:
    critical: true
    restart: never
    startsecs: 100ms
    command: ["sh", "-c", "sleep 1; exit 7"]
"#,
        hook = fx("hook.py", &[&out.to_string_lossy()]),
    ));
    let mut c = Cogno::up(&s);
    assert_eq!(c.wait_code(TIMEOUT), 7, "{}", c.output());
    let read = |event: &str| -> Value {
        let path = out.join(format!("{event}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), c.output()));
        serde_json::from_str(&text).unwrap()
    };
    let ready = read("ready");
    assert_eq!(ready["stdin"]["event"], "ready");
    assert_eq!(ready["env"]["COGNO_EVENT_TO"], "ready");

    let critical = read("critical");
    let env = &critical["env"];
    assert_eq!(env["COGNO_EVENT"], "critical");
    assert_eq!(env["COGNO_EVENT_SERVICE"], "core");
    assert_eq!(env["COGNO_EVENT_TO"], "stopping");
    assert_eq!(env["COGNO_EVENT_REASON"], "exited with code 7");
    assert!(env["COGNO_EVENT_TEXT"]
        .as_str()
        .unwrap()
        .contains("critical service core failed: exited with code 7"));
    let stdin = &critical["stdin"];
    assert_eq!(stdin["event"], "critical");
    assert_eq!(stdin["service"], "core");
    assert_eq!(stdin["text"], env["COGNO_EVENT_TEXT"]);
    // Nothing of the stack's environment, and not the mark of a service's processes.
    assert!(env.get("API_TOKEN").is_none(), "{env}");
    assert!(env.get("COGNO_SERVICE").is_none(), "{env}");
    if nix::unistd::geteuid().is_root() {
        assert_ne!(critical["uid"], 0, "a hook never runs as root by default");
    }
    assert!(
        c.output().contains("notification critical to command `"),
        "{}",
        c.output()
    );
}

/// A webhook that answers 500 and one that never answers are retried a
/// bounded number of times and logged, while the crashed service is
/// restarted at once and the stack gets ready again.
#[test]
fn failing_webhooks_do_not_hold_supervision_up() {
    let s = Stack::new("notify-slow");
    let broken = Receiver::start(&s, "broken", &["--status", "500"]);
    let hung = Receiver::start(&s, "hung", &["--hang"]);
    s.write(&format!(
        r#"
notify:
  webhooks: ["{broken}", "{hung}"]
  on: [ready]
  timeout: 2s
  retries: 2
services:
  web:
    command: {web}
    startsecs: 200ms
    backoff:
      initial: 10ms
"#,
        broken = broken.url,
        hung = hung.url,
        web = fx(
            "exit.py",
            &["--only-first", &s.file("web.once"), "--delay", "0.5", "3"]
        ),
    ));
    let c = Cogno::up(&s);
    // web crashes once and is restarted, then recovers.
    c.wait_count("web: started", 2);
    let again = c
        .lines()
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("web: started"))
        .nth(1)
        .expect("web's restart")
        .0;
    let broken_host = broken.url.trim_end_matches("/hooks/S3CRET-TOKEN");
    let hung_host = hung.url.trim_end_matches("/hooks/S3CRET-TOKEN");
    // The hung endpoint holds its first notice (ready) for the whole timeout:
    // the restart did not wait for it.
    let timed_out = c.wait_line_index(&format!(
        "notification ready to webhook {hung_host}: no answer in 2s (attempt 1 of 3)"
    ));
    assert!(again < timed_out, "{}", c.output());
    // Each notice is tried 3 times (retries: 2) and given up, with backoff.
    c.wait_line(&format!(
        "notification ready to webhook {broken_host}: HTTP 500 (attempt 1 of 3); retrying in 1s"
    ));
    c.wait_line(&format!(
        "notification ready to webhook {broken_host}: HTTP 500 (attempt 2 of 3); retrying in 2s"
    ));
    c.wait_line(&format!(
        "notification ready to webhook {broken_host}: HTTP 500; gave up after 3 attempts"
    ));
    // ready, then ready again after the crash: three attempts each.
    let got = broken.wait(6);
    assert!(got.iter().all(|r| r["body"]["event"] == "ready"), "{got:?}");
    // The hung endpoint's first notice: 3 timeouts, with 1 s and 2 s between.
    c.wait_line_by("the hung webhook given up", 3 * TIMEOUT, |l| {
        l.contains(&format!(
            "notification ready to webhook {hung_host}: no answer in 2s; gave up after 3 attempts"
        ))
    });
}
