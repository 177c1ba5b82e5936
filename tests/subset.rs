//! Running part of a stack: `cogno up SERVICE…` (the named services and what
//! they depend on), `cogno start` adding a service left out, and compose's
//! `profiles:` chosen with `--profile` or COGNO_PROFILES, as `cogno check`
//! and a running stack show them.

use crate::common::*;
use crate::control::{cli, http, service, socket, status_json};
use std::process::{Command, Output};

/// db and queue at the same priority; api needs db, worker needs queue; base
/// is a lower priority tier; dbg runs only with the `debug` profile.
fn stack(tag: &str) -> Stack {
    let s = Stack::new(tag);
    let sleep = argv(&["sleep", "1000"]);
    s.write(&format!(
        "services:
  base: {{ command: {sleep}, priority: 1 }}
  db: {{ command: {sleep} }}
  queue: {{ command: {sleep} }}
  api: {{ command: {sleep}, depends_on: [db] }}
  worker: {{ command: {sleep}, depends_on: [queue] }}
  dbg: {{ command: {sleep}, profiles: [debug], depends_on: [db] }}
"
    ));
    s
}

/// `cogno up --config F --data D ARGS…`, watched, once its socket exists.
fn up(s: &Stack, args: &[&str], env: &[(&str, &str)]) -> Cogno {
    let mut cmd = s.up_command();
    cmd.args(args).env_remove("COGNO_PROFILES");
    cmd.envs(env.iter().copied());
    let c = Cogno::spawn(s, cmd);
    c.wait_line("stack is ready");
    c
}

fn state(s: &Stack, name: &str) -> String {
    let st = status_json(s);
    service(&st, name)["state"]
        .as_str()
        .expect("state")
        .to_owned()
}

fn check(s: &Stack, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(COGNO)
        .args(["check", "--config"])
        .arg(&s.config)
        .args(args)
        .env_remove("COGNO_PROFILES")
        .envs(env.iter().copied())
        .output()
        .expect("run cogno check")
}

#[test]
fn up_with_names_starts_them_and_their_dependencies_only() {
    let s = stack("subset-names");
    let c = up(&s, &["api"], &[]);
    for name in ["base", "db", "api"] {
        assert_eq!(state(&s, name), "running", "{name}:\n{}", c.output());
    }
    let st = status_json(&s);
    assert_eq!(st["phase"], "ready", "{st}");
    for name in ["queue", "worker", "dbg"] {
        let svc = service(&st, name);
        assert_eq!(svc["state"], "stopped", "{name}: {svc}");
        assert!(svc["pid"].is_null(), "{name}: {svc}");
        let reason = svc["reason"].as_str().expect("reason");
        assert!(reason.contains("not started: left out"), "{reason}");
        assert_eq!(c.find(&format!(" {name}: started, pid ")), None);
    }
    assert!(c.find("starting 3 services (3 left out)").is_some());
}

