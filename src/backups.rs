//! Scheduled backups (`backup:` in the stack file): one task that sleeps
//! until the schedule's next time, runs `cogno backup --to DIR` as a child
//! of cogno — the very command an operator runs, in its own process, for
//! the reasons docs/architecture.md gives (the reaper owns `waitpid`, the
//! event loop must never wait for a dump) — then applies the retention.
//!
//! One backup at a time: the task runs them in turn, so a time that comes
//! while one is still running is skipped, and logged. Each outcome is
//! logged, published as an event (`backup`, `backup_failed`) and kept for
//! `cogno status` ([`BackupStatus`]).

use crate::config::BackupPlan;
use crate::control::{BackupRun, BackupStatus};
use crate::datadir::files;
use crate::events::{Event, Events};
use crate::os::process::{self, KillOnDrop, Launch};
use crate::os::reaper::Waiters;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The scheduled backups, once started.
pub struct Running {
    pub status: watch::Receiver<BackupStatus>,
    task: tokio::task::AbortHandle,
}

impl Running {
    /// No more backups; one running now is killed (`KillOnDrop`). Called
    /// when the stack begins to stop: a backup would fail as the servers
    /// go, and send a `backup_failed` notice about nothing but the stop.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// What a scheduled backup runs, fixed when the stack starts.
pub struct Backups {
    plan: BackupPlan,
    /// `cogno backup --config … --data …` (without `--to`).
    command: Vec<String>,
    /// Where the archives go: `backup.to`, or DATA/backups.
    to: PathBuf,
}

impl Backups {
    /// `command` is how this cogno's own `backup` is run for the stack it
    /// supervises; `default_to` where archives go without `backup.to`.
    pub fn new(plan: BackupPlan, command: Vec<String>, default_to: PathBuf) -> Backups {
        let to = plan.to.clone().unwrap_or(default_to);
        // Absolute, as logs and status show it and as the child is given it.
        let to = std::path::absolute(&to).unwrap_or(to);
        Backups { plan, command, to }
    }

    /// Starts the task; the status it keeps up to date is read through the
    /// receiver. Aborting the task kills a backup it is running.
    pub fn start(self, events: &Events, waiters: &Waiters) -> Running {
        let (tx, rx) = watch::channel(BackupStatus {
            schedule: self.plan.schedule.text().to_owned(),
            to: self.to.display().to_string(),
            keep: self.plan.keep,
            next: None,
            running_since: None,
            last: None,
        });
        let events = events.clone();
        let waiters = waiters.clone();
        let task = tokio::spawn(async move { self.run(tx, events, waiters).await });
        Running {
            status: rx,
            task: task.abort_handle(),
        }
    }

    async fn run(self, status: watch::Sender<BackupStatus>, events: Events, waiters: Waiters) {
        let mut after = SystemTime::now();
        loop {
            let Some(due) = self.plan.schedule.next_after(after) else {
                warn!(
                    "backup.schedule `{}` is never due again: no more scheduled backups",
                    self.plan.schedule.text()
                );
                status.send_modify(|s| s.next = None);
                return;
            };
            status.send_modify(|s| s.next = Some(crate::fmt::rfc3339(due)));
            crate::schedule::sleep_until(due).await;
            let started = SystemTime::now();
            status.send_modify(|s| {
                s.next = None;
                s.running_since = Some(crate::fmt::rfc3339(started));
            });
            let run = self.once(&waiters, started).await;
            let ended = SystemTime::now();
            match &run.error {
                None => {
                    info!(
                        "scheduled backup: {} (took {})",
                        run.archive.as_deref().unwrap_or("?"),
                        crate::fmt::fmt_latency(std::time::Duration::from_millis(run.took_ms))
                    );
                    let mut ev = Event::new("backup", None);
                    ev.reason = run.archive.clone();
                    events.publish(ev);
                }
                Some(why) => {
                    error!("scheduled backup failed: {why}");
                    let mut ev = Event::new("backup_failed", None);
                    ev.reason = Some(why.clone());
                    events.publish(ev);
                }
            }
            status.send_modify(|s| {
                s.running_since = None;
                s.last = Some(run);
            });
            // Times that came while it ran are skipped, not made up for.
            if let Some(missed) = self.plan.schedule.next_after(due).filter(|&m| m <= ended) {
                warn!(
                    "scheduled backup due at {} skipped: the one started at {} was still running",
                    crate::fmt::rfc3339(missed),
                    crate::fmt::rfc3339(started)
                );
            }
            // Never before `due`: a timer that woke early must not run it twice.
            after = ended.max(due);
        }
    }

