//! `cogno mcp`: a Model Context Protocol server on stdin/stdout, so that a
//! coding agent or an editor can look at a running stack and act on it.
//!
//! It is one more remote command: every tool is a request to the control
//! socket (found as `cogno status` finds it) answered with the words the CLI
//! prints, through the same code (`act_one`, `logs::Filter`, `cogno wait`'s
//! wait), so an agent and a person are told the same thing. The server
//! starts whether or not a stack runs: each call connects anew, and says
//! where it looked and how to start one when nothing answers.
//!
//! The control client is blocking std I/O; each call runs on tokio's
//! blocking pool so that a restart that takes seconds does not hold up the
//! session (cancellations, other calls).

use super::act::act_one;
use super::logs::{fetch, parse_since, Filter, LogLine};
use super::{socket_path, target_data, Outcome, StackArgs, QUICKSTART, QUICKSTART_NAME};
use crate::control::client::{get_status, percent_encode, request};
use crate::control::Action;
use crate::datadir::DataDir;
use crate::error::Error;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What an agent is told about cogno when it connects.
const INSTRUCTIONS: &str = "\
cogno is a process supervisor: it runs a stack of services (databases such as PostgreSQL and \
Redis, workflow servers, the user's own app processes) in dependency order, checks their \
health, restarts those that crash, and keeps their recent output. This server talks to one \
running stack. Start with `list_services` to see the stack's phase and each service's state; \
`service_details` and `logs` tell why a service failed; `restart`, `start` and `stop` act on one \
service and wait until it is healthy or stopped; `wait_until_ready` waits for the whole stack. \
Errors are the messages the `cogno` command line prints, and say what to do.";

/// How many events of the stack's own `cogno` stream `service_details`
/// looks through for one service's recent history.
const EVENT_TAIL: usize = 1000;
/// How many of a service's recent events it shows.
const SERVICE_EVENTS: usize = 20;
const DEFAULT_READY_TIMEOUT_S: u64 = 120;
/// The longest an agent may make `wait_until_ready` wait in one call.
const MAX_READY_TIMEOUT_S: u64 = 3600;

const STACK_FILE_URI: &str = "cogno://stack-file";
const STATUS_URI: &str = "cogno://status";

