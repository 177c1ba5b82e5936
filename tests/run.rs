//! `cogno run [SERVICE…] -- CMD`: a command with the environment app
//! services get, against a running stack or a throwaway copy of it
//! (`--ephemeral`), exiting with the command's status.
//!
//! The throwaway stacks run the bundled PostgreSQL; their temporary
//! directories are made in the test's own temp dir (TMPDIR), so that the
//! marker-based cleanup finds whatever a failed test leaves.

use crate::bundled::{parse_env, run, text, CLIENT, EXIT, READY};
use crate::common::*;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `cogno run ARGS` on `s`'s stack file and data directory, from its temp
/// dir, with TMPDIR there too.
fn cogno_run(s: &Stack, args: &[&str]) -> Command {
    let mut cmd = Command::new(COGNO);
    cmd.arg("run")
        .arg("--config")
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data)
        .args(args)
        .current_dir(s.dir.path())
        .env("TMPDIR", s.dir.path())
        .env("COGNO_TEST_MARKER", s.marker());
    cmd
}

/// A stack of one bundled PostgreSQL, its port left at the default: a
/// throwaway copy moves it anyway.
fn postgres_stack(tag: &str) -> Stack {
    let s = Stack::new(tag);
    s.write("services:\n  postgres:\n    kind: postgres\n");
    s
}

/// The throwaway stacks' directories `cogno run` made in `s`'s temp dir.
fn throwaway_dirs(s: &Stack) -> Vec<PathBuf> {
    std::fs::read_dir(s.dir.path())
        .expect("read the test's temp dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("cogno-run-"))
        })
        .collect()
}

/// Nothing of a throwaway stack is left: its directory is gone and no
/// process runs from it (a server's command line names its data directory).
fn assert_nothing_left(s: &Stack, out: &str) {
    let dirs = throwaway_dirs(s);
    assert!(dirs.is_empty(), "left behind: {dirs:?}\n{out}");
    let pids = pids_with_cmdline(&format!("{}/cogno-run-", s.marker()));
    assert!(pids.is_empty(), "processes left behind: {pids:?}\n{out}");
}

