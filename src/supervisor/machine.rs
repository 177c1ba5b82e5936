//! One service's state machine, pure: [`Machine::step`] turns the current
//! state and one [`Input`] into the next state and a list of [`Effect`]s.
//! It does no I/O and reads no clock (the time comes with each step); the
//! supervisor's event loop feeds it inputs and carries out the effects.
//!
//! The states carry their own data (a running service has its pid, start
//! time and the moment it became healthy; a backoff its deadline; a failed
//! service its exit reason), so no invalid combination can be built. What
//! the operator (or a shutdown) wants is kept apart, in [`Intent`], as s6
//! keeps `flagwantup` apart from the state.
//!
//! What concerns several services — whether the dependencies are ready,
//! whether the dependants are down yet — is decided by the supervisor,
//! which says it with an input ([`Input::Gate`], [`Input::StopNow`]).

use super::restart::{self, Decision, End, History, Rule, Why};
use crate::config::{OnUnhealthy, Service};
use crate::control::ServiceState;
use crate::fmt::{fmt_duration, fmt_latency};
use crate::health::{self, ProbeResult};
use crate::os::process::{ExitReason, SpawnError};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::fmt;
use std::time::{Duration, Instant};
use tracing::Level;

/// How long an ended instance's leftovers may take to disappear before the
/// supervisor moves on without them.
pub const CLEANUP_LIMIT: Duration = Duration::from_secs(2);

/// Said of a service (not a oneshot) that exited 0 before it was ever up.
const ONESHOT_HINT: &str = "; it exited 0 before it was up, as a one-off task \
     (a migration, a setup step) does: if it is one, mark it `oneshot: true`, \
     and its dependants will wait for it to complete";

/// A main process that is running.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instance {
    pub pid: Pid,
    /// When it was spawned.
    pub since: Instant,
}

/// A main process that has ended; its leftovers are being cleaned up.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub reason: ExitReason,
    /// When it was spawned.
    pub since: Instant,
    /// When it became healthy, if it did.
    pub healthy_at: Option<Instant>,
}

/// Where a service is in its life; the names are what `cogno status` shows.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not started yet: a dependency is not in its condition (the reason says which).
    Waiting(String),
    /// A dependency can never reach its condition without intervention.
    Blocked(String),
    /// Spawned; not yet healthy (health check not passed, or not up for `startsecs`).
    Starting(Instance),
    /// Healthy.
    Running { main: Instance, healthy_at: Instant },
    /// Running, but the health check has failed `retries` times in a row
    /// (after having been healthy, or not yet).
    Unhealthy {
        main: Instance,
        healthy_at: Option<Instant>,
    },
    /// The main process ended; its leftovers are being killed and its output drained.
    Exiting(Ended),
    /// Waiting to be restarted.
    Backoff { until: Instant },
    /// Going down on request.
    Stopping(Stop),
    /// Stopped on request.
    Stopped,
    /// A oneshot that exited 0.
    Completed,
    /// Ended, and its restart policy says not to restart it.
    Exited(ExitReason),
    /// A oneshot that failed, or a service that failed with no restart left to try.
    Failed(ExitReason),
    /// Failed to start `max_restarts` times in a row: given up.
    Fatal(ExitReason),
}

/// Where a stop is.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// The stop signal was sent; waiting for the main process to end. With
    /// a verdict, nobody asked: its health check condemned it, and its end
    /// counts as a failure.
    Signalled {
        main: Instance,
        verdict: Option<Verdict>,
    },
    /// The main process ended; its leftovers are being cleaned up.
    CleaningUp(Ended),
}

/// Why the machine stops an instance of its own accord.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not healthy within `start_timeout`: it ends as a failed start.
    Late(Duration),
    /// Healthy since `healthy_at`, then `retries` failed checks in a row
    /// (`health.on_unhealthy: restart`): it ends as a crash.
    Unhealthy { healthy_at: Instant, why: String },
}

impl Verdict {
    /// How the instance counts as having ended, and when it had become healthy.
    pub fn outcome(&self) -> (ExitReason, Option<Instant>) {
        match self {
            Verdict::Late(t) => (
                ExitReason::NotHealthy(format!(
                    "not healthy within its start_timeout ({})",
                    fmt_duration(*t)
                )),
                None,
            ),
            Verdict::Unhealthy { healthy_at, why } => (
                ExitReason::NotHealthy(format!("unhealthy: {why}")),
                Some(*healthy_at),
            ),
        }
    }
}

impl State {
    /// The state's name, as `cogno status` shows it.
    pub fn kind(&self) -> ServiceState {
        match self {
            State::Waiting(_) => ServiceState::Waiting,
            State::Blocked(_) => ServiceState::Blocked,
            State::Starting(_) => ServiceState::Starting,
            State::Running { .. } => ServiceState::Running,
            State::Unhealthy { .. } => ServiceState::Unhealthy,
            State::Exiting(_) => ServiceState::Exiting,
            State::Backoff { .. } => ServiceState::Backoff,
            State::Stopping(_) => ServiceState::Stopping,
            State::Stopped => ServiceState::Stopped,
            State::Completed => ServiceState::Completed,
            State::Exited(_) => ServiceState::Exited,
            State::Failed(_) => ServiceState::Failed,
            State::Fatal(_) => ServiceState::Fatal,
        }
    }

    /// Nothing will happen to this service without an operator.
    pub fn terminal(&self) -> bool {
        matches!(
            self,
            State::Completed
                | State::Exited(_)
                | State::Failed(_)
                | State::Fatal(_)
                | State::Blocked(_)
                | State::Stopped
        )
    }

    /// Its main process, while it runs.
    pub fn main(&self) -> Option<Instance> {
        match self {
            State::Starting(main)
            | State::Running { main, .. }
            | State::Unhealthy { main, .. }
            | State::Stopping(Stop::Signalled { main, .. }) => Some(*main),
            _ => None,
        }
    }

    /// A process of this service exists or is being cleaned up.
    pub fn alive(&self) -> bool {
        matches!(
            self,
            State::Starting(_)
                | State::Running { .. }
                | State::Unhealthy { .. }
                | State::Exiting(_)
                | State::Stopping(_)
        )
    }

    /// Why a service given up on ended.
    pub fn exit_reason(&self) -> Option<&ExitReason> {
        match self {
            State::Exited(r) | State::Failed(r) | State::Fatal(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind().fmt(f)
    }
}

/// What the operator, or a shutdown, wants of a service, apart from where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intent {
    /// Left to its restart policy.
    #[default]
    Supervise,
    /// Take it down once its dependants are down, and leave it down.
    Down,
    /// Take it down once its dependants are down, then start it again.
    Restart,
}

impl Intent {
    pub fn down(self) -> bool {
        self != Intent::Supervise
    }
}

/// Whether a service's dependencies let it start.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Open,
    Wait(String),
    Blocked(String),
}

/// The timers a service sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Up this long without a health check: healthy.
    Startsecs,
    /// The backoff delay is over.
    Backoff,
    /// The stop signal's grace is over: SIGKILL.
    StopKill,
    /// Leftovers took too long to disappear: move on without them.
    CleanupLimit,
    /// `start_timeout` is over: a start that is not healthy yet has failed.
    StartDeadline,
}

