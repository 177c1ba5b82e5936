//! The supervisor's side of the control plane: answering status requests and
//! carrying out operators' start, stop and restart actions, which finish
//! (and are answered) only when the service is healthy, stopped, or failed.

use super::machine::{Answer, Input, Intent, Stop};
use super::state::PendingOp;
use super::{Event, Phase, State, Supervisor};
use crate::config::select;
use crate::control::metrics;
use crate::control::{
    Action, HealthStatus, Outcome, Phase as StackPhase, Refusal, Request, ServiceStatus,
    StackStatus,
};
use crate::events::Event as StackEvent;
use crate::fmt::{count, fmt_duration, fmt_latency};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// A running service's last check is stale for a status request once it is
/// this old (or its interval, if shorter): checks run every `interval` (5 s
/// by default), long enough for a crash to go unseen, and one extra check a
/// second is cheap for any server.
const STALE_AFTER: Duration = Duration::from_secs(1);
/// Beyond the probe's own timeout, how long a status request waits for it.
const FRESH_SLACK: Duration = Duration::from_millis(200);

/// A status request waiting for fresh checks of some services.
pub(super) struct FreshWait {
    reply: oneshot::Sender<StackStatus>,
    waiting: BTreeSet<usize>,
    deadline: Instant,
}

impl Supervisor {
    pub(super) fn on_request(&mut self, req: Request) {
        match req {
            Request::Status(reply) => self.fresh_status(reply),
            Request::Metrics(reply) => {
                // In the order of the status' services, which leave out removed ones.
                let each: Vec<_> = self
                    .svcs
                    .iter()
                    .filter(|rt| !rt.removed)
                    .map(|rt| &rt.metrics)
                    .collect();
                let _ = reply.send(metrics::render(&self.status(), &each, Instant::now()));
            }
            Request::Reload(reply) => {
                info!("reload requested through the control socket");
                let answer = if self.phase == Phase::Running {
                    self.reload()
                } else {
                    Err("error: the stack is shutting down: nothing to reload\n".into())
                };
                let _ = reply.send(answer);
            }
            Request::Shutdown(reply) => {
                info!("shutdown requested through the control socket");
                self.begin_shutdown();
                let _ = reply.send(());
            }
            Request::Act {
                action,
                service,
                with_dependents,
                reply,
            } => {
                let dependants = if with_dependents {
                    Dependants::With
                } else {
                    Dependants::Refuse
                };
                self.operate(
                    action,
                    &service,
                    dependants,
                    "through the control socket",
                    reply,
                );
            }
        }
    }

    /// Carries out `action` on `service` — an operator's, or a watched
    /// change's (`by` says whose) — and answers `reply` once it is done:
    /// healthy (or completed), stopped, failed or refused.
    pub(super) fn operate(
        &mut self,
        action: Action,
        service: &str,
        dependants: Dependants,
        by: &str,
        reply: oneshot::Sender<Outcome>,
    ) {
        match self.act(action, service, dependants, by) {
            Ok(Accepted::Already(what)) => {
                let _ = reply.send(Outcome::Done {
                    message: what.to_owned(),
                    took: Duration::ZERO,
                });
            }
            Ok(Accepted::Pending(i)) => {
                self.svcs[i].waiting_ops.push(PendingOp {
                    action,
                    since: Instant::now(),
                    reply,
                });
                if action != Action::Start {
                    self.advance_stops();
                }
            }
            Err(refusal) => {
                info!("{action} {service} refused: {refusal}");
                let _ = reply.send(Outcome::Refused(refusal));
            }
        }
    }