#[test]
fn start_adds_a_service_left_out_with_its_dependencies() {
    let s = stack("subset-start");
    let c = up(&s, &["api"], &[]);
    let api = c.service_pid("api");
    let r = cli(&s, &["start", "worker"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.output());
    for name in ["queue", "worker"] {
        assert_eq!(state(&s, name), "running", "{name}:\n{}", c.output());
    }
    c.wait_line("queue: started too, as worker needs it");
    assert_eq!(state(&s, "dbg"), "stopped");
    assert_eq!(c.service_pid("api"), api, "api was not touched");
}

#[test]
fn an_unknown_name_is_refused_with_a_suggestion() {
    let s = stack("subset-unknown");
    let out = s.up_command().arg("wroker").output().expect("run cogno up");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no service `wroker` in the stack"), "{err}");
    assert!(err.contains("did you mean `worker`?"), "{err}");
    assert!(!s.data.exists(), "nothing is written for a refused start");
}

#[test]
fn check_shows_what_profiles_select() {
    let s = stack("subset-check");
    let out = check(&s, &[], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(
            "selection (no profile active): starts base, db, queue, api, worker\n  left out: dbg (profiles: debug)"
        ),
        "{text}"
    );
    let with = "selection (profiles debug): starts base, db, queue, api, worker, dbg\n";
    let out = check(&s, &["--profile", "debug"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(with),
        "{out:?}"
    );
    let out = check(&s, &[], &[("COGNO_PROFILES", "other, debug")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "selection (profiles other, debug): starts base, db, queue, api, worker, dbg"
        ),
        "{text}"
    );
    let out = check(&s, &["worker"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("starts base, queue, worker\n  left out: db (not needed), api (not needed), dbg (profiles: debug)"),
        "{text}"
    );
}

#[test]
fn a_profile_starts_its_services_from_the_flag_or_the_environment() {
    let s = stack("subset-profile-flag");
    let c = up(&s, &["--profile", "debug"], &[]);
    c.service_pid("dbg");
    drop(c);
    let s = stack("subset-profile-env");
    let c = up(&s, &[], &[("COGNO_PROFILES", "debug")]);
    c.service_pid("dbg");
    drop(c);
    // Named, it starts whatever the profiles say.
    let s = stack("subset-profile-named");
    let c = up(&s, &["dbg"], &[]);
    assert_eq!(state(&s, "dbg"), "running");
    assert_eq!(state(&s, "api"), "stopped");
    drop(c);
    let s = stack("subset-profile-none");
    let c = up(&s, &[], &[]);
    assert_eq!(state(&s, "dbg"), "stopped", "{}", c.output());
}

#[test]
fn a_dependency_on_a_profiled_out_service_is_an_error() {
    let s = Stack::new("subset-profile-dep");
    let sleep = argv(&["sleep", "1000"]);
    s.write(&format!(
        "services:
  dbg: {{ command: {sleep}, profiles: [debug] }}
  web: {{ command: {sleep}, depends_on: [dbg] }}
"
    ));
    for out in [
        check(&s, &[], &[]),
        s.up_command().output().expect("run cogno up"),
    ] {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("service `web` depends on `dbg` (services.web.depends_on), which its profiles leave out"),
            "{err}"
        );
        assert!(err.contains("--profile debug"), "{err}");
    }
    let out = check(&s, &["--profile", "debug"], &[]);
    assert!(out.status.success(), "{out:?}");
}

/// A running stack whose file `reload` rewrites: `a`; `b` needs `a`; `c`
/// and `gone` stand alone.
fn reload_stack(tag: &str) -> (Stack, Cogno) {
    let s = Stack::new(tag);
    let sleep = argv(&["sleep", "1000"]);
    s.write(&format!(
        "services:
  a: {{ command: {sleep} }}
  b: {{ command: {sleep}, depends_on: [a] }}
  c: {{ command: {sleep} }}
  gone: {{ command: {sleep} }}
"
    ));
    let c = up(&s, &[], &[]);
    (s, c)
}

/// The file after the reload: `a` changed, `gone` removed, `new` added.
fn rewrite(s: &Stack) {
    let sleep = argv(&["sleep", "1000"]);
    s.write(&format!(
        "services:
  a: {{ command: {sleep}, env: {{ CHANGED: \"yes\" }} }}
  b: {{ command: {sleep}, depends_on: [a] }}
  c: {{ command: {sleep} }}
  new: {{ command: {sleep}, depends_on: [c] }}
"
    ));
}

/// What a reload must have done, seen from outside.
fn assert_reloaded(s: &Stack, c: &Cogno, before: &[(&str, i32)]) {
    let pid = |n: &str| before.iter().find(|(m, _)| *m == n).expect("known").1;
    // a was restarted with its new env, and b, which needs it, with it.
    c.wait_count(" a: started, pid ", 2);
    c.wait_count(" b: started, pid ", 2);
    let a = c.service_pid("a");
    assert_ne!(a, pid("a"));
    assert!(environ(a).iter().any(|v| v == "CHANGED=yes"));
    assert_ne!(c.service_pid("b"), pid("b"));
    c.wait_line(" new: started, pid ");
    assert!(eventually(TIMEOUT, || !exists(pid("gone"))));
    assert!(eventually(TIMEOUT, || state(s, "new") == "running"));
    let st = status_json(s);
    let names: Vec<&str> = st["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["a", "b", "c", "new"], "{st}");
    // c was not touched.
    assert_eq!(service(&st, "c")["pid"], pid("c"), "{st}");
    assert_eq!(c.count(" c: started, pid "), 1);
    // /metrics pairs each service with its own counters: `new` has never
    // ended (the removed `gone`, in the slot before it, has).
    let conn = std::os::unix::net::UnixStream::connect(socket(s)).expect("connect");
    let (code, metrics) = http(conn, "GET", "/metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("cogno_service_last_exit_code{service=\"a\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("service=\"gone\""), "{metrics}");
    assert!(
        !metrics.contains("cogno_service_last_exit_code{service=\"new\"}"),
        "{metrics}"
    );
}

#[test]
fn reload_adds_removes_restarts_what_changed_and_keeps_the_rest() {
    let (s, c) = reload_stack("reload-apply");
    let before: Vec<(&str, i32)> = ["a", "b", "c", "gone"]
        .into_iter()
        .map(|n| (n, c.service_pid(n)))
        .collect();
    rewrite(&s);
    let r = cli(&s, &["reload"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.output());
    for line in [
        "gone: removed",
        "a: restarted",
        "b: restarted (it needs a)",
        "c: unchanged",
        "new: added",
    ] {
        assert!(r.stdout.lines().any(|l| l == line), "{line}: {r:?}");
    }
    assert_reloaded(&s, &c, &before);
    // Reloading the same file again changes nothing.
    let r = cli(&s, &["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.lines().all(|l| l.ends_with(": unchanged")),
        "{r:?}"
    );
}

#[test]
fn reload_refuses_a_broken_file_and_changes_nothing() {
    let (s, c) = reload_stack("reload-broken");
    let before: Vec<i32> = ["a", "b", "c", "gone"]
        .into_iter()
        .map(|n| c.service_pid(n))
        .collect();
    let sleep = argv(&["sleep", "1000"]);
    s.write(&format!(
        "services:\n  a: {{ command: {sleep} }}\n  b:\n    comand: {sleep}\n"
    ));
    let r = cli(&s, &["reload"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("cogno.yaml:4:5"), "{r:?}");
    assert!(r.stderr.contains("did you mean `command`?"), "{r:?}");
    assert!(r.stderr.contains("the running stack is unchanged"), "{r:?}");
    let st = status_json(&s);
    for (n, pid) in ["a", "b", "c", "gone"].into_iter().zip(before) {
        assert_eq!(service(&st, n)["pid"], pid, "{n}: {st}");
    }
    assert_eq!(st["phase"], "ready", "{st}");
}

#[test]
fn sighup_reloads_as_cogno_reload_does() {
    let (s, c) = reload_stack("reload-sighup");
    let before: Vec<(&str, i32)> = ["a", "b", "c", "gone"]
        .into_iter()
        .map(|n| (n, c.service_pid(n)))
        .collect();
    rewrite(&s);
    c.signal(nix::sys::signal::Signal::SIGHUP);
    c.wait_line("SIGHUP received: reloading the stack file");
    c.wait_line("reload: new: added");
    assert_reloaded(&s, &c, &before);
}

/// A stack of a bundled Redis (its `maxmemory` in `settings:`), `app`,
/// which needs it, and `c`, which does not.
fn write_redis_stack(s: &Stack, port: u16, redis: &str) {
    let sleep = argv(&["sleep", "1000"]);
    s.write(&format!(
        "services:
  cache: {{ kind: redis, port: {port}, {redis} }}
  app: {{ command: {sleep}, depends_on: [cache] }}
  c: {{ command: {sleep} }}
"
    ));
}

/// `CONFIG GET maxmemory` on the stack's Redis.
fn maxmemory(s: &Stack, port: u16) -> String {
    let password = crate::bundled::secret_values(&s.data.join("secrets/.env"))
        .into_iter()
        .find_map(|(k, v)| (k == "REDIS_PASSWORD").then_some(v));
    let out = crate::bundled::redis(port, password.as_deref(), &["CONFIG", "GET", "maxmemory"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).unwrap_or_default().trim().to_owned()
}

#[test]
fn reload_reconfigures_a_changed_bundled_server_and_refuses_what_its_data_cannot_take() {
    let s = Stack::new("reload-bundled");
    let port = free_port();
    write_redis_stack(&s, port, "settings: { maxmemory: 16mb }");
    let c = up(&s, &[], &[]);
    assert_eq!(maxmemory(&s, port), (16 << 20).to_string());
    let before: Vec<(&str, i32)> = ["cache", "app", "c"]
        .into_iter()
        .map(|n| (n, c.service_pid(n)))
        .collect();
    let pid = |n: &str| before.iter().find(|(m, _)| *m == n).expect("known").1;

    // Another program for its data: refused, nothing changed (the settings
    // changed too, and were not applied either).
    write_redis_stack(
        &s,
        port,
        "bin: /usr/bin/redis-server, settings: { maxmemory: 32mb }",
    );
    let r = cli(&s, &["reload"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("`cache`: its `bin:` changed"), "{r:?}");
    assert!(r.stderr.contains("`cogno down`, then `cogno up`"), "{r:?}");
    let st = status_json(&s);
    for (n, p) in &before {
        assert_eq!(service(&st, n)["pid"], *p, "{n}: {st}");
    }
    assert_eq!(maxmemory(&s, port), (16 << 20).to_string());

    // New settings: rendered, and the server restarted with them, with
    // the service that needs it; `c` keeps running.
    write_redis_stack(&s, port, "settings: { maxmemory: 32mb }");
    let r = cli(&s, &["reload"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.output());
    for line in [
        "cache: restarted",
        "app: restarted (it needs cache)",
        "c: unchanged",
    ] {
        assert!(r.stdout.lines().any(|l| l == line), "{line}: {r:?}");
    }
    c.wait_count(" cache: started, pid ", 2);
    c.wait_count(" app: started, pid ", 2);
    assert!(eventually(TIMEOUT, || state(&s, "app") == "running"));
    assert_eq!(maxmemory(&s, port), (32 << 20).to_string());
    let st = status_json(&s);
    assert_ne!(service(&st, "cache")["pid"], pid("cache"), "{st}");
    assert_ne!(service(&st, "app")["pid"], pid("app"), "{st}");
    assert_eq!(service(&st, "c")["pid"], pid("c"), "{st}");
}

/// The same for PostgreSQL, whose settings live in the cluster's cogno.conf.
#[test]
fn reload_renders_a_changed_postgres_setting_again() {
    let s = Stack::new("reload-postgres");
    let port = free_port();
    let write = |work_mem: &str| {
        s.write(&format!(
            "services:\n  db: {{ kind: postgres, port: {port}, settings: {{ work_mem: {work_mem} }} }}\n"
        ))
    };
    write("8MB");
    let c = Cogno::spawn(&s, s.up_command());
    c.wait_line_by("the stack ready", crate::bundled::READY, |l| {
        l.contains("stack is ready")
    });
    let env = Command::new(COGNO)
        .args(["env", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data)
        .output()
        .expect("run cogno env");
    let url = crate::bundled::parse_env(&String::from_utf8_lossy(&env.stdout))
        .remove("DATABASE_URL")
        .expect("DATABASE_URL");
    assert_eq!(crate::bundled::sql(&url, "show work_mem"), "8MB");
    write("24MB");
    let r = cli(&s, &["reload"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.output());
    assert!(r.stdout.lines().any(|l| l == "db: restarted"), "{r:?}");
    c.wait_count(" db: started, pid ", 2);
    assert!(eventually(crate::bundled::READY, || state(&s, "db") == "running"));
    assert_eq!(crate::bundled::sql(&url, "show work_mem"), "24MB");
}
