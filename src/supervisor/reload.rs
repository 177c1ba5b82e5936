//! `cogno reload` and SIGHUP: the stack file read again and applied to the
//! running stack. A file with errors changes nothing. Otherwise services
//! added are started, removed ones stopped (in dependency order), changed
//! ones restarted with their dependants as their gates require, and
//! unchanged ones keep running, same pids.
//!
//! Slots are never renumbered: timers, probes and output pipes name a
//! service by its index, so a removed service keeps its slot (stopped,
//! hidden from status) and an added one gets a new slot at the end. The
//! plan is then rebuilt over every slot ([`Plan::arrange`]).
//!
//! A bundled server whose settings changed is a changed service too: its
//! files are rendered again from them (`bundled::reconfigure`) and it is
//! restarted like any other. What its data in use cannot take (another
//! kind, program or user: `bundled::live_change`) refuses the whole reload,
//! as does a bundled server added (its pre-flight runs processes, which the
//! supervisor's reaper would take). The stack's data directory, control
//! socket, health listener and secrets are reported as needing a full
//! restart and left as they are.

use super::env;
use super::machine::{Input, Intent, Spec};
use super::Supervisor;
use crate::bundled;
use crate::config::plan::Plan;
use crate::config::select;
use crate::config::{Service, Stack};
use crate::error::Error;
use crate::events::Event as StackEvent;
use std::collections::HashMap;
use tracing::{info, warn};

/// What cogno derives for each service of a stack, by index: connection
/// settings and secrets.
pub type Derived = Vec<Vec<(String, String)>>;

/// How a reload gets the new stack and readies its changed bundled servers
/// (`up` provides it: it knows the file, the env files, the data directory).
pub trait Reloader {
    /// Reads the stack file again: the stack, and what cogno derives for
    /// each of its services (connection settings, secrets); or the error.
    fn load(&mut self) -> Result<(Stack, Derived), Error>;

    /// Readies the bundled server `new` of the stack last loaded for its
    /// restart in place of `old`, the running one ([`bundled::reconfigure`]).
    fn reconfigure(&mut self, new: &mut Service, old: &Service) -> Result<(), Error>;
}

/// What the running stack was made from, as loaded (before the bundled
/// servers were prepared), to tell what a reload changes.
pub struct Baseline {
    /// The stack-level settings that cannot change live.
    fixed: String,
    /// Each service's definition, by name.
    services: HashMap<String, String>,
}

impl Baseline {
    pub fn of(stack: &Stack) -> Baseline {
        Baseline {
            fixed: fixed(stack),
            services: stack
                .services
                .iter()
                .map(|s| (s.name.clone(), fingerprint(s, &stack.services)))
                .collect(),
        }
    }
}

/// The stack-level settings a running cogno cannot change (the backups'
/// task is started once, with the command and plan it was given).
fn fixed(stack: &Stack) -> String {
    format!(
        "{:?} {:?} {} {:?} {:?}",
        stack.data_dir, stack.health_listen, stack.metrics, stack.secrets, stack.backup
    )
}

/// A service's definition as written: everything in its plan, with its
/// dependencies by name (indexes change when services are added or removed).
fn fingerprint(svc: &Service, all: &[Service]) -> String {
    let deps: Vec<String> = svc
        .depends_on
        .iter()
        .filter(|d| !d.implicit)
        .map(|d| format!("{} {}", all[d.on].name, d.condition))
        .collect();
    let mut bare = svc.clone();
    bare.depends_on.clear();
    // What it watches is not what it runs: a changed `watch:` is taken on
    // by the watcher, without a restart.
    bare.watch = None;
    format!("{bare:?} {deps:?}")
}

/// What a reload does to one service, as answered and logged.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    Added,
    Removed,
    Restarted,
    /// Changed while not running: applied when it next starts.
    Changed,
    Unchanged,
}

impl Change {
    fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Restarted => "restarted",
            Change::Changed => "changed (not running: applied at its next start)",
            Change::Unchanged => "unchanged",
        }
    }
}