    /// One backup and, when it succeeded, the retention.
    async fn once(&self, waiters: &Waiters, started: SystemTime) -> BackupRun {
        let clock = Instant::now();
        let result = self.back_up(waiters).await;
        let result = match result {
            Ok(archive) => self.retain().await.map(|()| archive),
            Err(e) => Err(e),
        };
        let (archive, error) = match result {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(e)),
        };
        BackupRun {
            started: crate::fmt::rfc3339(started),
            took_ms: clock.elapsed().as_millis() as u64,
            ok: error.is_none(),
            archive,
            error,
        }
    }

    /// Runs `cogno backup --to DIR`; the archive it printed, or why it failed
    /// (its error line, else how it ended). Its other lines go to the log.
    async fn back_up(&self, waiters: &Waiters) -> Result<String, String> {
        let to = self.to.clone();
        // Made first (0700, as `cogno backup` makes DATA/backups): given a
        // directory that does not exist, `--to` would name the archive itself.
        tokio::task::spawn_blocking(move || files::create_private_dir(&to))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot create {}: {e}", self.to.display()))?;
        let mut argv = self.command.clone();
        argv.extend(["--to".to_owned(), self.to.display().to_string()]);
        // cogno's own environment, secrets included: the child is cogno too.
        let env: Vec<(String, String)> = std::env::vars().collect();
        let spawned = process::spawn(&Launch {
            argv: &argv,
            env: &env,
            working_dir: None,
            run_as: None,
            stdin: None,
            capture: true,
            no_new_privs: false,
        })
        .map_err(|e| format!("cannot run `cogno backup`: {e}"))?;
        // Registered before anything awaits, so the reaper hands its status here.
        let exited = waiters.wait_for(spawned.pid);
        let guard = KillOnDrop(Some(spawned.pid));
        let [stdout, stderr] = spawned.output.ok_or("`cogno backup` has no output pipes")?;
        let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
        let reason = guard
            .finished(exited, &spawned.report)
            .await
            .ok_or("its exit status was lost")?;
        let mut error_line = None;
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            info!(
                "backup: {}",
                line.strip_prefix("cogno backup: ").unwrap_or(line)
            );
            if let Some(e) = line.strip_prefix("error: ") {
                error_line.get_or_insert_with(|| e.to_owned());
            }
        }
        let archive = out.lines().last().map(str::to_owned);
        match (reason.success(), archive) {
            (true, Some(a)) => Ok(a),
            _ => Err(error_line.unwrap_or_else(|| format!("`cogno backup` ended with {reason}"))),
        }
    }

    /// Leaves the newest `keep` of cogno's archives in `to`; other files are
    /// not cogno's to delete.
    async fn retain(&self) -> Result<(), String> {
        let (dir, keep) = (self.to.clone(), self.plan.keep as usize);
        let removed = tokio::task::spawn_blocking(move || prune(&dir, keep))
            .await
            .map_err(|e| e.to_string())??;
        for name in removed {
            info!("backup: removed {name} (backup.keep is {keep})");
        }
        Ok(())
    }
}

/// Everything a pipe gives until end of file, as text.
async fn read_all(fd: OwnedFd) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        // A read error ends the output early; the exit status still tells.
        let _ = rx.read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether `name` is an archive `cogno backup` names itself:
/// `cogno-backup-YYYYMMDDTHHMMSSZ.tar.zst`.
fn is_ours(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("cogno-backup-")
        .and_then(|n| n.strip_suffix(".tar.zst"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Removes all but the newest `keep` of cogno's archives in `dir` (their
/// names sort by time); the names removed.
fn prune(dir: &Path, keep: usize) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut ours: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_ours(n))
        .collect();
    ours.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for name in ours.into_iter().skip(keep) {
        let path = dir.join(&name);
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot remove the old archive {}: {e}", path.display()))?;
        removed.push(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cogno_s_own_names_are_pruned_oldest_first() {
        let dir = std::env::temp_dir().join(format!("cogno-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names = [
            "cogno-backup-20260101T030000Z.tar.zst",
            "cogno-backup-20260102T030000Z.tar.zst",
            "cogno-backup-20260103T030000Z.tar.zst",
            "cogno-backup-manual.tar.zst",
            "cogno-backup-20260101T030000Z.tar.zst.bak",
            ".cogno-backup-20260104T030000Z.tar.zst.partial",
            "notes.txt",
        ];
        for n in names {
            std::fs::write(dir.join(n), "").unwrap();
        }
        assert_eq!(
            prune(&dir, 2).unwrap(),
            ["cogno-backup-20260101T030000Z.tar.zst"]
        );
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected: Vec<&str> = names[1..].to_vec();
        expected.sort();
        assert_eq!(left, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
