//! cogno as an init: PID 1 of a fresh PID namespace (`unshare --pid --fork
//! --mount-proc`, as root), and as a subreaper when it is not PID 1. Orphans
//! of services must be adopted and reaped, and SIGTERM must work even though
//! `unshare --fork` hands its child a blocked SIGTERM.

use crate::common::*;
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The namespace a process's pid belongs to, e.g. `pid:[4026532]`.
fn pid_ns(pid: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Host pids of every process in `ns`.
fn members(ns: &std::path::Path) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| pid_ns(p).as_deref() == Some(ns))
        .collect()
}

/// The signals blocked in a process, from /proc/PID/status.
fn blocked_signals(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .expect("SigBlk in status")
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

/// Each thread's name and blocked mask, for a failure message.
fn thread_masks(pid: i32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("/proc/{pid}/task unreadable");
    };
    tasks
        .flatten()
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or("?")
                    .trim()
                    .to_owned()
            };
            format!(
                "{} {} SigBlk {}",
                t.file_name().to_string_lossy(),
                field("Name:"),
                field("SigBlk:")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn sig_bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// The signals ignored by a process, from /proc/PID/status.
fn ignored_signals(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .expect("SigIgn in status")
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

/// Makes `cmd` start with SIGTERM and SIGINT blocked (what util-linux
/// `unshare --fork` 2.39+ hands its child) and SIGQUIT ignored, whatever
/// version of unshare is installed here.
fn hostile_signal_state(cmd: &mut Command) {
    // SAFETY: sigprocmask and sigaction are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{
                sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow,
            };
            let mut set = SigSet::empty();
            set.add(Signal::SIGTERM);
            set.add(Signal::SIGINT);
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
            let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
            sigaction(Signal::SIGQUIT, &ignore)?;
            Ok(())
        });
    }
}

/// Lines cogno wrote at WARN or ERROR level.
fn bad_lines(c: &Cogno) -> Vec<String> {
    c.own_lines()
        .into_iter()
        .filter(|m| {
            let m = m.trim_start();
            m.starts_with("WARN") || m.starts_with("ERROR")
        })
        .collect()
}