/// Everything that moves a service.
#[derive(Debug)]
pub enum Input {
    /// The supervisor's verdict on its dependencies (while waiting or blocked).
    Gate(Gate),
    /// The spawn asked for succeeded.
    Spawned(Pid),
    /// The spawn asked for failed before a process existed.
    SpawnFailed(SpawnError),
    /// The main process ended.
    Exited(ExitReason),
    /// Its leftovers are gone and its output drained.
    CleanupDone,
    /// A health check answered.
    Probe(ProbeResult),
    /// A timer it set fired (stale ones are filtered out by epoch).
    Timer(Timer),
    /// An operator's start.
    Start,
    /// An operator's stop or restart: from now on, what is wanted.
    Want(Intent),
    /// Its dependants are down: send the stop signal, with this much grace.
    StopNow { grace: Duration },
    /// The whole stack is stopping.
    Shutdown,
}

/// What an operator waiting on this service is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A start or restart finished: `healthy` or `completed`.
    Up(&'static str),
    /// A start or restart ended in failure, and why.
    Failed(String),
    /// A stop finished.
    Down,
    /// Nothing more will be done: the stack is shutting down.
    ShuttingDown,
}

/// What the supervisor must do for a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start an instance; answer with [`Input::Spawned`] or [`Input::SpawnFailed`].
    Spawn,
    /// Start the health check of the instance just spawned.
    StartProbe,
    /// Stop the health check of the instance that ended.
    StopProbe,
    /// Send a signal to the service's process group.
    Signal(Pid, Signal),
    /// SIGKILL the process group of one that did not stop in time (exit status 1).
    Kill(Pid),
    /// Kill whatever the ended main process `pid` left behind; answer with
    /// [`Input::CleanupDone`] once it is gone and the output drained.
    KillLeftovers(Pid),
    /// Stop waiting for leftovers (report those still there).
    AbandonCleanup,
    /// Tell the supervisor about `timer` after this long; `epoch` dates it.
    StartTimer {
        timer: Timer,
        after: Duration,
        epoch: u64,
    },
    Log(Level, String),
    /// An error, followed by the service's last lines of output.
    Report(String),
    Answer(Answer),
    /// A critical service failed: stop the whole stack; cogno exits with
    /// this status (the service's own, as [`ExitReason::status`] gives it).
    StopStack(i32),
    /// A stop finished: the supervisor may now stop what this one was holding up.
    Stopped,
}

/// The part of a service's configuration the machine reads.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub rule: Rule,
    pub startsecs: Duration,
    /// With a health check: how many failures make it unhealthy, and how
    /// long after a start failures do not count.
    pub probe: Option<(u32, Duration)>,
    /// With a health check: how long a start may take to become healthy
    /// before it counts as failed; None for no limit.
    pub start_timeout: Option<Duration>,
    /// Restart it when, after having been healthy, it fails `retries`
    /// checks in a row (`health.on_unhealthy: restart`).
    pub restart_unhealthy: bool,
    pub critical: bool,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
}

impl Spec {
    pub fn of(svc: &Service) -> Spec {
        Spec {
            name: svc.name.clone(),
            rule: Rule::of(svc),
            startsecs: svc.startsecs,
            probe: svc.health.as_ref().map(|h| (h.retries, h.start_period)),
            start_timeout: svc.start_timeout,
            restart_unhealthy: svc
                .health
                .as_ref()
                .is_some_and(|h| h.on_unhealthy == OnUnhealthy::Restart),
            critical: svc.critical,
            stop_signal: svc.stop_signal,
            stop_timeout: svc.stop_timeout,
        }
    }
}

/// One service: its state, what is wanted of it, and what it remembers.
#[derive(Debug)]
pub struct Machine {
    pub state: State,
    pub intent: Intent,
    pub history: History,
    /// Bumped on every state change; timers carry it and are ignored once stale.
    pub epoch: u64,
    /// Consecutive failed health checks of this instance.
    pub probe_failures: u32,
    pub last_probe: Option<ProbeResult>,
    pub last_exit: Option<ExitReason>,
    /// The `start_timeout` an instance of this streak missed: set when one
    /// was not healthy in time, cleared once one is healthy or an operator
    /// starts it again. While set, its dependants are blocked (they would
    /// wait on it indefinitely) and the stack is degraded, not starting.
    pub overdue: Option<Duration>,
}

impl Default for Machine {
    fn default() -> Machine {
        Machine {
            state: State::Waiting("not started yet".into()),
            intent: Intent::Supervise,
            history: History::default(),
            epoch: 0,
            probe_failures: 0,
            last_probe: None,
            last_exit: None,
            overdue: None,
        }
    }
}

impl Machine {
    /// A service this run does not start: stopped until an operator's [`Input::Start`].
    pub fn left_out() -> Machine {
        Machine {
            state: State::Stopped,
            ..Machine::default()
        }
    }
}

/// Collects a step's effects.
struct Out<'a> {
    spec: &'a Spec,
    effects: Vec<Effect>,
}

impl Out<'_> {
    fn log(&mut self, level: Level, msg: impl fmt::Display) {
        self.effects
            .push(Effect::Log(level, format!("{}: {msg}", self.spec.name)));
    }

    fn push(&mut self, e: Effect) {
        self.effects.push(e);
    }
}

impl Machine {
    /// Moves to `state`; a timer set before is stale from now on.
    fn set(&mut self, state: State) {
        self.state = state;
        self.epoch += 1;
    }

    fn timer(&self, timer: Timer, after: Duration) -> Effect {
        Effect::StartTimer {
            timer,
            after,
            epoch: self.epoch,
        }
    }

    /// Takes `input` at time `now`; returns what the supervisor must do.
    pub fn step(&mut self, spec: &Spec, input: Input, now: Instant) -> Vec<Effect> {
        let mut out = Out {
            spec,
            effects: Vec::new(),
        };
        match input {
            Input::Gate(gate) => self.gate(gate, &mut out),
            Input::Spawned(pid) => self.spawned(Instance { pid, since: now }, now, &mut out),
            Input::SpawnFailed(error) => {
                self.reset_probe();
                let ended = Ended {
                    reason: ExitReason::SpawnFailed(error),
                    since: now,
                    healthy_at: None,
                };
                self.ended(ended, now, &mut out);
            }
            Input::Exited(reason) => self.exited(reason, &mut out),
            Input::CleanupDone => self.cleanup_done(now, &mut out),
            Input::Probe(result) => self.probe(result, now, &mut out),
            Input::Timer(timer) => self.on_timer(timer, now, &mut out),
            Input::Start => {
                if !self.state.alive()
                    && !matches!(self.state, State::Waiting(_) | State::Backoff { .. })
                {
                    self.history = History::default();
                    self.overdue = None;
                    self.set(State::Waiting("starting on request".into()));
                }
            }
            Input::Want(intent) => self.intent = intent,
            Input::StopNow { grace } => self.stop_now(grace, &mut out),
            Input::Shutdown => {
                self.intent = Intent::Down;
                if !self.state.alive() && !self.state.terminal() {
                    self.set(State::Stopped);
                }
                out.push(Effect::Answer(Answer::ShuttingDown));
            }
        }
        out.effects
    }

    fn gate(&mut self, gate: Gate, out: &mut Out) {
        if !matches!(self.state, State::Waiting(_) | State::Blocked(_)) {
            return;
        }
        match gate {
            Gate::Open => out.push(Effect::Spawn),
            Gate::Wait(why) => {
                if self.state != State::Waiting(why.clone()) {
                    self.set(State::Waiting(why));
                }
            }
            Gate::Blocked(why) => {
                if self.state != State::Blocked(why.clone()) {
                    out.log(Level::WARN, format_args!("blocked: {why}"));
                    out.push(Effect::Answer(Answer::Failed(format!("blocked: {why}"))));
                    self.set(State::Blocked(why));
                }
            }
        }
    }

