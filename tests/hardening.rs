//! What PID 1 does to protect itself and the stack from its own services
//! (issue 10): inherited descriptors never reach services, services cannot
//! gain privileges unless they opt out, cogno's memory — which holds every
//! secret — is not dumpable, and running out of descriptors never makes a
//! service fatal.

use crate::common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

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
    let mut cogno = Cogno::spawn(&s, s.up_after_shell("exec 7</etc/hostname"));
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

/// VmHWM (peak resident set) of `pid`, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    proc_field(pid, "status", "VmHWM:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM")
}

#[test]
fn a_service_writing_long_lines_cannot_make_cogno_hold_its_output() {
    let s = Stack::new("long-lines");
    let done = s.file("done");
    // 300 lines of 900 KB: 270 MB that a ring of 1000 lines would keep.
    let script = format!(
        "import sys\nfor i in range(300):\n    sys.stdout.write('x' * 900000 + '\\n')\nsys.stdout.flush()\nopen({done:?}, 'w').close()\n"
    );
    s.write(&format!(
        "services:\n  chatty:\n    command: {}\n    oneshot: true\n  idle:\n    command: [\"sleep\", \"600\"]\n",
        argv(&["python3", "-c", &script])
    ));
    let mut cogno = s.up_unwatched(std::process::Stdio::null());
    let child = &mut cogno.child;
    assert!(
        eventually(TIMEOUT * 3, || std::path::Path::new(&done).exists()),
        "the service never finished writing"
    );
    let peak = peak_rss_kib(child.id() as i32);
    signal(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    assert!(
        peak < 64 << 10,
        "cogno's peak resident memory was {} MiB",
        peak >> 10
    );
}

#[test]
fn idle_health_connections_cannot_starve_supervision_of_descriptors() {
    let s = Stack::new("health-fds");
    let port = free_port();
    s.write(&format!(
        "health_listen: 127.0.0.1:{port}\nservices:\n  worker:\n    command: [\"sleep\", \"600\"]\n    critical: true\n"
    ));
    // A low descriptor limit, as a container may have: 128, soft and hard.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=128:128", "--"])
        .arg(COGNO)
        .args(["up", "--config"])
        .arg(&s.config)
        .arg("--data")
        .arg(&s.data);
    let mut cogno = Cogno::spawn(&s, cmd);
    cogno.wait_line("stack is ready");
    // More idle clients than descriptors: anyone who reaches the port can do this.
    let idle: Vec<std::net::TcpStream> = (0..150)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() >= 100, "only {} connections", idle.len());
    // Past the cap, a connection is closed at once: it reads end of file.
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1];
    let n = std::io::Read::read(&mut extra, &mut buf);
    assert!(
        matches!(n, Ok(0)),
        "a connection past the cap was kept: {n:?}"
    );
    // Supervision still has descriptors: a crash is restarted.
    let before = cogno.service_pid("worker");
    signal(before, nix::sys::signal::Signal::SIGKILL);
    cogno.wait_count("worker: started, pid", 2);
    assert_ne!(cogno.service_pid("worker"), before);
    drop(idle);
    cogno.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    assert!(
        !cogno.output().contains("Too many open files"),
        "{}",
        cogno.output()
    );
}

/// The names in `dump` (a file of NAME=value lines, as `env` writes).
fn names_in(dump: &str) -> Vec<String> {
    std::fs::read_to_string(dump)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .collect()
}

