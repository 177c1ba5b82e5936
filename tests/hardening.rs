//! What PID 1 does to protect itself and the stack from its own services
//! (issue 10): inherited descriptors never reach services, services cannot
//! gain privileges unless they opt out, and cogno's memory — which holds
//! every secret — is not dumpable.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// A field of /proc/PID/status (or /proc/PID/limits line) as text.
fn proc_field(pid: i32, file: &str, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_descriptor_handed_to_cogno_never_reaches_a_service() {
    let s = Stack::new("fd-leak");
    s.write(
        "services:\n  show:\n    command: [\"sh\", \"-c\", \"echo fds: $(ls /proc/self/fd | tr '\\\\n' ' ')\"]\n    oneshot: true\n",
    );
    // A wrapper that leaves fd 7 open (no close-on-exec) when it execs cogno.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "exec 7</etc/hostname; exec {COGNO} up --config {} --data {}",
        s.config.display(),
        s.data.display()
    ));
    let mut cogno = Cogno::spawn(&s, cmd);
    let line = cogno.wait_line("fds: ");
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    let fds: Vec<&str> = line
        .split("fds: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    // 0-2, and the descriptor `ls` itself opened on /proc/self/fd.
    assert_eq!(fds, ["0", "1", "2", "3"], "{line}");
}

#[test]
fn services_cannot_gain_privileges_unless_they_opt_out() {
    let s = Stack::new("nnp");
    let show = |name: &str| {
        argv(&[
            "sh",
            "-c",
            &format!("echo {name} $(grep NoNewPrivs /proc/self/status)"),
        ])
    };
    s.write(&format!(
        "services:\n  \
         default: {{command: {}, oneshot: true}}\n  \
         optout: {{command: {}, oneshot: true, no_new_privs: false}}\n",
        show("default"),
        show("optout")
    ));
    let mut cogno = Cogno::up(&s);
    let default = cogno.wait_line("default NoNewPrivs:");
    let optout = cogno.wait_line("optout NoNewPrivs:");
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    assert!(default.ends_with("NoNewPrivs: 1"), "{default}");
    // Only meaningful where the test itself may still gain privileges.
    if proc_field(std::process::id() as i32, "status", "NoNewPrivs:") == "0" {
        assert!(optout.ends_with("NoNewPrivs: 0"), "{optout}");
    }
}

#[test]
fn cogno_is_not_dumpable_and_services_keep_the_descriptor_limit_they_would_have() {
    let s = Stack::new("dumpable");
    s.write("services:\n  idle:\n    command: [\"sleep\", \"600\"]\n");
    // As an unprivileged user, so that /proc shows the difference: the files
    // of a process that is not dumpable belong to root.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(COGNO)
        .args(["up", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data);
    std::fs::set_permissions(
        s.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut cogno = Cogno::spawn(&s, cmd);
    cogno.wait_line("stack is ready");
    let pid = cogno.pid();
    let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid();
    assert_eq!(
        owner, 0,
        "cogno's /proc entries are root's: it is not dumpable"
    );
    assert!(
        proc_field(pid, "limits", "Max core file size").starts_with("0"),
        "{}",
        proc_field(pid, "limits", "Max core file size")
    );
    // The service gets the soft limit cogno was started with back.
    let mine = proc_field(std::process::id() as i32, "limits", "Max open files");
    let service = cogno.service_pid("idle");
    assert_eq!(proc_field(service, "limits", "Max open files"), mine);
    cogno.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}
