//! Stopping services: one at a time for an operator, or the whole stack.
//!
//! A service marked `want_down` gets its stop signal once everything that
//! depends on it is down, so dependants always stop before what they depend
//! on; unrelated services stop in parallel. The whole-stack stop never
//! outlasts `shutdown_budget`: what is left when it is used up is killed.

use super::{Event, Phase, State, Supervisor, Timer, FINAL_SWEEP_GRACE};
use crate::fmt::{fmt_duration, fmt_latency};
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
        for i in 0..self.svcs.len() {
            let rt = &mut self.svcs[i];
            rt.want_down = true;
            rt.restart_after = false;
            if !rt.alive() && !rt.state.terminal() {
                rt.set(State::Stopped);
            }
            self.abandon_ops(i);
        }
        self.schedule(self.stack.shutdown_budget, Event::ShutdownDeadline);
        self.advance_stops();
    }

    /// Sends the stop signal to every service that should go down and whose
    /// dependants are all down; during a shutdown, finishes once nothing is left.
    pub(super) fn advance_stops(&mut self) {
        let deadline = match self.phase {
            Phase::Stopping => self
                .shutdown_started
                .map(|t| t + self.stack.shutdown_budget),
            _ => None,
        };
        for i in 0..self.svcs.len() {
            let rt = &self.svcs[i];
            if !rt.want_down || rt.stop_requested {
                continue;
            }
            if !rt.alive() {
                self.on_stopped(i);
                continue;
            }
            let Some(pid) = rt.pid else {
                // Its main process already ended; the stop completes with its cleanup.
                continue;
            };
            if self.stack.plan.dependants[i]
                .iter()
                .any(|&d| self.svcs[d].alive())
            {
                continue;
            }
            let svc = &self.stack.services[i];
            debug!("{}: sending {}", svc.name, svc.stop_signal.as_str());
            process::signal_service(pid, svc.stop_signal);
            let grace = match deadline {
                Some(d) => svc
                    .stop_timeout
                    .min(d.saturating_duration_since(Instant::now())),
                None => svc.stop_timeout,
            };
            let rt = &mut self.svcs[i];
            rt.stop_requested = true;
            rt.set(State::Stopping);
            self.schedule_timer(i, grace, Timer::StopKill);
        }
        if self.phase == Phase::Stopping && self.svcs.iter().all(|s| !s.alive()) {
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

    /// A service that was asked to go down is down.
    pub(super) fn on_stopped(&mut self, i: usize) {
        let rt = &mut self.svcs[i];
        rt.stop_requested = false;
        rt.want_down = false;
        if self.phase == Phase::Running && rt.restart_after {
            rt.restart_after = false;
            rt.failed_starts = 0;
            rt.crash_streak = 0;
            rt.set(State::Waiting("restarting on request".into()));
        } else {
            if !matches!(
                rt.state,
                State::Completed | State::Failed | State::Fatal | State::Exited
            ) {
                rt.set(State::Stopped);
            }
            self.finish_stop_ops(i);
        }
        self.advance_stops();
    }

    pub(super) fn on_stop_timeout(&mut self, i: usize) {
        if let Some(pid) = self.svcs[i].pid {
            let svc = &self.stack.services[i];
            warn!(
                "{}: still running {} after {}; sending SIGKILL",
                svc.name,
                fmt_duration(svc.stop_timeout),
                svc.stop_signal.as_str()
            );
            process::signal_service(pid, Signal::SIGKILL);
            self.failed = true;
        }
    }

    /// Second signal, or the budget is used up: SIGKILL everything, now.
    pub(super) fn force_kill(&mut self) {
        self.failed = true;
        for rt in &self.svcs {
            if let Some(pid) = rt.pid {
                process::signal_service(pid, Signal::SIGKILL);
            }
            if let Some(c) = &rt.cleanup {
                for p in &c.strays {
                    let _ = nsig::kill(*p, Signal::SIGKILL);
                }
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
            let code = i32::from(self.failed);
            info!("stopped in {} (exit status {code})", fmt_latency(took));
            self.exit_code = Some(code);
        }
    }
}
