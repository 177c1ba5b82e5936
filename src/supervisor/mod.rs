//! The supervisor: one event loop that owns every service's state machine.
//!
//! Everything that changes a service's state arrives as an event — SIGCHLD
//! (then `waitpid`), a probe result, an output pipe reaching end of file, a
//! timer, a signal, an operator's request — and is handled to completion
//! before the next one. There is no polling tick: with nothing to do, cogno
//! sleeps in `epoll_wait`.
//!
//! Each event becomes an [`machine::Input`] to one service's pure state
//! machine ([`machine`]); the loop carries out the [`machine::Effect`]s it
//! returns (spawn, signal, timers, logs, answers to operators). What spans
//! services — dependency gates, stop order, the stack's phase — is decided
//! here and told to each machine as an input.

mod env;
mod machine;
mod operator;
mod reload;
mod restart;
mod rewatch;
mod state;
mod stopping;

pub use env::service_env;
pub use machine::State;
pub use reload::{Baseline, Derived, Reloader};

use crate::config::{Condition, Selection, Stack};
use crate::control::{self, Request};
use crate::events::{Event as StackEvent, Events};
use crate::fmt::fmt_duration;
use crate::health::{self, ExecContext, ProbeResult};
use crate::logs::{self, Sink, Stream};
use crate::notify::Notifier;
use crate::os::oom::OomCounter;
use crate::os::process::{self, ExitReason, Launch};
use crate::os::reaper::{self, Waiters};
use futures_util::StreamExt;
use machine::{Effect, Gate, Input, Spec, Timer, CLEANUP_LIMIT};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use state::ServiceRt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, info, trace, warn, Level};

/// After the services, how long stray processes get between SIGTERM and SIGKILL.
/// How long cogno waits, once the stack is down, for notifications still
/// being delivered.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
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
    /// A scheduled oneshot's time has come (see `start_schedules`).
    Scheduled {
        svc: usize,
    },
    /// A service's watched paths changed (`crate::watch`).
    Watched(crate::watch::Change),
    /// A step of a watched change's reload ended (see `rewatch.rs`).
    Reload {
        svc: usize,
        step: rewatch::Step,
        outcome: control::Outcome,
    },
    /// Status requests waiting for fresh probe results are answered now.
    FreshLimit,
    ShutdownDeadline,
    FinalKill,
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
    /// The exit status of the first critical service whose failure stopped
    /// the stack: cogno exits with it, as tini does with its child's.
    cause: Option<i32>,
    shutdown_started: Option<Instant>,
    exit_code: Option<i32>,
    started: Instant,
    /// The stack has been ready at least once (a later problem is "degraded").
    ever_ready: bool,
    changes: logs::Changes,
    events: Events,
    on_ready: Option<Box<dyn FnOnce()>>,
    oom: OomCounter,
    /// Status requests waiting for fresh probe results (see `operator.rs`).
    fresh_waits: Vec<operator::FreshWait>,
    /// The profiles this run was started with: a left-out service that an
    /// operator starts brings the dependencies they enable.
    profiles: Vec<String>,
    /// cogno's own environment, which every service inherits.
    base_env: Vec<(String, String)>,
    /// Reads the stack file again, and what it was (see `reload.rs`).
    loader: Option<Box<dyn Reloader>>,
    baseline: Option<Baseline>,
    /// Where each service's main process is recorded, for the next start
    /// after cogno was killed (see `leftovers`).
    recorder: Option<crate::leftovers::Recorder>,
    /// The services' log files, when they are on (see `logfiles`).
    files: Option<crate::logfiles::FileLogs>,
    /// The stack's phase as last published (a `phase` event on each change).
    last_phase: control::Phase,
    /// The critical service whose failure is stopping the stack, and why.
    stop_cause: Option<(String, String)>,
    /// Scheduled backups, until the stack is first ready (see `crate::backups`).
    scheduled_backups: Option<crate::backups::Backups>,
    /// Their status, once started, for `cogno status`.
    backups: Option<crate::backups::Running>,
    /// The scheduled oneshots this run runs at their times, as they were at start.
    scheduled: Vec<(usize, crate::schedule::Schedule)>,
    /// The file watcher's task, while some service has `watch:`.
    watcher: Option<tokio::task::AbortHandle>,
    /// Directories no watch sees (the data directory).
    unwatched: Vec<std::path::PathBuf>,
    /// Everything has ended, and cogno waits for a watched change (said once).
    awaiting_saves: bool,
}