#[test]
fn run_gives_the_app_or_a_services_environment_and_its_exit_status() {
    let s = Stack::new("run-env");
    std::fs::write(s.file("web.env"), "FROM_FILE=from-env-file\n").unwrap();
    s.write(&format!(
        "secrets:\n  APP_SECRET: {{bytes: 16}}\n\
         env:\n  STACK_WIDE: stack\n\
         services:\n  \
           web:\n    command: {}\n    env_file: web.env\n    \
             env:\n      DATABASE_URL: postgresql://web@db.example/app\n",
        fx("trap.py", &[&s.file("trap.log")])
    ));
    // Nothing runs yet: refused, pointing at --ephemeral.
    let out = run(cogno_run(&s, &["--", "true"]), CLIENT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--ephemeral"), "{}", text(&out));

    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    let env_of = |args: &[&str]| -> std::collections::HashMap<String, String> {
        let out = run(cogno_run(&s, args), CLIENT);
        assert!(out.status.success(), "{}", text(&out));
        parse_env(&String::from_utf8_lossy(&out.stdout))
    };
    let show = "for v in STACK_WIDE APP_SECRET DATABASE_URL FROM_FILE COGNO_SERVICE MINE; do \
                eval \"echo $v=\\'\\${$v-unset}\\'\"; done";
    // The stack's app environment, as `cogno env` prints it, over the user's own.
    let app = env_of(&["--", "sh", "-c", show]);
    let secrets = std::fs::read_to_string(s.data.join("secrets/.env")).unwrap();
    let secret = secrets
        .lines()
        .find_map(|l| l.strip_prefix("APP_SECRET="))
        .map(|v| v.trim_matches(['\'', '"']).to_owned());
    assert_eq!(app["STACK_WIDE"], "stack");
    assert_eq!(Some(&app["APP_SECRET"]), secret.as_ref());
    assert_eq!(app["DATABASE_URL"], "unset");
    // A service's own environment: its env and env_file, not its marker.
    let mut cmd_env = ["web", "--", "sh", "-c", show];
    let web = {
        let mut cmd = cogno_run(&s, &cmd_env);
        cmd.env("MINE", "kept");
        let out = run(cmd, CLIENT);
        assert!(out.status.success(), "{}", text(&out));
        parse_env(&String::from_utf8_lossy(&out.stdout))
    };
    assert_eq!(web["DATABASE_URL"], "postgresql://web@db.example/app");
    assert_eq!(web["FROM_FILE"], "from-env-file");
    assert_eq!(web["STACK_WIDE"], "stack");
    assert_eq!(web["MINE"], "kept", "the user's own environment is kept");
    assert_eq!(web["COGNO_SERVICE"], "unset");
    cmd_env[0] = "nosuch";
    let out = run(cogno_run(&s, &cmd_env), CLIENT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no service `nosuch`"), "{}", text(&out));

    // The command's status, and 128 + the signal that ended it.
    let status = |script: &str| run(cogno_run(&s, &["--", "sh", "-c", script]), CLIENT);
    assert_eq!(status("exit 7").status.code(), Some(7));
    assert_eq!(status("kill -TERM $$").status.code(), Some(143));
    let out = run(cogno_run(&s, &["--", "/nonexistent/cmd"]), CLIENT);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
}

/// One `cogno run --ephemeral` whose command creates its own table, says
/// so in `dir`, waits until the other run has done the same, and then
/// reports whether it sees the other's table: both throwaway stacks run at
/// the same time.
fn isolated_run(s: &Stack, me: &str, other: &str, dir: &Path) -> Command {
    let d = dir.display();
    let script = format!(
        "set -e; echo \"url=$DATABASE_URL\"; \
         psql -X -w -At -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c 'create table only_{me} (x int)' >/dev/null; \
         touch {d}/{me}; i=0; while [ ! -e {d}/{other} ]; do i=$((i+1)); [ $i -lt 3000 ] || exit 9; sleep 0.1; done; \
         echo \"mine=$(psql -X -w -At -d \"$DATABASE_URL\" -c \"select to_regclass('only_{me}') is not null\")\"; \
         echo \"other=$(psql -X -w -At -d \"$DATABASE_URL\" -c \"select to_regclass('only_{other}') is not null\")\"; \
         exit 3"
    );
    let mut cmd = cogno_run(s, &["--ephemeral", "--", "sh", "-c", &script]);
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGSSLMODE", "disable");
    cmd
}

#[test]
fn two_ephemeral_runs_at_once_each_see_only_their_own_database() {
    let s = postgres_stack("run-eph");
    let sync = s.dir.path().join("sync");
    std::fs::create_dir(&sync).unwrap();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| run(isolated_run(&s, "a", "b", &sync), READY * 3));
        let b = scope.spawn(|| run(isolated_run(&s, "b", "a", &sync), READY * 3));
        (a.join().unwrap(), b.join().unwrap())
    });
    let report = |o: &Output| {
        let lines: std::collections::HashMap<String, String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
        lines
    };
    let (ra, rb) = (report(&a), report(&b));
    for (o, r) in [(&a, &ra), (&b, &rb)] {
        let out = String::from_utf8_lossy(&o.stderr);
        // The command's own status, 3, is cogno run's.
        assert_eq!(o.status.code(), Some(3), "{out}");
        assert_eq!(r.get("mine").map(String::as_str), Some("t"), "{out}");
        assert_eq!(r.get("other").map(String::as_str), Some("f"), "{out}");
        assert!(out.contains("throwaway stack ready"), "{out}");
    }
    assert_ne!(ra["url"], rb["url"], "two throwaway stacks on one port");
    // Neither is the stack's own data directory nor its default port.
    assert!(!s.data.exists(), "the stack's data directory was used");
    assert!(!ra["url"].contains(":5432/"), "{}", ra["url"]);
    assert_nothing_left(&s, &format!("{}{}", text(&a), text(&b)));
}

#[test]
fn an_interrupted_ephemeral_run_still_cleans_up() {
    let s = postgres_stack("run-int");
    // Interrupted while its command runs: the command gets the signal, and
    // its status (128 + SIGINT) is cogno run's.
    let mut c = Cogno::spawn(
        &s,
        cogno_run(
            &s,
            &[
                "--ephemeral",
                "--",
                "sh",
                "-c",
                "echo command started; exec sleep 600",
            ],
        ),
    );
    c.wait_line_by("the command's first line", READY * 3, |l| {
        l.contains("command started")
    });
    assert_eq!(throwaway_dirs(&s).len(), 1, "{}", c.output());
    c.signal(Signal::SIGINT);
    assert_eq!(c.wait_code(EXIT), 130, "{}", c.output());
    assert_nothing_left(&s, &c.output());

    // Interrupted while its stack is still starting: the command never runs.
    let mut c = Cogno::spawn(
        &s,
        cogno_run(&s, &["--ephemeral", "--", "sh", "-c", "echo COMMAND RAN"]),
    );
    let marker = format!("{}/cogno-run-", s.marker());
    assert!(
        eventually(READY * 3, || !pids_with_cmdline(&marker).is_empty()),
        "no throwaway stack started: {}",
        c.output()
    );
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(EXIT), 128 + 15, "{}", c.output());
    assert!(!c.output().contains("COMMAND RAN"), "{}", c.output());
    assert_nothing_left(&s, &c.output());
}

