//! A user's data across backup, restore and layout versions (issue 11),
//! through the built binary and the real servers: a round trip that keeps
//! every row, key, workflow history and the secrets byte for byte while a
//! writer keeps committing; a restore that refuses damaged archives and
//! existing data (or moves it aside with --force) and reports the leftover
//! of an interrupted (even SIGKILLed) one; a backup killed part-way that leaves no archive
//! and a stack undisturbed; a stopped stack's backup, which starts its servers alone and
//! stops them again (also when interrupted or killed); restores killed part-way, which
//! the next command refuses, losing nothing; and the layout version's migration and refusal.
//!
//! The stacks come from tests/bundled.rs's helpers: each on its own free
//! ports in a fresh temp dir, everything it starts marked and killed on drop.

use crate::bundled::*;
use crate::common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A backup or a restore of a small stack, on a busy machine.
const LONG: Duration = Duration::from_secs(240);

/// `cogno ARGS --config F --data DATA`: the stack's file on another data directory.
fn cogno_on(b: &Bundled, data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(COGNO);
    cmd.args(args)
        .arg("--config")
        .arg(&b.s.config)
        .arg("--data")
        .arg(data)
        .current_dir(b.s.dir.path());
    cmd
}

/// Runs `cogno backup --to DIR`; returns the archive it printed.
fn backup(b: &Bundled, to: &Path) -> PathBuf {
    let out = run(
        b.cogno(&["backup", "--to", &to.display().to_string()]),
        LONG,
    );
    assert!(out.status.success(), "cogno backup failed: {}", text(&out));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mode = std::fs::metadata(&path)
        .expect("the archive")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the archive holds secrets");
    path
}