    fn reset_probe(&mut self) {
        self.probe_failures = 0;
        self.last_probe = None;
    }

    fn spawned(&mut self, main: Instance, now: Instant, out: &mut Out) {
        self.reset_probe();
        self.set(State::Starting(main));
        out.log(Level::INFO, format_args!("started, pid {}", main.pid));
        let starved = std::mem::take(&mut self.history.starved);
        if starved > 0 {
            out.log(
                Level::INFO,
                format_args!(
                    "could start again after {starved} tries that lacked descriptors or processes"
                ),
            );
        }
        if out.spec.probe.is_some() {
            out.push(Effect::StartProbe);
            if let Some(t) = out.spec.start_timeout {
                out.push(self.timer(Timer::StartDeadline, t));
            }
        } else if out.spec.startsecs.is_zero() {
            self.become_healthy(main, now, out);
        } else {
            out.push(self.timer(Timer::Startsecs, out.spec.startsecs));
        }
    }

    fn become_healthy(&mut self, main: Instance, now: Instant, out: &mut Out) {
        self.history.failed_starts = 0;
        self.overdue = None;
        self.set(State::Running {
            main,
            healthy_at: now,
        });
        let latency = self
            .last_probe
            .as_ref()
            .map(|r| format!(" (check took {})", fmt_latency(r.latency)))
            .unwrap_or_default();
        out.log(
            Level::INFO,
            format_args!(
                "healthy after {}{latency}",
                fmt_latency(now.saturating_duration_since(main.since))
            ),
        );
        out.push(Effect::Answer(Answer::Up("healthy")));
    }

    fn probe(&mut self, result: ProbeResult, now: Instant, out: &mut Out) {
        let ok = result.ok;
        let error = result.error.clone().unwrap_or_default();
        self.last_probe = Some(result);
        if ok {
            self.probe_failures = 0;
            match self.state {
                State::Starting(main)
                | State::Unhealthy {
                    main,
                    healthy_at: None,
                } => self.become_healthy(main, now, out),
                State::Unhealthy {
                    main,
                    healthy_at: Some(healthy_at),
                } => {
                    out.log(Level::INFO, "healthy again");
                    self.set(State::Running { main, healthy_at });
                }
                _ => {}
            }
            return;
        }
        let (retries, start_period) = out.spec.probe.unwrap_or((1, Duration::ZERO));
        // Failures do not count while a service that was never healthy is
        // within its start period.
        if let State::Starting(main)
        | State::Unhealthy {
            main,
            healthy_at: None,
        } = self.state
        {
            if now.saturating_duration_since(main.since) < start_period {
                return;
            }
        }
        self.probe_failures += 1;
        if self.probe_failures < retries {
            return;
        }
        let (main, healthy_at) = match self.state {
            State::Starting(main) => (main, None),
            State::Running { main, healthy_at } => (main, Some(healthy_at)),
            _ => return,
        };
        let failures = self.probe_failures;
        // Liveness: only a service that has been healthy, and that nobody
        // is taking down, is restarted by its probe; one still starting has
        // its start deadline instead.
        if let Some(healthy_at) = healthy_at.filter(|_| out.spec.restart_unhealthy) {
            if !self.intent.down() {
                out.log(
                    Level::WARN,
                    format_args!(
                        "unhealthy after {failures} failed checks: {error}; restarting it (health.on_unhealthy: restart)"
                    ),
                );
                let why = format!("{failures} failed checks in a row: {error}");
                let grace = out.spec.stop_timeout;
                self.signal_stop(
                    main,
                    Some(Verdict::Unhealthy { healthy_at, why }),
                    grace,
                    out,
                );
                return;
            }
        }
        out.log(
            Level::WARN,
            format_args!("unhealthy after {failures} failed checks: {error}"),
        );
        self.set(State::Unhealthy { main, healthy_at });
        // The new state dates timers anew: the start deadline still holds.
        if let (None, Some(t)) = (healthy_at, out.spec.start_timeout) {
            let left = (main.since + t).saturating_duration_since(now);
            out.push(self.timer(Timer::StartDeadline, left));
        }
    }

    fn exited(&mut self, reason: ExitReason, out: &mut Out) {
        let Some(main) = self.state.main() else {
            return;
        };
        let (reason, healthy_at) = match &self.state {
            State::Running { healthy_at, .. } => (reason, Some(*healthy_at)),
            State::Unhealthy { healthy_at, .. } => (reason, *healthy_at),
            // Stopped for its health: that, not the signal, is how it ended.
            State::Stopping(Stop::Signalled {
                verdict: Some(v), ..
            }) => v.outcome(),
            _ => (reason, None),
        };
        let ended = Ended {
            reason,
            since: main.since,
            healthy_at,
        };
        let next = match self.state {
            State::Stopping(_) => State::Stopping(Stop::CleaningUp(ended)),
            _ => State::Exiting(ended),
        };
        self.set(next);
        out.push(Effect::StopProbe);
        out.push(self.timer(Timer::CleanupLimit, CLEANUP_LIMIT));
        // Last: the supervisor may answer with CleanupDone at once.
        out.push(Effect::KillLeftovers(main.pid));
    }

    fn cleanup_done(&mut self, now: Instant, out: &mut Out) {
        if let State::Exiting(ended) | State::Stopping(Stop::CleaningUp(ended)) = &self.state {
            let ended = ended.clone();
            self.ended(ended, now, out);
        }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant, out: &mut Out) {
        match (timer, &self.state) {
            (Timer::Startsecs, &State::Starting(main)) => self.become_healthy(main, now, out),
            (Timer::Backoff, State::Backoff { .. }) => {
                self.set(State::Waiting("restarting".into()));
            }
            (Timer::StopKill, State::Stopping(Stop::Signalled { main, verdict })) => {
                out.log(
                    Level::WARN,
                    format_args!(
                        "still running {} after {}; sending SIGKILL",
                        fmt_duration(out.spec.stop_timeout),
                        out.spec.stop_signal.as_str()
                    ),
                );
                // A stop nobody asked for is a restart, not a shutdown that
                // overran: it does not make cogno's exit status 1.
                out.push(match verdict {
                    Some(_) => Effect::Signal(main.pid, Signal::SIGKILL),
                    None => Effect::Kill(main.pid),
                });
            }
            (
                Timer::StartDeadline,
                &State::Starting(main)
                | &State::Unhealthy {
                    main,
                    healthy_at: None,
                },
            ) if !self.intent.down() => self.start_deadline(main, out),
            // A stop's cleanup is bounded like an exit's: a leftover that
            // never goes away must not hold the rest of the stop up.
            (
                Timer::CleanupLimit,
                State::Exiting(ended) | State::Stopping(Stop::CleaningUp(ended)),
            ) => {
                let ended = ended.clone();
                out.push(Effect::AbandonCleanup);
                self.ended(ended, now, out);
            }
            _ => {}
        }
    }

    /// `start_timeout` is over and the instance is not healthy: it is
    /// stopped, and ends as a failed start — unless its server says it is
    /// starting up or recovering (PostgreSQL replaying its WAL), which is
    /// progress, not a hang: it gets another `start_timeout`.
    fn start_deadline(&mut self, main: Instance, out: &mut Out) {
        let t = out.spec.start_timeout.unwrap_or_default();
        let took = fmt_duration(t);
        if self.last_probe.as_ref().is_some_and(health::starting_up) {
            out.log(
                Level::INFO,
                format_args!(
                    "not healthy after its start_timeout ({took}), but it says it is starting up or recovering: giving it another {took}"
                ),
            );
            out.push(self.timer(Timer::StartDeadline, t));
            return;
        }
        self.overdue = Some(t);
        let why = self
            .last_probe
            .as_ref()
            .and_then(|r| r.error.as_deref())
            .map(|e| format!(" (last check: {e})"))
            .unwrap_or_default();
        out.log(
            Level::WARN,
            format_args!(
                "not healthy within its start_timeout ({took}){why}: stopping it; this counts as a failed start"
            ),
        );
        let grace = out.spec.stop_timeout;
        self.signal_stop(main, Some(Verdict::Late(t)), grace, out);
    }

