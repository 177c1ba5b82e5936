//! Readers of /proc: a process's parent, group, session and state, its
//! children, its environment, and who listens on a TCP port.

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
        Some(ProcStat {
            state,
            ppid,
            pgrp,
            session,
        })
    }
}

/// "pid 123 (redis-server)" for the process listening on `port`, when /proc tells.
pub fn port_holder(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    for pid in all_pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}
