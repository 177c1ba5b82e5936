//! The state of one supervised service: the explicit state machine that
//! `cogno status` shows, and the counters the restart policy needs.

use crate::control::{Action, Outcome, ServiceState};
use crate::health::ProbeResult;
use crate::logs::SharedRing;
use crate::os::process::{ExecReport, ExitReason};
use crate::user::RunAs;
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fmt;
use std::time::Instant;
use tokio::sync::oneshot;

/// Where a service is in its life. Transitions happen only in the
/// supervisor, in response to events (exit, probe result, timer, signal).
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not started yet: a dependency is not in its condition (the reason says which).
    Waiting(String),
    /// A dependency can never reach its condition without intervention.
    Blocked(String),
    /// Spawned; not yet healthy (health check not passed, or not up for `startsecs`).
    Starting,
    /// Healthy.
    Running,
    /// Running, but the health check has failed `retries` times in a row.
    Unhealthy,
    /// The main process ended; its leftovers are being killed and its output drained.
    Exiting,
    /// Waiting to be restarted.
    Backoff(Instant),
    /// Sent its stop signal; waiting for it to end.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// A oneshot that exited 0.
    Completed,
    /// Ended, and its restart policy says not to restart it.
    Exited,
    /// A oneshot that failed, or a service that failed with no restart left to try.
    Failed,
    /// Failed to start `max_restarts` times in a row: given up.
    Fatal,
}

impl State {
    /// The state's name, as `cogno status` shows it.
    pub fn kind(&self) -> ServiceState {
        match self {
            State::Waiting(_) => ServiceState::Waiting,
            State::Blocked(_) => ServiceState::Blocked,
            State::Starting => ServiceState::Starting,
            State::Running => ServiceState::Running,
            State::Unhealthy => ServiceState::Unhealthy,
            State::Exiting => ServiceState::Exiting,
            State::Backoff(_) => ServiceState::Backoff,
            State::Stopping => ServiceState::Stopping,
            State::Stopped => ServiceState::Stopped,
            State::Completed => ServiceState::Completed,
            State::Exited => ServiceState::Exited,
            State::Failed => ServiceState::Failed,
            State::Fatal => ServiceState::Fatal,
        }
    }

    /// Nothing will happen to this service without an operator.
    pub fn terminal(&self) -> bool {
        matches!(
            self,
            State::Completed
                | State::Exited
                | State::Failed
                | State::Fatal
                | State::Blocked(_)
                | State::Stopped
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind().fmt(f)
    }
}

/// What is left to do before an ended instance counts as gone.
#[derive(Debug)]
pub struct Cleanup {
    pub reason: ExitReason,
    /// Leftover processes that were sent SIGKILL and are not reaped yet.
    pub strays: HashSet<Pid>,
    /// Output pipes of the instance not yet at end of file.
    pub open_pipes: u8,
}

/// An operator's start/stop/restart, answered when it has finished.
#[derive(Debug)]
pub struct PendingOp {
    pub action: Action,
    pub since: Instant,
    pub reply: oneshot::Sender<Outcome>,
}

/// Health-check bookkeeping.
#[derive(Debug, Default)]
pub struct HealthInfo {
    pub consecutive_failures: u32,
    pub last: Option<ProbeResult>,
}

/// Everything the supervisor tracks for one service.
pub struct ServiceRt {
    pub state: State,
    /// Bumped on every state change; timers carry it and are ignored once stale.
    pub epoch: u64,
    /// Bumped on every spawn; events of an older instance are ignored.
    pub instance: u64,
    pub pid: Option<Pid>,
    pub since: Instant,
    pub spawned_at: Option<Instant>,
    /// When this instance became healthy.
    pub healthy_at: Option<Instant>,
    /// Consecutive starts that ended before the service became healthy.
    pub failed_starts: u32,
    /// Consecutive crashes after being healthy (reset after `reset_after` healthy).
    pub crash_streak: u32,
    pub restarts: u32,
    pub last_exit: Option<ExitReason>,
    pub health: HealthInfo,
    pub probe: Option<tokio::task::AbortHandle>,
    pub cleanup: Option<Cleanup>,
    pub open_pipes: u8,
    /// Tells, once the process has exited, whether it ever ran its program.
    pub exec_report: Option<ExecReport>,
    /// The stop signal was sent (shutdown or operator stop).
    pub stop_requested: bool,
    /// Should be stopped once everything that depends on it is down.
    pub want_down: bool,
    /// Start again once stopped (an operator's restart).
    pub restart_after: bool,
    /// Operators waiting for an action on this service to finish.
    pub waiting_ops: Vec<PendingOp>,
    pub run_as: Option<RunAs>,
    pub env: Vec<(String, String)>,
    pub ring: SharedRing,
}

impl ServiceRt {
    pub fn new(run_as: Option<RunAs>, env: Vec<(String, String)>) -> ServiceRt {
        ServiceRt {
            state: State::Waiting("not started yet".into()),
            epoch: 0,
            instance: 0,
            pid: None,
            since: Instant::now(),
            spawned_at: None,
            healthy_at: None,
            failed_starts: 0,
            crash_streak: 0,
            restarts: 0,
            last_exit: None,
            health: HealthInfo::default(),
            probe: None,
            cleanup: None,
            open_pipes: 0,
            exec_report: None,
            stop_requested: false,
            want_down: false,
            restart_after: false,
            waiting_ops: Vec::new(),
            run_as,
            env,
            ring: Default::default(),
        }
    }

    pub fn set(&mut self, state: State) {
        self.state = state;
        self.epoch += 1;
        self.since = Instant::now();
    }

    /// A process of this service exists or is being cleaned up.
    pub fn alive(&self) -> bool {
        self.pid.is_some() || self.cleanup.is_some()
    }
}
