//! Orphan safety natively: what a cogno killed with SIGKILL (a closed
//! terminal, the OOM killer) left running is recognised and stopped cleanly
//! by the next `cogno up` on the same data directory, before anything starts
//! (and before the ports are checked).
//!
//! cogno records each service's main process when it starts — its pid and
//! its start time from /proc/PID/stat, which together name one process for
//! good, with its stop signal and stop timeout — in DATA/run/services/NAME,
//! and removes the record when the process has ended. The next start stops a
//! recorded process only if a process with that pid *and* that start time
//! still runs: a pid reused by another process is never signalled. It gets
//! its stop signal (PostgreSQL: SIGINT, a clean fast shutdown), its timeout,
//! then SIGKILL, like a stop of a running stack; what is left of its process
//! group once it has gone is killed too.
//!
//! PR_SET_PDEATHSIG is not used for this: it fires when the *thread* that
//! forked the child exits, not the process, and a service spawned from a
//! thread that ends would be killed; and it would give PostgreSQL a signal of
//! its choosing rather than a clean shutdown. The records work for every way
//! cogno can die.

use crate::datadir::DataDir;
use crate::os::process::Watched;
use crate::os::procfs::ProcStat;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::PathBuf;
use std::time::Duration;

/// How long a leftover may take to go after SIGKILL before cogno gives up.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// One service's main process, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    pid: i32,
    start_time: u64,
    stop_signal: Signal,
    stop_timeout: Duration,
}

impl Record {
    fn to_line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.pid,
            self.start_time,
            self.stop_signal as i32,
            self.stop_timeout.as_millis()
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let mut f = text.split_whitespace();
        Some(Record {
            pid: f.next()?.parse().ok().filter(|p| *p > 1)?,
            start_time: f.next()?.parse().ok()?,
            stop_signal: Signal::try_from(f.next()?.parse::<i32>().ok()?).ok()?,
            stop_timeout: Duration::from_millis(f.next()?.parse().ok()?),
        })
    }
}

/// Keeps DATA/run/services up to date while the stack runs.
pub struct Recorder {
    dir: PathBuf,
}

impl Recorder {
    /// Creates DATA/run/services (0700) if missing.
    pub fn new(data: &DataDir) -> std::io::Result<Recorder> {
        let dir = data.service_pids();
        crate::datadir::files::create_private_dir(&dir)?;
        Ok(Recorder { dir })
    }

    /// Records that `name`'s main process is `pid`. Small writes, without an
    /// fsync: a record only needs to outlive cogno, not the machine (whose
    /// crash ends the services too). Written whole, then renamed into place.
    pub fn started(&self, name: &str, pid: Pid, stop_signal: Signal, stop_timeout: Duration) {
        let Some(stat) = ProcStat::read(pid) else {
            return;
        };
        let record = Record {
            pid: pid.as_raw(),
            start_time: stat.start_time,
            stop_signal,
            stop_timeout,
        };
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = std::fs::write(&tmp, record.to_line())
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(name)));
        if let Err(e) = written {
            tracing::warn!(
                "{name}: cannot record its pid in {}: {e} (were cogno killed, the next start \
                 could not stop it)",
                self.dir.display()
            );
        }
    }

    /// `name`'s main process has ended.
    pub fn ended(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }
}

/// Stops what a killed cogno left running on `data` (called only once no
/// cogno runs there): each recorded process that is still the one recorded.
/// Blocking: runs before the stack starts. Returns one line per record found.
pub fn stop(data: &DataDir) -> Vec<String> {
    let dir = data.service_pids();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut said = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let text = crate::datadir::files::read_small(&entry.path(), 256)
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Some(record) = Record::parse(&text) {
            if let Some(line) = stop_one(&name, &record) {
                said.push(line);
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    said
}

/// Stops `record`'s process if it is still the one recorded; what was done.
fn stop_one(name: &str, record: &Record) -> Option<String> {
    let pid = Pid::from_raw(record.pid);
    // Held first, checked second: the check is then about the process held.
    let held = Watched::of(pid).ok()?;
    match ProcStat::read(pid) {
        Some(stat) if stat.start_time == record.start_time && stat.state != 'Z' => {}
        _ => {
            return Some(format!(
                "{name}: the recorded pid {pid} is no longer its process (it has ended; the pid \
                 may be another process's now): nothing to stop"
            ))
        }
    }
    let started = std::time::Instant::now();
    // Its process group too (services lead their own): while the leader
    // lives, no other process can have that group id.
    let _ = nix::sys::signal::killpg(pid, record.stop_signal);
    let _ = held.signal(record.stop_signal);
    let stopped = held.wait_for(Some(record.stop_timeout)).unwrap_or(false);
    if !stopped {
        let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
        let _ = held.signal(Signal::SIGKILL);
        let _ = held.wait_for(Some(KILL_WAIT));
    }
    // What is left of the group (a child that ignored the signal): the
    // group id stays unique while any member lives.
    let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
    Some(format!(
        "{name}: stopped pid {pid}, left running by a cogno that was killed ({} in {}{})",
        record.stop_signal.as_str(),
        crate::fmt::fmt_latency(started.elapsed()),
        if stopped {
            ""
        } else {
            ", then SIGKILL after its stop timeout"
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_nonsense_is_ignored() {
        let r = Record {
            pid: 4242,
            start_time: 123456,
            stop_signal: Signal::SIGINT,
            stop_timeout: Duration::from_millis(30_000),
        };
        assert_eq!(Record::parse(&r.to_line()), Some(r));
        assert_eq!(Record::parse("1 5 15 100"), None, "never init");
        assert_eq!(Record::parse("12 x 15 100"), None);
        assert_eq!(Record::parse(""), None);
    }

    #[test]
    fn a_process_with_another_start_time_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let real = ProcStat::read(pid).unwrap().start_time;
        let record = Record {
            pid: pid.as_raw(),
            start_time: real + 1,
            stop_signal: Signal::SIGTERM,
            stop_timeout: Duration::from_secs(1),
        };
        let said = stop_one("web", &record).unwrap();
        assert!(said.contains("no longer its process"), "{said}");
        assert!(child.try_wait().unwrap().is_none(), "still running");
        let record = Record {
            start_time: real,
            ..record
        };
        let said = stop_one("web", &record).unwrap();
        assert!(said.contains("stopped pid"), "{said}");
        assert!(child.wait().unwrap().code().is_none(), "ended by SIGTERM");
    }
}
