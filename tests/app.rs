//! What the real CognObserve app needs of cogno (issue 12), through the built
//! binary: PostgreSQL extensions created as the superuser in each app
//! database, HTTP probes told which statuses pass, the environment derived
//! from the stack, and the probe that waits for a Temporal worker.

use crate::bundled::{parse_env, psql, run, stop, wait_ready, CLIENT, EXIT, READY};
use crate::common::*;
use std::process::Command;
use std::time::Instant;

/// `cogno env` for `s`, parsed.
fn env_of(s: &Stack) -> std::collections::HashMap<String, String> {
    let mut cmd = Command::new(COGNO);
    cmd.args(["env", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data);
    let out = run(cmd, CLIENT);
    assert!(out.status.success(), "cogno env failed: {}", out.status);
    parse_env(&String::from_utf8_lossy(&out.stdout))
}

/// One row of `query` as the app, in database `db`.
fn app_sql(database_url: &str, db: &str, query: &str) -> String {
    let base = database_url
        .strip_suffix("/cognobserve")
        .expect("DATABASE_URL ends with the app database");
    let url = format!("{base}/{db}");
    let out = psql(&url, query, None);
    assert!(
        out.status.success(),
        "psql as the app in {db} failed running {query:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ------------------------------------------------------------- extensions

/// `extensions:` are created in every app database by the superuser, the
/// app role stays unprivileged, and a second start (the extensions already
/// there) is as clean as the first.
#[test]
fn extensions_are_created_in_each_app_database_idempotently() {
    let s = Stack::new("pg-extensions");
    let port = free_port();
    s.write(&format!(
        "services:\n  postgres: {{kind: postgres, port: {port}, databases: [extra], \
         extensions: [citext, pgcrypto]}}\n"
    ));
    for run in ["first", "second"] {
        let mut c = Cogno::up(&s);
        wait_ready(&c, Instant::now());
        let url = env_of(&s).remove("DATABASE_URL").expect("DATABASE_URL");
        for db in ["cognobserve", "extra"] {
            assert_eq!(
                app_sql(
                    &url,
                    db,
                    "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension \
                     WHERE extname <> 'plpgsql'"
                ),
                "citext,pgcrypto",
                "{run} start, database {db}"
            );
        }
        assert_eq!(
            app_sql(
                &url,
                "cognobserve",
                "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles \
                 WHERE rolname = current_user"
            ),
            "f",
            "the app role stays unprivileged"
        );
        assert_eq!(stop(&mut c).0, 0, "{}", c.output());
        let out = c.output();
        assert!(
            !out.contains("unhealthy") && !out.contains("ERROR"),
            "{run} start: {out}"
        );
    }
}

/// An extension the server does not have (no pgvector on this machine) keeps
/// PostgreSQL from becoming healthy, and the error names it, the PostgreSQL
/// major and the Debian package that provides it.
#[test]
fn a_missing_extension_names_the_package_that_provides_it() {
    let s = Stack::new("pg-no-vector");
    let port = free_port();
    s.write(&format!(
        "services:\n  postgres: {{kind: postgres, port: {port}, \
         extensions: [citext, vector]}}\n"
    ));
    let mut c = Cogno::up(&s);
    let (_, line) = c.wait_line_by("the missing extension's error", READY, |l| {
        l.contains("extension `vector`")
    });
    let major = std::fs::read_to_string(s.data.join("postgresql/PG_VERSION")).unwrap();
    let major = major.trim();
    assert!(
        line.contains(&format!("PostgreSQL {major}"))
            && line.contains(&format!("postgresql-{major}-pgvector"))
            && line.contains("vector.control"),
        "{line}"
    );
    assert!(!c.output().contains("stack is ready"), "{}", c.output());
    c.signal(nix::sys::signal::Signal::SIGTERM);
    c.wait_exit(EXIT);
}

/// A name that is not an extension's is refused before anything starts.
#[test]
fn a_bad_extension_name_is_refused() {
    let s = Stack::new("pg-bad-ext");
    s.write("services:\n  postgres: {kind: postgres, extensions: [\"vector; DROP\"]}\n");
    let out = run(
        {
            let mut cmd = s.up_command();
            cmd.current_dir(s.dir.path());
            cmd
        },
        EXIT,
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("extensions") && text.contains("`vector; DROP` is not an extension name"),
        "{text}"
    );
    assert!(!s.data.exists(), "nothing was written");
}

// ------------------------------------------------------ http probe statuses

/// An app whose only path without a session answers 401 (like the real
/// web's guarded `/api`) is healthy when its check lists 401; with the
/// default statuses (2xx and 3xx, as before) the same answer fails, and the
/// error says what passes.
#[test]
fn http_checks_pass_on_the_statuses_they_list() {
    let s = Stack::new("http-status");
    let (listed, default) = (free_port(), free_port());
    let server = |port: u16| fx("http_health.py", &[&port.to_string(), "--status", "401"]);
    s.write(&format!(
        r#"
services:
  listed:
    command: {}
    health: {{http: "http://127.0.0.1:{listed}/health", status: [2xx, 401], start_interval: 50ms}}
  default:
    command: {}
    health: {{http: "http://127.0.0.1:{default}/health", start_period: 0s, retries: 1, start_interval: 50ms}}
"#,
        server(listed),
        server(default)
    ));
    let mut c = crate::control::up(&s);
    c.wait_line("listed: healthy after");
    // Its check fails once it answers too, saying what would pass.
    let wanted = format!("GET http://127.0.0.1:{default}/health: HTTP 401 (passing: 2xx, 3xx)");
    let mut last = serde_json::Value::Null;
    let seen = eventually(TIMEOUT, || {
        last = crate::control::status_json(&s);
        crate::control::service(&last, "default")["health"]["error"] == wanted.as_str()
    });
    assert!(seen, "{last}");
    assert!(c.find("listed: unhealthy").is_none(), "{}", c.output());
    c.signal(nix::sys::signal::Signal::SIGTERM);
    c.wait_exit(EXIT);
}

/// `status` is checked when the file is loaded: only with `http`, and only
/// statuses, classes and ranges; a task-queue check needs a bundled temporal.
#[test]
fn bad_http_statuses_and_task_queue_checks_are_refused() {
    for (health, says) in [
        (
            "{tcp: 127.0.0.1:1, status: [200]}",
            "`status` only applies to an http health check",
        ),
        (
            "{http: http://127.0.0.1:1/, status: [200, 6xx]}",
            "`6xx` is not an HTTP status",
        ),
        (
            "{http: http://127.0.0.1:1/, status: []}",
            "`status` lists no status",
        ),
        (
            "{temporal_task_queue: app-queue}",
            "the stack has no `kind: temporal` service to ask",
        ),
        ("{temporal_task_queue: q, exec: [true]}", "has 2 probes"),
    ] {
        let s = Stack::new("http-status-bad");
        s.write(&format!(
            "services:\n  web:\n    command: [sleep, \"60\"]\n    health: {health}\n"
        ));
        let mut cmd = s.up_command();
        cmd.current_dir(s.dir.path());
        let out = run(cmd, EXIT);
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{health}: {text}");
        assert!(text.contains(says), "{health}: {text}");
    }
}

// ------------------------------------------------------- derived environment

/// The names and values of an `env` dump (`NAME=value` lines).
fn dumped(path: &str) -> std::collections::HashMap<String, String> {
    let mut text = String::new();
    assert!(
        eventually(TIMEOUT, || {
            text = std::fs::read_to_string(path).unwrap_or_default();
            text.contains("COGNO_SERVICE=")
        }),
        "no environment dump at {path}"
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The URLs apps find each other at follow web's and ingest's ports, the
/// stack's `env` overrides them (and `cogno env` prints each name once), and
/// a bundled server's password reaches only a service that asks for it by
/// name: the others get it inside REDIS_URL only.
#[test]
fn derived_urls_follow_the_stack_and_server_passwords_are_opt_in() {
    let s = Stack::new("derived-env");
    let port = free_port();
    let dump = |name: &str| {
        argv(&[
            "sh",
            "-c",
            &format!("env > {}; exec sleep 600", s.file(&format!("{name}.env"))),
        ])
    };
    s.write(&format!(
        r#"
env:
  INGEST_HEALTH_URL: http://ingest.example:9/health
services:
  redis: {{kind: redis, port: {port}}}
  web: {{command: {}, env: {{PORT: 3100}}, priority: 300}}
  ingest: {{command: {}, env: {{PORT: 8181}}, priority: 300}}
  asks: {{command: {}, priority: 300, secrets: [REDIS_PASSWORD, NEXTAUTH_SECRET]}}
"#,
        dump("web"),
        dump("ingest"),
        dump("asks")
    ));
    let mut c = Cogno::up(&s);
    c.wait_line("stack is ready");
    let web = dumped(&s.file("web.env"));
    assert_eq!(web["NEXTAUTH_URL"], "http://localhost:3100");
    assert_eq!(web["WEB_API_URL"], "http://127.0.0.1:3100");
    assert_eq!(web["INGEST_HEALTH_URL"], "http://ingest.example:9/health");
    assert!(web.contains_key("REDIS_URL") && web.contains_key("NEXTAUTH_SECRET"));
    assert!(
        !web.contains_key("REDIS_PASSWORD"),
        "web got REDIS_PASSWORD"
    );
    let asks = dumped(&s.file("asks.env"));
    assert!(
        asks.contains_key("REDIS_PASSWORD") && asks.contains_key("REDIS_URL"),
        "a service that lists it gets it"
    );
    assert!(!asks.contains_key("INTERNAL_API_SECRET"));

    let mut cmd = Command::new(COGNO);
    cmd.args(["env", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data);
    let out = String::from_utf8_lossy(&run(cmd, CLIENT).stdout).into_owned();
    let mut names: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "a name printed twice: {names:?}");
    let env = parse_env(&out);
    assert_eq!(env["INGEST_HEALTH_URL"], "http://ingest.example:9/health");
    assert_eq!(env["WEB_API_URL"], "http://127.0.0.1:3100");
    stop(&mut c);
}

// ------------------------------------------------------ worker readiness

/// A worker is ready when Temporal knows a poller on its task queue: before
/// the worker polls (it waits for a gate file) its check fails, saying so;
/// once it polls, the check passes and the stack is ready. The namespace is
/// the bundled temporal's.
#[test]
fn a_worker_is_healthy_once_it_polls_its_task_queue() {
    let s = Stack::new("task-queue");
    let port = free_port();
    let gate = s.file("gate");
    let temporal = crate::bundled::reachable_temporal(&s);
    std::fs::set_permissions(
        s.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.write(&format!(
        r#"
services:
  temporal: {{kind: temporal, port: {port}, namespace: app-ns, bin: "{}"}}
  worker:
    command: {}
    priority: 400
    health: {{temporal_task_queue: app-queue, start_interval: 100ms}}
"#,
        temporal.display(),
        fx("temporal_worker.py", &["app-queue", "--gate", &gate])
    ));
    let mut c = crate::control::up(&s);
    c.wait_line_by("worker started", READY, |l| l.contains("worker: started"));
    let wanted = format!(
        "no worker polls Temporal task queue `app-queue` (namespace `app-ns`) on 127.0.0.1:{port} yet"
    );
    let mut last = serde_json::Value::Null;
    let failing = eventually(READY, || {
        last = crate::control::status_json(&s);
        crate::control::service(&last, "worker")["health"]["error"] == wanted.as_str()
    });
    assert!(failing, "{last}");
    assert!(c.find("stack is ready").is_none(), "{}", c.output());
    std::fs::write(&gate, "").unwrap();
    c.wait_line_by("worker polling", READY, |l| l.contains("polling app-queue"));
    c.wait_line_by("worker healthy", READY, |l| {
        l.contains("worker: healthy after")
    });
    wait_ready(&c, Instant::now());
    stop(&mut c);
}