pub fn run(args: StackArgs) -> Outcome {
    let server = Cogno {
        socket: Arc::new(socket_path(&args)),
        data: target_data(&args),
        stack_file: args.config.path(),
        tool_router: Cogno::tool_router(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the MCP server's event loop: {e}")))?;
    runtime.block_on(async {
        let session = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Error::new(format!("MCP session on stdin/stdout failed to open: {e}")))?;
        // Ends when the client closes stdin: that is how a session ends.
        session
            .waiting()
            .await
            .map_err(|e| Error::new(format!("MCP session on stdin/stdout failed: {e}")))?;
        Ok(0)
    })
}

/// The server: where the stack's control socket and its stack file are.
#[derive(Clone)]
struct Cogno {
    socket: Arc<PathBuf>,
    /// The stack's data directory: where `wait_until_ready` finds the
    /// failed services' output when cogno has exited.
    data: DataDir,
    /// None: the built-in quick-start stack (as for `cogno up`).
    stack_file: Option<PathBuf>,
    tool_router: ToolRouter<Self>,
}

#[derive(Deserialize, JsonSchema)]
struct ServiceArg {
    /// The service's name, as `list_services` shows it (e.g. `postgres`, `web`).
    service: String,
}

#[derive(Deserialize, JsonSchema)]
struct ActArgs {
    /// The service's name, as `list_services` shows it.
    service: String,
    /// Also stop the services that depend on this one first (and, for
    /// restart, start them again after). Without it, stopping or
    /// restarting a service that running services depend on is refused
    /// with the reason; the refusal's `--with-dependents` is this flag.
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, JsonSchema)]
struct LogsArgs {
    /// Only these services' output (all services when empty). `cogno` is the
    /// stack's own stream: its state changes and operators' actions.
    #[serde(default)]
    services: Vec<String>,
    /// How many recent lines of each service to look at (default 100);
    /// `grep` and `since` choose among these, so raise it to search further back.
    lines: Option<usize>,
    /// Only lines containing this text (a plain, case-sensitive substring, not a regex).
    grep: Option<String>,
    /// Only lines since this long ago (`30s`, `5m`, `2h`) or since this RFC 3339 time
    /// (`2026-01-31T12:00:00Z`).
    since: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
struct WaitArgs {
    /// How long to wait at most, in seconds (default 120, at most 3600).
    timeout_seconds: Option<u64>,
}

#[tool_router]
impl Cogno {
    #[tool(
        description = "List every service of the running stack with its state (waiting, blocked, starting, running, unhealthy, backoff, stopping, stopped, completed, exited, failed, fatal), pid, uptime, restart count, last exit and latest health check, and the stack's phase (starting, ready, degraded, stopping) with what keeps it from being ready. JSON, as `cogno status --json` prints it. Start here."
    )]
    async fn list_services(&self) -> CallToolResult {
        let socket = self.socket.clone();
        answer(blocking(move || Ok(pretty(&get_status(&socket)?))).await)
    }

    #[tool(
        description = "One service in detail: its state and why (what it waits for, why it is blocked or failed), pid, uptime, restarts, last exit (exit status or signal), latest health check, whether it is critical (its failure stops the stack) — and its recent events (state changes with their reasons: crashes, failed health checks, restarts), oldest first. JSON."
    )]
    async fn service_details(&self, Parameters(a): Parameters<ServiceArg>) -> CallToolResult {
        let socket = self.socket.clone();
        answer(
            blocking(move || {
                let path = format!("/services/{}", percent_encode(&a.service));
                let service: serde_json::Value = request(&socket, "GET", &path, None)?.json()?;
                // The `cogno` stream's lines read `web: running → backoff (…)`.
                let prefix = format!("{}: ", a.service);
                let mut events = Vec::new();
                read_lines(&socket, &["cogno".to_owned()], EVENT_TAIL, |l| {
                    if l.line.starts_with(&prefix) {
                        events.push(format!("{} {}", l.t, l.line));
                    }
                })?;
                let recent = &events[events.len().saturating_sub(SERVICE_EVENTS)..];
                Ok(pretty(&serde_json::json!({
                    "service": service,
                    "recent_events": recent,
                })))
            })
            .await,
        )
    }

    #[tool(
        description = "Recent output (stdout and stderr) of the stack's services, oldest first, one line each: `TIME SERVICE: LINE` (`SERVICE[stderr]` for stderr). Filter by service, by text (`grep`) and by time (`since`), among the last `lines` lines of each service. The `cogno` service is the supervisor's own record of state changes. Use it to find why a service crashed or what it logged."
    )]
    async fn logs(&self, Parameters(a): Parameters<LogsArgs>) -> CallToolResult {
        let socket = self.socket.clone();
        answer(
            blocking(move || {
                let since = a.since.as_deref().map(parse_since).transpose();
                let filter = Filter {
                    since: since.map_err(Error::new)?,
                    grep: a.grep,
                    timestamps: true,
                    json: false,
                };
                let mut out = String::new();
                read_lines(&socket, &a.services, a.lines.unwrap_or(100), |l| {
                    if filter.shows(&l) {
                        let stream = if l.stream == "stderr" { "[stderr]" } else { "" };
                        out.push_str(&format!("{} {}{stream}: {}\n", l.t, l.service, l.line));
                    }
                })?;
                if out.is_empty() {
                    out.push_str("no line matches\n");
                }
                Ok(out)
            })
            .await,
        )
    }

    #[tool(
        description = "The stack's health document, as its HTTP health endpoint serves it to load balancers and container health checks: whether the stack is healthy, and each service's check. JSON."
    )]
    async fn health(&self) -> CallToolResult {
        let socket = self.socket.clone();
        answer(
            blocking(move || {
                // 503 when not ready: still the document asked for.
                let doc: serde_json::Value = request(&socket, "GET", "/health", None)?.json()?;
                Ok(pretty(&doc))
            })
            .await,
        )
    }

    #[tool(
        description = "Start a stopped or failed service and wait until it is healthy or has failed. Says how long it took, or why it failed. If services it depends on are stopped too, start those first."
    )]
    async fn start(&self, Parameters(a): Parameters<ServiceArg>) -> CallToolResult {
        self.act(Action::Start, a.service, false).await
    }

    #[tool(
        description = "Stop one service (its process gets its stop signal, then SIGKILL after its grace period) and wait until it has stopped; it stays stopped until started. Refused, saying which ones, when running services depend on it, unless `force` is true: then those are stopped first."
    )]
    async fn stop(&self, Parameters(a): Parameters<ActArgs>) -> CallToolResult {
        self.act(Action::Stop, a.service, a.force).await
    }

    #[tool(
        description = "Restart one service (stop, then start with a new process) and wait until it is healthy again. Refused, saying which ones, when running services depend on it, unless `force` is true: then those are stopped first and started again after."
    )]
    async fn restart(&self, Parameters(a): Parameters<ActArgs>) -> CallToolResult {
        self.act(Action::Restart, a.service, a.force).await
    }

    #[tool(
        description = "Wait until the whole stack is ready (every service healthy, or its one-shot job completed), at most `timeout_seconds`. Follows the stack's events, so it answers as soon as the stack is ready: `the stack is ready: N services`. Fails at once, with the failed services' last output lines, when a service has failed for good (fatal, failed, exited or stopped) or the stack is stopping; on timeout, an error saying what is still not ready and why. Use it after starting the stack or restarting a service."
    )]
    async fn wait_until_ready(&self, Parameters(a): Parameters<WaitArgs>) -> CallToolResult {
        let timeout = a
            .timeout_seconds
            .unwrap_or(DEFAULT_READY_TIMEOUT_S)
            .min(MAX_READY_TIMEOUT_S);
        let timeout = Some(Duration::from_secs(timeout));
        let data = self.data.clone();
        // The same wait as `cogno wait`: it follows the stack's events, so
        // it answers as soon as the event that made the stack ready comes.
        answer(blocking(move || super::wait::until_ready(&data, &[], timeout, |_| {})).await)
    }
}

