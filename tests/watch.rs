//! `watch:`: a saved file restarts its service (and its dependants when
//! asked) through the normal stop and start; bursts restart once; ignored
//! paths restart nothing; directories made later are watched; a `before`
//! oneshot runs first, and its failure leaves the running version alone.
//!
//! Every wait is for a line cogno prints; nothing asserts a duration. A
//! restart that should not happen is shown absent by a later change that
//! must restart: once its line is out, anything earlier would be too.

use crate::common::{argv, exists, Cogno, Stack, TIMEOUT};
use crate::control::cli;
use nix::sys::signal::Signal;
use std::path::Path;

/// A service that runs until stopped, healthy after a short `startsecs`.
fn sleeper() -> String {
    argv(&["sleep", "1000"])
}

fn write(s: &Stack, rel: &str, text: &str) {
    let path = s.dir.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn mkdir(s: &Stack, rel: &str) {
    std::fs::create_dir_all(s.dir.path().join(rel)).unwrap();
}

/// The `n`-th reload line (from 1), once it is out: `NAME: WHAT changed:
/// restarted, healthy in T`.
fn reload(c: &Cogno, n: usize) -> String {
    const DONE: &str = " changed: restarted, healthy in ";
    c.wait_count(DONE, n);
    c.lines()
        .into_iter()
        .filter(|l| l.contains(DONE))
        .nth(n - 1)
        .unwrap()
}

/// Asserts that `line` says service `name` restarted for `what` alone.
fn says(line: &str, name: &str, what: &str) {
    let want = format!(" {name}: {what} changed: restarted, healthy in ");
    assert!(line.contains(&want), "{line:?} does not contain {want:?}");
}

fn stop(mut c: Cogno) {
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(TIMEOUT), 0, "{}", c.output());
}

#[test]
fn a_saved_file_restarts_the_service_and_its_dependants_when_asked() {
    let s = Stack::new("watch-restart");
    mkdir(&s, "api/src");
    mkdir(&s, "web");
    s.write(&format!(
        r#"
services:
  api:
    command: {cmd}
    startsecs: 100ms
    watch:
      paths: [api/src]
      restart_dependents: true
  worker:
    command: {cmd}
    startsecs: 100ms
    depends_on: [api]
  web:
    command: {cmd}
    startsecs: 100ms
    watch:
      paths: [web]
  proxy:
    command: {cmd}
    startsecs: 100ms
    depends_on: [web]
"#,
        cmd = sleeper()
    ));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    let pid = |n: &str| c.service_pid(n);
    let (api, worker, web, proxy) = (pid("api"), pid("worker"), pid("web"), pid("proxy"));

    // Asked: api and the worker that needs it both restart.
    write(&s, "api/src/main.rs", "fn main() {}");
    says(&reload(&c, 1), "api", "api/src/main.rs");
    c.wait_count(" worker: started, pid ", 2);
    c.wait_count(" worker: healthy", 2);
    assert_ne!(pid("api"), api);
    assert_ne!(pid("worker"), worker);
    assert!(!exists(api) && !exists(worker));

    // Not asked: web restarts, the proxy that needs it keeps running.
    write(&s, "web/index.html", "<h1>hi</h1>");
    says(&reload(&c, 2), "web", "web/index.html");
    assert_ne!(pid("web"), web);
    assert_eq!(pid("proxy"), proxy);
    assert!(exists(proxy));
    assert_eq!(c.count(" proxy: started, pid "), 1, "{}", c.output());

    // `cogno events` and the `cogno` stream of `cogno logs` say it too.
    let logs = cli(&s, &["logs", "cogno"]).stdout;
    assert!(
        logs.contains("web: watch (web/index.html changed: restarted, healthy in"),
        "{logs}"
    );
    stop(c);
}

#[test]
fn a_burst_of_saves_restarts_once() {
    let s = Stack::new("watch-burst");
    mkdir(&s, "src");
    s.write(&format!(
        r#"
services:
  app:
    command: {cmd}
    startsecs: 100ms
    watch:
      paths: [src]
      debounce: 1s
"#,
        cmd = sleeper()
    ));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    // A formatter rewriting five files, each several times.
    for round in 0..4 {
        for f in ["a", "b", "c", "d", "e"] {
            write(&s, &format!("src/{f}.js"), &format!("// {round}"));
        }
    }
    says(&reload(&c, 1), "app", "src/a.js (+4 more)");
    // A later save restarts once more: the burst restarted it once.
    write(&s, "src/a.js", "// later");
    says(&reload(&c, 2), "app", "src/a.js");
    assert_eq!(c.count(" app: started, pid "), 3, "{}", c.output());
    assert_eq!(c.count("changed: restarted"), 2, "{}", c.output());
    stop(c);
}

#[test]
fn ignored_paths_restart_nothing() {
    let s = Stack::new("watch-ignore");
    mkdir(&s, "node_modules/left-pad");
    mkdir(&s, ".git");
    mkdir(&s, "logs");
    mkdir(&s, "pkg");
    s.write(&format!(
        r#"
services:
  app:
    command: {cmd}
    startsecs: 100ms
    watch:
      paths: [.]
      ignore: ["*.log", "logs/**"]
      debounce: 100ms
"#,
        cmd = sleeper()
    ));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    // The data directory (./data, written by cogno itself), the defaults,
    // a node_modules made after the start, the user's globs.
    write(&s, "node_modules/left-pad/index.js", "x");
    write(&s, "node_modules/new-pkg/lib/index.js", "x");
    write(&s, ".git/index", "x");
    write(&s, "pkg/node_modules/dep/index.js", "x");
    write(&s, "dist/bundle.js", "x");
    write(&s, ".main.rs.swp", "x");
    write(&s, "main.rs~", "x");
    write(&s, "4913", "x");
    write(&s, "server.log", "x");
    write(&s, "logs/today.txt", "x");
    // Only this one counts.
    write(&s, "main.rs", "fn main() {}");
    says(&reload(&c, 1), "app", "main.rs");
    assert_eq!(c.count(" app: started, pid "), 2, "{}", c.output());
    stop(c);
}

