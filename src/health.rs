//! Health probes (http, tcp, exec, a Temporal task queue's poller) and the loop that runs one service's probe
//! on its schedule and reports each result to the supervisor as an event.
//!
//! Until the first success the probe runs every `start_interval`, so a
//! dependant starts within that of its dependency becoming ready; after it,
//! every `interval`. While a server answers that it is starting up or
//! recovering, it is asked less often (see [`RECOVERING_INTERVAL`]).

use crate::bundled;
use crate::config::{Health, HttpStatuses, Probe};
use crate::os::process::{self, KillOnDrop, Launch};
use crate::os::reaper::Waiters;
use crate::user::RunAs;
use bytes::Bytes;
use http_body_util::Empty;
use nix::unistd::Pid;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The result of one probe.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub ok: bool,
    pub latency: Duration,
    pub error: Option<String>,
}

/// What a probe needs of its service: what an exec probe runs with, and the
/// main process whose own a bundled server's listening socket must be.
#[derive(Clone)]
pub struct ExecContext {
    pub main: Option<Pid>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<std::path::PathBuf>,
    pub run_as: Option<RunAs>,
    pub no_new_privs: bool,
    pub waiters: Waiters,
}

/// How often a server that says it is starting up or recovering is probed:
/// each refused probe costs it a connection and a log line of its own (a
/// PostgreSQL in crash recovery logs every one as FATAL), and asking every
/// `start_interval` (50 ms for bundled servers) gains nothing meanwhile.
const RECOVERING_INTERVAL: Duration = Duration::from_millis(500);

/// What servers answer while they cannot serve yet but are on their way:
/// PostgreSQL starting or replaying its WAL, Redis loading its dataset.
const STARTING_UP: &[&str] = &[
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "LOADING",
];

/// Whether a failed probe's error says the server is starting or recovering.
pub fn starting_up(result: &ProbeResult) -> bool {
    result
        .error
        .as_deref()
        .is_some_and(|e| STARTING_UP.iter().any(|s| e.contains(s)))
}

/// Runs `health`'s probe forever, calling `report` with each result; `poke`
/// makes it check at once instead of at its next turn. The supervisor
/// aborts the task when the service's process ends.
pub async fn run(
    service: String,
    health: Health,
    exec: ExecContext,
    poke: Arc<Notify>,
    report: impl Fn(ProbeResult),
) {
    let mut passed_once = false;
    let mut recovering = false;
    let mut told_operator = false;
    loop {
        let wait = match (passed_once, recovering) {
            (true, _) => health.interval,
            (false, true) => health.start_interval.max(RECOVERING_INTERVAL),
            (false, false) => health.start_interval,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = poke.notified() => {}
        }
        let result = probe(&health.probe, health.timeout, &exec).await;
        passed_once |= result.ok;
        let now_recovering = starting_up(&result);
        if now_recovering && !recovering && !passed_once {
            tracing::info!(
                "{service}: the server says it is starting up or recovering; checking every {} until it answers",
                crate::fmt::fmt_duration(health.start_interval.max(RECOVERING_INTERVAL))
            );
        }
        recovering = now_recovering;
        // Waiting will not fix it: worth a line, once per instance.
        if let Some(e) = result
            .error
            .as_deref()
            .filter(|e| bundled::needs_an_operator(e))
        {
            if !std::mem::replace(&mut told_operator, true) {
                tracing::warn!("{service}: {e}");
            }
        }
        report(result);
    }
}

/// Runs one probe with a timeout.
pub async fn probe(probe: &Probe, timeout: Duration, exec: &ExecContext) -> ProbeResult {
    let start = Instant::now();
    let outcome = match tokio::time::timeout(timeout, attempt(probe, exec)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            crate::fmt::fmt_duration(timeout)
        )),
    };
    ProbeResult {
        ok: outcome.is_ok(),
        latency: start.elapsed(),
        error: outcome.err(),
    }
}

async fn attempt(probe: &Probe, exec: &ExecContext) -> Result<(), String> {
    match probe {
        Probe::Tcp(addr) => TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("tcp {addr}: {e}")),
        Probe::Http {
            url,
            authority,
            path,
            statuses,
        } => http_get(url, authority, path, statuses).await,
        Probe::Exec(argv) => run_exec(argv, exec).await,
        Probe::TemporalTaskQueue {
            port,
            namespace,
            queue,
        } => bundled::temporal::task_queue_polled(*port, namespace, queue).await,
        Probe::Bundled {
            server,
            credentials,
            data: Some(data),
        } => {
            // Before any credentials go out: what listens must be the
            // service itself, not a process that took its port.
            let main = exec
                .main
                .ok_or_else(|| format!("{} has no running process to check", server.kind.name))?;
            bundled::check_listener(server.port, main, server.kind.name)?;
            bundled::server(server.kind)
                .probe(server, credentials, data)
                .await
        }
        Probe::Bundled { server, .. } => Err(format!(
            "internal error: the {} server was not prepared before its probe ran",
            server.kind.name
        )),
    }
}

async fn http_get(
    url: &str,
    authority: &str,
    path: &str,
    statuses: &HttpStatuses,
) -> Result<(), String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("cogno/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {url}: {e}"));
    conn.abort();
    let status = res?.status().as_u16();
    if statuses.pass(status) {
        Ok(())
    } else {
        Err(format!("GET {url}: HTTP {status} (passing: {statuses})"))
    }
}

async fn run_exec(argv: &[String], ctx: &ExecContext) -> Result<(), String> {
    let spawned = process::spawn(&Launch {
        argv,
        env: &ctx.env,
        working_dir: ctx.working_dir.as_deref(),
        run_as: ctx.run_as.as_ref(),
        stdin: None,
        capture: false,
        no_new_privs: ctx.no_new_privs,
    })
    .map_err(|e| e.to_string())?;
    let exited = ctx.waiters.wait_for(spawned.pid);
    let reason = KillOnDrop(Some(spawned.pid))
        .finished(exited, &spawned.report)
        .await
        .ok_or("the probe's exit status was lost")?;
    if reason.success() {
        Ok(())
    } else {
        Err(format!("`{}` {reason}", argv.join(" ")))
    }
}
