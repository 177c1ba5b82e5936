//! What the supervisor keeps for one supervised service: its pure state
//! machine, and beside it the handles of what is running (the probe task,
//! the output pipes, the leftovers being cleaned up) and the operators
//! waiting for an action to finish.

use super::machine::{Machine, Spec};
use crate::control::metrics::ServiceMetrics;
use crate::control::{Action, Outcome};
use crate::logs::SharedRing;
use crate::os::process::ExecReport;
use crate::user::RunAs;
use nix::unistd::Pid;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tokio::sync::Notify;

/// An operator's start/stop/restart, answered when it has finished.
#[derive(Debug)]
pub struct PendingOp {
    pub action: Action,
    pub since: Instant,
    pub reply: oneshot::Sender<Outcome>,
}

/// What a service runs with: its machine's spec, its environment, its user.
pub type Definition = (Spec, Vec<(String, String)>, Option<RunAs>);

/// Everything the supervisor tracks for one service.
pub struct ServiceRt {
    pub spec: Spec,
    pub machine: Machine,
    /// Bumped on every spawn; events of an older instance are ignored.
    pub instance: u64,
    pub restarts: u32,
    pub probe: Option<tokio::task::AbortHandle>,
    /// Wakes the probe task for a check now (see `health::run`).
    pub poke: Option<Arc<Notify>>,
    /// When the current instance's probe last answered.
    pub probed_at: Option<Instant>,
    /// Leftover processes of the ended instance that were sent SIGKILL and
    /// are not reaped yet; Some while its cleanup lasts.
    pub strays: Option<HashSet<Pid>>,
    /// Output pipes of the current instance not yet at end of file.
    pub open_pipes: u8,
    /// Tells, once the process has exited, whether it ever ran its program.
    pub exec_report: Option<ExecReport>,
    /// Operators waiting for an action on this service to finish.
    pub waiting_ops: Vec<PendingOp>,
    pub run_as: Option<RunAs>,
    pub env: Vec<(String, String)>,
    pub ring: SharedRing,
    pub metrics: ServiceMetrics,
    /// Part of what this run starts: false for a service `cogno up` left out
    /// (not named, or profiled out) until an operator starts it.
    pub selected: bool,
    /// Removed from the stack file by a reload: stopped, and hidden from status.
    pub removed: bool,
    /// A reload's new definition, applied once the running instance, if any, is gone.
    pub pending: Option<Definition>,
    /// Restarts for changes to its watched files (`watch:`).
    pub reloads: super::rewatch::Reloads,
}

impl ServiceRt {
    /// A service to supervise, or, unless `selected`, one left down until an operator starts it.
    pub fn new(
        spec: Spec,
        run_as: Option<RunAs>,
        env: Vec<(String, String)>,
        selected: bool,
    ) -> ServiceRt {
        ServiceRt {
            spec,
            machine: if selected {
                Machine::default()
            } else {
                Machine::left_out()
            },
            instance: 0,
            restarts: 0,
            probe: None,
            poke: None,
            probed_at: None,
            strays: None,
            open_pipes: 0,
            exec_report: None,
            waiting_ops: Vec::new(),
            run_as,
            env,
            ring: Default::default(),
            metrics: ServiceMetrics::new(Instant::now()),
            selected,
            removed: false,
            pending: None,
            reloads: Default::default(),
        }
    }

    /// Takes on a reload's new definition.
    pub fn apply_pending(&mut self) {
        if let Some((spec, env, run_as)) = self.pending.take() {
            self.spec = spec;
            self.env = env;
            self.run_as = run_as;
        }
    }

    pub fn state(&self) -> &super::State {
        &self.machine.state
    }
}
