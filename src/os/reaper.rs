//! Reaping: cogno is the only place that calls `waitpid`, always as
//! `waitpid(-1, WNOHANG)` after SIGCHLD, so orphans adopted by cogno (as PID 1
//! or as a subreaper) are reaped too, and no exit status is ever stolen from
//! the code waiting for it: each status is handed to its owner.
//!
//! Services are owned by the supervisor, which matches pids itself. Other
//! children (exec health probes) register here to receive their status.

use crate::os::process::ExitReason;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Children other than services that want their exit status.
#[derive(Clone, Default)]
pub struct Waiters {
    inner: Arc<Mutex<WaitersInner>>,
}

#[derive(Default)]
struct WaitersInner {
    waiting: HashMap<Pid, oneshot::Sender<ExitReason>>,
}

impl Waiters {
    /// Registers interest in `pid`'s exit. Must be called right after the
    /// spawn, before the next reap (the runtime is single-threaded, so no
    /// reap can run between the two).
    pub fn wait_for(&self, pid: Pid) -> oneshot::Receiver<ExitReason> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .lock()
            .expect("waiters lock")
            .waiting
            .insert(pid, tx);
        rx
    }

    /// The children whose status is awaited here (probes in flight): they
    /// are never reaped by the supervisor, so never anyone's leftovers.
    pub fn pids(&self) -> Vec<Pid> {
        let inner = self.inner.lock().expect("waiters lock");
        inner.waiting.keys().copied().collect()
    }

    /// Delivers a status to its waiter. Returns false if nobody waits for `pid`.
    fn deliver(&self, pid: Pid, reason: ExitReason) -> bool {
        match self
            .inner
            .lock()
            .expect("waiters lock")
            .waiting
            .remove(&pid)
        {
            Some(tx) => {
                let _ = tx.send(reason);
                true
            }
            None => false,
        }
    }
}

/// Reaps every child that has exited. Statuses of registered waiters are
/// delivered; the rest (services and orphans) are returned.
pub fn reap(waiters: &Waiters) -> Vec<(Pid, ExitReason)> {
    let mut out = Vec::new();
    // Ends at StillAlive (nothing more to reap now) or ECHILD (no children at all).
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        let Some((pid, reason)) = ExitReason::from_wait(status) else {
            break;
        };
        if !waiters.deliver(pid, reason.clone()) {
            out.push((pid, reason));
        }
    }
    out
}
