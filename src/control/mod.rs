//! The control plane: what operators and health checks can ask of a running
//! stack. The supervisor answers [`Request`]s sent over a channel; the API
//! server ([`server`]) exposes them as JSON over HTTP on a Unix socket, and
//! the CLI ([`client`]) is its user.

pub mod client;
pub mod metrics;
pub mod server;

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The lowercase word, as on the wire.
macro_rules! display_as_wire {
    ($t:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $($t::$v => $s),* })
            }
        }
    };
}

/// Sends operators' requests to a running supervisor.
#[derive(Clone)]
pub struct Handle(mpsc::UnboundedSender<Request>);

impl Handle {
    /// A handle, and the receiving end the supervisor reads requests from.
    pub fn channel() -> (Handle, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Handle(tx), rx)
    }

    /// False when the supervisor has already exited.
    pub fn send(&self, r: Request) -> bool {
        self.0.send(r).is_ok()
    }
}

/// What the API asks the supervisor.
#[derive(Debug)]
pub enum Request {
    Status(oneshot::Sender<StackStatus>),
    /// The Prometheus scrape (see [`metrics`]).
    Metrics(oneshot::Sender<String>),
    Act {
        action: Action,
        service: String,
        with_dependents: bool,
        reply: oneshot::Sender<Outcome>,
    },
    Shutdown(oneshot::Sender<()>),
    /// Read the stack file again and apply it: what was done, one line per
    /// service, or the file's errors as `cogno check` prints them.
    Reload(oneshot::Sender<Result<String, String>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
}

display_as_wire!(Action {
    Start => "start",
    Stop => "stop",
    Restart => "restart",
});

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "start" => Some(Action::Start),
            "stop" => Some(Action::Stop),
            "restart" => Some(Action::Restart),
            _ => None,
        }
    }
}

/// What the supervisor answers an action with, once it has finished
/// (healthy, stopped, or failed) or was refused. The API server turns it
/// into an [`ActionResult`] and its HTTP status.
#[derive(Debug)]
pub enum Outcome {
    Done { message: String, took: Duration },
    Failed { message: String, took: Duration },
    Refused(Refusal),
}

/// Why the supervisor would not carry out an action. Callers branch on it:
/// the API server picks the HTTP status from it.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    UnknownService {
        name: String,
        known: Vec<String>,
    },
    ShuttingDown,
    /// Stopping `service` would pull the ground from under running dependants.
    NeededBy {
        service: String,
        dependants: Vec<String>,
        action: Action,
        /// Those of `dependants` that depend on it only through priority.
        by_priority: Vec<String>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownService { name, known } => write!(
                f,
                "there is no service named `{name}`; known services: {}",
                known.join(", ")
            ),
            Refusal::ShuttingDown => f.write_str("the stack is shutting down"),
            Refusal::NeededBy {
                service,
                dependants,
                action,
                by_priority,
            } => {
                let after = if *action == Action::Restart {
                    " and start them again after"
                } else {
                    ""
                };
                write!(
                    f,
                    "{service} is needed by {} (running): add --with-dependents to stop them first{after}",
                    dependants.join(", ")
                )?;
                if by_priority.is_empty() {
                    return Ok(());
                }
                // Why a service the file never names is said to need it.
                write!(
                    f,
                    ". {} depend{} on {service} only through priority (a service waits \
                     for every lower priority number before it starts, and stops before \
                     them)",
                    by_priority.join(", "),
                    if by_priority.len() == 1 { "s" } else { "" }
                )?;
                if *action == Action::Restart {
                    return Ok(());
                }
                write!(
                    f,
                    ": `cogno restart {service}` would restart it alone and leave them \
                     running, as they live through a crash of it"
                )
            }
        }
    }
}

/// An action's outcome on the wire (docs/api.md); `code` is the HTTP status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionResult {
    pub ok: bool,
    /// HTTP status the API answers with.
    pub code: u16,
    pub message: String,
    pub took_ms: u64,
}

/// The whole stack, as `cogno status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackStatus {
    pub phase: Phase,
    /// Why the stack is not ready: one entry per service that is not.
    pub not_ready: Vec<String>,
    pub uptime_ms: u64,
    pub version: String,
    pub pid: i32,
    pub services: Vec<ServiceStatus>,
    /// The scheduled backups (`backup:` in the stack file); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// The scheduled backups, as `cogno status` shows them (see `crate::backups`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupStatus {
    /// The cron expression, as written.
    pub schedule: String,
    /// The directory the archives go to.
    pub to: String,
    pub keep: u32,
    /// When the next one is due (RFC 3339, UTC); None while one runs, or
    /// when the schedule is never due again.
    pub next: Option<String>,
    /// When the one running now started.
    pub running_since: Option<String>,
    /// How the last one went; None before the first.
    pub last: Option<BackupRun>,
}

/// One scheduled backup's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRun {
    /// When it started (RFC 3339, UTC).
    pub started: String,
    pub took_ms: u64,
    pub ok: bool,
    /// The archive's path, when it succeeded.
    pub archive: Option<String>,
    /// Why it failed: `cogno backup`'s error, or the retention's.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    /// What it waits for, why it is blocked, or why it failed.
    pub reason: Option<String>,
    pub pid: Option<i32>,
    pub uptime_ms: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub health: Option<HealthStatus>,
    pub critical: bool,
    pub oneshot: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthStatus {
    /// pass | fail | unknown (no probe has answered yet)
    pub status: String,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

impl ServiceStatus {
    /// Whether this service counts as passing in the stack's health document.
    pub fn passes(&self) -> bool {
        matches!(self.state, ServiceState::Running | ServiceState::Completed)
    }
}

/// Where the stack is, as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Services are still on their way up.
    Starting,
    /// Every service is healthy (or its oneshot has completed).
    Ready,
    /// Some service is not, and nothing is still coming up (or it was ready once).
    Degraded,
    /// The stack is being stopped.
    Stopping,
}

/// A service's state as `cogno status` shows it: the name of the
/// supervisor's state, without the data the state carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Waiting,
    Blocked,
    Starting,
    Running,
    Unhealthy,
    Exiting,
    Backoff,
    Stopping,
    Stopped,
    Completed,
    Exited,
    Failed,
    Fatal,
}

display_as_wire!(Phase {
    Starting => "starting",
    Ready => "ready",
    Degraded => "degraded",
    Stopping => "stopping",
});

display_as_wire!(ServiceState {
    Waiting => "waiting",
    Blocked => "blocked",
    Starting => "starting",
    Running => "running",
    Unhealthy => "unhealthy",
    Exiting => "exiting",
    Backoff => "backoff",
    Stopping => "stopping",
    Stopped => "stopped",
    Completed => "completed",
    Exited => "exited",
    Failed => "failed",
    Fatal => "fatal",
});