#[test]
fn pid1_in_a_pid_namespace_reaps_orphans_and_obeys_sigterm() {
    assert!(is_root(), "this test needs root (unshare --pid)");
    let s = Stack::new("pid1");
    let (parent, leaver, steady) = (
        s.file("parent.pids"),
        s.file("leaver.pids"),
        s.file("steady.log"),
    );
    s.write(&format!(
        r#"
shutdown_budget: 30s
services:
  parent:
    command: {parent_cmd}
    startsecs: 200ms
  leaver:
    oneshot: true
    command: {leaver_cmd}
  steady:
    command: {steady_cmd}
    startsecs: 200ms
    stop_timeout: 20s
"#,
        // Orphans that end on their own: cogno (PID 1) must reap them.
        parent_cmd = fx(
            "orphan.py",
            &[
                &parent,
                "--mode",
                "orphan",
                "--repeat",
                "5",
                "--interval",
                "0.1",
                "--child-life",
                "0.3"
            ]
        ),
        // A daemonized grandchild that outlives its oneshot: killed and reaped.
        leaver_cmd = fx(
            "orphan.py",
            &[&leaver, "--mode", "daemon", "--main-life", "0.5"]
        ),
        steady_cmd = fx("trap.py", &[&steady]),
    ));
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", COGNO, "up", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data);
    hostile_signal_state(&mut cmd);
    let mut cogno = Cogno::spawn(&s, cmd);
    cogno.wait_line("running as PID 1");
    let unshare_pid = cogno.pid();
    assert_ne!(
        blocked_signals(unshare_pid) & sig_bit(libc::SIGTERM),
        0,
        "test setup: SIGTERM not blocked"
    );
    let mut host_pid = None;
    assert!(
        eventually(TIMEOUT, || {
            host_pid = children_of(unshare_pid).first().copied();
            host_pid.is_some()
        }),
        "no child of unshare"
    );
    let host_pid = host_pid.unwrap();
    assert!(cmdline(host_pid)
        .first()
        .is_some_and(|a| a.ends_with("cogno")));
    let ns = pid_ns(host_pid).expect("cogno's pid namespace");
    assert_ne!(Some(&ns), pid_ns(std::process::id() as i32).as_ref());

    cogno.wait_line_by("`parent | done`", TIMEOUT, |l| {
        l.starts_with("parent ") && l.ends_with("| done")
    });
    cogno.wait_line("leaver: completed");
    cogno.wait_line("steady: healthy");
    wait_ready_line(&cogno, "steady");

    // Orphans were adopted by PID 1 of the namespace, i.e. cogno.
    let adopted: Vec<String> = read_lines_of(&parent)
        .into_iter()
        .filter(|l| l.starts_with("grandchild "))
        .collect();
    assert_eq!(adopted.len(), 5, "{adopted:?}");
    for l in &adopted {
        assert_eq!(
            l.split(' ').nth(2),
            Some("1"),
            "orphan not adopted by PID 1: {l}"
        );
    }
    let daemon = read_lines_of(&leaver)
        .into_iter()
        .find(|l| l.starts_with("grandchild "))
        .expect("leaver's daemon ran");
    assert_eq!(daemon.split(' ').nth(2), Some("1"), "{daemon}");

    // Nothing of theirs is left, and no zombie in the namespace.
    let clean = eventually(Duration::from_secs(5), || {
        let zombies = members(&ns)
            .into_iter()
            .filter_map(proc_stat)
            .any(|p| p.state == 'Z');
        !zombies
            && pids_with_cmdline(&parent).len() == 1 // parent's main process only
            && pids_with_cmdline(&leaver).is_empty()
    });
    assert!(
        clean,
        "namespace processes: {:?}",
        members(&ns)
            .into_iter()
            .map(|p| (proc_stat(p), cmdline(p)))
            .collect::<Vec<_>>()
    );
    assert!(
        bad_lines(&cogno).is_empty(),
        "cogno complained:\n{}",
        cogno.output()
    );

    // SIGTERM to cogno itself (not to unshare): it was started with SIGTERM
    // blocked, as `unshare --fork` leaves it; cogno must have unblocked it.
    assert_eq!(
        blocked_signals(host_pid) & sig_bit(libc::SIGTERM),
        0,
        "SIGTERM is blocked in cogno"
    );
    let asked = Instant::now();
    signal(host_pid, Signal::SIGTERM);
    cogno.wait_line("SIGTERM received: stopping the stack");
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    // steady exits on SIGTERM: nothing had to wait for its 20s stop_timeout.
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    assert!(cogno
        .output()
        .contains("steady: stopped (exited with code 0)"));
    assert!(read_lines_of(&steady)
        .iter()
        .any(|l| l.ends_with(" SIGTERM")));
    assert!(
        bad_lines(&cogno).is_empty(),
        "cogno complained:\n{}",
        cogno.output()
    );
    assert!(!exists(host_pid));
}

fn wait_ready_line(c: &Cogno, name: &str) {
    c.wait_line_by(&format!("`{name} | ready`"), TIMEOUT, |l| {
        l.starts_with(&format!("{name} ")) && l.ends_with("| ready")
    });
}