    /// The instance is gone (or never started): it was stopped, or the
    /// restart policy decides.
    fn ended(&mut self, ended: Ended, now: Instant, out: &mut Out) {
        let ran = fmt_latency(now.saturating_duration_since(ended.since));
        let reason = ended.reason;
        self.last_exit = Some(reason.clone());
        if self.intent.down() {
            out.log(
                Level::INFO,
                format_args!("stopped ({reason}) after running {ran}"),
            );
            self.stopped(out);
            return;
        }
        let exit = match &reason {
            ExitReason::SpawnFailed(e) if e.starved() => restart::Exit::Starved,
            ExitReason::SpawnFailed(e) if e.permanent() => restart::Exit::CannotRun,
            r if r.success() => restart::Exit::Success,
            _ => restart::Exit::Failure,
        };
        let ending = restart::Ending {
            exit,
            healthy_for: ended.healthy_at.map(|t| now.saturating_duration_since(t)),
        };
        // Exit 0 before ever being up is what a one-off task does.
        let hint = if reason.success() && !out.spec.rule.oneshot && ended.healthy_at.is_none() {
            ONESHOT_HINT
        } else {
            ""
        };
        let rule = &out.spec.rule;
        let (decision, history) = restart::decide(rule, self.history, ending);
        self.history = history;
        match decision {
            Decision::GiveUp { end, after } => {
                let state = match end {
                    End::Completed => State::Completed,
                    End::Exited => State::Exited(reason.clone()),
                    End::Failed => State::Failed(reason.clone()),
                    End::Fatal => State::Fatal(reason.clone()),
                };
                match after {
                    Why::Completed => {
                        out.log(Level::INFO, format_args!("completed in {ran}"));
                        self.set(state);
                        out.push(Effect::Answer(Answer::Up("completed")));
                        return;
                    }
                    Why::FailedStart { attempt } => {
                        let what = match end {
                            End::Fatal => {
                                format!("FATAL: gave up after {attempt} failed starts in a row")
                            }
                            _ => state.to_string(),
                        };
                        out.push(Effect::Report(format!(
                            "{}: {what}: {reason} after {ran}{hint}",
                            out.spec.name
                        )));
                    }
                    Why::CannotRun => {
                        let what = match end {
                            End::Fatal => "FATAL".to_owned(),
                            _ => state.to_string(),
                        };
                        out.push(Effect::Report(format!(
                            "{name}: {what}: {reason}; not retried, since no attempt can succeed: \
                             once the program is there, `cogno start {name}`",
                            name = out.spec.name
                        )));
                    }
                    Why::AfterRunning => out.log(
                        Level::WARN,
                        format_args!(
                            "{reason} after {ran}; its restart policy ({}) says not to restart it",
                            rule.policy
                        ),
                    ),
                }
                let why = format!("{state}: {reason}");
                self.set(state);
                out.push(Effect::Answer(Answer::Failed(why)));
                if out.spec.critical {
                    let what = format!("critical service is {}: stopping the stack", self.state);
                    out.log(Level::ERROR, what);
                    out.push(Effect::StopStack(
                        self.state.exit_reason().map_or(1, ExitReason::status),
                    ));
                }
            }
            Decision::Retry { delay, attempt } => {
                // Once per episode: the next spawn that succeeds says so.
                if attempt == 1 {
                    out.log(
                        Level::WARN,
                        format_args!(
                            "cannot start for now ({reason}); retrying every {} at most until it can, \
                             which does not count as a failed start",
                            fmt_duration(restart::STARVED_RETRY_MAX)
                        ),
                    );
                }
                self.set(State::Backoff { until: now + delay });
                out.push(self.timer(Timer::Backoff, delay));
            }
            Decision::Restart { delay, after } => {
                match after {
                    Why::FailedStart { attempt } => out.log(
                        Level::WARN,
                        format_args!(
                            "failed to start ({reason} after {ran}); attempt {attempt} of {}, retrying in {}{hint}",
                            rule.max_restarts,
                            fmt_duration(delay)
                        ),
                    ),
                    _ => out.log(
                        Level::WARN,
                        format_args!(
                            "{reason} after running {ran}; restarting {}",
                            if delay.is_zero() {
                                "now".to_owned()
                            } else {
                                format!("in {}", fmt_duration(delay))
                            }
                        ),
                    ),
                }
                if delay.is_zero() {
                    self.set(State::Waiting("restarting".into()));
                } else {
                    self.set(State::Backoff { until: now + delay });
                    out.push(self.timer(Timer::Backoff, delay));
                }
            }
        }
    }

    /// A service that was asked to go down is down.
    fn stopped(&mut self, out: &mut Out) {
        let intent = std::mem::take(&mut self.intent);
        if intent == Intent::Restart {
            self.history = History::default();
            self.overdue = None;
            self.set(State::Waiting("restarting on request".into()));
        } else {
            if !matches!(
                self.state,
                State::Completed | State::Failed(_) | State::Fatal(_) | State::Exited(_)
            ) {
                self.set(State::Stopped);
            }
            out.push(Effect::Answer(Answer::Down));
        }
        out.push(Effect::Stopped);
    }

    fn stop_now(&mut self, grace: Duration, out: &mut Out) {
        if !self.intent.down() || matches!(self.state, State::Stopping(_)) {
            return;
        }
        if !self.state.alive() {
            self.stopped(out);
            return;
        }
        // Its main process already ended; the stop completes with its cleanup.
        let Some(main) = self.state.main() else {
            return;
        };
        self.signal_stop(main, None, grace, out);
    }

    /// Sends the stop signal, and SIGKILL after `grace`.
    fn signal_stop(
        &mut self,
        main: Instance,
        verdict: Option<Verdict>,
        grace: Duration,
        out: &mut Out,
    ) {
        out.log(
            Level::DEBUG,
            format_args!("sending {}", out.spec.stop_signal.as_str()),
        );
        out.push(Effect::Signal(main.pid, out.spec.stop_signal));
        // A service on its way down is not probed any more: no probe process
        // can outlive it, and no result can matter to its stop.
        out.push(Effect::StopProbe);
        self.set(State::Stopping(Stop::Signalled { main, verdict }));
        out.push(self.timer(Timer::StopKill, grace));
    }
}