impl Supervisor {
    /// `base_env` is cogno's own environment, which every service inherits;
    /// `derived[i]` what cogno derives for service i (connection settings,
    /// secrets); only the services `selection` chose start.
    pub fn new(
        stack: Stack,
        selection: Selection,
        base_env: Vec<(String, String)>,
        derived: Vec<Vec<(String, String)>>,
        sink: Sink,
        pid1: bool,
    ) -> Supervisor {
        let root = nix::unistd::geteuid().is_root();
        // Those a profile or a subset left out are not run on schedule either.
        let scheduled = (stack.services.iter().zip(&selection.chosen))
            .enumerate()
            .filter(|(_, (_, &chosen))| chosen)
            .filter_map(|(i, (s, _))| Some((i, s.schedule.clone()?)))
            .collect();
        let svcs = stack
            .services
            .iter()
            .zip(derived)
            .zip(selection.chosen)
            .map(|((s, derived), chosen)| {
                // A scheduled oneshot waits for its time, unless told to run at start too.
                let chosen = chosen && (s.schedule.is_none() || s.run_at_start);
                let run_as = s.run_as.clone();
                let env = env::service_env(&derived, &base_env, &stack.env, s, run_as.as_ref());
                ServiceRt::new(Spec::of(s), run_as, env, chosen)
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
            cause: None,
            shutdown_started: None,
            exit_code: None,
            started: Instant::now(),
            ever_ready: false,
            changes: tokio::sync::watch::Sender::new(0),
            events: Events::default(),
            on_ready: None,
            oom: OomCounter::open(),
            fresh_waits: Vec::new(),
            profiles: selection.profiles,
            base_env,
            loader: None,
            baseline: None,
            recorder: None,
            files: None,
            last_phase: control::Phase::Starting,
            stop_cause: None,
            scheduled_backups: None,
            backups: None,
            scheduled,
            watcher: None,
            unwatched: Vec::new(),
            awaiting_saves: false,
        }
    }

    /// Records each service's main process in DATA/run/services from now on.
    pub fn record_pids(&mut self, recorder: crate::leftovers::Recorder) {
        self.recorder = Some(recorder);
    }

    /// Writes each service's output to its log file too.
    pub fn write_files(&mut self, files: crate::logfiles::FileLogs) {
        self.files = Some(files);
    }

    /// Takes scheduled backups of the stack while it runs.
    pub fn back_up(&mut self, backups: crate::backups::Backups) {
        self.scheduled_backups = Some(backups);
    }

    /// Leaves `dir` out of every `watch:` (the data directory, which the
    /// servers and the log files write to all the time).
    pub fn never_watch(&mut self, dir: &std::path::Path) {
        self.unwatched
            .push(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()));
    }

    /// Runs `f` once, the first time the stack is ready.
    pub fn on_first_ready(&mut self, f: impl FnOnce() + 'static) {
        self.on_ready = Some(Box::new(f));
    }

