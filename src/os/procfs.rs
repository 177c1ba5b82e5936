//! Readers of /proc: a process's parent, group, session and state, its
//! children and descendants, its environment, and who listens on a TCP port.

use nix::unistd::Pid;
use std::path::Path;

/// Direct children of `parent`: services, probes and adopted orphans.
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .map(Pid::from_raw),
                );
            }
        }
        if !out.is_empty() || Path::new(&format!("/proc/{parent}/task/{parent}/children")).exists()
        {
            return out;
        }
    }
    // Kernels without /proc/PID/task/TID/children: scan every process.
    all_pids()
        .filter(|p| ProcStat::read(*p).is_some_and(|s| s.ppid == parent.as_raw()))
        .collect()
}

pub fn all_pids() -> impl Iterator<Item = Pid> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
}

/// Whether `pid`'s environment holds exactly the entry `NAME=value`.
pub fn environ_has(pid: Pid, entry: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    environ.split(|b| *b == 0).any(|kv| kv == entry.as_bytes())
}

/// The fields of /proc/PID/stat that cogno needs.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// R, S, D, Z (zombie), T…
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// When it started, in clock ticks after boot: with the pid, names one
    /// process for good (a reused pid has another start time).
    pub start_time: u64,
}

impl ProcStat {
    pub fn read(pid: Pid) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses: parse after the last ')'.
        let rest = &text[text.rfind(')')? + 2..];
        let mut f = rest.split(' ');
        let state = f.next()?.chars().next()?;
        let ppid = f.next()?.parse().ok()?;
        let pgrp = f.next()?.parse().ok()?;
        let session = f.next()?.parse().ok()?;
        // Field 22 of proc(5); `session` was field 6.
        let start_time = f.nth(15)?.parse().ok()?;
        Some(ProcStat {
            state,
            ppid,
            pgrp,
            session,
            start_time,
        })
    }
}

/// A listening TCP socket, as /proc/net/tcp{,6} shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// As a descriptor's link in /proc/PID/fd spells it: `socket:[N]`.
    pub inode: String,
    /// The effective uid of the process that created it.
    pub uid: u32,
}

/// The TCP sockets listening on `port` whose local address is one of
/// `addresses` (as /proc/net/tcp{,6} spell them: hex, in the kernel's byte
/// order), or on any address when `addresses` is empty.
fn listening(port: u16, addresses: &[&str]) -> Vec<Listener> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some((addr, local_port)) = f.get(1).and_then(|a| a.rsplit_once(':')) else {
                continue;
            };
            if u16::from_str_radix(local_port, 16).ok() == Some(port)
                && f.get(3) == Some(&"0A")
                && (addresses.is_empty() || addresses.contains(&addr))
            {
                if let (Some(uid), Some(inode)) = (f.get(7).and_then(|u| u.parse().ok()), f.get(9))
                {
                    inodes.push(Listener {
                        inode: format!("socket:[{inode}]"),
                        uid,
                    });
                }
            }
        }
    }
    inodes
}

/// The sockets that take connections made to 127.0.0.1:`port`: listening
/// on 127.0.0.1 itself, on 0.0.0.0, or on IPv6's any address or its
/// IPv4-mapped 127.0.0.1 (a dual-stack socket takes IPv4 connections too).
pub fn loopback_listeners(port: u16) -> Vec<Listener> {
    const LOOPBACK: &[&str] = &[
        "0100007F",
        "00000000",
        "00000000000000000000000000000000",
        "0000000000000000FFFF00000100007F",
    ];
    listening(port, LOOPBACK)
}

/// The first of `pids` that holds the socket `inode` (`socket:[N]`).
pub fn holder_of(inode: &str, pids: impl IntoIterator<Item = Pid>) -> Option<Pid> {
    pids.into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == inode))
        })
    })
}

/// Whether cogno can read `pid`'s descriptor table. Without CAP_SYS_PTRACE
/// (docker's default capability set lacks it) even root cannot, for a
/// process that changed its uid: the kernel makes it non-dumpable.
/// The directory itself may still be listed (root owns it): what is refused
/// is where its links point.
pub fn fds_visible(pid: Pid) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|mut fds| {
        fds.next()
            .is_some_and(|fd| fd.is_ok_and(|fd| std::fs::read_link(fd.path()).is_ok()))
    })
}

/// `pid`'s effective uid, from the `Uid:` line of /proc/PID/status (which
/// every process may read, unlike its descriptor table).
pub fn uid_of(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every process below it.
pub fn process_tree(root: Pid) -> Vec<Pid> {
    let mut tree = vec![root];
    let mut i = 0;
    while let Some(&pid) = tree.get(i) {
        tree.extend(children_of(pid));
        i += 1;
    }
    tree
}

/// A process's command name (/proc/PID/comm), empty if it is gone.
pub fn comm(pid: Pid) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim().to_owned()
}

/// "pid 123 (redis-server)" for the process listening on `port`, when /proc tells.
pub fn port_holder(port: u16) -> Option<String> {
    listening(port, &[])
        .iter()
        .find_map(|l| holder_of(&l.inode, all_pids()))
        .map(|pid| format!("pid {pid} ({})", comm(pid)))
}
