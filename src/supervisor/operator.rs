//! The supervisor's side of the control plane: answering status requests and
//! carrying out operators' start, stop and restart actions, which finish
//! (and are answered) only when the service is healthy, stopped, or failed.

use super::state::PendingOp;
use super::{Phase, State, Supervisor};
use crate::control::{Action, ActionResult, HealthStatus, Request, ServiceStatus, StackStatus};
use crate::fmt::fmt_latency;
use std::collections::BTreeSet;
use std::time::Instant;
use tracing::info;

impl Supervisor {
    pub(super) fn on_request(&mut self, req: Request) {
        match req {
            Request::Status(reply) => {
                let _ = reply.send(self.status());
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
                if let Err(refusal) = self.act(action, &service, with_dependents, reply) {
                    info!("{action} {service} refused: {}", refusal.0);
                }
            }
        }
    }

    fn act(
        &mut self,
        action: Action,
        service: &str,
        with_dependents: bool,
        reply: tokio::sync::oneshot::Sender<ActionResult>,
    ) -> Result<(), Refused> {
        let refuse = |reply: tokio::sync::oneshot::Sender<ActionResult>, code, msg: String| {
            let _ = reply.send(ActionResult::err(code, msg.clone()));
            Err(Refused(msg))
        };
        if self.phase != Phase::Running {
            return refuse(reply, 409, "the stack is shutting down".into());
        }
        let Some(i) = self.stack.services.iter().position(|s| s.name == service) else {
            let known: Vec<&str> = self
                .stack
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return refuse(
                reply,
                404,
                format!(
                    "there is no service named `{service}`; known services: {}",
                    known.join(", ")
                ),
            );
        };
        let op = PendingOp {
            action,
            since: Instant::now(),
            reply,
        };
        info!("{service}: {action} requested through the control socket");
        match action {
            Action::Start => {
                let rt = &mut self.svcs[i];
                if rt.state == State::Running {
                    let result = done(&op, "already running and healthy");
                    let _ = op.reply.send(result);
                    return Ok(());
                }
                if !rt.alive() && !matches!(rt.state, State::Waiting(_) | State::Backoff(_)) {
                    rt.failed_starts = 0;
                    rt.crash_streak = 0;
                    rt.set(State::Waiting("starting on request".into()));
                }
                rt.waiting_ops.push(op);
            }
            Action::Stop | Action::Restart => {
                let dependants = self.alive_dependants(i);
                if !dependants.is_empty() && !with_dependents {
                    let names: Vec<&str> = dependants
                        .iter()
                        .map(|&d| self.stack.services[d].name.as_str())
                        .collect();
                    let after = if action == Action::Restart {
                        " and start them again after"
                    } else {
                        ""
                    };
                    let msg = format!(
                        "{service} is needed by {} (running): add --with-dependents to stop them first{after}",
                        names.join(", ")
                    );
                    let _ = op.reply.send(ActionResult::err(409, msg.clone()));
                    return Err(Refused(msg));
                }
                for j in dependants.into_iter().chain([i]) {
                    let rt = &mut self.svcs[j];
                    rt.want_down = true;
                    rt.restart_after = action == Action::Restart;
                }
                self.svcs[i].waiting_ops.push(op);
                self.advance_stops();
            }
        }
        Ok(())
    }