    /// Lets `cogno reload` and SIGHUP read the stack file again with
    /// `loader`; `baseline` is what the running stack was loaded from.
    pub fn on_reload(&mut self, baseline: Baseline, loader: Box<dyn Reloader>) {
        self.baseline = Some(baseline);
        self.loader = Some(loader);
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
            events: self.events.clone(),
        }
    }

    /// Runs the stack until it has stopped; returns cogno's exit status.
    pub async fn run(mut self, mut signals: signal_hook_tokio::Signals) -> i32 {
        let selected = self.svcs.iter().filter(|s| s.selected).count();
        let left_out = match self.svcs.len() - selected {
            0 => String::new(),
            n => format!(" ({n} left out)"),
        };
        info!(
            "starting {}{left_out} in {}",
            crate::fmt::count(selected, "service"),
            crate::fmt::count(self.stack.plan.tiers.len(), "tier")
        );
        let notifier = self
            .stack
            .notify
            .as_ref()
            .map(|n| Notifier::start(n, &self.events, &self.waiters));
        self.start_schedules();
        self.watch_files();
        loop {
            // Whatever the last input was (a SIGCHLD can be the last word on
            // a service) — or none yet, at the start, where services that are
            // healthy at spawn may already make the stack ready — what it
            // changed is acted on before waiting for the next one.
            if self.phase == Phase::Running {
                self.evaluate_gates();
                self.note_readiness();
                self.check_settled();
            }
            self.note_phase();
            if let Some(code) = self.exit_code {
                if let Some(n) = &notifier {
                    self.drain(n, &mut signals).await;
                }
                signals.handle().close();
                if let Some(w) = self.watcher.take() {
                    w.abort();
                }
                return code;
            }
            tokio::select! {
                Some(sig) = signals.next() => self.on_signal(sig),
                Some(ev) = self.rx.recv() => self.on_event(ev),
                Some(req) = self.requests.recv() => self.on_request(req),
            }
        }
    }

    fn name(&self, i: usize) -> &str {
        &self.stack.services[i].name
    }

    /// Gives notifications still being delivered (the critical failure that
    /// stopped the stack, say) up to [`DRAIN_LIMIT`] once everything is down,
    /// reaping meanwhile (a hook's status comes through the reaper). A
    /// signal ends the wait.
    async fn drain(&mut self, notifier: &Notifier, signals: &mut signal_hook_tokio::Signals) {
        let idle = notifier.idle();
        tokio::pin!(idle);
        let limit = tokio::time::sleep(DRAIN_LIMIT);
        tokio::pin!(limit);
        loop {
            tokio::select! {
                _ = &mut idle => return,
                _ = &mut limit => {
                    warn!("notifications still undelivered after {}: exiting without them", fmt_duration(DRAIN_LIMIT));
                    return;
                }
                Some(sig) = signals.next() => match sig {
                    SIGCHLD => self.reap(),
                    _ => return,
                },
            }
        }
    }

    /// One timer task per scheduled oneshot: it sleeps until the next time
    /// the schedule gives and tells the loop, which starts the service
    /// unless its last run is still going. The times are fixed at start (a
    /// reload does not change them).
    fn start_schedules(&self) {
        for (svc, schedule) in self.scheduled.clone() {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let mut after = std::time::SystemTime::now();
                while let Some(due) = schedule.next_after(after) {
                    crate::schedule::sleep_until(due).await;
                    if tx.send(Event::Scheduled { svc }).is_err() {
                        return;
                    }
                    // Never before `due`: a timer that woke early must not fire twice.
                    after = std::time::SystemTime::now().max(due);
                }
            });
        }
    }

    fn schedule(&self, after: Duration, ev: Event) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(ev);
        });
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
            SIGHUP if self.phase == Phase::Running => self.reload_on_signal(),
            _ => {}
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Timer { svc, epoch, kind } => {
                if self.svcs[svc].machine.epoch == epoch {
                    self.feed(svc, Input::Timer(kind));
                }
            }
            Event::Watched(change) => self.on_watched(change),
            Event::Reload { svc, step, outcome } => self.on_reload_step(svc, step, outcome),
            Event::Probe {
                svc,
                instance,
                result,
            } => {
                let rt = &mut self.svcs[svc];
                if rt.instance == instance && rt.state().main().is_some() {
                    rt.probed_at = Some(Instant::now());
                    rt.metrics.probe(result.ok, result.latency);
                    self.feed(svc, Input::Probe(result));
                    self.answer_fresh(Some(svc));
                }
            }
            Event::OutputClosed { svc, instance } => {
                let rt = &mut self.svcs[svc];
                if rt.instance == instance {
                    rt.open_pipes = rt.open_pipes.saturating_sub(1);
                    self.try_finish_cleanup(svc);
                }
            }
            Event::Scheduled { svc } => self.run_scheduled(svc),
            Event::FreshLimit => self.answer_fresh(None),
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
        let mut orphans = false;
        for (pid, reason) in reaper::reap(&self.waiters) {
            let main = |s: &ServiceRt| s.state().main().map(|m| m.pid) == Some(pid);
            let stray = |s: &ServiceRt| s.strays.as_ref().is_some_and(|c| c.contains(&pid));
            if let Some(i) = self.svcs.iter().position(main) {
                self.on_main_exit(i, reason);
            } else if let Some(i) = self.svcs.iter().position(stray) {
                if let Some(c) = &mut self.svcs[i].strays {
                    c.remove(&pid);
                }
                self.try_finish_cleanup(i);
            } else {
                debug!("reaped orphan pid {pid} ({reason})");
                orphans = true;
            }
        }
        if self.phase == Phase::Sweeping {
            self.finish_if_empty(false);
        }
        // A process that left a service's tree has died: if it was a bundled
        // server's (a PostgreSQL backend outliving its postmaster, say), the
        // server may be recovering right now, whatever its last check said.
        if orphans {
            for (svc, rt) in self.stack.services.iter().zip(&self.svcs) {
                if let (Some(_), Some(poke)) = (&svc.bundled, &rt.poke) {
                    poke.notify_one();
                }
            }
        }
    }

    // ------------------------------------------------------------ machine

    /// Hands `input` to service `i`'s state machine and carries out its effects.
    fn feed(&mut self, i: usize, input: Input) {
        let rt = &mut self.svcs[i];
        // A reload's new definition, once its old instance is gone.
        if rt.pending.is_some() && !rt.state().alive() {
            rt.apply_pending();
        }
        let now = Instant::now();
        let from = rt.state().kind();
        let effects = rt.machine.step(&rt.spec, input, now);
        let m = &rt.machine;
        let failed = m.history.failed_starts;
        rt.metrics
            .observe(m.state.kind(), failed, m.last_exit.as_ref(), now);
        let to = rt.state().kind();
        if from != to {
            let mut ev = StackEvent::new("transition", Some(&rt.spec.name));
            ev.from = Some(from.to_string());
            ev.to = Some(to.to_string());
            ev.reason = self.reason(i);
            self.publish(ev);
        }
        for effect in effects {
            self.execute(i, effect);
        }
    }

    /// Publishes `ev` to `cogno events` and the `cogno` log stream; never waits.
    fn publish(&self, ev: StackEvent) {
        self.events.publish(ev);
        self.changes.send_modify(|n| *n += 1);
    }

    fn execute(&mut self, i: usize, effect: Effect) {
        match effect {
            Effect::Spawn => self.spawn(i),
            Effect::StartProbe => self.start_probe(i),
            Effect::StopProbe => {
                if let Some(p) = self.svcs[i].probe.take() {
                    p.abort();
                }
                self.svcs[i].poke = None;
                self.answer_fresh(Some(i));
            }
            Effect::Signal(pid, sig) => process::signal_service(pid, sig),
            Effect::Kill(pid) => {
                process::signal_service(pid, Signal::SIGKILL);
                self.failed = true;
            }
            Effect::KillLeftovers(pid) => self.kill_strays(i, pid),
            Effect::AbandonCleanup => self.abandon_cleanup(i),
            Effect::StartTimer {
                timer,
                after,
                epoch,
            } => self.schedule(
                after,
                Event::Timer {
                    svc: i,
                    epoch,
                    kind: timer,
                },
            ),
            Effect::Log(level, msg) => log(level, &msg),
            Effect::Report(msg) => error!("{msg}{}", self.last_output(i)),
            Effect::Answer(answer) => self.answer(i, answer),
            Effect::StopStack(status) => {
                self.failed = true;
                self.cause.get_or_insert(status);
                if self.stop_cause.is_none() {
                    let why = self.svcs[i]
                        .machine
                        .last_exit
                        .as_ref()
                        .map_or_else(|| format!("exit status {status}"), ToString::to_string);
                    self.stop_cause = Some((self.name(i).to_owned(), why));
                }
                self.begin_shutdown();
            }
            Effect::Stopped => self.advance_stops(),
        }
    }

    // ------------------------------------------------------------ starting

    /// Tells every waiting or blocked service whether its dependencies are
    /// all in their condition; those that are start.
    fn evaluate_gates(&mut self) {
        let order: Vec<usize> = self.stack.plan.start_order().collect();
        for i in order {
            if matches!(self.svcs[i].state(), State::Waiting(_) | State::Blocked(_)) {
                let gate = self.gate(i);
                self.feed(i, Input::Gate(gate));
            }
        }
    }

    fn gate(&self, i: usize) -> Gate {
        let mut waiting = Vec::new();
        for dep in &self.stack.services[i].depends_on {
            // A priority tier orders what runs: a lower tier left out is not waited for.
            if dep.implicit && !self.svcs[dep.on].selected {
                continue;
            }
            let machine = &self.svcs[dep.on].machine;
            let ds = &machine.state;
            let name = self.name(dep.on);
            // A dependency on its way down (an operator's stop or restart) is
            // not there to wait for: its dependants come back after it does.
            let satisfied = !machine.intent.down()
                && match dep.condition {
                    Condition::Started => matches!(
                        ds,
                        State::Starting(_)
                            | State::Running { .. }
                            | State::Unhealthy { .. }
                            | State::Completed
                    ),
                    Condition::Healthy => matches!(ds, State::Running { .. }),
                    Condition::Completed => *ds == State::Completed,
                };
            if satisfied {
                continue;
            }
            // A dependency that missed its start deadline may never get
            // there: its dependants say so rather than wait in silence.
            if let (Some(t), false) = (machine.overdue, ds.terminal()) {
                return Gate::Blocked(format!("{name} not healthy after {}", fmt_duration(t)));
            }
            if ds.terminal() {
                let detail = ds
                    .exit_reason()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
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
        let root = nix::unistd::geteuid().is_root();
        let spawned = crate::user::start_as(svc.user.as_deref(), rt.run_as.as_ref(), root)
            .map_err(process::SpawnError::from)
            .and_then(|run_as| {
                process::spawn(&Launch {
                    argv: &svc.command,
                    env: &rt.env,
                    working_dir: svc.working_dir.as_deref(),
                    run_as,
                    stdin: None,
                    capture: true,
                    no_new_privs: svc.no_new_privs,
                })
            });
        if rt.instance > 0 {
            rt.restarts += 1;
        }
        self.awaiting_saves = false;
        rt.instance += 1;
        // The machine says why, once (with the path tried).
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => return self.feed(i, Input::SpawnFailed(e)),
        };
        let instance = rt.instance;
        rt.exec_report = Some(spawned.report);
        rt.open_pipes = 2;
        let pipes = spawned.output.into_iter().flatten();
        for (fd, stream) in pipes.zip([Stream::Stdout, Stream::Stderr]) {
            let prefix = self.sink.style().prefix(&svc.name, i, stream);
            let ring = rt.ring.clone();
            let sink = self.sink.clone();
            let tx = self.tx.clone();
            let changes = self.changes.clone();
            let files = self.files.clone().map(|f| -> logs::ToFile {
                Box::new(move |stream, bytes| f.write(i, stream, bytes))
            });
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(pipe) => {
                    tokio::spawn(async move {
                        let to = logs::To {
                            ring,
                            sink,
                            changes,
                            files,
                        };
                        logs::forward(pipe, prefix, stream, to).await;
                        let _ = tx.send(Event::OutputClosed { svc: i, instance });
                    });
                }
                Err(e) => {
                    warn!("{}: cannot read its output: {e}", svc.name);
                    rt.open_pipes -= 1;
                }
            }
        }
        if let Some(r) = &self.recorder {
            r.started(&svc.name, spawned.pid, svc.stop_signal, svc.stop_timeout);
        }
        self.feed(i, Input::Spawned(spawned.pid));
    }

    fn start_probe(&mut self, i: usize) {
        let svc = &self.stack.services[i];
        let rt = &mut self.svcs[i];
        let Some(h) = &svc.health else {
            return;
        };
        let tx = self.tx.clone();
        let instance = rt.instance;
        let ctx = ExecContext {
            main: rt.machine.state.main().map(|m| m.pid),
            env: rt.env.clone(),
            working_dir: svc.working_dir.clone(),
            run_as: rt.run_as.clone(),
            no_new_privs: svc.no_new_privs,
            waiters: self.waiters.clone(),
        };
        let poke = Arc::new(Notify::new());
        rt.poke = Some(poke.clone());
        rt.probed_at = None;
        let task = tokio::spawn(health::run(
            svc.name.clone(),
            h.clone(),
            ctx,
            poke,
            move |result| {
                let _ = tx.send(Event::Probe {
                    svc: i,
                    instance,
                    result,
                });
            },
        ));
        rt.probe = Some(task.abort_handle());
    }

    // ------------------------------------------------------------- ending

    /// Service `i`'s main process ended: says how, exactly, to its machine.
    fn on_main_exit(&mut self, i: usize, reason: ExitReason) {
        if let Some(r) = &self.recorder {
            r.ended(&self.stack.services[i].name);
        }
        let rt = &mut self.svcs[i];
        let reason = match rt.exec_report.take().and_then(|r| r.failure()) {
            Some(e) => ExitReason::SpawnFailed(e),
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
        let stopping = matches!(rt.state(), State::Stopping(_));
        let reason = if sigkill && self.phase == Phase::Running && !stopping && self.oom.rose() {
            ExitReason::LikelyOom
        } else {
            reason
        };
        self.feed(i, Input::Exited(reason));
        // What it was holding up may take its turn now, before its cleanup ends.
        if self.svcs[i].machine.intent.down() {
            self.advance_stops();
        }
    }

    /// Kills what the ended main process `pid` left behind, and waits for it.
    fn kill_strays(&mut self, i: usize, pid: Pid) {
        // A probe's process carries its service's mark too, but it is reaped
        // for its probe (which kills its group when stopped): counted as a
        // leftover, it would be waited for forever.
        let known: HashSet<Pid> = self
            .svcs
            .iter()
            .filter_map(|s| s.state().main().map(|m| m.pid))
            .chain(self.waiters.pids())
            .collect();
        let name = &self.stack.services[i].name;
        let strays = process::kill_strays(pid, name, &known);
        if !strays.is_empty() {
            debug!("{name}: killed {} leftover processes", strays.len());
        }
        self.svcs[i].strays = Some(strays);
        self.try_finish_cleanup(i);
    }

    fn try_finish_cleanup(&mut self, i: usize) {
        let rt = &mut self.svcs[i];
        if rt.open_pipes == 0 && rt.strays.as_ref().is_some_and(|s| s.is_empty()) {
            rt.strays = None;
            self.feed(i, Input::CleanupDone);
        }
    }

    /// The cleanup took too long: says what is still there, and forgets it.
    fn abandon_cleanup(&mut self, i: usize) {
        let rt = &mut self.svcs[i];
        if let Some(strays) = rt.strays.take() {
            let left: Vec<String> = strays.iter().map(|p| p.to_string()).collect();
            warn!(
                "{}: moving on after {}: leftover processes {} still exist{}",
                self.stack.services[i].name,
                fmt_duration(CLEANUP_LIMIT),
                if left.is_empty() {
                    "none".into()
                } else {
                    left.join(", ")
                },
                if rt.open_pipes > 0 {
                    ", and something still holds its output pipe open"
                } else {
                    ""
                }
            );
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
        if self
            .svcs
            .iter()
            .all(|s| s.state().terminal() && !s.state().alive())
        {
            // A scheduled oneshot runs again at its next time: cogno stays
            // up for it (a stack of cron jobs alone is a stack).
            if !self.scheduled.is_empty() {
                return;
            }
            // A watched service comes back on a saved file (the fix of
            // what made it fail): cogno stays up for it.
            let watched: Vec<&str> = (0..self.svcs.len())
                .filter(|&i| self.svcs[i].selected && self.stack.services[i].watch.is_some())
                .map(|i| self.name(i))
                .collect();
            if !watched.is_empty() {
                if !self.awaiting_saves {
                    info!(
                        "every service has ended; cogno stays up: a change to the watched files of {} restarts it",
                        watched.join(", ")
                    );
                    self.awaiting_saves = true;
                }
                return;
            }
            let ok = self
                .svcs
                .iter()
                .filter(|s| s.selected)
                .all(|s| matches!(s.state(), State::Completed | State::Exited(_)));
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

/// Logs one of a machine's messages at its level.
fn log(level: Level, msg: &str) {
    match level {
        Level::ERROR => error!("{msg}"),
        Level::WARN => warn!("{msg}"),
        Level::INFO => info!("{msg}"),
        Level::DEBUG => debug!("{msg}"),
        _ => trace!("{msg}"),
    }
}
