//! Scheduled backups (`backup:` in the stack file, issue 11): cogno runs its
//! own `cogno backup` on a cron schedule, keeps the newest `keep` of its own
//! archives and nothing else is touched; a failure is logged, shown by
//! `cogno status` and published as an event. The schedules here have a
//! seconds field (every 2 s), and every wait is for a log line or an event.

use crate::common::{Cogno, Stack, COGNO};
use crate::config_errors::{config_error, At};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A few scheduled backups, on a busy machine.
const LONG: Duration = Duration::from_secs(60);

/// `cogno ARGS --data DATA` against the running stack: stdout, or a panic
/// with stderr.
fn cli(s: &Stack, args: &[&str]) -> String {
    let out = Command::new(COGNO)
        .args(args)
        .arg("--data")
        .arg(&s.data)
        .env_remove("COGNO_DATA_DIR")
        .env_remove("COGNO_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run cogno");
    assert!(
        out.status.success(),
        "cogno {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list the directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Waits until `n` lines of cogno's output contain `needle`.
fn wait_count(c: &Cogno, needle: &str, n: usize) {
    // Each line is looked at once, in order: counting them is enough.
    let seen = std::cell::Cell::new(0);
    c.wait_line_by(&format!("number {n} containing {needle:?}"), LONG, |l| {
        seen.set(seen.get() + usize::from(l.contains(needle)));
        seen.get() >= n
    });
}

#[test]
fn a_scheduled_backup_fires_and_keeps_only_the_newest_of_its_own_archives() {
    let s = Stack::new("sched-backup");
    let out = s.dir.path().join("archives");
    std::fs::create_dir(&out).unwrap();
    // Not cogno's: the retention must leave them alone, whatever they look like.
    let foreign = [
        "notes.txt",
        "cogno-backup-manual.tar.zst",
        "cogno-backup-20000101T000000Z.tar.zst.keep",
    ];
    for f in foreign {
        std::fs::write(out.join(f), "mine").unwrap();
    }
    s.write(
        r#"
backup:
  schedule: "*/2 * * * * *"
  keep: 2
  to: archives
services:
  web:
    command: sleep 1000
"#,
    );
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    // Four backups: the third and the fourth each remove the oldest one.
    wait_count(&c, "scheduled backup: ", 4);
    wait_count(&c, "backup: removed cogno-backup-", 2);
    let archives: Vec<String> = names(&out)
        .into_iter()
        .filter(|n| !foreign.contains(&n.as_str()))
        .collect();
    assert_eq!(archives.len(), 2, "{archives:?}\n{}", c.output());
    for f in foreign {
        assert_eq!(std::fs::read_to_string(out.join(f)).unwrap(), "mine");
    }
    // The newest archive is complete: every member's checksum holds.
    let newest = out.join(&archives[1]);
    let manifest = cogno::datadir::archive::read(&newest, None)
        .unwrap_or_else(|e| panic!("{}: {e}", newest.display()));
    assert!(manifest
        .members
        .iter()
        .any(|m| m.path.starts_with("stack/")));
    // `cogno status` names the last one and when the next is due.
    let status = cli(&s, &["status"]);
    assert!(status.contains("last backup: "), "{status}");
    assert!(status.contains("next backup: "), "{status}");
    assert!(
        status.contains("schedule `*/2 * * * * *`, keeping 2 in"),
        "{status}"
    );
    assert!(!status.contains("failed"), "{status}");
}

/// `cogno events --json`, read line by line by a thread.
struct Events {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Events {
    fn follow(s: &Stack) -> Events {
        let mut child = Command::new(COGNO)
            .args(["events", "--json", "--data"])
            .arg(&s.data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run cogno events");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Events { child, lines }
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no event containing {needle:?}: {e}"),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_failed_scheduled_backup_is_logged_shown_in_status_an_event_and_a_notice() {
    let s = Stack::new("sched-backup-fails");
    // A directory under a regular file cannot be made, not even by root.
    std::fs::write(s.dir.path().join("plain-file"), "").unwrap();
    let notices = s.file("notices");
    let hook = crate::common::argv(&[
        "sh",
        "-c",
        &format!("echo \"$COGNO_EVENT: $COGNO_EVENT_REASON\" >> {notices}"),
    ]);
    s.write(&format!(
        r#"
backup:
  schedule: "*/2 * * * * *"
  to: plain-file/backups
notify:
  command: {hook}
  user: root
services:
  web:
    command: sleep 1000
"#
    ));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    let events = Events::follow(&s);
    let ev = events.wait_for(r#""kind":"backup_failed""#);
    assert!(ev.contains("cannot create"), "{ev}");
    c.wait_line("scheduled backup failed: cannot create");
    let status = cli(&s, &["status"]);
    let last = status
        .lines()
        .find(|l| l.starts_with("last backup: "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(last.contains("failed: cannot create"), "{status}");
    let json = cli(&s, &["status", "--json"]);
    assert!(json.contains(r#""ok": false"#), "{json}");
    // Still supervising: the failure touched nothing else.
    assert!(status.starts_with("ready"), "{status}");
    // `backup_failed` is among the notices sent by default.
    assert!(
        crate::common::eventually(LONG, || std::fs::read_to_string(&notices)
            .is_ok_and(|n| n.contains("backup_failed: cannot create"))),
        "no backup_failed notice\n{}",
        c.output()
    );
}

#[test]
fn a_bad_cron_expression_is_a_config_error() {
    let yaml = "\
backup:
  schedule: \"0 25 * * *\"
services:
  web:
    command: sleep 1000
";
    config_error(
        "sched-bad-cron",
        yaml,
        &[
            "`backup.schedule`: `0 25 * * *` is not a cron schedule: the hour field `25`",
            "0 3 * * *",
        ],
        At::Text("schedule"),
    );
}

#[test]
fn backup_keep_zero_and_unknown_keys_are_config_errors() {
    let yaml = "\
backup:
  schedule: \"0 3 * * *\"
  keep: 0
services:
  web:
    command: sleep 1000
";
    config_error(
        "sched-keep-0",
        yaml,
        &["`backup.keep` is 0"],
        At::Text("keep"),
    );
    let yaml = "\
backup:
  schedule: \"0 3 * * *\"
  retain: 3
services:
  web:
    command: sleep 1000
";
    config_error(
        "sched-unknown-key",
        yaml,
        &["backup.retain", "unknown field `retain`"],
        At::Text("retain"),
    );
}

#[test]
fn a_scheduled_oneshot_runs_on_its_schedule_one_run_at_a_time_and_at_start_only_when_asked() {
    let s = Stack::new("sched-oneshot");
    let (runs, at_start, never) = (s.file("runs"), s.file("at-start"), s.file("never"));
    // Each run outlasts the 2 s between times: the next time finds it running.
    let job = crate::common::argv(&[
        "sh",
        "-c",
        &format!("echo start >> {runs}; sleep 3; echo end >> {runs}"),
    ]);
    s.write(&format!(
        r#"
services:
  web:
    command: sleep 1000
  job:
    oneshot: true
    schedule: "*/2 * * * * *"
    command: {job}
  first:
    oneshot: true
    schedule: "0 0 1 1 *"
    run_at_start: true
    command: ["touch", "{at_start}"]
  yearly:
    oneshot: true
    schedule: "0 0 1 1 *"
    command: ["touch", "{never}"]
  # A higher priority number waits for the lower ones, but not for the
  # scheduled oneshots among them (`yearly` would keep it waiting a year).
  late:
    command: sleep 1000
    priority: 200
"#
    ));
    let c = Cogno::up(&s);
    c.wait_line("stack is ready");
    wait_count(&c, "job: completed", 2);
    c.wait_line("job: the run due now is skipped: the last one is still running");
    // Never two at once: every start is followed by its end before the next.
    let lines = std::fs::read_to_string(&runs).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert!(lines.len() >= 4, "{lines:?}");
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(*l, ["start", "end"][k % 2], "{lines:?}\n{}", c.output());
    }
    assert!(
        Path::new(&at_start).exists(),
        "run_at_start: it ran at start"
    );
    assert!(
        !Path::new(&never).exists(),
        "not at start without run_at_start"
    );
    let status = cli(&s, &["status"]);
    let yearly = status
        .lines()
        .find(|l| l.starts_with("yearly"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(yearly.contains("stopped"), "{status}");
    let late = status.lines().find(|l| l.starts_with("late")).unwrap();
    assert!(late.contains("running"), "{status}");
    assert!(status.starts_with("ready"), "{status}");
}

#[test]
fn a_schedule_on_a_long_running_service_is_a_config_error() {
    let yaml = "\
services:
  web:
    command: sleep 1000
    schedule: \"0 3 * * *\"
";
    config_error(
        "sched-not-oneshot",
        yaml,
        &["`web` has a `schedule` but is not a oneshot"],
        At::Text("schedule"),
    );
    let yaml = "\
services:
  job:
    oneshot: true
    command: [\"true\"]
    schedule: \"0 3 * * * * *\"
";
    config_error(
        "sched-7-fields",
        yaml,
        &["services.job.schedule", "is not a cron schedule"],
        At::Text("schedule"),
    );
}

#[test]
fn a_scheduled_backup_of_a_running_postgres_lands_in_the_data_directory() {
    use crate::bundled::{Bundled, User, READY};
    let b = Bundled::new("sched-backup-pg", User::Root);
    // PostgreSQL alone keeps it quick; no `to`: DATA/backups.
    b.s.write(&format!(
        "backup: {{schedule: \"*/5 * * * * *\", keep: 1}}\n\
         services:\n  postgres: {{kind: postgres, port: {}}}\n",
        b.ports.pg
    ));
    let c = b.up();
    c.wait_line_by("containing \"stack is ready\"", READY, |l| {
        l.contains("stack is ready")
    });
    wait_count(&c, "scheduled backup: ", 2);
    c.wait_line("backup: removed cogno-backup-");
    let dir = b.data().join("backups");
    let archives = names(&dir);
    assert_eq!(archives.len(), 1, "keep: 1 leaves one: {archives:?}");
    let manifest = cogno::datadir::archive::read(&dir.join(&archives[0]), None)
        .unwrap_or_else(|e| panic!("{}: {e}", archives[0]));
    assert_eq!(
        manifest.server("postgres").map(|s| s.service.as_str()),
        Some("postgres")
    );
    assert!(
        manifest
            .members
            .iter()
            .any(|m| m.path == "postgres/pg_dumpall.sql.zst" && m.size > 0),
        "{:?}",
        manifest.members
    );
    assert!(manifest.secrets_included);
}

#[test]
fn a_scheduled_backup_runs_one_at_a_time_and_a_stop_kills_it_without_a_failure_notice() {
    use crate::bundled::{Bundled, User, READY};
    use crate::common::{all_pids, cmdline};
    let b = Bundled::new("sched-backup-stop", User::Root);
    // Every second, and a backup of Redis takes 5 s (redis-cli --rdb waits
    // for `repl-diskless-sync-delay`): one is always running when the next
    // time comes.
    b.s.write(&format!(
        "backup: {{schedule: \"* * * * * *\", keep: 1}}\n\
         services:\n  redis: {{kind: redis, port: {}}}\n",
        b.ports.redis
    ));
    let mut c = b.up();
    c.wait_line_by("containing \"stack is ready\"", READY, |l| {
        l.contains("stack is ready")
    });
    let data = b.data().display().to_string();
    let backups = || -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&p| {
                let argv = cmdline(p);
                argv.get(1).is_some_and(|a| a == "backup") && argv.contains(&data)
            })
            .collect()
    };
    assert!(
        crate::common::eventually(LONG, || !backups().is_empty()),
        "no scheduled backup started\n{}",
        c.output()
    );
    // One at a time: the times that come meanwhile are skipped, and said so.
    c.wait_line_by("saying a time was skipped", LONG, |l| {
        l.contains("skipped: the one started at")
    });
    // The next one: stopped while it runs.
    assert!(
        crate::common::eventually(LONG, || !backups().is_empty()),
        "no further backup\n{}",
        c.output()
    );
    assert_eq!(backups().len(), 1, "one backup at a time");
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(c.wait_code(LONG), 0, "{}", c.output());
    assert!(backups().is_empty(), "the backup outlived cogno");
    assert!(
        !c.output().contains("scheduled backup failed"),
        "{}",
        c.output()
    );
}

#[test]
fn a_stack_of_scheduled_oneshots_alone_stays_up_between_their_runs() {
    let s = Stack::new("sched-only");
    s.write(
        r#"
services:
  job:
    oneshot: true
    schedule: "*/2 * * * * *"
    command: ["true"]
"#,
    );
    let mut c = Cogno::up(&s);
    wait_count(&c, "job: completed", 2);
    assert!(!c.exited(), "{}", c.output());
    assert!(
        !c.output().contains("nothing left to run"),
        "{}",
        c.output()
    );
}