impl Cogno {
    async fn act(&self, action: Action, service: String, force: bool) -> CallToolResult {
        let socket = self.socket.clone();
        answer(blocking(move || act_one(&socket, action, &service, force)).await)
    }

    /// The stack file as written (variables not filled in: `.env` values
    /// stay out of the agent's context), and its path or name.
    fn stack_file(&self) -> Result<(String, String), Error> {
        match &self.stack_file {
            None => Ok((QUICKSTART_NAME.to_owned(), QUICKSTART.to_owned())),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::new(format!(
                        "cannot read the stack file {}: {e}",
                        path.display()
                    ))
                })?;
                Ok((path.display().to_string(), text))
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Cogno {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("cogno", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let file = match &self.stack_file {
            Some(p) => p.display().to_string(),
            None => QUICKSTART_NAME.to_owned(),
        };
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(STACK_FILE_URI, "stack file")
                .with_description(format!(
                    "The stack file ({file}): the services, their commands, dependencies and \
                     health checks (YAML; `${{…}}` variables as written)"
                ))
                .with_mime_type("application/yaml"),
            Resource::new(STATUS_URI, "status")
                .with_description(
                    "The running stack's phase and every service's state (JSON, as `cogno status --json`)",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let (text, mime) = match uri.as_str() {
            STACK_FILE_URI => (self.stack_file().map(|(_, t)| t), "application/yaml"),
            STATUS_URI => {
                let socket = self.socket.clone();
                let status = blocking(move || Ok(pretty(&get_status(&socket)?))).await;
                (status, "application/json")
            }
            _ => {
                return Err(ErrorData::resource_not_found(
                    format!("no resource {uri}; there are {STACK_FILE_URI} and {STATUS_URI}"),
                    None,
                ))
            }
        };
        let text = text.map_err(|e| ErrorData::internal_error(message(&e), None))?;
        Ok(
            ReadResourceResult::new(vec![ResourceContents::text(text, uri).with_mime_type(mime)])
                .into(),
        )
    }
}

/// Runs a blocking control-socket exchange on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::new(format!("the request failed: {e}"))))
}

/// The last `n` lines of `services` from `GET /logs`, in order, to `each`.
fn read_lines(
    socket: &std::path::Path,
    services: &[String],
    n: usize,
    mut each: impl FnMut(LogLine),
) -> Result<(), Error> {
    let body = BufReader::new(fetch(socket, services, n, false)?);
    for line in body.split(b'\n') {
        let line = line.map_err(|e| Error::new(format!("reading cogno's logs: {e}")))?;
        if let Ok(l) = serde_json::from_slice::<LogLine>(&line) {
            each(l);
        }
    }
    Ok(())
}

/// A tool's answer: its text, or the CLI's error text flagged as an error.
fn answer(result: Result<String, Error>) -> CallToolResult {
    match result {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(message(&e))]),
    }
}

/// An error as the CLI prints it, without the `error:` word (the tool
/// result's error flag says it).
fn message(e: &Error) -> String {
    format!("{e:#}").trim_end().to_owned()
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