#[test]
fn services_get_only_the_secrets_they_need() {
    let s = Stack::new("secret-scope");
    let port = free_port();
    // redis-server behind a wrapper that writes down the environment it got
    // (into a directory the redis user may write).
    let dumps = s.dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    std::fs::set_permissions(&dumps, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let wrapper = s.file("redis-wrapper");
    let redis_env = dumps.join("redis.env").to_string_lossy().into_owned();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        &wrapper,
        // Not for pre-flight's `--version`: the supervised server's environment.
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] || env > {redis_env}\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dump = |name: &str| {
        argv(&[
            "sh",
            "-c",
            &format!("env > {}/{name}.env; exec sleep 600", dumps.display()),
        ])
    };
    s.write(&format!(
        "services:\n  \
         redis: {{kind: redis, port: {port}, bin: {wrapper:?}}}\n  \
         all: {{command: {}, priority: 200}}\n  \
         some: {{command: {}, priority: 200, secrets: [NEXTAUTH_SECRET]}}\n",
        dump("all"),
        dump("some")
    ));
    // A secret given in cogno's own environment must not leak through it either.
    let mut cmd = s.up_command();
    cmd.env("NEXTAUTH_SECRET", "from-the-environment-0123456789abcdef");
    let mut cogno = Cogno::spawn(&s, cmd);
    cogno.wait_line("stack is ready");
    let app_secrets = [
        "NEXTAUTH_SECRET",
        "INTERNAL_API_SECRET",
        "JWT_SHARED_SECRET",
        "REDIS_PASSWORD",
        "REDIS_URL",
    ];
    let redis = names_in(&redis_env);
    assert!(
        redis.contains(&"COGNO_SERVICE".to_owned()),
        "the supervised wrapper ran: {redis:?}"
    );
    for secret in app_secrets {
        assert!(
            !redis.contains(&secret.to_owned()),
            "redis-server got {secret}"
        );
    }
    let all = names_in(&dumps.join("all.env").to_string_lossy());
    // A server's password is given only to a service that lists it (issue
    // 12): `all` has it inside REDIS_URL.
    assert!(!all.contains(&"REDIS_PASSWORD".to_owned()), "{all:?}");
    for secret in app_secrets.into_iter().filter(|s| *s != "REDIS_PASSWORD") {
        assert!(
            all.contains(&secret.to_owned()),
            "`all` lacks {secret}: {all:?}"
        );
    }
    let some = names_in(&dumps.join("some.env").to_string_lossy());
    assert!(some.contains(&"NEXTAUTH_SECRET".to_owned()), "{some:?}");
    for secret in &app_secrets[1..] {
        assert!(!some.contains(&secret.to_string()), "`some` got {secret}");
    }
    cogno.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());

    // A secret the stack does not have is named, before anything starts.
    s.write(&format!(
        "services:\n  \
         redis: {{kind: redis, port: {port}}}\n  \
         app: {{command: [sleep, '600'], secrets: [NEXTAUTH_SECRT]}}\n"
    ));
    let mut cogno = Cogno::up(&s);
    assert_eq!(cogno.wait_code(TIMEOUT), 2, "{}", cogno.output());
    let out = cogno.output();
    assert!(
        out.contains("`NEXTAUTH_SECRT`") && out.contains("NEXTAUTH_SECRET"),
        "{out}"
    );
}

/// The lowest descriptor number `pid` has free.
fn lowest_free_fd(pid: i32) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read cogno's fds")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// Sets `pid`'s RLIMIT_NOFILE to `limit`.
fn set_nofile(pid: i32, limit: libc::rlimit) {
    // SAFETY: prlimit on a valid struct, no old value asked for.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn a_spawn_without_descriptors_is_retried_and_never_makes_the_service_fatal() {
    let s = Stack::new("emfile");
    // One failed start would be fatal: only a spawn cogno could not make
    // for lack of descriptors is allowed not to count.
    s.write(
        "services:\n  flap:\n    command: [\"sleep\", \"2\"]\n    restart: always\n    \
         startsecs: 0s\n    max_restarts: 1\n",
    );
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("flap: started, pid");
    let pid = cogno.pid();
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reading into a valid struct.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut before) },
        0
    );
    // No descriptor left but those the running instance holds: once it
    // exits, its restart cannot make its pipes (as with 150 idle clients).
    let full = lowest_free_fd(pid);
    // The soft limit only: raising it back needs no privilege.
    set_nofile(
        pid,
        libc::rlimit {
            rlim_cur: full,
            rlim_max: before.rlim_max,
        },
    );
    cogno.wait_line("flap: cannot start for now");
    // Several retries, all starved.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cogno.count("flap: started, pid"), 1, "{}", cogno.output());
    set_nofile(pid, before);
    cogno.wait_line("flap: could start again after");
    cogno.wait_count("flap: started, pid", 2);
    let out = cogno.output();
    assert_eq!(cogno.count("cannot start for now"), 1, "told once:\n{out}");
    assert!(!out.contains("FATAL") && !out.contains("fatal"), "{out}");
    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}
