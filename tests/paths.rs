//! Root never follows a path it does not own (issue 10, items 1, 3 and 4):
//! each test plays a service user or another local user who plants links,
//! FIFOs or writable directories in or around the data directory, and
//! checks that cogno, running as root, refuses or stays harmless — nothing
//! outside DATA changes owner or mode, and no foreign content is echoed.

use crate::common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a root-only file outside DATA holds: it must never be printed.
const SECRET: &str = "ROOT-ONLY-CONTENT-4f1c";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A root-only directory outside DATA with `n` root-only files f0…, and a
/// snapshot of (path, uid, mode) of everything in it.
fn root_only_tree(s: &Stack, n: usize) -> PathBuf {
    let dir = s.dir.path().join("outside");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i}")), SECRET).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn owners(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut out = vec![];
    let m = std::fs::symlink_metadata(dir).unwrap();
    out.push((dir.to_owned(), m.uid(), m.mode()));
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p, m.uid(), m.mode()));
    }
    out.sort();
    out
}

/// A stack of one oneshot service: nothing about the data directory depends on it.
fn trivial(tag: &str) -> Stack {
    let s = Stack::new(tag);
    s.write("services:\n  hello:\n    command: [\"true\"]\n    oneshot: true\n");
    s
}

/// Runs `cogno up` to its end and returns (exit status, output).
fn up_to_end(s: &Stack, cmd: Command) -> (i32, String) {
    let mut cogno = Cogno::spawn(s, cmd);
    let code = cogno.wait_code(TIMEOUT);
    (code, cogno.output())
}

fn refused(s: &Stack) -> String {
    let (code, out) = up_to_end(s, s.up_command());
    assert_eq!(code, 2, "must be refused before starting:\n{out}");
    assert!(!out.contains(SECRET), "foreign content echoed:\n{out}");
    out
}

