//! The control plane: what operators and health checks can ask of a running
//! stack. The supervisor answers [`Request`]s sent over a channel; the API
//! server ([`server`]) exposes them as JSON over HTTP on a Unix socket, and
//! the CLI ([`client`]) is its user.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

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
    Act {
        action: Action,
        service: String,
        with_dependents: bool,
        reply: oneshot::Sender<ActionResult>,
    },
    Shutdown(oneshot::Sender<()>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        })
    }
}

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

/// The outcome of an action, once it has finished (healthy, stopped, or failed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionResult {
    pub ok: bool,
    /// HTTP status the API answers with.
    pub code: u16,
    pub message: String,
    pub took_ms: u64,
}

impl ActionResult {
    pub fn err(code: u16, message: impl Into<String>) -> ActionResult {
        ActionResult {
            ok: false,
            code,
            message: message.into(),
            took_ms: 0,
        }
    }
}

/// The whole stack, as `cogno status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackStatus {
    /// starting | ready | degraded | stopping
    pub phase: String,
    /// Why the stack is not ready: one entry per service that is not.
    pub not_ready: Vec<String>,
    pub uptime_ms: u64,
    pub version: String,
    pub pid: i32,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: String,
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
        self.state == "running" || self.state == "completed"
    }
}
