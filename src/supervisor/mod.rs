//! The supervisor: one event loop that owns every service's state machine.
//!
//! Everything that changes a service's state arrives as an event — SIGCHLD
//! (then `waitpid`), a probe result, an output pipe reaching end of file, a
//! timer, a signal — and is handled to completion before the next one. There
//! is no polling tick: with nothing to do, cogno sleeps in `epoll_wait`.

mod env;
mod operator;
mod restart;
mod state;
mod stopping;

pub use state::State;

use crate::config::{Condition, Stack};
use crate::control::{self, Request};
use crate::fmt::{fmt_duration, fmt_latency};
use crate::health::{self, ExecContext, ProbeResult};
use crate::logs::{self, Sink, Stream};
use crate::os::oom::OomCounter;
use crate::os::process::{self, ExitReason, Launch};
use crate::os::reaper::{self, Waiters};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use restart::{Decision, End, Why};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use state::{Cleanup, ServiceRt};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// How long an ended instance's leftovers may take to disappear before the
/// supervisor moves on without them.
const CLEANUP_LIMIT: Duration = Duration::from_secs(2);
/// After the services, how long stray processes get between SIGTERM and SIGKILL.
const FINAL_SWEEP_GRACE: Duration = Duration::from_secs(1);
/// Lines of output shown when a service is given up on.
const REPORT_LINES: usize = 20;

/// The signals cogno handles; everything else keeps its default action.
pub const SIGNALS: [i32; 5] = [SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP];

#[derive(Debug)]
enum Event {
    Timer {
        svc: usize,
        epoch: u64,
        kind: Timer,
    },
    Probe {
        svc: usize,
        instance: u64,
        result: ProbeResult,
    },
    OutputClosed {
        svc: usize,
        instance: u64,
    },
    ShutdownDeadline,
    FinalKill,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Startsecs,
    Backoff,
    StopKill,
    CleanupLimit,
}

#[derive(Debug, PartialEq)]
enum Phase {
    Running,
    /// Stopping services in reverse order.
    Stopping,
    /// Services are down; stray processes were sent SIGTERM.
    Sweeping,
}

pub struct Supervisor {
    stack: Stack,
    svcs: Vec<ServiceRt>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    control: control::Handle,
    requests: mpsc::UnboundedReceiver<Request>,
    waiters: Waiters,
    sink: Sink,
    phase: Phase,
    pid1: bool,
    /// Exit status 1: a critical service failed or something had to be SIGKILLed.
    failed: bool,
    shutdown_started: Option<Instant>,
    exit_code: Option<i32>,
    started: Instant,
    /// The stack has been ready at least once (a later problem is "degraded").
    ever_ready: bool,
    changes: logs::Changes,
    on_ready: Option<Box<dyn FnOnce()>>,
    oom: OomCounter,
}