    /// Sets an operator's action on `service` going.
    fn act(
        &mut self,
        action: Action,
        service: &str,
        dependants_go: Dependants,
        by: &str,
    ) -> Result<Accepted, Refusal> {
        if self.phase != Phase::Running {
            return Err(Refusal::ShuttingDown);
        }
        let Some(i) = self.stack.services.iter().position(|s| s.name == service) else {
            return Err(Refusal::UnknownService {
                name: service.to_owned(),
                known: self.stack.services.iter().map(|s| s.name.clone()).collect(),
            });
        };
        // Published before the action takes effect, so it precedes the transitions it causes.
        let mut ev = StackEvent::new("action", Some(service));
        ev.reason = Some(format!("{action} requested"));
        self.publish(ev);
        info!("{service}: {action} requested {by}");
        match action {
            Action::Start => {
                if matches!(self.svcs[i].state(), State::Running { .. }) {
                    return Ok(Accepted::Already("already running and healthy"));
                }
                self.select(i);
                self.feed(i, Input::Start);
            }
            Action::Stop | Action::Restart => {
                let mut dependants = self.alive_dependants(i, false);
                let needing = self.alive_dependants(i, true);
                if dependants_go == Dependants::Leave {
                    dependants.clear();
                }
                if !dependants.is_empty() && dependants_go == Dependants::Refuse {
                    let names = |set: &BTreeSet<usize>| -> Vec<String> {
                        set.iter()
                            .map(|&d| self.stack.services[d].name.clone())
                            .collect()
                    };
                    // Dependants through priority only live through a crash
                    // of it and its restart (docs/behaviour.md): a restart
                    // of it alone leaves them running.
                    if action == Action::Restart && needing.is_empty() {
                        info!(
                            "{service}: restarting it alone: {} depend on it only through priority, and keep running",
                            names(&dependants).join(", ")
                        );
                        dependants.clear();
                    } else {
                        return Err(Refusal::NeededBy {
                            service: service.to_owned(),
                            dependants: names(&dependants),
                            action,
                            by_priority: names(&(&dependants - &needing)),
                        });
                    }
                }
                let intent = if action == Action::Restart {
                    Intent::Restart
                } else {
                    Intent::Down
                };
                for j in dependants.into_iter().chain([i]) {
                    self.feed(j, Input::Want(intent));
                }
            }
        }
        Ok(Accepted::Pending(i))
    }

    /// Adds a service `cogno up` left out to what runs, with the
    /// dependencies left out too (through the normal gates).
    pub(super) fn select(&mut self, i: usize) {
        if self.svcs[i].selected {
            return;
        }
        let needed = select::with_dependencies(&self.stack.services, &[i], &self.profiles);
        let added: Vec<usize> = (0..needed.len())
            .filter(|&j| needed[j] && !self.svcs[j].selected)
            .collect();
        for j in added {
            self.svcs[j].selected = true;
            if j != i {
                info!(
                    "{}: started too, as {} needs it",
                    self.name(j),
                    self.name(i)
                );
                self.feed(j, Input::Start);
            }
        }
    }