fn restore(b: &Bundled, archive: &Path, data: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["restore", archive.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(cogno_on(b, data, &args), LONG)
}

/// The entries of `dir` whose names start with a dot: temporary names.
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

// A stack is stopped with `stop` and its exit status not asserted: on a
// loaded machine the Temporal dev server can overrun its stop timeout and be
// killed (exit status 1), which says nothing about what these tests check.

/// A stack that is up, with rows in PostgreSQL, keys in Redis and a
/// workflow with a history in Temporal (started, then terminated: no
/// worker needed). Returns it, its `cogno up` and DATABASE_URL.
fn stack_with_data(tag: &str) -> (Bundled, Cogno, String) {
    let b = Bundled::new(tag, User::Root);
    let c = b.up();
    wait_ready(&c, Instant::now());
    let env = b.env();
    let url = env["DATABASE_URL"].clone();
    sql(
        &url,
        "CREATE TABLE kept (id int PRIMARY KEY, note text); \
         INSERT INTO kept SELECT i, 'row ' || i FROM generate_series(1, 1000) i; \
         CREATE TABLE written (id bigint PRIMARY KEY)",
    );
    let pw = env["REDIS_PASSWORD"].clone();
    for args in [
        &["SET", "plain", "kept value"][..],
        &["HSET", "hash", "field", "42"],
    ] {
        let out = redis(b.ports.redis, Some(&pw), args);
        assert!(out.status.success(), "redis-cli {args:?}: {}", text(&out));
    }
    let out = temporal(
        b.ports.temporal,
        &[
            "workflow",
            "start",
            "--type",
            "Kept",
            "--task-queue",
            "nobody-listens",
            "--workflow-id",
            "kept-workflow",
        ],
    );
    assert!(
        out.status.success(),
        "temporal workflow start: {}",
        text(&out)
    );
    let out = temporal(
        b.ports.temporal,
        &[
            "workflow",
            "terminate",
            "--workflow-id",
            "kept-workflow",
            "--reason",
            "test",
        ],
    );
    assert!(
        out.status.success(),
        "temporal workflow terminate: {}",
        text(&out)
    );
    (b, c, url)
}

/// Everything [`stack_with_data`] put there is there (on the stack now
/// running on those ports).
fn assert_data_there(b: &Bundled, url: &str) {
    assert_eq!(
        sql(
            url,
            "SELECT count(*), sum(id) FROM kept WHERE note = 'row ' || id"
        ),
        "1000|500500"
    );
    let pw = b.env()["REDIS_PASSWORD"].clone();
    let out = redis(b.ports.redis, Some(&pw), &["GET", "plain"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kept value");
    let out = redis(b.ports.redis, Some(&pw), &["HGET", "hash", "field"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    let out = temporal(
        b.ports.temporal,
        &["workflow", "show", "--workflow-id", "kept-workflow"],
    );
    let shown = text(&out);
    assert!(
        out.status.success() && shown.contains("WorkflowExecutionTerminated"),
        "the workflow's history: {shown}"
    );
}

/// Inserts rows 1, 2, 3… into `written`, one transaction each, until
/// stopped; `committed` is the last one psql said was committed.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(url: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (url, s, c) = (url.to_owned(), stop.clone(), committed.clone());
        let thread = std::thread::spawn(move || {
            let mut next = 1u64;
            while !s.load(Ordering::SeqCst) {
                let insert = format!("INSERT INTO written VALUES ({next})");
                if psql(&url, &insert, None).status.success() {
                    c.store(next, Ordering::SeqCst);
                    next += 1;
                }
            }
        });
        Writer {
            stop,
            committed,
            thread: Some(thread),
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn round_trip_keeps_every_row_key_workflow_history_and_the_secrets() {
    let (b, mut c, url) = stack_with_data("lifecycle-round-trip");
    let writer = Writer::start(&url);
    assert!(
        eventually(CLIENT, || writer.committed() >= 5),
        "the writer commits"
    );
    let before = writer.committed();
    let archives = b.s.dir.path().join("archives");
    std::fs::create_dir(&archives).unwrap();
    let archive = backup(&b, &archives);
    let during = writer.committed();
    drop(writer);
    assert_eq!(
        hidden(&archives),
        Vec::<String>::new(),
        "no temporary name is left"
    );
    let listed = run(
        {
            let mut t = Command::new("tar");
            t.arg("--zstd").arg("-tf").arg(&archive);
            t
        },
        CLIENT,
    );
    assert!(
        text(&listed).starts_with("manifest.json\n") && text(&listed).contains("postgres/"),
        "a plain tar, manifest first: {}",
        text(&listed)
    );
    stop(&mut c);

    let restored = b.s.dir.path().join("restored");
    let out = restore(&b, &archive, &restored, &[]);
    assert!(out.status.success(), "cogno restore failed: {}", text(&out));
    assert_eq!(
        std::fs::read(restored.join("secrets/.env")).unwrap(),
        std::fs::read(b.secrets_file()).unwrap(),
        "the secrets, byte for byte"
    );
    assert_eq!(
        hidden(b.s.dir.path()),
        Vec::<String>::new(),
        "no temporary directory is left"
    );

    let mut c = Cogno::spawn(&b.s, cogno_on(&b, &restored, &["up"]));
    wait_ready(&c, Instant::now());
    assert_data_there(&b, &url);
    let kept = sql(
        &url,
        &format!("SELECT count(*) FROM written WHERE id <= {before}"),
    );
    assert_eq!(
        kept,
        before.to_string(),
        "every row committed before the backup began"
    );
    let all: u64 = sql(&url, "SELECT count(*) FROM written").parse().unwrap();
    assert!(
        all <= during + 1,
        "{all} rows, {during} committed when it ended"
    );
    eprintln!(
        "figure: {before} rows committed before the backup, {all} in it, {during} by its end"
    );
    stop(&mut c);
}

#[test]
fn restore_refuses_damage_and_existing_data_and_force_moves_it_aside() {
    let (b, mut c, _) = stack_with_data("lifecycle-refusals");
    let archive = backup(&b, b.s.dir.path());
    stop(&mut c);

    // A flipped byte: refused naming a member, nothing created.
    let damaged = b.s.dir.path().join("damaged.tar.zst");
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    let target = b.s.dir.path().join("target");
    let out = restore(&b, &damaged, &target, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is damaged: member `"),
        "{}",
        text(&out)
    );
    assert!(!target.exists(), "nothing restored");
    assert_eq!(hidden(b.s.dir.path()), Vec::<String>::new());

    // Existing data is never written over.
    let before = snapshot(b.data());
    let out = restore(&b, &archive, b.data(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(diff(&before, &snapshot(b.data())), Vec::<String>::new());

    // With --force it is renamed aside, intact, and its new name printed.
    let out = restore(&b, &archive, b.data(), &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    let aside = printed
        .lines()
        .find_map(|l| l.split(" aside to ").nth(1))
        .unwrap_or_else(|| panic!("the new name is printed: {printed}"));
    let mut moved = snapshot(Path::new(aside));
    let mut was = before;
    // Its top directory is the same directory under another name.
    moved.remove(".");
    was.remove(".");
    assert_eq!(
        diff(&was, &moved),
        Vec::<String>::new(),
        "moved aside intact"
    );

    // Into a mount point (a volume), which no rename can cross: built
    // inside it and moved up, complete, with nothing left behind.
    let volume = b.s.dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let script = format!(
        "mount -t tmpfs -o mode=0755 cogno-test {v} && {cogno} restore {a} --config {c} --data {v} \
         && echo --- && ls -A {v} && cmp {v}/secrets/.env {s} && echo same-secrets",
        v = volume.display(),
        cogno = COGNO,
        a = archive.display(),
        c = b.s.config.display(),
        s = b.secrets_file().display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let out = run(cmd, LONG);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restore into a mount point: {}",
        text(&out)
    );
    let entries: Vec<&str> = listed
        .lines()
        .skip_while(|l| *l != "---")
        .skip(1)
        .take_while(|l| *l != "same-secrets")
        .collect();
    assert_eq!(
        entries,
        [
            ".cogno",
            "postgresql",
            "redis",
            "run",
            "secrets",
            "temporal"
        ],
        "{}",
        text(&out)
    );
    assert!(listed.contains("same-secrets"), "{}", text(&out));

    // A leftover of an interrupted restore is reported, never deleted.
    let leftover = b.s.dir.path().join(".again.restore-tmp");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("work"), "unfinished").unwrap();
    let out = restore(&b, &archive, &b.s.dir.path().join("again"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("was interrupted") && text(&out).contains(".again.restore-tmp"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(leftover.join("work")).unwrap(),
        "unfinished"
    );

    // SIGKILL while the restore's own PostgreSQL runs: the server dies with
    // it, nothing appears under the target's name, and the next restore
    // reports the leftover.
    let target = b.s.dir.path().join("killed");
    let work = b.s.dir.path().join(".killed.restore-tmp");
    let mut child = cogno_on(&b, &target, &["restore", archive.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server on the new cluster (`-D` it exactly, not initdb's scratch).
    let cluster = work.join("data/postgresql").display().to_string();
    let servers = || -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&p| cmdline(p).contains(&cluster))
            .collect()
    };
    let pid_file = work.join("data/postgresql/postmaster.pid");
    assert!(
        eventually(LONG, || std::fs::read_to_string(&pid_file)
            .is_ok_and(|t| t.contains("ready"))),
        "the restore's PostgreSQL accepts connections"
    );
    assert!(!servers().is_empty(), "it runs on the new cluster");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(CLIENT, || servers().is_empty()),
        "its PostgreSQL died with it: {:?}",
        servers()
    );
    assert!(!target.exists(), "nothing under the target's name");
    let out = restore(&b, &archive, &target, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(".killed.restore-tmp"), "{}", text(&out));
    std::fs::remove_dir_all(&work).unwrap();
    let out = restore(&b, &archive, &target, &[]);
    assert!(out.status.success(), "then it restores: {}", text(&out));
}

/// The pg_dumpall processes dumping `b`'s PostgreSQL.
fn dumps_of(b: &Bundled) -> Vec<i32> {
    let port = b.ports.pg.to_string();
    all_pids()
        .into_iter()
        .filter(|&p| {
            let args = cmdline(p);
            args.first().is_some_and(|a| a.ends_with("pg_dumpall")) && args.contains(&port)
        })
        .collect()
}

/// A process's nice value, from /proc/PID/stat (the 19th field).
fn nice_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    after_name
        .split_whitespace()
        .nth(16)
        .and_then(|n| n.parse().ok())
        .unwrap_or(i32::MIN)
}

/// SIGKILLs `child` (with its whole process group when `group`) and reaps it.
fn kill(child: &mut std::process::Child, group: bool) {
    if group {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGKILL,
        );
    } else {
        child.kill().unwrap();
    }
    child.wait().unwrap();
}

/// Starts `cmd` (in a process group of its own when `group`), waits until
/// `at` holds (polled often: some states last milliseconds), and SIGKILLs
/// it there. False when it ended first (it was too quick to be caught).
fn kill_when(mut cmd: Command, group: bool, at: impl Fn() -> bool) -> bool {
    use std::os::unix::process::CommandExt;
    if group {
        cmd.process_group(0);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LONG;
    while !at() {
        assert!(
            Instant::now() < deadline,
            "the kill point was never reached"
        );
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    kill(&mut child, group);
    true
}

#[test]
fn a_backup_killed_part_way_leaves_no_archive_and_the_stack_undisturbed() {
    let (b, c, url) = stack_with_data("lifecycle-kill");
    // Enough rows that the dump takes a moment.
    sql(
        &url,
        "INSERT INTO written SELECT generate_series(1, 300000)",
    );
    let server_pids = || -> Vec<Option<i32>> {
        ["postgres", "redis", "temporal"]
            .iter()
            .map(|s| b.status_pid(s))
            .collect()
    };
    let pids = server_pids();
    let target = b.s.dir.path().join("killed.tar.zst");
    let staging = staging_of(&target);
    let partial = b.s.dir.path().join(".killed.tar.zst.partial");
    let backup_cmd = || b.cogno(&["backup", "--to", &target.display().to_string()]);

    // Each kill point: while PostgreSQL is dumped, while Redis's snapshot is
    // copied, while the archive is packed (its temporary name exists), and
    // the whole process group (cogno and its pg_dumpall) while dumping.
    // At the first, the dump runs at a background priority (it is
    // streamed: no staging path on its command line, its port is).
    let dump_nice = std::cell::Cell::new(None);
    let points: [(&str, bool, &dyn Fn() -> bool); 4] = [
        ("the dump", false, &|| {
            let dump = dumps_of(&b).first().map(|&p| nice_of(p));
            dump_nice.set(dump);
            dump.is_some()
        }),
        ("the Redis copy", false, &|| staging.join("redis").exists()),
        ("the packing", false, &|| partial.exists()),
        ("the dump, with its process group", true, &|| {
            staging.join("postgres").exists()
        }),
    ];
    for (i, (point, group, at)) in points.into_iter().enumerate() {
        if i > 0 {
            // The last kill's leftovers would satisfy this one's kill point
            // at once; the final backup shows that they are removed.
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_file(&partial);
        }
        // Packing lasts milliseconds: a backup that completes first is removed and tried again.
        let mut caught = false;
        for _ in 0..5 {
            caught = kill_when(backup_cmd(), group, at);
            if caught {
                break;
            }
            std::fs::remove_file(&target).unwrap();
        }
        assert!(caught, "{point}: never caught in five backups");
        assert!(!target.exists(), "{point}: no archive under the final name");
        assert!(
            eventually(CLIENT, || dumps_of(&b).is_empty()),
            "{point}: the dump it ran died with it"
        );
        if i == 0 {
            assert_eq!(
                dump_nice.get(),
                Some((nice_of(std::process::id() as i32) + 10).min(19)),
                "pg_dumpall runs at nice +10 from cogno backup's"
            );
        }
        let (out, shown) = b.command_output(&["healthcheck"]);
        assert!(
            out.status.success(),
            "{point}: the stack is still ready: {shown}"
        );
        assert_eq!(pids, server_pids(), "{point}: no server was restarted");
    }

    // The next backup to that name removes the leftovers and completes.
    let out = run(backup_cmd(), LONG);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("left by an interrupted backup"),
        "{}",
        text(&out)
    );
    assert!(target.exists());
    assert_eq!(hidden(b.s.dir.path()), Vec::<String>::new());

    // Under cogno's own time-stamped names, which no later backup repeats,
    // the next backup into the directory removes a killed one's leftovers.
    let dir = b.s.dir.path().join("archives");
    std::fs::create_dir(&dir).unwrap();
    let to_dir = || b.cogno(&["backup", "--to", &dir.display().to_string()]);
    let dumping = || {
        hidden(&dir)
            .iter()
            .any(|n| n.ends_with(".staging") && dir.join(n).join("postgres").exists())
    };
    assert!(
        kill_when(to_dir(), false, dumping),
        "the backup ended first"
    );
    let out = run(to_dir(), LONG);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("left by an interrupted backup"),
        "{}",
        text(&out)
    );
    assert_eq!(hidden(&dir), Vec::<String>::new());
    drop(c);
}

#[test]
fn a_restore_killed_part_way_is_refused_by_the_next_command_and_loses_nothing() {
    let (b, mut c, url) = stack_with_data("lifecycle-restore-kill");
    let archive = backup(&b, b.s.dir.path());
    stop(&mut c);
    let archived = std::fs::read(&archive).unwrap();

    // SIGKILL while the archive is unpacked, after PostgreSQL's data is in
    // place (Redis's is being copied): nothing appears under the target's
    // name, `cogno up` there refuses rather than starting an empty stack,
    // and the next restore reports the leftover.
    let work = b.s.dir.path().join(".fresh.restore-tmp");
    let target = b.s.dir.path().join("fresh");
    let points: [(&str, PathBuf); 2] = [
        ("unpacking", work.join("archive/data")),
        ("after PostgreSQL", work.join("data/redis")),
    ];
    for (point, seen) in points {
        // The last steps last milliseconds: a restore that completes first is removed and run again.
        let mut caught = false;
        for _ in 0..5 {
            let cmd = cogno_on(&b, &target, &["restore", archive.to_str().unwrap()]);
            caught = kill_when(cmd, false, || seen.exists());
            if caught {
                break;
            }
            std::fs::remove_dir_all(&target).unwrap();
        }
        assert!(caught, "{point}: never caught in five restores");
        assert!(!target.exists(), "{point}: nothing under the target's name");
        assert_eq!(
            std::fs::read(&archive).unwrap(),
            archived,
            "{point}: the archive is untouched"
        );
        let out = run(cogno_on(&b, &target, &["up"]), CLIENT);
        assert_eq!(out.status.code(), Some(2), "{point}: {}", text(&out));
        assert!(
            text(&out).contains("an interrupted `cogno restore` into it left its unfinished work"),
            "{point}: {}",
            text(&out)
        );
        assert!(!target.exists(), "{point}: `cogno up` created nothing");
        let out = restore(&b, &archive, &target, &[]);
        assert_eq!(out.status.code(), Some(2), "{point}: {}", text(&out));
        assert!(
            text(&out).contains(".fresh.restore-tmp"),
            "{point}: {}",
            text(&out)
        );
        std::fs::remove_dir_all(&work).unwrap();
    }

    // With --force, while PostgreSQL loads the dump: the data directory it
    // would replace is untouched; once the leftover is removed, the restore
    // moves it aside intact and `cogno up` has every row, key and workflow.
    let before = snapshot(b.data());
    let work = b.s.dir.path().join(format!(
        ".{}.restore-tmp",
        b.data().file_name().unwrap().to_string_lossy()
    ));
    let pid_file = work.join("data/postgresql/postmaster.pid");
    let cmd = cogno_on(
        &b,
        b.data(),
        &["restore", archive.to_str().unwrap(), "--force"],
    );
    assert!(kill_when(cmd, false, || std::fs::read_to_string(&pid_file)
        .is_ok_and(|t| t.contains("ready"))));
    assert_eq!(diff(&before, &snapshot(b.data())), Vec::<String>::new());
    let out = restore(&b, &archive, b.data(), &["--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::remove_dir_all(&work).unwrap();
    let out = restore(&b, &archive, b.data(), &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    let aside = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split(" aside to ").nth(1).map(PathBuf::from))
        .unwrap_or_else(|| panic!("it says where: {}", text(&out)));
    assert_eq!(diff(&before, &snapshot(&aside)), Vec::<String>::new());
    assert_eq!(std::fs::read(&archive).unwrap(), archived);
    let mut c = b.up();
    wait_ready(&c, Instant::now());
    assert_data_there(&b, &url);
    stop(&mut c);
}

/// A stack with one app service and no bundled server: layout checks
/// without starting any server.
fn app_stack(tag: &str) -> Stack {
    let s = Stack::new(tag);
    s.write(&format!(
        "services:\n  app:\n    command: {}\n",
        fx("trap.py", &[&s.file("app.log")])
    ));
    s
}

#[test]
fn a_newer_layout_is_refused_by_every_command_touching_nothing() {
    let s = app_stack("lifecycle-newer-layout");
    std::fs::create_dir_all(s.data.join(".cogno")).unwrap();
    std::fs::write(s.data.join(".cogno/layout"), "99\n").unwrap();
    let before = snapshot(&s.data);
    for command in ["up", "env", "backup"] {
        let mut cmd = Command::new(COGNO);
        cmd.args([command, "--config"])
            .arg(&s.config)
            .arg("--data")
            .arg(&s.data);
        let out = run(cmd, CLIENT);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "cogno {command}: {shown}");
        assert!(
            shown.contains("layout version 99") && shown.contains("up to 2"),
            "cogno {command} names both versions: {shown}"
        );
        assert!(
            shown.contains("help: run the newer cogno"),
            "and what to do: {shown}"
        );
        assert_eq!(diff(&before, &snapshot(&s.data)), Vec::<String>::new());
    }
}

#[test]
fn an_unversioned_data_dir_is_migrated_once_and_says_so() {
    let s = app_stack("lifecycle-migrate");
    std::fs::create_dir_all(s.data.join(".cogno")).unwrap();
    std::fs::write(s.data.join(".cogno/created"), "cogno=0.0.1\n").unwrap();
    let mut c = Cogno::up(&s);
    c.wait_line("stack is ready");
    c.find("migrated from layout version 1 to 2")
        .unwrap_or_else(|| panic!("it says so: {}", c.output()));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(EXIT), 0);
    assert_eq!(
        std::fs::read_to_string(s.data.join(".cogno/layout")).unwrap(),
        "2\n"
    );
    let mut c = Cogno::up(&s);
    c.wait_line("stack is ready");
    assert_eq!(c.find("migrated"), None, "once: {}", c.output());
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait_code(EXIT), 0);
}

/// Starts `cogno backup --to TARGET` (stdout discarded) and waits until
/// it copies from PostgreSQL: its staging directory has a `postgres` member.
fn backup_dumping(b: &Bundled, target: &Path, stderr: Stdio) -> std::process::Child {
    let child = b
        .cogno(&["backup", "--to", &target.display().to_string()])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    assert!(
        eventually(LONG, || staging_of(target).join("postgres").exists()),
        "the backup begins"
    );
    child
}

/// `.NAME.staging` beside the archive `target`: the backup's work.
fn staging_of(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap().to_string_lossy();
    target.with_file_name(format!(".{name}.staging"))
}

#[test]
fn a_stopped_stack_is_backed_up_by_starting_its_servers_alone_then_stopping_them() {
    let (b, mut c, url) = stack_with_data("lifecycle-stopped");
    stop(&mut c);
    let marker = b.s.marker();
    let none_left = || pids_within(&marker).is_empty();
    assert!(eventually(CLIENT, none_left), "the stack is down");
    let target = b.s.dir.path().join("stopped.tar.zst");

    // SIGTERM while it dumps: the servers are stopped in order, the backup
    // fails saying so, and nothing is left.
    let said = b.s.dir.path().join("interrupted.txt");
    let mut child = backup_dumping(&b, &target, std::fs::File::create(&said).unwrap().into());
    signal(child.id() as i32, Signal::SIGTERM);
    let status = child.wait().unwrap();
    let shown = std::fs::read_to_string(&said).unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{shown}");
    assert!(
        shown.contains("interrupted by SIGTERM: no archive was written")
            && shown.contains("stopped postgres, redis, temporal again"),
        "{shown}"
    );
    assert!(
        eventually(CLIENT, none_left),
        "the servers it started are stopped: {:?}",
        pids_within(&marker)
    );
    assert_eq!(hidden(b.s.dir.path()), Vec::<String>::new());

    // Its servers listen on the stack file's ports: one held by another
    // program fails the backup before any server starts, naming it.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", b.ports.redis)).unwrap();
    let (out, shown) = b.command_output(&["backup", "--to", &target.display().to_string()]);
    drop(squatter);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("the servers started for the backup did not become ready")
            && shown.contains(&b.ports.redis.to_string()),
        "{shown}"
    );
    assert!(none_left(), "{:?}", pids_within(&marker));
    assert!(!target.exists());

    // SIGKILL of `cogno backup` while it dumps: the servers it started stop
    // with it (their cogno gets SIGTERM when it dies), no archive appears.
    let mut child = backup_dumping(&b, &target, Stdio::null());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(LONG, none_left),
        "the servers it started stopped with it: {:?}",
        pids_within(&marker)
    );
    assert!(!target.exists(), "no archive under the final name");

    // SIGKILL of it and of the stack it started: the servers are left
    // running, recorded; the next backup stops them before anything starts.
    // (The first kill's leftovers go first: they are this one's kill point.)
    std::fs::remove_dir_all(staging_of(&target)).unwrap();
    let mut child = backup_dumping(&b, &target, Stdio::null());
    // Its `cogno up`: its child leading a process group of its own.
    let up: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| s.ppid == child.id() as i32 && s.pgrp == p))
        .collect();
    assert_eq!(up.len(), 1, "one `cogno up` started by the backup: {up:?}");
    signal(up[0], Signal::SIGKILL);
    child.kill().unwrap();
    child.wait().unwrap();
    let cluster = b.data().join("postgresql").display().to_string();
    assert!(
        !pids_with_cmdline(&cluster).is_empty(),
        "PostgreSQL is left running"
    );
    assert!(
        eventually(CLIENT, || pids_with_cmdline(
            &staging_of(&target).display().to_string()
        )
        .is_empty()),
        "the dump it ran died with it"
    );

    let out = run(
        b.cogno(&["backup", "--to", &target.display().to_string()]),
        LONG,
    );
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for said in [
        "left running by a cogno that was killed",
        "left by an interrupted backup",
        "the stack is stopped: starting postgres, redis, temporal for the backup",
        "stopped postgres, redis, temporal again",
    ] {
        assert!(shown.contains(said), "it says `{said}`: {shown}");
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        target.display().to_string()
    );
    assert!(
        eventually(CLIENT, none_left),
        "nothing of the stack runs afterwards: {:?}",
        pids_within(&marker)
    );
    assert_eq!(hidden(b.s.dir.path()), Vec::<String>::new());

    let restored = b.s.dir.path().join("restored");
    let out = restore(&b, &target, &restored, &[]);
    assert!(out.status.success(), "cogno restore failed: {}", text(&out));
    let mut c = Cogno::spawn(&b.s, cogno_on(&b, &restored, &["up"]));
    wait_ready(&c, Instant::now());
    assert_data_there(&b, &url);
    stop(&mut c);
}

#[test]
fn backup_of_a_data_dir_no_stack_has_run_on_is_refused_writing_nothing() {
    let b = Bundled::new("lifecycle-never-ran", User::Root);
    for data in [None, Some(b.data())] {
        if let Some(d) = data {
            std::fs::create_dir(d).unwrap();
        }
        let (out, shown) = b.command_output(&["backup"]);
        assert_eq!(out.status.code(), Some(2), "{shown}");
        assert!(
            shown.contains("no stack has run there") && shown.contains("help: check that --data"),
            "{shown}"
        );
        match data {
            None => assert!(!b.data().exists(), "nothing written"),
            Some(d) => assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "nothing written"),
        }
    }
}

#[test]
fn up_refuses_a_data_dir_an_interrupted_restore_left_part_way() {
    let s = app_stack("lifecycle-partial-restore");
    std::fs::create_dir_all(s.data.join(".cogno-restore-tmp/data")).unwrap();
    let before = snapshot(&s.data);
    let mut c = Cogno::up(&s);
    assert_eq!(c.wait_code(EXIT), 2, "{}", c.output());
    assert!(
        c.output()
            .contains("unfinished work of an interrupted `cogno restore`"),
        "{}",
        c.output()
    );
    assert_eq!(diff(&before, &snapshot(&s.data)), Vec::<String>::new());
}

#[test]
fn an_archive_without_secrets_restores_with_new_ones_and_every_row() {
    let (b, mut c, url) = stack_with_data("lifecycle-no-secrets");
    // A --to that does not exist and does not end in .tar.zst is a
    // directory to make, not the archive's name.
    let to = b.s.dir.path().join("handed-on");
    let out = run(
        b.cogno(&[
            "backup",
            "--exclude-secrets",
            "--to",
            &to.display().to_string(),
        ]),
        LONG,
    );
    assert!(out.status.success(), "{}", text(&out));
    let archive = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(
        archive.parent(),
        Some(to.as_path()),
        "{}",
        archive.display()
    );
    assert!(archive.to_string_lossy().ends_with(".tar.zst"));
    stop(&mut c);
    let listed = text(&run(
        {
            let mut t = Command::new("tar");
            t.arg("--zstd").arg("-tf").arg(&archive);
            t
        },
        CLIENT,
    ));
    assert!(!listed.contains("secrets"), "{listed}");

    let restored = b.s.dir.path().join("restored");
    let out = restore(&b, &archive, &restored, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("new ones were generated"),
        "{}",
        text(&out)
    );
    assert_ne!(
        std::fs::read(restored.join("secrets/.env")).unwrap(),
        std::fs::read(b.secrets_file()).unwrap()
    );
    let mut c = Cogno::spawn(&b.s, cogno_on(&b, &restored, &["up"]));
    wait_ready(&c, Instant::now());
    let env = parse_env(&text(&run(cogno_on(&b, &restored, &["env"]), CLIENT)));
    assert_ne!(env["DATABASE_URL"], url, "a new password");
    assert_eq!(
        sql(&env["DATABASE_URL"], "SELECT count(*) FROM kept"),
        "1000"
    );
    stop(&mut c);
}