/// The machine driven by a fake child, as watchexec tests its jobs: no
/// process, no clock, no runtime. One test (or more) per transition of
/// docs/behaviour.md's state table.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RestartPolicy::{self, Always, Never, OnFailure};
    use crate::supervisor::restart::tests::rule;

    const S: Duration = Duration::from_secs(1);
    const PID: i32 = 4242;

    /// One service and its fake child: inputs go in, effects come out, time
    /// moves only when told.
    struct Fake {
        m: Machine,
        spec: Spec,
        now: Instant,
    }

    impl Fake {
        fn new(policy: RestartPolicy) -> Fake {
            Fake {
                m: Machine::default(),
                spec: Spec {
                    name: "web".into(),
                    rule: rule(policy, false),
                    startsecs: S,
                    probe: None,
                    start_timeout: None,
                    restart_unhealthy: false,
                    critical: false,
                    stop_signal: Signal::SIGTERM,
                    stop_timeout: 5 * S,
                },
                now: Instant::now(),
            }
        }

        fn with_probe(mut self) -> Fake {
            self.spec.probe = Some((2, 10 * S));
            self
        }

        fn step(&mut self, input: Input) -> Vec<Effect> {
            self.m.step(&self.spec, input, self.now)
        }

        fn after(&mut self, d: Duration) -> &mut Fake {
            self.now += d;
            self
        }

        fn kind(&self) -> ServiceState {
            self.m.state.kind()
        }

        /// Gate opens, the child is spawned.
        fn start(&mut self) -> Vec<Effect> {
            assert_eq!(self.step(Input::Gate(Gate::Open)), [Effect::Spawn]);
            self.step(Input::Spawned(Pid::from_raw(PID)))
        }

        /// Started, and healthy after startsecs.
        fn running(&mut self) {
            self.start();
            self.after(S).step(Input::Timer(Timer::Startsecs));
            assert_eq!(self.kind(), ServiceState::Running);
        }

        /// Started, and healthy when its first check passes.
        fn running_via_probe(&mut self) {
            self.start();
            self.probe(true);
            assert_eq!(self.kind(), ServiceState::Running);
        }

        /// The child exits with `code` and its leftovers are gone.
        fn exit(&mut self, code: i32) -> Vec<Effect> {
            let mut effects = self.step(Input::Exited(ExitReason::Code(code)));
            assert_eq!(self.kind(), ServiceState::Exiting);
            effects.extend(self.step(Input::CleanupDone));
            effects
        }

        fn probe(&mut self, ok: bool) -> Vec<Effect> {
            self.step(Input::Probe(ProbeResult {
                ok,
                latency: Duration::from_millis(3),
                error: (!ok).then(|| "connection refused".into()),
            }))
        }
    }

    fn pid() -> Pid {
        Pid::from_raw(PID)
    }

    fn timer(effects: &[Effect], which: Timer) -> Option<Duration> {
        effects.iter().find_map(|e| match e {
            Effect::StartTimer { timer, after, .. } if *timer == which => Some(*after),
            _ => None,
        })
    }

    fn logged(effects: &[Effect], text: &str) -> bool {
        effects.iter().any(|e| match e {
            Effect::Log(_, m) | Effect::Report(m) => m.contains(text),
            _ => false,
        })
    }

    fn answered(effects: &[Effect]) -> Vec<&Answer> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Answer(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn waiting_waits_for_its_dependencies_then_starts() {
        let mut f = Fake::new(Always);
        let why = "waiting for db (healthy)".to_owned();
        assert!(f.step(Input::Gate(Gate::Wait(why.clone()))).is_empty());
        assert_eq!(f.m.state, State::Waiting(why));
        let effects = f.start();
        assert_eq!(f.kind(), ServiceState::Starting);
        assert!(logged(&effects, "web: started, pid 4242"));
        assert_eq!(timer(&effects, Timer::Startsecs), Some(S));
    }

    #[test]
    fn waiting_is_blocked_by_a_dependency_that_cannot_get_there() {
        let mut f = Fake::new(Always);
        let effects = f.step(Input::Gate(Gate::Blocked("db is fatal".into())));
        assert_eq!(f.m.state, State::Blocked("db is fatal".into()));
        assert!(logged(&effects, "web: blocked: db is fatal"));
        assert_eq!(
            answered(&effects),
            [&Answer::Failed("blocked: db is fatal".into())]
        );
        // The same verdict again changes nothing and says nothing.
        assert!(f
            .step(Input::Gate(Gate::Blocked("db is fatal".into())))
            .is_empty());
    }

    #[test]
    fn blocked_leaves_once_the_dependency_is_started_again() {
        let mut f = Fake::new(Always);
        f.step(Input::Gate(Gate::Blocked("db is stopped".into())));
        f.step(Input::Gate(Gate::Wait("waiting for db (healthy)".into())));
        assert_eq!(f.kind(), ServiceState::Waiting);
        f.step(Input::Gate(Gate::Blocked("db is stopped".into())));
        assert_eq!(f.step(Input::Gate(Gate::Open)), [Effect::Spawn]);
    }

    #[test]
    fn starting_is_running_after_startsecs_without_a_health_check() {
        let mut f = Fake::new(Always);
        f.start();
        let effects = f.after(S).step(Input::Timer(Timer::Startsecs));
        assert!(matches!(f.m.state, State::Running { main, .. } if main.pid == pid()));
        assert!(logged(&effects, "web: healthy after 1.00s"));
        assert_eq!(answered(&effects), [&Answer::Up("healthy")]);
    }

    #[test]
    fn starting_is_running_at_once_with_startsecs_zero() {
        let mut f = Fake::new(Always);
        f.spec.startsecs = Duration::ZERO;
        let effects = f.start();
        assert_eq!(f.kind(), ServiceState::Running);
        assert_eq!(timer(&effects, Timer::Startsecs), None);
    }

    #[test]
    fn starting_is_running_when_its_health_check_passes() {
        let mut f = Fake::new(Always).with_probe();
        let effects = f.start();
        assert!(effects.contains(&Effect::StartProbe));
        assert_eq!(timer(&effects, Timer::Startsecs), None);
        let effects = f.after(S).probe(true);
        assert_eq!(f.kind(), ServiceState::Running);
        assert!(logged(&effects, "(check took 3ms)"));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut f = Fake::new(Always).with_probe();
        f.start();
        for _ in 0..5 {
            f.after(S).probe(false);
        }
        assert_eq!(f.kind(), ServiceState::Starting);
        assert_eq!(f.m.probe_failures, 0);
        f.after(10 * S).probe(false);
        assert_eq!(f.kind(), ServiceState::Starting);
        let effects = f.probe(false);
        assert_eq!(f.kind(), ServiceState::Unhealthy);
        assert!(logged(
            &effects,
            "web: unhealthy after 2 failed checks: connection refused"
        ));
        // Healthy for the first time: running, and the start is answered.
        let effects = f.probe(true);
        assert_eq!(f.kind(), ServiceState::Running);
        assert_eq!(answered(&effects), [&Answer::Up("healthy")]);
    }

    #[test]
    fn running_is_unhealthy_after_retries_failures_and_back_when_it_passes() {
        let mut f = Fake::new(Always).with_probe();
        f.start();
        f.probe(true);
        let State::Running { healthy_at, .. } = f.m.state else {
            panic!("{:?}", f.m.state)
        };
        assert!(f.after(S).probe(false).is_empty());
        assert_eq!(f.kind(), ServiceState::Running);
        f.probe(false);
        assert_eq!(
            f.m.state,
            State::Unhealthy {
                main: Instance {
                    pid: pid(),
                    since: healthy_at
                },
                healthy_at: Some(healthy_at)
            }
        );
        let effects = f.probe(true);
        assert!(logged(&effects, "web: healthy again"));
        assert!(answered(&effects).is_empty());
        // It keeps the moment it first became healthy.
        assert!(matches!(f.m.state, State::Running { healthy_at: h, .. } if h == healthy_at));
    }

    #[test]
    fn an_exit_is_exiting_until_the_leftovers_are_gone() {
        let mut f = Fake::new(Always).with_probe();
        f.running_via_probe();
        let effects = f.step(Input::Exited(ExitReason::Code(3)));
        assert_eq!(f.kind(), ServiceState::Exiting);
        assert_eq!(
            effects[0..1],
            [Effect::StopProbe],
            "the probe stops with its instance"
        );
        assert_eq!(timer(&effects, Timer::CleanupLimit), Some(CLEANUP_LIMIT));
        assert_eq!(effects.last(), Some(&Effect::KillLeftovers(pid())));
        // A probe or a second exit of the ended instance changes nothing.
        assert!(f.step(Input::Exited(ExitReason::Code(3))).is_empty());
        f.step(Input::CleanupDone);
        assert_eq!(f.kind(), ServiceState::Waiting);
    }

    #[test]
    fn exiting_moves_on_when_the_cleanup_limit_is_reached() {
        let mut f = Fake::new(Always);
        f.running();
        f.step(Input::Exited(ExitReason::Code(1)));
        let effects = f
            .after(CLEANUP_LIMIT)
            .step(Input::Timer(Timer::CleanupLimit));
        assert_eq!(effects[0], Effect::AbandonCleanup);
        assert_eq!(f.m.state, State::Waiting("restarting".into()));
    }

    #[test]
    fn a_failed_start_backs_off_and_is_retried() {
        let mut f = Fake::new(Always);
        f.start();
        let effects = f.exit(1);
        assert!(logged(
            &effects,
            "web: failed to start (exited with code 1 after 0ms); attempt 1 of 3, retrying in 1s"
        ));
        assert!(matches!(f.m.state, State::Backoff { until } if until == f.now + S));
        assert_eq!(timer(&effects, Timer::Backoff), Some(S));
        f.after(S).step(Input::Timer(Timer::Backoff));
        assert_eq!(f.m.state, State::Waiting("restarting".into()));
        f.start();
        f.exit(1);
        assert!(matches!(f.m.state, State::Backoff { until } if until == f.now + 2 * S));
    }

    #[test]
    fn a_spawn_that_fails_is_a_failed_start() {
        let mut f = Fake::new(Always);
        f.step(Input::Gate(Gate::Open));
        let effects = f.step(Input::SpawnFailed(SpawnError::Failed(
            "no such file: /bin/nope".into(),
        )));
        assert!(logged(&effects, "no such file: /bin/nope"));
        assert_eq!(f.kind(), ServiceState::Backoff);
        assert_eq!(f.m.history.failed_starts, 1);
    }

    #[test]
    fn a_spawn_starved_of_descriptors_is_retried_never_fatal_and_told_once() {
        let mut f = Fake::new(Always);
        let emfile =
            || Input::SpawnFailed(SpawnError::Starved("cannot create a pipe: EMFILE".into()));
        let mut told = 0;
        for _ in 0..10 {
            f.step(Input::Gate(Gate::Open));
            let effects = f.step(emfile());
            told += effects
                .iter()
                .filter(|e| matches!(e, Effect::Log(..)))
                .count();
            assert_eq!(f.kind(), ServiceState::Backoff);
            assert!(timer(&effects, Timer::Backoff) <= Some(S));
            f.step(Input::Timer(Timer::Backoff));
        }
        assert_eq!(told, 1, "one line for the whole episode");
        assert_eq!(f.m.history.failed_starts, 0);
        let effects = f.start();
        assert!(logged(
            &effects,
            "web: could start again after 10 tries that lacked descriptors or processes"
        ));
        assert_eq!(f.m.history.starved, 0);
    }

    #[test]
    fn fatal_after_max_restarts_failed_starts() {
        let mut f = Fake::new(Always);
        f.spec.critical = true;
        for _ in 0..2 {
            f.start();
            f.exit(1);
            f.step(Input::Timer(Timer::Backoff));
        }
        f.start();
        let effects = f.exit(1);
        assert_eq!(f.m.state, State::Fatal(ExitReason::Code(1)));
        assert!(effects.contains(&Effect::Report(
            "web: FATAL: gave up after 3 failed starts in a row: exited with code 1 after 0ms"
                .into()
        )));
        assert_eq!(
            answered(&effects),
            [&Answer::Failed("fatal: exited with code 1".into())]
        );
        assert!(logged(
            &effects,
            "web: critical service is fatal: stopping the stack"
        ));
        assert_eq!(effects.last(), Some(&Effect::StopStack(1)));
    }

    #[test]
    fn a_crash_after_being_healthy_restarts_at_once_then_backs_off() {
        let mut f = Fake::new(Always);
        f.running();
        let effects = f.after(S).exit(0);
        assert!(logged(
            &effects,
            "web: exited with code 0 after running 2.00s; restarting now"
        ));
        assert_eq!(f.m.state, State::Waiting("restarting".into()));
        f.running();
        f.exit(1);
        assert_eq!(f.kind(), ServiceState::Backoff);
        assert_eq!(f.m.history.crash_streak, 2);
    }

    #[test]
    fn a_policy_that_does_not_restart_leaves_it_exited_or_failed() {
        let mut f = Fake::new(OnFailure);
        f.running();
        let effects = f.exit(0);
        assert_eq!(f.m.state, State::Exited(ExitReason::Code(0)));
        assert!(logged(
            &effects,
            "its restart policy (on-failure) says not to restart it"
        ));
        let mut f = Fake::new(Never);
        f.start();
        let effects = f.exit(2);
        assert_eq!(f.m.state, State::Failed(ExitReason::Code(2)));
        assert!(effects.contains(&Effect::Report(
            "web: failed: exited with code 2 after 0ms".into()
        )));
        assert!(!effects.iter().any(|e| matches!(e, Effect::StopStack(_))));
    }

    #[test]
    fn a_oneshot_that_exits_0_is_completed() {
        let mut f = Fake::new(Never);
        f.spec.rule = rule(Never, true);
        f.start();
        let effects = f.after(S).exit(0);
        assert_eq!(f.m.state, State::Completed);
        assert!(logged(&effects, "web: completed in 1.00s"));
        assert_eq!(answered(&effects), [&Answer::Up("completed")]);
    }

    #[test]
    fn terminal_states_leave_on_an_operators_start() {
        let mut ends: Vec<Fake> = Vec::new();
        let mut stopped = Fake::new(Always);
        stopped.step(Input::Shutdown);
        ends.push(stopped);
        let mut completed = Fake::new(Never);
        completed.spec.rule = rule(Never, true);
        completed.start();
        completed.exit(0);
        ends.push(completed);
        let mut exited = Fake::new(OnFailure);
        exited.running();
        exited.exit(0);
        ends.push(exited);
        let mut failed = Fake::new(Never);
        failed.running();
        failed.exit(1);
        ends.push(failed);
        let mut fatal = Fake::new(Always);
        fatal.m.history.failed_starts = 2;
        fatal.start();
        fatal.exit(1);
        ends.push(fatal);
        for mut f in ends {
            let was = f.kind();
            assert!(f.m.state.terminal(), "{was}");
            f.m.intent = Intent::Supervise;
            f.step(Input::Start);
            assert_eq!(
                f.m.state,
                State::Waiting("starting on request".into()),
                "from {was}"
            );
            assert_eq!(f.m.history, History::default(), "from {was}");
        }
    }

    #[test]
    fn start_leaves_a_live_or_already_waiting_service_alone() {
        let mut f = Fake::new(Always);
        f.running();
        let epoch = f.m.epoch;
        f.step(Input::Start);
        assert_eq!((f.kind(), f.m.epoch), (ServiceState::Running, epoch));
        let mut f = Fake::new(Always);
        f.start();
        f.exit(1);
        f.step(Input::Start);
        assert_eq!(f.kind(), ServiceState::Backoff);
    }

    #[test]
    fn stopping_is_stopped_once_it_exits() {
        let mut f = Fake::new(Always);
        f.running();
        f.step(Input::Want(Intent::Down));
        assert_eq!(f.kind(), ServiceState::Running, "intent is not state");
        let effects = f.step(Input::StopNow { grace: 3 * S });
        assert_eq!(effects[1], Effect::Signal(pid(), Signal::SIGTERM));
        assert_eq!(timer(&effects, Timer::StopKill), Some(3 * S));
        assert_eq!(f.kind(), ServiceState::Stopping);
        // Told again while it stops: nothing more.
        assert!(f.step(Input::StopNow { grace: S }).is_empty());
        f.step(Input::Exited(ExitReason::Code(0)));
        assert!(matches!(f.m.state, State::Stopping(Stop::CleaningUp(_))));
        let effects = f.after(S).step(Input::CleanupDone);
        assert!(logged(
            &effects,
            "web: stopped (exited with code 0) after running 2.00s"
        ));
        assert_eq!(f.m.state, State::Stopped);
        assert_eq!(f.m.intent, Intent::Supervise);
        assert_eq!(answered(&effects), [&Answer::Down]);
        assert_eq!(effects.last(), Some(&Effect::Stopped));
    }

    #[test]
    fn stopping_kills_after_its_grace() {
        let mut f = Fake::new(Always);
        f.running();
        f.step(Input::Want(Intent::Down));
        f.step(Input::StopNow { grace: 5 * S });
        let effects = f.after(5 * S).step(Input::Timer(Timer::StopKill));
        assert!(logged(
            &effects,
            "web: still running 5s after SIGTERM; sending SIGKILL"
        ));
        assert_eq!(effects.last(), Some(&Effect::Kill(pid())));
    }

    /// Issue 16.5: a service that ignores its stop signal while its exec
    /// probe runs is SIGKILLed at its deadline, and its stop ends within the
    /// cleanup limit even if a leftover (a probe's process) is never reaped.
    #[test]
    fn a_stop_escalates_whatever_its_probe_does() {
        let mut f = Fake::new(Always).with_probe();
        f.running_via_probe();
        f.step(Input::Want(Intent::Down));
        let effects = f.step(Input::StopNow { grace: 5 * S });
        assert!(effects.contains(&Effect::StopProbe), "{effects:?}");
        let Some(&Effect::StartTimer { epoch, .. }) = effects.last() else {
            panic!("{effects:?}")
        };
        // Results of a probe that was in flight still arrive: they move nothing.
        for ok in [false, true, false, false, true] {
            assert!(f.after(S / 10).probe(ok).is_empty());
        }
        assert_eq!(f.m.epoch, epoch, "the stop timer stays current");
        let effects = f.after(5 * S).step(Input::Timer(Timer::StopKill));
        assert_eq!(effects.last(), Some(&Effect::Kill(pid())));
        f.step(Input::Exited(ExitReason::Signal {
            signal: Signal::SIGKILL,
            core: false,
        }));
        assert!(matches!(f.m.state, State::Stopping(Stop::CleaningUp(_))));
        let effects = f
            .after(CLEANUP_LIMIT)
            .step(Input::Timer(Timer::CleanupLimit));
        assert_eq!(effects[0], Effect::AbandonCleanup);
        assert_eq!(f.m.state, State::Stopped);
        assert_eq!(effects.last(), Some(&Effect::Stopped));
    }

    #[test]
    fn a_restart_stops_then_waits_to_start_again() {
        let mut f = Fake::new(Always);
        f.running();
        f.m.history.crash_streak = 2;
        f.step(Input::Want(Intent::Restart));
        f.step(Input::StopNow { grace: S });
        f.step(Input::Exited(ExitReason::Signal {
            signal: Signal::SIGTERM,
            core: false,
        }));
        let effects = f.step(Input::CleanupDone);
        assert_eq!(f.m.state, State::Waiting("restarting on request".into()));
        assert_eq!(f.m.history, History::default());
        assert!(answered(&effects).is_empty(), "answered once healthy");
    }

    #[test]
    fn a_service_that_is_not_running_stops_at_once() {
        let mut f = Fake::new(Always);
        f.step(Input::Gate(Gate::Wait("waiting for db (healthy)".into())));
        f.step(Input::Want(Intent::Down));
        let effects = f.step(Input::StopNow { grace: S });
        assert_eq!(f.m.state, State::Stopped);
        assert_eq!(effects, [Effect::Answer(Answer::Down), Effect::Stopped]);
    }

    #[test]
    fn an_exiting_service_told_to_stop_stops_with_its_cleanup() {
        let mut f = Fake::new(Always);
        f.running();
        f.step(Input::Exited(ExitReason::Code(1)));
        f.step(Input::Want(Intent::Down));
        assert!(f.step(Input::StopNow { grace: S }).is_empty());
        f.step(Input::CleanupDone);
        assert_eq!(f.m.state, State::Stopped);
    }

    #[test]
    fn shutdown_stops_what_is_not_running_and_refuses_waiting_operators() {
        let mut f = Fake::new(Always);
        f.start();
        f.exit(1);
        let effects = f.step(Input::Shutdown);
        assert_eq!(f.m.state, State::Stopped);
        assert_eq!(f.m.intent, Intent::Down);
        assert_eq!(answered(&effects), [&Answer::ShuttingDown]);
        // A failed service stays failed.
        let mut f = Fake::new(Never);
        f.running();
        f.exit(1);
        f.step(Input::Shutdown);
        assert_eq!(f.kind(), ServiceState::Failed);
    }

    #[test]
    fn timers_of_another_state_do_nothing_and_state_changes_date_them() {
        let mut f = Fake::new(Always);
        let effects = f.start();
        let Some(Effect::StartTimer { epoch, .. }) = effects.last() else {
            panic!("{effects:?}")
        };
        assert_eq!(*epoch, f.m.epoch);
        for t in [Timer::Backoff, Timer::StopKill, Timer::CleanupLimit] {
            assert!(f.step(Input::Timer(t)).is_empty());
        }
        f.exit(1);
        assert!(f.m.epoch > *epoch);
        assert!(f.step(Input::Timer(Timer::Startsecs)).is_empty());
    }

    /// Issue 15.5: a program that cannot run is fatal at its first attempt.
    #[test]
    fn a_program_that_cannot_run_is_fatal_at_once() {
        let mut f = Fake::new(Always);
        f.spec.critical = true;
        f.step(Input::Gate(Gate::Open));
        let missing = SpawnError::Permanent("`nope` was not found in PATH (/usr/bin:/bin)".into());
        let effects = f.step(Input::SpawnFailed(missing.clone()));
        assert_eq!(f.m.state, State::Fatal(ExitReason::SpawnFailed(missing)));
        assert!(effects.contains(&Effect::Report(
            "web: FATAL: could not start: `nope` was not found in PATH (/usr/bin:/bin); \
             not retried, since no attempt can succeed: once the program is there, \
             `cogno start web`"
                .into()
        )));
        assert_eq!(timer(&effects, Timer::Backoff), None);
        assert_eq!(effects.last(), Some(&Effect::StopStack(127)));
    }

    /// Issue 15.6: a service that exits 0 before it is up is told to be a oneshot.
    #[test]
    fn an_exit_0_before_being_up_suggests_a_oneshot() {
        let mut f = Fake::new(OnFailure);
        f.start();
        let effects = f.exit(0);
        assert_eq!(f.m.state, State::Exited(ExitReason::Code(0)));
        assert!(logged(&effects, "web: exited: exited with code 0 after 0ms; it exited 0 before it was up, as a one-off task (a migration, a setup step) does: if it is one, mark it `oneshot: true`"));
        // Retried under `always`: each attempt says it.
        let mut f = Fake::new(Always);
        f.start();
        assert!(logged(&f.exit(0), "mark it `oneshot: true`"));
        // Not said of a failure, nor of a exit after being up.
        let mut f = Fake::new(Always);
        f.start();
        assert!(!logged(&f.exit(1), "oneshot"));
        f.step(Input::Timer(Timer::Backoff));
        f.running();
        assert!(!logged(&f.exit(0), "oneshot"));
    }

    /// Issue 14, exit status: a critical service's failure stops the stack
    /// with its own status, as tini passes its child's on.
    #[test]
    fn a_critical_failure_stops_the_stack_with_the_services_status() {
        let segv = ExitReason::Signal {
            signal: Signal::SIGSEGV,
            core: true,
        };
        for (reason, status) in [
            (ExitReason::Code(7), 7),
            (segv, 139),
            (ExitReason::Code(0), 1),
        ] {
            let mut f = Fake::new(Never);
            f.spec.critical = true;
            f.running();
            f.step(Input::Exited(reason.clone()));
            let effects = f.step(Input::CleanupDone);
            assert_eq!(effects.last(), Some(&Effect::StopStack(status)), "{reason}");
        }
    }

    fn with_liveness(mut f: Fake) -> Fake {
        f.spec.restart_unhealthy = true;
        f
    }

    /// Issue 14, liveness: once healthy, `retries` failed checks in a row
    /// stop it and it restarts through the crash path.
    #[test]
    fn a_healthy_service_that_stops_answering_is_restarted_as_a_crash() {
        let mut f = with_liveness(Fake::new(OnFailure).with_probe());
        f.running_via_probe();
        assert!(f.after(S).probe(false).is_empty());
        let effects = f.probe(false);
        assert!(logged(
            &effects,
            "web: unhealthy after 2 failed checks: connection refused; restarting it (health.on_unhealthy: restart)"
        ));
        assert!(effects.contains(&Effect::Signal(pid(), Signal::SIGTERM)));
        assert!(effects.contains(&Effect::StopProbe));
        assert_eq!(timer(&effects, Timer::StopKill), Some(5 * S));
        assert_eq!(f.kind(), ServiceState::Stopping);
        // It ignores its stop signal: SIGKILL, which is no failed shutdown.
        let effects = f.after(5 * S).step(Input::Timer(Timer::StopKill));
        assert_eq!(
            effects.last(),
            Some(&Effect::Signal(pid(), Signal::SIGKILL))
        );
        // However it ended (here: exit 0), it was unhealthy: a crash.
        f.step(Input::Exited(ExitReason::Code(0)));
        let effects = f.step(Input::CleanupDone);
        assert!(logged(
            &effects,
            "web: unhealthy: 2 failed checks in a row: connection refused after running 6.00s; restarting now"
        ));
        assert_eq!(f.m.state, State::Waiting("restarting".into()));
        assert_eq!(f.m.history.crash_streak, 1);
        assert_eq!(
            f.m.last_exit,
            Some(ExitReason::NotHealthy(
                "unhealthy: 2 failed checks in a row: connection refused".into()
            ))
        );
        // The next time it goes the same way, it backs off.
        f.start();
        f.probe(true);
        f.probe(false);
        f.probe(false);
        f.step(Input::Exited(ExitReason::Code(0)));
        f.step(Input::CleanupDone);
        assert_eq!(f.kind(), ServiceState::Backoff);
    }

    /// Issue 14, liveness: never while it starts, nor while it is taken down.
    #[test]
    fn liveness_leaves_starting_and_stopping_services_alone() {
        let mut f = with_liveness(Fake::new(Always).with_probe());
        f.start();
        f.after(10 * S).probe(false);
        f.probe(false);
        assert_eq!(f.kind(), ServiceState::Unhealthy);
        let mut f = with_liveness(Fake::new(Always).with_probe());
        f.running_via_probe();
        f.step(Input::Want(Intent::Down));
        f.probe(false);
        let effects = f.probe(false);
        assert_eq!(f.kind(), ServiceState::Unhealthy);
        assert!(!effects.iter().any(|e| matches!(e, Effect::Signal(..))));
        // Without on_unhealthy: restart, only marked.
        let mut f = Fake::new(Always).with_probe();
        f.running_via_probe();
        f.probe(false);
        f.probe(false);
        assert_eq!(f.kind(), ServiceState::Unhealthy);
    }

    fn with_deadline(mut f: Fake, t: Duration) -> Fake {
        f.spec.start_timeout = Some(t);
        f
    }

    /// Issue 14, start deadline: not healthy within start_timeout is a
    /// failed start; the streak stays overdue until one is healthy.
    #[test]
    fn a_start_past_its_deadline_is_stopped_as_a_failed_start() {
        let mut f = with_deadline(Fake::new(Always).with_probe(), 30 * S);
        let effects = f.start();
        assert_eq!(timer(&effects, Timer::StartDeadline), Some(30 * S));
        // Unhealthy before its deadline: the deadline is set again for what is left.
        f.after(11 * S).probe(false);
        let effects = f.probe(false);
        assert_eq!(f.kind(), ServiceState::Unhealthy);
        assert_eq!(timer(&effects, Timer::StartDeadline), Some(19 * S));
        let effects = f.after(19 * S).step(Input::Timer(Timer::StartDeadline));
        assert!(logged(
            &effects,
            "web: not healthy within its start_timeout (30s) (last check: connection refused): stopping it; this counts as a failed start"
        ));
        assert!(effects.contains(&Effect::Signal(pid(), Signal::SIGTERM)));
        assert_eq!(f.m.overdue, Some(30 * S));
        f.step(Input::Exited(ExitReason::Signal {
            signal: Signal::SIGTERM,
            core: false,
        }));
        let effects = f.step(Input::CleanupDone);
        assert!(logged(
            &effects,
            "web: failed to start (not healthy within its start_timeout (30s) after 30.00s); attempt 1 of 3"
        ));
        assert_eq!(f.kind(), ServiceState::Backoff);
        assert_eq!(f.m.overdue, Some(30 * S), "still failing");
        // Two more: fatal, and the critical stack stops with status 1.
        f.spec.critical = true;
        for _ in 0..2 {
            f.step(Input::Timer(Timer::Backoff));
            f.start();
            f.after(30 * S).step(Input::Timer(Timer::StartDeadline));
            f.step(Input::Exited(ExitReason::Code(0)));
            f.step(Input::CleanupDone);
        }
        assert_eq!(f.kind(), ServiceState::Fatal);
        // An operator's start clears it; so does becoming healthy.
        f.step(Input::Start);
        assert_eq!(f.m.overdue, None);
        f.m.overdue = Some(S);
        f.start();
        f.probe(true);
        assert_eq!(f.m.overdue, None);
        assert_eq!(f.kind(), ServiceState::Running);
    }

    /// A server that says it is starting up or recovering is making progress:
    /// it gets another start_timeout instead of being killed mid-recovery.
    #[test]
    fn a_recovering_server_gets_more_time() {
        let mut f = with_deadline(Fake::new(Always).with_probe(), 30 * S);
        f.start();
        f.after(S).step(Input::Probe(ProbeResult {
            ok: false,
            latency: Duration::from_millis(3),
            error: Some("FATAL: the database system is starting up".into()),
        }));
        let effects = f.after(29 * S).step(Input::Timer(Timer::StartDeadline));
        assert_eq!(f.kind(), ServiceState::Starting);
        assert_eq!(timer(&effects, Timer::StartDeadline), Some(30 * S));
        assert_eq!(f.m.overdue, None);
    }
}
