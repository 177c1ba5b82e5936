//! Stopping services: one at a time for an operator, or the whole stack.
//!
//! A service whose intent is to go down is told to stop (it then gets its
//! stop signal) once everything that depends on it is down, so dependants
//! always stop before what they depend on; unrelated services stop in
//! parallel. The whole-stack stop never
//! outlasts `shutdown_budget`: what is left when it is used up is killed.

use super::machine::Input;
use super::{Event, Phase, State, Supervisor, FINAL_SWEEP_GRACE};
use crate::fmt::fmt_latency;
use crate::os::process;
use crate::os::reaper;
use nix::sys::signal::{self as nsig, Signal};
use nix::unistd::Pid;
use std::time::Instant;
use tracing::{debug, info, warn};

impl Supervisor {
    pub(super) fn begin_shutdown(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Stopping;
        self.shutdown_started = Some(Instant::now());
        self.sink.stop_waiting();
        if let Some(b) = &self.backups {
            b.stop();
        }
        for i in 0..self.svcs.len() {
            self.feed(i, Input::Shutdown);
        }
        self.schedule(self.stack.shutdown_budget, Event::ShutdownDeadline);
        self.advance_stops();
    }

    /// Tells every service that should go down, and whose dependants are
    /// all down, to stop; during a shutdown, finishes once nothing is left.
    pub(super) fn advance_stops(&mut self) {
        let deadline = match self.phase {
            Phase::Stopping => self
                .shutdown_started
                .map(|t| t + self.stack.shutdown_budget),
            _ => None,
        };
        for i in 0..self.svcs.len() {
            let rt = &self.svcs[i];
            if !rt.machine.intent.down() || matches!(rt.state(), State::Stopping(_)) {
                continue;
            }
            // A dependant going down too holds this one up while its main
            // process runs; once that has ended its leftovers have had
            // SIGKILL, and their cleanup must not delay this one's turn. One
            // that stays (through priority only, on a restart of this one
            // alone) holds nothing up.
            if rt.state().alive()
                && self.stack.plan.dependants[i].iter().any(|&d| {
                    self.svcs[d].machine.intent.down() && self.svcs[d].state().main().is_some()
                })
            {
                continue;
            }
            let stop_timeout = self.stack.services[i].stop_timeout;
            let grace = match deadline {
                Some(d) => stop_timeout.min(d.saturating_duration_since(Instant::now())),
                None => stop_timeout,
            };
            self.feed(i, Input::StopNow { grace });
        }
        if self.phase == Phase::Stopping && self.svcs.iter().all(|s| !s.state().alive()) {
            let took = self
                .shutdown_started
                .map(|t| t.elapsed())
                .unwrap_or_default();
            info!("all services are down ({})", fmt_latency(took));
            self.phase = Phase::Sweeping;
            self.kill_leftovers(Signal::SIGTERM);
            self.schedule(FINAL_SWEEP_GRACE, Event::FinalKill);
            self.finish_if_empty(false);
        }
    }

    /// Second signal, or the budget is used up: SIGKILL everything, now.
    pub(super) fn force_kill(&mut self) {
        self.failed = true;
        for rt in &self.svcs {
            if let Some(main) = rt.state().main() {
                process::signal_service(main.pid, Signal::SIGKILL);
            }
            for p in rt.strays.iter().flatten() {
                let _ = nsig::kill(*p, Signal::SIGKILL);
            }
        }
        self.phase = Phase::Sweeping;
        self.kill_leftovers(Signal::SIGKILL);
        self.schedule(FINAL_SWEEP_GRACE, Event::FinalKill);
        self.finish_if_empty(false);
    }

    /// Signals every process left: as PID 1 everything in the namespace, as a
    /// subreaper every remaining child (adopted orphans).
    pub(super) fn kill_leftovers(&self, sig: Signal) {
        if self.pid1 {
            let _ = nsig::kill(Pid::from_raw(-1), sig);
            return;
        }
        for pid in crate::os::procfs::children_of(nix::unistd::getpid()) {
            let _ = nsig::kill(pid, sig);
        }
    }

    /// Exits once no child is left (or, with `give_up`, regardless).
    pub(super) fn finish_if_empty(&mut self, give_up: bool) {
        if self.exit_code.is_some() {
            return;
        }
        // Reap first: a child that exited since the last SIGCHLD still shows in /proc.
        for (pid, reason) in reaper::reap(&self.waiters) {
            debug!("reaped pid {pid} ({reason})");
        }
        let left = crate::os::procfs::children_of(nix::unistd::getpid());
        if left.is_empty() || give_up {
            if !left.is_empty() {
                warn!("{} processes could not be killed: {:?}", left.len(), left);
                self.failed = true;
            }
            let took = self
                .shutdown_started
                .map(|t| t.elapsed())
                .unwrap_or_default();
            let code = self.cause.unwrap_or(i32::from(self.failed));
            info!("stopped in {} (exit status {code})", fmt_latency(took));
            self.exit_code = Some(code);
        }
    }
}