impl Supervisor {
    /// Reads the stack file again and applies it; the report, one line per
    /// service, or the file's errors (then nothing changed).
    pub(super) fn reload(&mut self) -> Result<String, String> {
        let Some(loader) = self.loader.as_mut() else {
            return Err("error: this cogno cannot reload its stack file\n".into());
        };
        let (new, derived) = loader.load().map_err(|e| e.to_string())?;
        let Some(baseline) = self.baseline.as_ref() else {
            return Err("error: this cogno cannot reload its stack file\n".into());
        };
        let mut notes = Vec::new();
        if fixed(&new) != baseline.fixed {
            notes.push(
                "data_dir, health_listen, metrics, secrets or backup changed: needs a full restart \
                 (`cogno down`, then `cogno up`); not applied"
                    .to_owned(),
            );
        }
        // The timers of scheduled oneshots are set once, at start.
        for svc in &new.services {
            let before = self.stack.services.iter().find(|o| o.name == svc.name);
            let was = before.and_then(|o| o.schedule.as_ref()).map(|s| s.text());
            if svc.schedule.as_ref().map(|s| s.text()) != was {
                notes.push(format!(
                    "the schedule of `{}` changed: its times change at the next full restart \
                     (`cogno down`, then `cogno up`); until then, those it started with",
                    svc.name
                ));
            }
        }
        if let Some(b) = new
            .services
            .iter()
            .find(|s| s.bundled.is_some() && !self.stack.services.iter().any(|o| o.name == s.name))
        {
            return Err(format!(
                "error: `{}` is a bundled server (kind: {}) new to the running stack: adding one \
                 needs a full restart (`cogno down`, then `cogno up`); nothing was changed\n",
                b.name,
                b.bundled.as_ref().map_or("", |k| k.kind.name)
            ));
        }
        // Where each of the new file's services lives: an existing slot (a
        // removed one comes back in its old slot) or a new one at the end.
        let mut slot = Vec::with_capacity(new.services.len());
        let mut next = self.svcs.len();
        for svc in &new.services {
            match self.stack.services.iter().position(|o| o.name == svc.name) {
                Some(i) => slot.push(i),
                None => {
                    slot.push(next);
                    next += 1;
                }
            }
        }
        let mut services = self.stack.services.clone();
        let mut plan = Vec::new();
        // Changed bundled servers, whose files are rendered again once the
        // whole file is known to apply.
        let mut reconfigured = Vec::new();
        let mut fingerprints = HashMap::new();
        for (k, svc) in new.services.iter().enumerate() {
            let i = slot[k];
            let print = fingerprint(svc, &new.services);
            let mut def = svc.clone();
            for d in &mut def.depends_on {
                d.on = slot[d.on];
            }
            if let Some(w) = &mut def.watch {
                w.before = w.before.map(|b| slot[b]);
            }
            let run_as = svc.run_as.clone();
            let service_env =
                env::service_env(&derived[k], &self.base_env, &new.env, svc, run_as.as_ref());
            let old = baseline.services.get(&svc.name);
            // Checked for a slot's past service too: one removed and added
            // again finds its files as it left them.
            if let Some(Err(e)) = self
                .stack
                .services
                .get(i)
                .map(|running| bundled::live_change(running, svc))
            {
                return Err(e.to_string());
            }
            let change = if i >= self.svcs.len() || self.svcs[i].removed {
                Change::Added
            } else if old == Some(&print) && service_env == self.svcs[i].env {
                Change::Unchanged
            } else if self.svcs[i].state().alive() {
                Change::Restarted
            } else {
                Change::Changed
            };
            // A bundled server keeps its prepared command and probe; an
            // unchanged service its definition; both take the new order
            // and what they watch.
            let keep = change == Change::Unchanged;
            if !keep && def.bundled.is_some() {
                reconfigured.push(i);
            }
            fingerprints.insert(
                svc.name.clone(),
                match (keep, old) {
                    (true, Some(o)) => o.clone(),
                    _ => print,
                },
            );
            if i < services.len() {
                if keep {
                    services[i].depends_on = def.depends_on;
                    services[i].priority = def.priority;
                    // Taken on by the watcher, restarted below.
                    services[i].watch = def.watch;
                } else {
                    services[i] = def;
                }
            } else {
                services.push(def);
            }
            plan.push((i, change, service_env, run_as));
        }
        let arranged = Plan::arrange(&services).map_err(|e| {
            format!("error: the stack file cannot be applied to the running stack: {e:?}\n")
        })?;
        self.reconfigure(&mut services, &reconfigured)?;
        // Checked: from here on, the new file is applied.
        let kept: Vec<usize> = slot.clone();
        let removed: Vec<usize> = (0..self.svcs.len())
            .filter(|i| !kept.contains(i) && !self.svcs[*i].removed)
            .collect();
        self.stack.services = services;
        self.stack.plan = arranged;
        self.stack.env = new.env.clone();
        self.stack.shutdown_budget = new.shutdown_budget;
        self.baseline = Some(Baseline {
            fixed: if notes.iter().any(|n| n.starts_with("data_dir")) {
                self.baseline
                    .as_ref()
                    .map(|b| b.fixed.clone())
                    .unwrap_or_default()
            } else {
                fixed(&new)
            },
            services: fingerprints,
        });
        let mut report = Vec::new();
        // Unchanged services restarted because they need a changed one.
        let mut with: HashMap<usize, usize> = HashMap::new();
        for i in removed {
            self.svcs[i].removed = true;
            self.svcs[i].selected = false;
            self.feed(i, Input::Want(Intent::Down));
            report.push((i, Change::Removed));
        }
        for (i, change, service_env, run_as) in plan {
            let svc = &self.stack.services[i];
            match change {
                Change::Added => {
                    let spec = Spec::of(svc);
                    if i == self.svcs.len() {
                        self.svcs.push(super::state::ServiceRt::new(
                            spec,
                            run_as,
                            service_env,
                            false,
                        ));
                    } else {
                        let rt = &mut self.svcs[i];
                        rt.removed = false;
                        rt.pending = Some((spec, service_env, run_as));
                        rt.apply_pending();
                    }
                    if select::enabled(svc, &self.profiles) {
                        self.select(i);
                        self.feed(i, Input::Start);
                    }
                }
                Change::Restarted | Change::Changed => {
                    let rt = &mut self.svcs[i];
                    rt.pending = Some((Spec::of(svc), service_env, run_as));
                    if change == Change::Changed {
                        rt.apply_pending();
                    } else {
                        for j in self.restart_set(i) {
                            if j != i {
                                with.entry(j).or_insert(i);
                            }
                            self.feed(j, Input::Want(Intent::Restart));
                        }
                    }
                }
                Change::Removed | Change::Unchanged => {}
            }
            report.push((i, change));
        }
        self.advance_stops();
        let mut out = String::new();
        for (i, change) in report {
            let name = self.stack.services[i].name.clone();
            let what = match (change, with.get(&i)) {
                (Change::Unchanged, Some(&d)) => {
                    format!("restarted (it needs {})", self.stack.services[d].name)
                }
                _ => change.word().to_owned(),
            };
            info!("reload: {name}: {what}");
            let mut ev = StackEvent::new("reload", Some(&name));
            ev.reason = Some(what.clone());
            self.publish(ev);
            out.push_str(&format!("{name}: {what}\n"));
        }
        for n in notes {
            warn!("reload: {n}");
            out.push_str(&format!("{n}\n"));
        }
        // Services added, removed or watching other paths.
        self.watch_files();
        Ok(out)
    }