impl Supervisor {
    /// `base_env` is cogno's own environment, which every service inherits;
    /// `derived[i]` what cogno derives for service i (connection settings, secrets).
    pub fn new(
        stack: Stack,
        base_env: Vec<(String, String)>,
        derived: Vec<Vec<(String, String)>>,
        sink: Sink,
        pid1: bool,
    ) -> Supervisor {
        let root = nix::unistd::geteuid().is_root();
        let svcs = stack
            .services
            .iter()
            .zip(derived)
            .map(|(s, derived)| {
                let run_as = s.run_as.clone();
                let env = env::service_env(&derived, &base_env, &stack.env, s, run_as.as_ref());
                ServiceRt::new(run_as, env)
            })
            .collect();
        if !root {
            let named: Vec<&str> = stack
                .services
                .iter()
                .filter(|s| s.user.is_some())
                .map(|s| s.name.as_str())
                .collect();
            if !named.is_empty() {
                warn!(
                    "cogno is not running as root: `user` is ignored for {} (they run as the current user)",
                    named.join(", ")
                );
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (control, requests) = control::Handle::channel();
        Supervisor {
            stack,
            svcs,
            tx,
            rx,
            control,
            requests,
            waiters: Waiters::default(),
            sink,
            phase: Phase::Running,
            pid1,
            failed: false,
            shutdown_started: None,
            exit_code: None,
            started: Instant::now(),
            ever_ready: false,
            changes: tokio::sync::watch::Sender::new(0),
            on_ready: None,
            oom: OomCounter::open(),
        }
    }

    /// Runs `f` once, the first time the stack is ready.
    pub fn on_first_ready(&mut self, f: impl FnOnce() + 'static) {
        self.on_ready = Some(Box::new(f));
    }

    pub fn control(&self) -> control::Handle {
        self.control.clone()
    }

    /// What `cogno logs` reads: each service's name and ring, and the change signal.
    pub fn log_view(&self) -> logs::LogView {
        logs::LogView {
            services: self
                .stack
                .services
                .iter()
                .zip(&self.svcs)
                .map(|(s, rt)| (s.name.clone(), rt.ring.clone()))
                .collect(),
            changes: self.changes.subscribe(),
        }
    }

    /// Runs the stack until it has stopped; returns cogno's exit status.
    pub async fn run(mut self, mut signals: signal_hook_tokio::Signals) -> i32 {
        info!(
            "starting {} services in {} tiers",
            self.svcs.len(),
            self.stack.plan.tiers.len()
        );
        self.evaluate_gates();
        loop {
            tokio::select! {
                Some(sig) = signals.next() => self.on_signal(sig),
                Some(ev) = self.rx.recv() => self.on_event(ev),
                Some(req) = self.requests.recv() => self.on_request(req),
            }
            // Whatever the input (a SIGCHLD can be the last word on a
            // service), what it changed is acted on now.
            if self.phase == Phase::Running {
                self.evaluate_gates();
                self.note_readiness();
                self.check_settled();
            }
            if let Some(code) = self.exit_code {
                signals.handle().close();
                return code;
            }
        }
    }

    fn name(&self, i: usize) -> &str {
        &self.stack.services[i].name
    }

    fn schedule(&self, after: Duration, ev: Event) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(ev);
        });
    }

    fn schedule_timer(&self, i: usize, after: Duration, kind: Timer) {
        let epoch = self.svcs[i].epoch;
        self.schedule(
            after,
            Event::Timer {
                svc: i,
                epoch,
                kind,
            },
        );
    }

    // ---------------------------------------------------------------- events

    fn on_signal(&mut self, sig: i32) {
        match sig {
            SIGCHLD => self.reap(),
            SIGTERM | SIGINT | SIGQUIT => {
                let name = Signal::try_from(sig).map_or("signal", |s| s.as_str());
                if self.phase == Phase::Running {
                    info!("{name} received: stopping the stack (send it again to kill everything now)");
                    self.begin_shutdown();
                } else {
                    warn!("{name} received again: killing everything now");
                    self.force_kill();
                }
            }
            SIGHUP => info!("SIGHUP received and ignored: cogno does not reload its configuration"),
            _ => {}
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Timer { svc, epoch, kind } => {
                if self.svcs[svc].epoch == epoch {
                    self.on_timer(svc, kind);
                }
            }
            Event::Probe {
                svc,
                instance,
                result,
            } => {
                if self.svcs[svc].instance == instance && self.svcs[svc].pid.is_some() {
                    self.on_probe(svc, result);
                }
            }
            Event::OutputClosed { svc, instance } => {
                let rt = &mut self.svcs[svc];
                if rt.instance == instance {
                    rt.open_pipes = rt.open_pipes.saturating_sub(1);
                    if let Some(c) = &mut rt.cleanup {
                        c.open_pipes = rt.open_pipes;
                    }
                    self.try_finish_cleanup(svc);
                }
            }
            Event::ShutdownDeadline => {
                if self.phase == Phase::Stopping {
                    warn!(
                        "shutdown_budget of {} is used up: killing what is still running",
                        fmt_duration(self.stack.shutdown_budget)
                    );
                    self.force_kill();
                }
            }
            Event::FinalKill => {
                if self.phase == Phase::Sweeping {
                    self.kill_leftovers(Signal::SIGKILL);
                    self.finish_if_empty(true);
                }
            }
        }
    }

    fn reap(&mut self) {
        for (pid, reason) in reaper::reap(&self.waiters) {
            if let Some(i) = self.svcs.iter().position(|s| s.pid == Some(pid)) {
                self.on_main_exit(i, pid, reason);
            } else if let Some(i) = self
                .svcs
                .iter()
                .position(|s| s.cleanup.as_ref().is_some_and(|c| c.strays.contains(&pid)))
            {
                if let Some(c) = &mut self.svcs[i].cleanup {
                    c.strays.remove(&pid);
                }
                self.try_finish_cleanup(i);
            } else {
                debug!("reaped orphan pid {pid} ({reason})");
            }
        }
        if self.phase == Phase::Sweeping {
            self.finish_if_empty(false);
        }
    }

    fn on_timer(&mut self, i: usize, kind: Timer) {
        match (kind, &self.svcs[i].state) {
            (Timer::Startsecs, State::Starting) => self.become_healthy(i),
            (Timer::Backoff, State::Backoff(_)) => {
                self.svcs[i].set(State::Waiting("restarting".into()));
            }
            (Timer::StopKill, State::Stopping) => self.on_stop_timeout(i),
            (Timer::CleanupLimit, State::Exiting) => {
                if let Some(c) = &self.svcs[i].cleanup {
                    let left: Vec<String> = c.strays.iter().map(|p| p.to_string()).collect();
                    warn!(
                        "{}: moving on after {}: leftover processes {} still exist{}",
                        self.name(i),
                        fmt_duration(CLEANUP_LIMIT),
                        if left.is_empty() {
                            "none".into()
                        } else {
                            left.join(", ")
                        },
                        if c.open_pipes > 0 {
                            ", and something still holds its output pipe open"
                        } else {
                            ""
                        }
                    );
                }
                self.finish_cleanup(i);
            }
            _ => {}
        }
    }

    fn on_probe(&mut self, i: usize, result: ProbeResult) {
        let svc = &self.stack.services[i];
        let retries = svc.health.as_ref().map_or(1, |h| h.retries);
        let start_period = svc
            .health
            .as_ref()
            .map_or(Duration::ZERO, |h| h.start_period);
        let rt = &mut self.svcs[i];
        let ok = result.ok;
        let error = result.error.clone().unwrap_or_default();
        rt.health.last = Some(result);
        if ok {
            rt.health.consecutive_failures = 0;
            match rt.state {
                State::Starting => self.become_healthy(i),
                State::Unhealthy if rt.healthy_at.is_none() => self.become_healthy(i),
                State::Unhealthy => {
                    info!("{}: healthy again", svc.name);
                    rt.set(State::Running);
                }
                _ => {}
            }
            return;
        }
        let in_start_period =
            rt.healthy_at.is_none() && rt.spawned_at.is_some_and(|t| t.elapsed() < start_period);
        if in_start_period {
            return;
        }
        rt.health.consecutive_failures += 1;
        if rt.health.consecutive_failures >= retries
            && matches!(rt.state, State::Starting | State::Running)
        {
            warn!(
                "{}: unhealthy after {} failed checks: {error}",
                svc.name, rt.health.consecutive_failures
            );
            rt.set(State::Unhealthy);
        }
    }

    // ------------------------------------------------------------ starting

    /// Starts every waiting service whose dependencies are all in their
    /// condition, and marks the rest waiting or blocked with the reason.
    fn evaluate_gates(&mut self) {
        let order: Vec<usize> = self.stack.plan.start_order().collect();
        for i in order {
            if !matches!(self.svcs[i].state, State::Waiting(_) | State::Blocked(_)) {
                continue;
            }
            match self.gate(i) {
                Gate::Open => self.spawn(i),
                Gate::Wait(why) => {
                    if self.svcs[i].state != State::Waiting(why.clone()) {
                        self.svcs[i].set(State::Waiting(why));
                    }
                }
                Gate::Blocked(why) => {
                    if self.svcs[i].state != State::Blocked(why.clone()) {
                        warn!("{}: blocked: {why}", self.name(i));
                        self.svcs[i].set(State::Blocked(why.clone()));
                        self.finish_ops(i, false, &format!("blocked: {why}"));
                    }
                }
            }
        }
    }

    fn gate(&self, i: usize) -> Gate {
        let mut waiting = Vec::new();
        for dep in &self.stack.services[i].depends_on {
            let ds = &self.svcs[dep.on].state;
            let name = self.name(dep.on);
            // A dependency on its way down (an operator's stop or restart) is
            // not there to wait for: its dependants come back after it does.
            let satisfied = !self.svcs[dep.on].want_down
                && match dep.condition {
                    Condition::Started => {
                        matches!(
                            ds,
                            State::Starting | State::Running | State::Unhealthy | State::Completed
                        )
                    }
                    Condition::Healthy => *ds == State::Running,
                    Condition::Completed => *ds == State::Completed,
                };
            if satisfied {
                continue;
            }
            if ds.terminal() {
                let detail = match (&self.svcs[dep.on].last_exit, ds) {
                    (Some(reason), State::Failed | State::Fatal | State::Exited) => {
                        format!(" ({reason})")
                    }
                    _ => String::new(),
                };
                return Gate::Blocked(format!("{name} is {ds}{detail}"));
            }
            waiting.push(format!("{name} ({})", dep.condition));
        }
        if waiting.is_empty() {
            Gate::Open
        } else {
            Gate::Wait(format!("waiting for {}", waiting.join(", ")))
        }
    }

    fn spawn(&mut self, i: usize) {
        let svc = &self.stack.services[i];
        let rt = &mut self.svcs[i];
        let spawned = process::spawn(&Launch {
            argv: &svc.command,
            env: &rt.env,
            working_dir: svc.working_dir.as_deref(),
            run_as: rt.run_as.as_ref(),
            capture: true,
        });
        let restart = rt.instance > 0;
        rt.instance += 1;
        rt.healthy_at = None;
        rt.health = Default::default();
        rt.stop_requested = false;
        if restart {
            rt.restarts += 1;
        }
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                error!("{}: {e}", svc.name);
                rt.spawned_at = Some(Instant::now());
                self.on_ended(i, ExitReason::SpawnFailed(e.0));
                return;
            }
        };
        let instance = rt.instance;
        rt.pid = Some(spawned.pid);
        rt.exec_report = Some(spawned.report);
        rt.spawned_at = Some(Instant::now());
        rt.set(State::Starting);
        rt.open_pipes = 2;
        info!("{}: started, pid {}", svc.name, spawned.pid);
        let pipes = spawned.output.into_iter().flatten();
        for (fd, stream) in pipes.zip([Stream::Stdout, Stream::Stderr]) {
            let prefix = self.sink.style().prefix(&svc.name, i, stream);
            let ring = rt.ring.clone();
            let sink = self.sink.clone();
            let tx = self.tx.clone();
            let changes = self.changes.clone();
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(pipe) => {
                    tokio::spawn(async move {
                        logs::forward(pipe, prefix, stream, ring, sink, changes).await;
                        let _ = tx.send(Event::OutputClosed { svc: i, instance });
                    });
                }
                Err(e) => {
                    warn!("{}: cannot read its output: {e}", svc.name);
                    rt.open_pipes -= 1;
                }
            }
        }
        match &svc.health {
            Some(h) => {
                let tx = self.tx.clone();
                let ctx = ExecContext {
                    env: rt.env.clone(),
                    working_dir: svc.working_dir.clone(),
                    run_as: rt.run_as.clone(),
                    waiters: self.waiters.clone(),
                };
                let task = tokio::spawn(health::run(h.clone(), ctx, move |result| {
                    let _ = tx.send(Event::Probe {
                        svc: i,
                        instance,
                        result,
                    });
                }));
                rt.probe = Some(task.abort_handle());
            }
            None if svc.startsecs.is_zero() => self.become_healthy(i),
            None => self.schedule_timer(i, svc.startsecs, Timer::Startsecs),
        }
    }

    fn become_healthy(&mut self, i: usize) {
        let rt = &mut self.svcs[i];
        rt.healthy_at = Some(Instant::now());
        rt.failed_starts = 0;
        let took = rt.spawned_at.map(|t| t.elapsed()).unwrap_or_default();
        rt.set(State::Running);
        let latency = rt
            .health
            .last
            .as_ref()
            .map(|r| format!(" (check took {})", fmt_latency(r.latency)))
            .unwrap_or_default();
        info!(
            "{}: healthy after {}{latency}",
            self.name(i),
            fmt_latency(took)
        );
        self.finish_ops(i, true, "healthy");
    }

    // ------------------------------------------------------------- ending

    fn on_main_exit(&mut self, i: usize, pid: Pid, reason: ExitReason) {
        let known: HashSet<Pid> = self.svcs.iter().filter_map(|s| s.pid).collect();
        let rt = &mut self.svcs[i];
        rt.pid = None;
        let reason = match rt.exec_report.take().and_then(|r| r.failure()) {
            Some(why) => {
                error!("{}: {why}", self.stack.services[i].name);
                ExitReason::SpawnFailed(why)
            }
            None => reason,
        };
        let sigkill = matches!(
            reason,
            ExitReason::Signal {
                signal: Signal::SIGKILL,
                ..
            }
        );
        // cogno sends SIGKILL only to what it is stopping.
        let reason =
            if sigkill && self.phase == Phase::Running && !rt.stop_requested && self.oom.rose() {
                ExitReason::LikelyOom
            } else {
                reason
            };
        if let Some(p) = rt.probe.take() {
            p.abort();
        }
        let strays = process::kill_strays(pid, &self.stack.services[i].name, &known);
        if !strays.is_empty() {
            debug!(
                "{}: killed {} leftover processes",
                self.stack.services[i].name,
                strays.len()
            );
        }
        rt.cleanup = Some(Cleanup {
            reason,
            strays,
            open_pipes: rt.open_pipes,
        });
        let next = if rt.state == State::Stopping {
            State::Stopping
        } else {
            State::Exiting
        };
        rt.set(next);
        self.schedule_timer(i, CLEANUP_LIMIT, Timer::CleanupLimit);
        self.try_finish_cleanup(i);
    }

    fn try_finish_cleanup(&mut self, i: usize) {
        if self.svcs[i]
            .cleanup
            .as_ref()
            .is_some_and(|c| c.strays.is_empty() && c.open_pipes == 0)
        {
            self.finish_cleanup(i);
        }
    }

    fn finish_cleanup(&mut self, i: usize) {
        if let Some(c) = self.svcs[i].cleanup.take() {
            self.on_ended(i, c.reason);
        }
    }

    /// The instance is gone (or never started): apply the restart policy.
    fn on_ended(&mut self, i: usize, reason: ExitReason) {
        let svc = &self.stack.services[i];
        let rt = &mut self.svcs[i];
        let ran = rt.spawned_at.map(|t| t.elapsed()).unwrap_or_default();
        rt.last_exit = Some(reason.clone());
        if self.phase != Phase::Running || rt.stop_requested || rt.want_down {
            info!(
                "{}: stopped ({reason}) after {}",
                svc.name,
                fmt_latency(ran)
            );
            self.on_stopped(i);
            return;
        }
        let name = svc.name.clone();
        let ending = restart::Ending {
            success: reason.success(),
            healthy_for: rt.healthy_at.map(|t| t.elapsed()),
        };
        let history = restart::History {
            failed_starts: rt.failed_starts,
            crash_streak: rt.crash_streak,
        };
        let (decision, history) = restart::decide(&restart::Rule::of(svc), history, ending);
        rt.failed_starts = history.failed_starts;
        rt.crash_streak = history.crash_streak;
        let ran = fmt_latency(ran);
        match decision {
            Decision::GiveUp { end, after } => {
                let state = match end {
                    End::Completed => State::Completed,
                    End::Exited => State::Exited,
                    End::Failed => State::Failed,
                    End::Fatal => State::Fatal,
                };
                match after {
                    Why::Completed => {
                        info!("{name}: completed in {ran}");
                        rt.set(state);
                        self.finish_ops(i, true, "completed");
                        return;
                    }
                    Why::FailedStart { attempt } => {
                        let tail = self.last_output(i);
                        let what = if state == State::Fatal {
                            format!("FATAL: gave up after {attempt} failed starts in a row")
                        } else {
                            format!("{state}")
                        };
                        error!("{name}: {what}: {reason} after {ran}{tail}");
                    }
                    Why::AfterRunning => warn!(
                        "{name}: {reason} after {ran}; its restart policy ({}) says not to restart it",
                        svc.restart
                    ),
                }
                self.svcs[i].set(state);
                self.on_given_up(i);
            }
            Decision::Restart {
                delay,
                after: Why::FailedStart { attempt },
            } => {
                warn!(
                    "{name}: failed to start ({reason} after {ran}); attempt {attempt} of {}, retrying in {}",
                    svc.max_restarts,
                    fmt_duration(delay)
                );
                self.back_off(i, delay);
            }
            Decision::Restart { delay, .. } => {
                warn!(
                    "{name}: {reason} after running {ran}; restarting {}",
                    if delay.is_zero() {
                        "now".to_owned()
                    } else {
                        format!("in {}", fmt_duration(delay))
                    }
                );
                self.back_off(i, delay);
            }
        }
    }

    fn back_off(&mut self, i: usize, delay: Duration) {
        if delay.is_zero() {
            self.svcs[i].set(State::Waiting("restarting".into()));
        } else {
            self.svcs[i].set(State::Backoff(Instant::now() + delay));
            self.schedule_timer(i, delay, Timer::Backoff);
        }
    }

    /// A service reached a state it will not leave on its own.
    fn on_given_up(&mut self, i: usize) {
        let why = format!(
            "{}{}",
            self.svcs[i].state,
            self.svcs[i]
                .last_exit
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        self.finish_ops(i, false, &why);
        let svc = &self.stack.services[i];
        let failed = matches!(self.svcs[i].state, State::Failed | State::Fatal);
        if svc.critical && (failed || self.svcs[i].state == State::Exited) {
            error!(
                "{}: critical service is {}: stopping the stack",
                svc.name, self.svcs[i].state
            );
            self.failed = true;
            self.begin_shutdown();
        }
    }

    fn last_output(&self, i: usize) -> String {
        let lines = self.svcs[i]
            .ring
            .lock()
            .expect("ring lock")
            .tail(REPORT_LINES);
        if lines.is_empty() {
            return String::from("; it wrote no output");
        }
        let mut out = format!("; its last {} lines of output:", lines.len());
        for l in lines {
            out.push_str("\n    ");
            if l.stream == Stream::Stderr {
                out.push_str("! ");
            }
            out.push_str(&l.text);
        }
        out
    }

    /// With nothing running and nothing that will start again, cogno's work is done.
    fn check_settled(&mut self) {
        if self.svcs.iter().all(|s| s.state.terminal() && !s.alive()) {
            let ok = self
                .svcs
                .iter()
                .all(|s| matches!(s.state, State::Completed | State::Exited));
            info!("nothing left to run: every service has ended");
            if !ok {
                self.failed = true;
            }
            self.phase = Phase::Stopping;
            self.shutdown_started = Some(Instant::now());
            self.advance_stops();
        }
    }
}

enum Gate {
    Open,
    Wait(String),
    Blocked(String),
}