    /// Services that depend on `i`, directly or not, and have a process.
    fn alive_dependants(&self, i: usize) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut todo = vec![i];
        while let Some(j) = todo.pop() {
            for &d in &self.stack.plan.dependants[j] {
                if found.insert(d) {
                    todo.push(d);
                }
            }
        }
        found.retain(|&d| self.svcs[d].alive());
        found
    }

    /// Answers start/restart requests: the service is healthy (`ok`) or has failed.
    pub(super) fn finish_ops(&mut self, i: usize, ok: bool, what: &str) {
        let ops = std::mem::take(&mut self.svcs[i].waiting_ops);
        for op in ops {
            if op.action == Action::Stop {
                self.svcs[i].waiting_ops.push(op);
                continue;
            }
            let result = if ok {
                done(&op, what)
            } else {
                ActionResult {
                    ok: false,
                    code: 500,
                    message: what.to_owned(),
                    took_ms: op.since.elapsed().as_millis() as u64,
                }
            };
            let _ = op.reply.send(result);
        }
    }

    /// Answers stop requests: the service is down.
    pub(super) fn finish_stop_ops(&mut self, i: usize) {
        let ops = std::mem::take(&mut self.svcs[i].waiting_ops);
        for op in ops {
            if op.action == Action::Stop {
                let result = done(&op, "stopped");
                let _ = op.reply.send(result);
            } else {
                self.svcs[i].waiting_ops.push(op);
            }
        }
    }

    pub(super) fn abandon_ops(&mut self, i: usize, why: &str) {
        for op in std::mem::take(&mut self.svcs[i].waiting_ops) {
            let _ = op.reply.send(ActionResult::err(409, why));
        }
    }

    fn ready(&self, i: usize) -> bool {
        matches!(self.svcs[i].state, State::Running | State::Completed)
    }

    /// Logs the moment the stack first becomes ready.
    pub(super) fn note_readiness(&mut self) {
        if !self.ever_ready && (0..self.svcs.len()).all(|i| self.ready(i)) {
            self.ever_ready = true;
            info!(
                "stack is ready: {} services healthy in {}",
                self.svcs.len(),
                fmt_latency(self.started.elapsed())
            );
            if let Some(f) = self.on_ready.take() {
                f();
            }
        }
    }

    /// The stack's phase and, when it is not ready, what is missing.
    fn phase_now(&self) -> (&'static str, Vec<String>) {
        if self.phase != Phase::Running {
            return ("stopping", Vec::new());
        }
        let not_ready: Vec<String> = (0..self.svcs.len())
            .filter(|&i| !self.ready(i))
            .map(|i| {
                let reason = self
                    .reason(i)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                format!(
                    "{} is {}{reason}",
                    self.stack.services[i].name, self.svcs[i].state
                )
            })
            .collect();
        if not_ready.is_empty() {
            return ("ready", not_ready);
        }
        let progressing = self.svcs.iter().any(|s| {
            matches!(
                s.state,
                State::Waiting(_) | State::Starting | State::Backoff(_) | State::Exiting
            )
        });
        if self.ever_ready || !progressing {
            ("degraded", not_ready)
        } else {
            ("starting", not_ready)
        }
    }

    fn reason(&self, i: usize) -> Option<String> {
        let rt = &self.svcs[i];
        match &rt.state {
            State::Waiting(r) | State::Blocked(r) => Some(r.clone()),
            State::Backoff(until) => Some(format!(
                "restarting in {}",
                fmt_latency(until.saturating_duration_since(Instant::now()))
            )),
            State::Failed | State::Fatal | State::Exited => {
                rt.last_exit.as_ref().map(|r| r.to_string())
            }
            State::Unhealthy | State::Starting => {
                rt.health.last.as_ref().and_then(|h| h.error.clone())
            }
            _ => None,
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
            .map(|(i, (svc, rt))| ServiceStatus {
                name: svc.name.clone(),
                state: rt.state.name().to_owned(),
                reason: self.reason(i),
                pid: rt.pid.map(|p| p.as_raw()),
                uptime_ms: rt
                    .pid
                    .and(rt.spawned_at)
                    .map(|t| t.elapsed().as_millis() as u64),
                restarts: rt.restarts,
                last_exit: rt.last_exit.as_ref().map(|r| r.to_string()),
                health: svc.health.as_ref().map(|_| match &rt.health.last {
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
            phase: phase.into(),
            not_ready,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
            pid: nix::unistd::getpid().as_raw(),
            services,
        }
    }
}

/// Why an action was not carried out (already answered to the caller).
struct Refused(String);

fn done(op: &PendingOp, what: &str) -> ActionResult {
    ActionResult {
        ok: true,
        code: 200,
        message: what.to_owned(),
        took_ms: op.since.elapsed().as_millis() as u64,
    }
}