#[test]
fn a_data_directory_owned_by_another_user_is_refused() {
    if !is_root() {
        return;
    }
    let s = trivial("foreign-data");
    std::fs::create_dir(&s.data).unwrap();
    std::os::unix::fs::chown(&s.data, Some(65534), Some(65534)).unwrap();
    let out = refused(&s);
    let data = s.data.display().to_string();
    for want in [
        data.as_str(),
        "uid 65534",
        "chown root:root",
        "docs/security.md",
    ] {
        assert!(out.contains(want), "the error must name {want:?}:\n{out}");
    }
    assert_eq!(
        std::fs::read_dir(&s.data).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_world_writable_data_directory_is_refused() {
    if !is_root() {
        return;
    }
    let s = trivial("writable-data");
    // As `umask 000; mkdir DATA` leaves it.
    std::fs::create_dir(&s.data).unwrap();
    std::fs::set_permissions(&s.data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = refused(&s);
    assert!(out.contains("mode 0777"), "{out}");
    assert!(out.contains("chmod go-w"), "the fix:\n{out}");
    assert_eq!(
        std::fs::read_dir(&s.data).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn under_umask_000_what_cogno_creates_is_not_writable_by_others_and_services_keep_their_umask() {
    if !is_root() {
        return;
    }
    let s = Stack::new("umask");
    s.write("services:\n  show:\n    command: [\"sh\", \"-c\", \"echo umask=$(umask)\"]\n    oneshot: true\n");
    let mut cogno = Cogno::spawn(&s, s.up_after_shell("umask 000"));
    let line = cogno.wait_line("umask=");
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    assert!(
        line.ends_with("umask=0000"),
        "the service's own umask: {line}"
    );
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().mode() & 0o7777;
    assert_eq!(mode(s.data.clone()), 0o711, "DATA");
    assert_eq!(mode(s.data.join("run")), 0o711, "DATA/run");
    for e in std::fs::read_dir(&s.data).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(
            mode(p.clone()) & 0o022,
            0,
            "{} is writable by others",
            p.display()
        );
    }
}

/// `name` under DATA is a link to a root-owned directory elsewhere.
fn symlinked_subdirectory_is_refused(tag: &str, name: &str) {
    if !is_root() {
        return;
    }
    let s = trivial(tag);
    let outside = root_only_tree(&s, 3);
    let before = owners(&outside);
    std::fs::create_dir(&s.data).unwrap();
    std::fs::set_permissions(&s.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&outside, s.data.join(name)).unwrap();
    let out = refused(&s);
    let link = s.data.join(name).display().to_string();
    assert!(
        out.contains(&link) && out.contains("symbolic link"),
        "{out}"
    );
    assert_eq!(owners(&outside), before, "nothing outside DATA changed");
}

#[test]
fn a_symlinked_redis_directory_is_refused() {
    symlinked_subdirectory_is_refused("link-redis", "redis");
}

#[test]
fn a_symlinked_run_directory_is_refused() {
    symlinked_subdirectory_is_refused("link-run", "run");
}

/// A stack of one bundled server of `kind` on a free port.
fn bundled(tag: &str, kind: &str) -> Stack {
    let s = Stack::new(tag);
    s.write(&format!(
        "services:\n  {kind}: {{kind: {kind}, port: {}}}\n",
        free_port()
    ));
    std::fs::create_dir(&s.data).unwrap();
    std::fs::set_permissions(&s.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    s
}

/// A root-only file outside DATA, as the target of a planted link.
fn root_only_file(s: &Stack) -> PathBuf {
    let f = s.dir.path().join("root-only");
    std::fs::write(&f, SECRET).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// Starts cogno on `s`, which a service user has tampered with: it must end
/// quickly, in failure, saying why, and print nothing it read.
fn tampered(s: &Stack, why: &str) {
    let (code, out) = up_to_end(s, s.up_command());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(why), "the error must say {why:?}:\n{out}");
    assert!(!out.contains(SECRET), "foreign content echoed:\n{out}");
}

#[test]
fn a_planted_pg_version_link_is_not_read() {
    if !is_root() {
        return;
    }
    let s = bundled("link-pg-version", "postgres");
    let cluster = s.data.join("postgresql");
    std::fs::create_dir(&cluster).unwrap();
    symlink(root_only_file(&s), cluster.join("PG_VERSION")).unwrap();
    tampered(&s, "PG_VERSION: it is a symbolic link");
}

#[test]
fn a_planted_temporal_cli_version_link_is_not_read() {
    if !is_root() {
        return;
    }
    let s = bundled("link-cli-version", "temporal");
    let dir = s.data.join("temporal");
    std::fs::create_dir(&dir).unwrap();
    // The record is read only beside an existing database.
    std::fs::write(dir.join("temporal.db"), "").unwrap();
    symlink(root_only_file(&s), dir.join("cli-version")).unwrap();
    tampered(&s, "cli-version: it is a symbolic link");
}

#[test]
fn a_fifo_as_postmaster_pid_neither_hangs_nor_is_read() {
    if !is_root() {
        return;
    }
    let s = bundled("fifo-postmaster-pid", "postgres");
    let cluster = s.data.join("postgresql");
    std::fs::create_dir(&cluster).unwrap();
    let major = crate::bundled::pg_major();
    std::fs::write(cluster.join("PG_VERSION"), format!("{major}\n")).unwrap();
    std::fs::write(
        cluster.join("postgresql.conf"),
        "include_if_exists = 'cogno.conf'\n",
    )
    .unwrap();
    nix::unistd::mkfifo(
        &cluster.join("postmaster.pid"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // The cluster's secrets, as a stack that has run has them.
    let secrets = s.data.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(secrets.join(".env"), crate::bundled::complete_secrets()).unwrap();
    std::fs::set_permissions(secrets.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    tampered(&s, "postmaster.pid: it is not a regular file");
}

/// The service user keeps exchanging DATA/redis/sub (a directory of files
/// f0…) with a link to a root-only directory of files with the same names,
/// while cogno prepares Redis (and chowns DATA/redis to it) several times.
#[test]
fn swapping_a_directory_for_a_link_during_the_chown_changes_nothing_outside() {
    if !is_root() {
        return;
    }
    const FILES: usize = 2000;
    let s = Stack::new("chown-race");
    s.write(&format!(
        "services:\n  redis: {{kind: redis, port: {}}}\n",
        free_port()
    ));
    let outside = root_only_tree(&s, FILES);
    let before = owners(&outside);
    let redis = s.data.join("redis");
    let sub = redis.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    for i in 0..FILES {
        std::fs::write(sub.join(format!("f{i}")), "").unwrap();
    }
    symlink(&outside, redis.join("lnk")).unwrap();
    let swapper = s.dir.path().join("swap.py");
    std::fs::write(
        &swapper,
        "import ctypes, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         a = (sys.argv[1] + '/sub').encode(); b = (sys.argv[1] + '/lnk').encode()\n\
         while True:\n    libc.renameat2(-100, a, -100, b, 2)\n",
    )
    .unwrap();
    // As the first preparation leaves it: the redis user's.
    std::fs::set_permissions(&s.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("chown")
        .args(["-hR", "redis:redis"])
        .arg(&redis)
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..3 {
        let mut swap = Command::new("setpriv")
            .args(["--reuid=redis", "--regid=redis", "--clear-groups", "--"])
            .arg("/usr/bin/python3")
            .arg(&swapper)
            .arg(&redis)
            .spawn()
            .expect("setpriv python3");
        // Swapping before cogno starts preparing.
        assert!(eventually(TIMEOUT, || std::fs::symlink_metadata(&sub)
            .is_ok_and(|m| m.file_type().is_symlink())));
        let mut cogno = Cogno::up(&s);
        cogno.wait_line("ready");
        cogno.signal(Signal::SIGTERM);
        cogno.wait_code(TIMEOUT);
        let _ = swap.kill();
        let _ = swap.wait();
    }
    let changed: Vec<_> = owners(&outside)
        .into_iter()
        .zip(before)
        .filter(|(now, was)| now != was)
        .map(|(now, _)| now)
        .collect();
    assert!(
        changed.is_empty(),
        "{} files outside DATA changed owner, e.g. {:?}",
        changed.len(),
        changed.first()
    );
}

/// A data directory too deep for its control socket's path (a socket
/// address holds 107 bytes) is refused, saying how much shorter it must be.
#[test]
fn a_data_directory_too_deep_for_the_control_socket_is_refused_saying_by_how_much() {
    let mut s = trivial("deep-socket");
    let base = s.dir.path().as_os_str().len();
    // DATA/run/cogno.sock at 110 bytes: DATA at 95.
    let parent = s.dir.path().join("d".repeat(95 - base - 6));
    std::fs::create_dir_all(&parent).unwrap();
    s.data = parent.join("data");
    let out = refused(&s);
    assert!(
        out.contains(
            "run/cogno.sock: its path is 110 bytes long, and a socket's path holds at most 107"
        ) && out.contains("at least 3 bytes shorter"),
        "{out}"
    );
}