    /// Renders the files of the changed bundled servers `which` of `new`
    /// again from their new settings (the running servers read theirs only
    /// when they start). If one fails, those already rendered are rendered
    /// again from their running definitions: the reload is refused and
    /// nothing is left changed.
    fn reconfigure(&mut self, new: &mut [Service], which: &[usize]) -> Result<(), String> {
        let Some(loader) = self.loader.as_mut() else {
            return Ok(());
        };
        for (n, &i) in which.iter().enumerate() {
            let running = &self.stack.services[i];
            if let Err(e) = loader.reconfigure(&mut new[i], running) {
                for &j in &which[..n] {
                    let mut back = self.stack.services[j].clone();
                    if let Err(e) = loader.reconfigure(&mut back, &self.stack.services[j]) {
                        warn!(
                            "reload: cannot restore the files of {}: {e} (they hold its new \
                             settings, which it reads at its next start)",
                            back.name
                        );
                    }
                }
                return Err(Error::new(format!(
                    "cannot ready `{}` for its new settings: {}",
                    new[i].name, e.message
                ))
                .help("the running stack was not changed; reload again once that is fixed")
                .to_string());
            }
        }
        Ok(())
    }

    /// What restarting service `i` for a reload takes down with it: the
    /// dependants that need it (and then those through priority too), as
    /// `cogno restart --with-dependents` does.
    fn restart_set(&self, i: usize) -> Vec<usize> {
        let dependants = if self.alive_dependants(i, true).is_empty() {
            Default::default()
        } else {
            self.alive_dependants(i, false)
        };
        dependants.into_iter().chain([i]).collect()
    }

    /// SIGHUP: reloads, and logs what it did or why it could not.
    pub(super) fn reload_on_signal(&mut self) {
        info!("SIGHUP received: reloading the stack file");
        if let Err(e) = self.reload() {
            tracing::error!("reload refused; the running stack is unchanged:\n{e}");
        }
    }
}