#[test]
fn a_throwaway_stack_that_fails_to_start_is_reported_and_removed() {
    let s = Stack::new("run-fail");
    // A program that cannot start: the stack never becomes ready.
    s.write("services:\n  broken:\n    command: /nonexistent/cogno-test-program\n");
    let out = run(
        cogno_run(&s, &["--ephemeral", "--", "sh", "-c", "echo COMMAND RAN"]),
        READY,
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("did not become ready"), "{all}");
    assert!(!all.contains("COMMAND RAN"), "{all}");
    assert_nothing_left(&s, &all);
}

#[test]
fn an_ephemeral_run_naming_a_service_starts_only_it_and_its_dependencies() {
    let s = Stack::new("run-sub");
    // Each service leaves a file when it starts; the command lists them.
    s.write(&format!(
        "services:\n  \
           db:\n    command: {}\n  \
           api:\n    command: {}\n    depends_on: [db]\n    env:\n      ROLE: api\n  \
           extra:\n    command: {}\n",
        fx("stamp.py", &[&s.file("started-db")]),
        fx("stamp.py", &[&s.file("started-api")]),
        fx("stamp.py", &[&s.file("started-extra")]),
    ));
    let show = "ls started-*; echo ROLE=${ROLE-unset}";
    let out = run(
        cogno_run(&s, &["--ephemeral", "api", "--", "sh", "-c", show]),
        READY,
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let seen = String::from_utf8_lossy(&out.stdout);
    let started: Vec<&str> = seen.lines().filter(|l| l.starts_with("started-")).collect();
    assert_eq!(started, ["started-api", "started-db"], "{all}");
    // The command has the named service's environment.
    assert!(seen.contains("ROLE=api"), "{all}");
    assert_nothing_left(&s, &all);
    assert!(pids_within(&s.marker()).is_empty(), "{all}");

    // A bundled server named: the command gets what a client needs of it.
    let s = Stack::new("run-sub-redis");
    s.write(&format!(
        "services:\n  cache: {{kind: redis}}\n  extra:\n    command: {}\n",
        fx("stamp.py", &[&s.file("started-extra")]),
    ));
    let show = "ls started-* 2>/dev/null; redis-cli -u \"$REDIS_URL\" ping";
    let out = run(
        cogno_run(&s, &["--ephemeral", "cache", "--", "sh", "-c", show]),
        READY,
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG", "{all}");
    assert_nothing_left(&s, &all);
}

#[test]
fn an_ephemeral_stack_not_ready_by_its_deadline_is_reported_and_removed() {
    let s = Stack::new("run-late");
    // Running, but its health check never passes: the stack never becomes
    // ready, and only the deadline ends the wait (long enough for a loaded
    // machine to have started the service by then).
    s.write(
        "services:\n  \
           warm:\n    command: [\"sh\", \"-c\", \"echo still warming up; exec sleep 600\"]\n    \
             health:\n      exec: [\"false\"]\n      start_period: 10m\n",
    );
    let out = run(
        cogno_run(
            &s,
            &[
                "--ephemeral",
                "--wait-timeout",
                "8s",
                "--",
                "sh",
                "-c",
                "echo COMMAND RAN",
            ],
        ),
        READY,
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    // What is not ready, why, and its last output, as `up --wait` says it.
    assert!(all.contains("not ready after 8s: warm is"), "{all}");
    assert!(all.contains("last output of warm:"), "{all}");
    assert!(all.contains("still warming up"), "{all}");
    assert!(all.contains("--wait-timeout"), "{all}");
    assert!(!all.contains("COMMAND RAN"), "{all}");
    assert_nothing_left(&s, &all);
    assert!(pids_within(&s.marker()).is_empty(), "{all}");
}
