//! What a watched change does (`watch:`): the service restarts through the
//! operator's restart — [`Supervisor::operate`], what `cogno restart` runs:
//! its stop signal, timeout and process group, then its gates and health
//! check — after its `before` oneshot, when it has one, has completed. A
//! failed `before` leaves the running version alone and says why.
//!
//! One reload at a time per service: what changes while one is under way
//! is gathered and reloads once more when it ends. Each reload ends with
//! one line (and a `watch` event): what changed, and how long the restart
//! took to healthy.

use super::operator::Dependants;
use super::{Event, Phase, State, Supervisor};
use crate::control::{Action, Outcome, Refusal};
use crate::events::Event as StackEvent;
use crate::fmt::fmt_latency;
use crate::watch::{self, Change, Rule};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

/// Where a service's reload is.
#[derive(Debug, Default)]
pub(super) enum Stage {
    #[default]
    Idle,
    /// Its `before` oneshot runs for this change.
    Building(Change),
    /// It restarts for this change.
    Restarting(Change),
}

/// A service's reloads: the one under way, and what changed since it began.
#[derive(Debug, Default)]
pub(super) struct Reloads {
    stage: Stage,
    next: Option<Change>,
}

/// Which step of a reload answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Step {
    Before,
    Restart,
}

impl Supervisor {
    /// Watches the paths of every service that has `watch:` (again, after a
    /// reload); with none, nothing is opened at all.
    pub(super) fn watch_files(&mut self) {
        if let Some(old) = self.watcher.take() {
            old.abort();
        }
        let rules: Vec<Rule> = self
            .stack
            .services
            .iter()
            .enumerate()
            .filter(|&(i, _)| !self.svcs[i].removed)
            .filter_map(|(svc, s)| s.watch.clone().map(|watch| Rule { svc, watch }))
            .collect();
        if rules.is_empty() {
            return;
        }
        let tx = self.tx.clone();
        let never = self.unwatched.clone();
        match watch::start(rules, never, move |change| {
            let _ = tx.send(Event::Watched(change));
        }) {
            Ok(task) => self.watcher = Some(task.abort_handle()),
            Err(e) => warn!(
                "watch: cannot watch files ({e}): services restart on request only (`cogno restart NAME`)"
            ),
        }
    }

    /// Service `i`'s watched paths changed.
    pub(super) fn on_watched(&mut self, change: Change) {
        let i = change.svc;
        let rt = &mut self.svcs[i];
        // Down on purpose (an operator's stop, a stop under way, left out of
        // this run) or not started yet: the next start runs the new code anyway.
        let idle = matches!(
            rt.state(),
            State::Waiting(_) | State::Blocked(_) | State::Stopped
        );
        if self.phase != Phase::Running
            || rt.removed
            || !rt.selected
            || idle
            || (rt.machine.intent.down() && matches!(rt.reloads.stage, Stage::Idle))
        {
            debug!(
                "{}: {} changed; not running, nothing to restart",
                self.name(i),
                change.summary()
            );
            return;
        }
        if !matches!(rt.reloads.stage, Stage::Idle) {
            match &mut rt.reloads.next {
                Some(next) => next.merge(change),
                None => rt.reloads.next = Some(change),
            }
            return;
        }
        let Some(before) = self.stack.services[i].watch.as_ref().and_then(|w| w.before) else {
            return self.restart_for(change);
        };
        let (name, oneshot) = (self.name(i).to_owned(), self.name(before).to_owned());
        info!(
            "{name}: {} changed: running {oneshot} first",
            change.summary()
        );
        self.svcs[i].reloads.stage = Stage::Building(change);
        let by = format!("before {name} restarts for a change to its watched files");
        self.reload_step(
            i,
            Step::Before,
            Action::Start,
            &oneshot,
            Dependants::Refuse,
            &by,
        );
    }

    fn restart_for(&mut self, change: Change) {
        let i = change.svc;
        let name = self.name(i).to_owned();
        let dependants = match self.stack.services[i].watch.as_ref() {
            Some(w) if w.restart_dependents => Dependants::With,
            _ => Dependants::Leave,
        };
        self.svcs[i].reloads.stage = Stage::Restarting(change);
        let by = "for a change to its watched files";
        self.reload_step(i, Step::Restart, Action::Restart, &name, dependants, by);
    }

    /// Sets `action` on `target` going, as an operator would, and comes back
    /// to service `i`'s reload (as [`Event::Reload`]) with its outcome.
    fn reload_step(
        &mut self,
        i: usize,
        step: Step,
        action: Action,
        target: &str,
        dependants: Dependants,
        by: &str,
    ) {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // Every waiting operator is answered, also at a shutdown; a
            // dropped one counts as that.
            let outcome = answer
                .await
                .unwrap_or(Outcome::Refused(Refusal::ShuttingDown));
            let _ = tx.send(Event::Reload {
                svc: i,
                step,
                outcome,
            });
        });
        self.operate(action, target, dependants, by, reply);
    }

    /// A step of service `i`'s reload has ended with `outcome`.
    pub(super) fn on_reload_step(&mut self, i: usize, step: Step, outcome: Outcome) {
        let name = self.name(i).to_owned();
        let stage = &mut self.svcs[i].reloads.stage;
        let change = match (std::mem::take(stage), step) {
            (Stage::Building(c), Step::Before) | (Stage::Restarting(c), Step::Restart) => c,
            // One step at a time: no other answer can come.
            (other, _) => {
                *stage = other;
                return;
            }
        };
        let what = change.summary();
        let before = || {
            let b = self.stack.services[i].watch.as_ref().and_then(|w| w.before);
            b.map_or("its build", |b| self.name(b)).to_owned()
        };
        let message = match (step, outcome) {
            (Step::Before, Outcome::Done { .. }) => {
                if self.phase == Phase::Running {
                    return self.restart_for(change);
                }
                return;
            }
            (Step::Before, Outcome::Failed { message, .. }) => {
                // The oneshot's own report said "failed: …" already.
                let message = message.strip_prefix("failed: ").unwrap_or(&message);
                let m = format!(
                    "{what} changed: not restarted, {} failed ({message}); the running version keeps running",
                    before()
                );
                error!("{name}: {m}");
                m
            }
            (Step::Restart, Outcome::Done { message, took }) => {
                // "healthy", or "completed" for a watched oneshot.
                let m = format!(
                    "{what} changed: restarted, {message} in {}",
                    fmt_latency(took)
                );
                info!("{name}: {m}");
                m
            }
            (Step::Restart, Outcome::Failed { message, took }) => {
                let m = format!(
                    "{what} changed: restarted, but {message} after {}",
                    fmt_latency(took)
                );
                warn!("{name}: {m}");
                m
            }
            (_, Outcome::Refused(r)) => {
                let m = format!("{what} changed: not restarted: {r}");
                warn!("{name}: {m}");
                m
            }
        };
        let mut ev = StackEvent::new("watch", Some(&name));
        ev.reason = Some(message);
        self.publish(ev);
        if let Some(next) = self.svcs[i].reloads.next.take() {
            self.on_watched(next);
        }
    }
}