#[test]
fn a_directory_made_after_the_start_is_watched() {
    let s = Stack::new("watch-newdir");
    mkdir(&s, "src");
    s.write(&format!(
        r#"
services:
  app:
    command: {cmd}
    startsecs: 100ms
    watch:
      paths: [src]
      debounce: 100ms
"#,
        cmd = sleeper()
    ));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    mkdir(&s, "src/feature/deep");
    // `src/feature`, and `src/feature/deep` if it was seen being made.
    let line = reload(&c, 1);
    assert!(line.contains(" app: src/feature"), "{line}");
    write(&s, "src/feature/deep/mod.rs", "// new");
    says(&reload(&c, 2), "app", "src/feature/deep/mod.rs");
    assert_eq!(c.count(" app: started, pid "), 3, "{}", c.output());
    stop(c);
}

#[test]
fn a_failed_build_keeps_the_running_version_and_a_good_one_comes_first() {
    let s = Stack::new("watch-before");
    mkdir(&s, "src");
    let order = s.file("order.log");
    let fail = s.file("fail.flag");
    let build = argv(&[
        "sh",
        "-c",
        &format!(
            "if [ -e {fail} ]; then echo 'src/app.ts(3,1): syntax error' >&2; exit 2; fi; \
             echo build >> {order}"
        ),
    ]);
    let app = argv(&[
        "sh",
        "-c",
        &format!("echo start >> {order}; exec sleep 1000"),
    ]);
    s.write(&format!(
        r#"
services:
  build:
    command: {build}
    oneshot: true
  app:
    command: {app}
    startsecs: 100ms
    depends_on:
      build: completed
    watch:
      paths: [src]
      debounce: 100ms
      before: build
"#
    ));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    let first = c.service_pid("app");

    // A broken build: reported, and the running version runs on.
    std::fs::write(&fail, "").unwrap();
    write(&s, "src/app.ts", "let x = ;");
    let line = c.wait_line("app: src/app.ts changed: not restarted, build failed");
    assert!(line.contains("the running version keeps running"), "{line}");
    // The build's own error is shown with its output.
    c.wait_line("syntax error");
    assert_eq!(c.service_pid("app"), first);
    assert!(exists(first));
    assert_eq!(c.count(" app: started, pid "), 1, "{}", c.output());

    // Fixed: the build runs, then the restart.
    std::fs::remove_file(&fail).unwrap();
    write(&s, "src/app.ts", "let x = 1;");
    says(&reload(&c, 1), "app", "src/app.ts");
    assert_ne!(c.service_pid("app"), first);
    assert!(!exists(first));
    let lines = std::fs::read_to_string(Path::new(&order)).unwrap();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        ["build", "start", "build", "start"],
        "{}",
        c.output()
    );
    stop(c);
}

#[test]
fn a_reload_watches_the_new_paths_without_a_restart() {
    let s = Stack::new("watch-reload");
    mkdir(&s, "old");
    mkdir(&s, "new");
    let yaml = |dir: &str| {
        format!(
            r#"
services:
  app:
    command: {cmd}
    startsecs: 100ms
    watch:
      paths: [{dir}]
      debounce: 100ms
"#,
            cmd = sleeper()
        )
    };
    s.write(&yaml("old"));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    let first = c.service_pid("app");
    s.write(&yaml("new"));
    let r = cli(&s, &["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("app: unchanged"), "{r:?}");
    assert_eq!(c.service_pid("app"), first);
    // The old path is not watched any more, the new one is.
    write(&s, "old/a.txt", "x");
    write(&s, "new/b.txt", "x");
    says(&reload(&c, 1), "app", "new/b.txt");
    assert_eq!(c.count(" app: started, pid "), 2, "{}", c.output());
    stop(c);
}

#[test]
fn a_fix_saved_brings_a_crashed_service_back() {
    let s = Stack::new("watch-crashed");
    mkdir(&s, "src");
    let broken = s.file("src/broken");
    let cmd = argv(&[
        "sh",
        "-c",
        &format!("if [ -e {broken} ]; then echo 'SyntaxError' >&2; exit 1; fi; exec sleep 1000"),
    ]);
    s.write(&format!(
        r#"
services:
  app:
    command: {cmd}
    startsecs: 300ms
    restart: never
    watch:
      paths: [src]
      debounce: 100ms
"#
    ));
    write(&s, "src/broken", "");
    let c = Cogno::up(&s);
    c.wait_line("SyntaxError");
    // Nothing runs, and cogno waits for the fix instead of exiting.
    c.wait_line(
        "every service has ended; cogno stays up: a change to the watched files of app restarts it",
    );
    // The fix: the file that broke it is gone.
    std::fs::remove_file(&broken).unwrap();
    says(&reload(&c, 1), "app", "src/broken");
    assert!(exists(c.service_pid("app")));
    stop(c);
}