    /// Services that depend on `i`, directly or not, and have a process;
    /// with `explicit`, only through `depends_on` (not priority).
    pub(super) fn alive_dependants(&self, i: usize, explicit: bool) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut todo = vec![i];
        while let Some(j) = todo.pop() {
            for &d in &self.stack.plan.dependants[j] {
                let written = || {
                    self.stack.services[d]
                        .depends_on
                        .iter()
                        .any(|dep| dep.on == j && !dep.implicit)
                };
                if (!explicit || written()) && found.insert(d) {
                    todo.push(d);
                }
            }
        }
        found.retain(|&d| self.svcs[d].state().alive());
        found
    }

    /// Tells the operators waiting on service `i` what its machine says.
    pub(super) fn answer(&mut self, i: usize, answer: Answer) {
        match answer {
            Answer::Up(what) => self.finish_ops(i, true, what),
            Answer::Failed(why) => self.finish_ops(i, false, &why),
            Answer::Down => self.finish_stop_ops(i),
            Answer::ShuttingDown => self.abandon_ops(i),
        }
    }

    /// Answers start/restart requests: the service is healthy (`ok`) or has failed.
    fn finish_ops(&mut self, i: usize, ok: bool, what: &str) {
        let ops = std::mem::take(&mut self.svcs[i].waiting_ops);
        for op in ops {
            if op.action == Action::Stop {
                self.svcs[i].waiting_ops.push(op);
                continue;
            }
            let (message, took) = (what.to_owned(), op.since.elapsed());
            let outcome = if ok {
                Outcome::Done { message, took }
            } else {
                Outcome::Failed { message, took }
            };
            let _ = op.reply.send(outcome);
        }
    }

    /// Answers stop requests: the service is down.
    fn finish_stop_ops(&mut self, i: usize) {
        let ops = std::mem::take(&mut self.svcs[i].waiting_ops);
        for op in ops {
            if op.action == Action::Stop {
                let _ = op.reply.send(Outcome::Done {
                    message: "stopped".into(),
                    took: op.since.elapsed(),
                });
            } else {
                self.svcs[i].waiting_ops.push(op);
            }
        }
    }

    /// Refuses what operators still wait for: the stack is going down.
    fn abandon_ops(&mut self, i: usize) {
        for op in std::mem::take(&mut self.svcs[i].waiting_ops) {
            let _ = op.reply.send(Outcome::Refused(Refusal::ShuttingDown));
        }
    }

    /// Service `i` is where the stack needs it; one left out is not needed,
    /// nor a scheduled oneshot (its runs come and go with the clock).
    fn ready(&self, i: usize) -> bool {
        !self.svcs[i].selected
            || self.stack.services[i].schedule.is_some()
            || matches!(
                self.svcs[i].state(),
                State::Running { .. } | State::Completed
            )
    }

    /// Logs the moment the stack first becomes ready.
    pub(super) fn note_readiness(&mut self) {
        if !self.ever_ready && (0..self.svcs.len()).all(|i| self.ready(i)) {
            self.ever_ready = true;
            let selected = self.svcs.iter().filter(|s| s.selected).count();
            let completed = (0..self.svcs.len())
                .filter(|&i| matches!(self.svcs[i].state(), State::Completed))
                .count();
            // A oneshot that has done its work is not "healthy": it is done.
            let done = match completed {
                0 => String::new(),
                n => format!(", {} completed", count(n, "oneshot")),
            };
            let message = format!(
                "stack is ready: {} healthy{done} in {}",
                count(selected - completed, "service"),
                fmt_latency(self.started.elapsed())
            );
            info!("{message}");
            // What `cogno up --detach` and `cogno wait` react to at once.
            let mut ev = StackEvent::new("ready", None);
            ev.reason = Some(message);
            self.publish(ev);
            if let Some(f) = self.on_ready.take() {
                f();
            }
            // From now on: a backup copies from running servers, and one
            // due while they are still starting would only fail.
            self.backups = self
                .scheduled_backups
                .take()
                .map(|b| b.start(&self.events, &self.waiters));
        }
    }

    /// The stack's phase and, when it is not ready, what is missing.
    fn phase_now(&self) -> (StackPhase, Vec<String>) {
        let phase = self.phase_kind();
        let not_ready = match phase {
            StackPhase::Stopping | StackPhase::Ready => Vec::new(),
            _ => self.not_ready(),
        };
        (phase, not_ready)
    }

    /// Each service that is not ready, and why.
    fn not_ready(&self) -> Vec<String> {
        (0..self.svcs.len())
            .filter(|&i| !self.ready(i))
            .map(|i| {
                let reason = self
                    .reason(i)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                format!(
                    "{} is {}{reason}",
                    self.stack.services[i].name,
                    self.svcs[i].state()
                )
            })
            .collect()
    }

    /// The stack's phase alone: cheap enough to ask after every event.
    fn phase_kind(&self) -> StackPhase {
        if self.phase != Phase::Running {
            return StackPhase::Stopping;
        }
        if (0..self.svcs.len()).all(|i| self.ready(i)) {
            return StackPhase::Ready;
        }
        let progressing = self.svcs.iter().any(|s| {
            matches!(
                s.state(),
                State::Waiting(_) | State::Starting(_) | State::Backoff { .. } | State::Exiting(_)
            )
        });
        // A service past its start deadline is not "starting" any more.
        let overdue = self.svcs.iter().any(|s| s.machine.overdue.is_some());
        if self.ever_ready || !progressing || overdue {
            StackPhase::Degraded
        } else {
            StackPhase::Starting
        }
    }

    /// Tells the notifier when the stack's phase has changed. A stop
    /// caused by a critical service's failure names that service (the
    /// `critical` notification); a degraded stack says what is missing.
    pub(super) fn note_phase(&mut self) {
        let phase = self.phase_kind();
        if phase == self.last_phase {
            return;
        }
        let cause = self
            .stop_cause
            .as_ref()
            .filter(|_| phase == StackPhase::Stopping);
        let mut ev = StackEvent::new("phase", cause.map(|(name, _)| name.as_str()));
        ev.from = Some(self.last_phase.to_string());
        ev.to = Some(phase.to_string());
        ev.reason = match phase {
            StackPhase::Degraded => Some(self.not_ready().join("; ")),
            StackPhase::Stopping => cause.map(|(_, why)| why.clone()),
            _ => None,
        };
        self.last_phase = phase;
        self.publish(ev);
    }

    pub(super) fn reason(&self, i: usize) -> Option<String> {
        let machine = &self.svcs[i].machine;
        let now = self.state_reason(i);
        match (machine.overdue, now) {
            (Some(t), now) if !machine.state.terminal() => Some(format!(
                "not healthy after {}{}",
                fmt_duration(t),
                now.map(|r| format!("; {r}")).unwrap_or_default()
            )),
            (_, now) => now,
        }
    }

    /// A scheduled oneshot's time: starts it, as an operator's start would
    /// (with what it needs left out), unless its last run is still going.
    pub(super) fn run_scheduled(&mut self, i: usize) {
        // A service a reload removed keeps its slot, stopped: its times are over.
        if self.phase != Phase::Running || self.svcs[i].removed {
            return;
        }
        let name = self.name(i).to_owned();
        let state = self.svcs[i].state();
        if state.alive() || matches!(state, State::Waiting(_) | State::Backoff { .. }) {
            warn!(
                "{name}: the run due now is skipped: the last one is still {}",
                state.kind()
            );
            return;
        }
        info!("{name}: starting on its schedule");
        self.select(i);
        self.feed(i, Input::Start);
    }

    /// What its state says about why it is not ready.
    fn state_reason(&self, i: usize) -> Option<String> {
        let machine = &self.svcs[i].machine;
        // The times its timer keeps: those it started with, whatever a reload said.
        let scheduled = self.scheduled.iter().find(|(j, _)| *j == i);
        if let (Some((_, s)), false) = (scheduled, self.svcs[i].selected) {
            let next = s.next_after(std::time::SystemTime::now());
            return Some(format!(
                "scheduled (`{}`): next run at {}",
                s.text(),
                next.map_or_else(|| "never".to_owned(), crate::fmt::rfc3339)
            ));
        }
        if !self.svcs[i].selected {
            return Some(format!(
                "not started: left out of this run (`cogno start {}` starts it)",
                self.name(i)
            ));
        }
        match &machine.state {
            State::Waiting(r) | State::Blocked(r) => Some(r.clone()),
            State::Backoff { until } => Some(format!(
                "restarting in {}",
                fmt_latency(until.saturating_duration_since(Instant::now()))
            )),
            State::Failed(r) | State::Fatal(r) | State::Exited(r) => Some(r.to_string()),
            State::Exiting(ended) => Some(ended.reason.to_string()),
            State::Unhealthy { .. } | State::Starting(_) => {
                machine.last_probe.as_ref().and_then(|h| h.error.clone())
            }
            // Stopped for its health, not on request: say what it failed.
            State::Stopping(Stop::Signalled {
                verdict: Some(v), ..
            }) => Some(v.outcome().0.to_string()),
            _ => None,
        }
    }

    /// Answers a status request (`cogno status`, `cogno healthcheck`, GET
    /// /health) with fresh health: a running service whose last check is
    /// older than [`STALE_AFTER`] is checked now, and the answer
    /// waits for that (at most its probe's timeout), so a health check never
    /// stays green on a result from before a crash.
    pub(super) fn fresh_status(&mut self, reply: oneshot::Sender<StackStatus>) {
        let mut waiting = BTreeSet::new();
        let mut limit = Duration::ZERO;
        for (i, (svc, rt)) in self.stack.services.iter().zip(&self.svcs).enumerate() {
            let (Some(h), Some(poke), Some(at)) = (&svc.health, &rt.poke, rt.probed_at) else {
                continue;
            };
            let running = matches!(rt.state(), State::Running { .. } | State::Unhealthy { .. });
            if running && at.elapsed() > h.interval.min(STALE_AFTER) {
                poke.notify_one();
                waiting.insert(i);
                limit = limit.max(h.timeout);
            }
        }
        if waiting.is_empty() {
            let _ = reply.send(self.status());
            return;
        }
        let limit = limit + FRESH_SLACK;
        self.fresh_waits.push(FreshWait {
            reply,
            waiting,
            deadline: Instant::now() + limit,
        });
        self.schedule(limit, Event::FreshLimit);
    }

    /// Service `svc`'s probe answered (or stopped): status requests that
    /// waited only for it are answered. With None, those whose wait is over.
    pub(super) fn answer_fresh(&mut self, svc: Option<usize>) {
        if self.fresh_waits.is_empty() {
            return;
        }
        let now = Instant::now();
        let (done, left): (Vec<FreshWait>, Vec<FreshWait>) = std::mem::take(&mut self.fresh_waits)
            .into_iter()
            .map(|mut w| {
                if let Some(i) = svc {
                    w.waiting.remove(&i);
                }
                w
            })
            .partition(|w| w.waiting.is_empty() || (svc.is_none() && w.deadline <= now));
        self.fresh_waits = left;
        if !done.is_empty() {
            let status = self.status();
            for w in done {
                let _ = w.reply.send(status.clone());
            }
        }
    }

    pub(super) fn status(&self) -> StackStatus {
        let (phase, not_ready) = self.phase_now();
        let services = self
            .stack
            .services
            .iter()
            .zip(&self.svcs)
            .enumerate()
            .filter(|(_, (_, rt))| !rt.removed)
            .map(|(i, (svc, rt))| ServiceStatus {
                name: svc.name.clone(),
                state: rt.state().kind(),
                reason: self.reason(i),
                pid: rt.state().main().map(|m| m.pid.as_raw()),
                uptime_ms: rt
                    .state()
                    .main()
                    .map(|m| m.since.elapsed().as_millis() as u64),
                restarts: rt.restarts,
                last_exit: rt.machine.last_exit.as_ref().map(|r| r.to_string()),
                health: svc.health.as_ref().map(|_| match &rt.machine.last_probe {
                    None => HealthStatus {
                        status: "unknown".into(),
                        latency_ms: None,
                        error: None,
                    },
                    Some(r) => HealthStatus {
                        status: if r.ok { "pass" } else { "fail" }.into(),
                        latency_ms: Some(r.latency.as_secs_f64() * 1000.0),
                        error: r.error.clone(),
                    },
                }),
                critical: svc.critical,
                oneshot: svc.oneshot,
            })
            .collect();
        StackStatus {
            phase,
            not_ready,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
            pid: nix::unistd::getpid().as_raw(),
            services,
            backup: self.backups.as_ref().map(|b| b.status.borrow().clone()),
        }
    }
}

/// What an action on a service does to its running dependants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Dependants {
    /// Refused while some need it through `depends_on` (a restart leaves
    /// those depending on it only through priority running).
    Refuse,
    /// Stopped first and, for a restart, started again after it (`--with-dependents`).
    With,
    /// Left running, as through a crash of it: a watched change without
    /// `restart_dependents`.
    Leave,
}

/// An action the supervisor took on.
enum Accepted {
    /// Nothing to do: answered at once with this message.
    Already(&'static str),
    /// Answered once service `.0` has finished it.
    Pending(usize),
}