#[test]
fn subreaper_adopts_and_reaps_orphans_when_not_pid1() {
    let s = Stack::new("subreaper");
    let pids = s.file("parent.pids");
    s.write(&format!(
        r#"
services:
  parent:
    command: {cmd}
    startsecs: 200ms
"#,
        cmd = fx(
            "orphan.py",
            &[
                &pids,
                "--mode",
                "orphan",
                "--repeat",
                "3",
                "--interval",
                "0.1",
                "--child-life",
                "1"
            ]
        ),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("running as a subreaper");
    let me = cogno.pid();
    wait_lines(&pids, 4);
    let orphans = recorded_pids(&pids, "grandchild");
    assert_eq!(orphans.len(), 3);
    for l in read_lines_of(&pids)
        .iter()
        .filter(|l| l.starts_with("grandchild "))
    {
        assert_eq!(
            l.split(' ').nth(2),
            Some(me.to_string().as_str()),
            "not adopted by cogno: {l}"
        );
    }
    // While they live, they are cogno's children.
    let alive: Vec<i32> = orphans.iter().copied().filter(|&p| exists(p)).collect();
    for p in &alive {
        if let Some(st) = proc_stat(*p) {
            assert_eq!(st.ppid, me, "orphan {p} has parent {}", st.ppid);
        }
    }

    cogno.wait_line_by("`parent | done`", TIMEOUT, |l| {
        l.starts_with("parent ") && l.ends_with("| done")
    });
    let clean = eventually(Duration::from_secs(5), || {
        zombies_of(me).is_empty() && orphans.iter().all(|&p| !exists(p))
    });
    assert!(
        clean,
        "zombies of cogno: {:?}; orphans: {:?}",
        zombies_of(me),
        orphans.iter().map(|&p| proc_stat(p)).collect::<Vec<_>>()
    );
    assert!(
        bad_lines(&cogno).is_empty(),
        "cogno complained:\n{}",
        cogno.output()
    );

    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

#[test]
fn inherited_blocked_and_ignored_signals_are_reset_for_cogno_and_services() {
    let s = Stack::new("sigstate");
    let log = s.file("svc.log");
    s.write(&format!(
        r#"
services:
  svc:
    command: {cmd}
    startsecs: 200ms
"#,
        cmd = fx("trap.py", &[&log]),
    ));
    let mut cmd = s.up_command();
    hostile_signal_state(&mut cmd);
    let mut cogno = Cogno::spawn(&s, cmd);
    cogno.wait_line("svc: healthy");
    wait_ready_line(&cogno, "svc");
    let (me, svc) = (cogno.pid(), cogno.service_pid("svc"));
    let wanted = sig_bit(libc::SIGTERM) | sig_bit(libc::SIGINT) | sig_bit(libc::SIGQUIT);
    // Read until clear: a one-off CI failure saw exactly the inherited mask
    // (SIGINT|SIGTERM) after "ready", which no run here reproduced; a mask
    // that stays blocked still fails, with every thread's mask to tell why.
    assert!(
        eventually(Duration::from_secs(5), || blocked_signals(me) & wanted == 0),
        "cogno still blocks SIGTERM/SIGINT/SIGQUIT: {}\n{}",
        thread_masks(me),
        cogno.output()
    );
    assert_eq!(
        ignored_signals(me) & wanted,
        0,
        "cogno still ignores SIGQUIT"
    );
    // The service starts from a clean slate too (trap.py only installs handlers).
    assert_eq!(
        blocked_signals(svc) & wanted,
        0,
        "the service inherited blocked signals"
    );

    signal(me, Signal::SIGINT);
    cogno.wait_line("SIGINT received: stopping the stack");
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    assert!(read_lines_of(&log).iter().any(|l| l.ends_with(" SIGTERM")));
}

/// As PID 1 a signal with its default action is ignored, so a stop during
/// pre-flight (a PostgreSQL download can take minutes; here a redis-server
/// whose `--version` never answers) was held until pre-flight ended. It now
/// ends cogno at once, with 128 + SIGTERM and nothing written.
#[test]
fn sigterm_during_preflight_stops_pid1_at_once() {
    assert!(is_root(), "this test needs root (unshare --pid)");
    let s = Stack::new("pid1-preflight");
    let started = s.file("version-asked");
    let slow = s.file("slow-redis-server");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\ntouch {started}\nexec sleep 600\n"),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.write(&format!(
        "services:\n  redis: {{kind: redis, port: {}, bin: {slow:?}}}\n",
        free_port()
    ));
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", COGNO, "up", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data);
    let mut cogno = Cogno::spawn(&s, cmd);
    assert!(
        eventually(TIMEOUT, || std::path::Path::new(&started).exists()),
        "pre-flight never asked the version: {}",
        cogno.output()
    );
    let host_pid = children_of(cogno.pid())
        .first()
        .copied()
        .expect("cogno, child of unshare");
    let t = Instant::now();
    signal(host_pid, Signal::SIGTERM);
    let code = cogno.wait_code(TIMEOUT);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(code, 128 + libc::SIGTERM, "{}", cogno.output());
    assert!(cogno
        .output()
        .contains("stopped before anything was started"));
    assert!(!s.data.exists(), "pre-flight wrote nothing");
}
