//! The control API: JSON over HTTP/1.1 on a Unix socket (DATA/run/cogno.sock),
//! served concurrently with supervision, and optionally the health document
//! over TCP (`health_listen`). Routes are documented in docs/api.md.

use super::Handle;
use super::{Action, ActionResult, Outcome, Phase, Refusal, Request, ServiceStatus, StackStatus};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::fmt::rfc3339;
use crate::logs::{Line, LogView, SharedRing, Stream};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Why the control socket could not be set up. `AlreadyRunning` is the one
/// a caller may act on: another cogno owns this data directory.
#[derive(Debug)]
pub enum BindError {
    /// A cogno answers on the socket: it runs on this data directory.
    AlreadyRunning { socket: PathBuf, data: PathBuf },
    /// Something that is not a socket sits where the socket goes.
    NotASocket(PathBuf),
    /// DATA/run is a symbolic link, or not cogno's user's own directory:
    /// the socket would be created, or a stale one removed, elsewhere.
    UntrustedDir(PathBuf),
    /// The socket could not be created.
    Io(PathBuf, std::io::Error),
}

use crate::os::MAX_SOCKET_PATH;

impl From<BindError> for Error {
    fn from(e: BindError) -> Error {
        match e {
            BindError::AlreadyRunning { socket, data } => Error::config(format!(
                "another cogno is already running on this data directory (its control socket {} answers)",
                socket.display()
            ))
            .help(format!(
                "stop it first (`cogno shutdown --data {}`), or use another --data directory",
                data.display()
            )),
            BindError::UntrustedDir(dir) => Error::config(format!(
                "{} is not a directory of cogno's user (a symbolic link, or another user's): \
                 cogno will not create its control socket through it",
                dir.display()
            ))
            .help("move it away so that cogno creates the directory itself, and start again; see docs/security.md"),
            BindError::NotASocket(path) => Error::config(format!(
                "{} exists and is not a socket; cogno will not remove it",
                path.display()
            ))
            .help("move it away and start again"),
            BindError::Io(path, _) if path.as_os_str().len() > MAX_SOCKET_PATH => {
                Error::config(format!(
                    "cannot create the control socket {}: its path is {} bytes long, and a socket's path holds at most {MAX_SOCKET_PATH}",
                    path.display(),
                    path.as_os_str().len()
                ))
                .help(format!(
                    "give a data directory whose path is at least {} bytes shorter (--data DIR, or data_dir: in the stack file)",
                    path.as_os_str().len() - MAX_SOCKET_PATH
                ))
            }
            BindError::Io(path, e) => Error::config(format!(
                "cannot create the control socket {}: {e}",
                path.display()
            )),
        }
    }
}

/// Whether a cogno already runs on `data`: its control socket answers.
/// Reads only, so `up` asks it before pre-flight checks the ports that
/// stack holds.
pub fn check_not_running(data: &DataDir) -> Result<(), BindError> {
    let path = data.socket();
    let run = data.run_dir();
    match std::fs::symlink_metadata(&run) {
        // No run directory (or no data directory) yet: nothing runs there;
        // pre-flight says what is in the way, if anything.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(())
        }
        Ok(m)
            if m.is_dir() && {
                use std::os::unix::fs::MetadataExt;
                m.uid() == nix::unistd::geteuid().as_raw()
            } => {}
        _ => return Err(BindError::UntrustedDir(run)),
    }
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(BindError::AlreadyRunning {
            socket: path,
            data: data.root().to_path_buf(),
        });
    }
    Ok(())
}

/// Binds the control socket (0600) in DATA/run, which
/// [`DataDir::create`] made. A socket file that answers belongs to
/// a cogno that is running on this data directory: that is an error, never
/// something to take over. One that does not answer is left over from a
/// crash and is replaced.
pub fn bind(data: &DataDir) -> Result<std::os::unix::net::UnixListener, BindError> {
    check_not_running(data)?;
    let path = data.socket();
    match std::fs::symlink_metadata(&path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            let _ = std::fs::remove_file(&path);
        }
        Ok(_) => return Err(BindError::NotASocket(path)),
        Err(_) => {}
    }
    // Created with no access for group and others from the start: no window
    // in which another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(&path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| BindError::Io(path.clone(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| BindError::Io(path.clone(), e))?;
    Ok(listener)
}

/// Starts serving the API (and the TCP health listener, when configured) on
/// the current runtime. Each connection is a task of its own: nothing a
/// client does (or fails to do) holds up the supervisor, which only ever
/// sees a request once it has been read completely.
pub fn start(
    listener: std::os::unix::net::UnixListener,
    health_listen: Option<std::net::SocketAddr>,
    tcp_metrics: bool,
    control: Handle,
    logs: LogView,
) -> Result<(), Error> {
    let unix = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| Error::new(format!("control socket: {e}")))?;
    let tcp = match health_listen {
        Some(addr) => Some(listen_tcp(addr).map_err(|e| {
            Error::new(format!(
                "cannot serve the health document on {addr} (`health_listen`): {e}"
            ))
            .help("free that address, or change `health_listen` in the stack file")
        })?),
        None => None,
    };
    let api = Arc::new(Api {
        control,
        logs,
        tcp_metrics,
    });
    tokio::spawn(serve_unix(unix, api.clone()));
    if let Some(tcp) = tcp {
        tokio::spawn(serve_tcp(tcp, api));
    }
    Ok(())
}

fn listen_tcp(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

/// Which routes a listener offers: the TCP listener may be reachable from
/// outside the container, so it only ever gives the health document.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Full,
    HealthOnly,
}

/// Connections served at once on the TCP health listener, which anyone who
/// can reach it may open: past this, new ones are closed as soon as they
/// are accepted, so idle clients can never take the file descriptors
/// supervision needs (spawning, pipes, probes).
const HEALTH_CONNECTIONS: usize = 64;
/// The same for the control socket, which only cogno's user and root reach.
const CONTROL_CONNECTIONS: usize = 256;

async fn serve_unix(l: tokio::net::UnixListener, api: Arc<Api>) {
    let slots = Arc::new(Semaphore::new(CONTROL_CONNECTIONS));
    loop {
        match l.accept().await {
            Ok((stream, _)) => {
                if let Ok(slot) = slots.clone().try_acquire_owned() {
                    connection(stream, api.clone(), Scope::Full, slot);
                }
            }
            Err(e) => accept_failed("control socket", e).await,
        }
    }
}

async fn serve_tcp(l: tokio::net::TcpListener, api: Arc<Api>) {
    let slots = Arc::new(Semaphore::new(HEALTH_CONNECTIONS));
    loop {
        match l.accept().await {
            Ok((stream, _)) => {
                if let Ok(slot) = slots.clone().try_acquire_owned() {
                    connection(stream, api.clone(), Scope::HealthOnly, slot);
                }
            }
            Err(e) => accept_failed("health listener", e).await,
        }
    }
}

/// Accepting fails when cogno is out of file descriptors: retrying at once
/// would spin, so wait a little for some to be closed.
async fn accept_failed(what: &str, e: std::io::Error) {
    tracing::warn!("{what}: cannot accept a connection: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection on a task of its own; `slot` is given back when it closes.
fn connection<S>(stream: S, api: Arc<Api>, scope: Scope, slot: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _slot = slot;
        let service = hyper::service::service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req, scope).await) }
        });
        // A client that connects and never sends a request is dropped.
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}

/// What one chunk of a `/logs` answer holds before it is sent.
const LOGS_CHUNK: usize = 64 << 10;

/// A response body: complete, or NDJSON sent in chunks as it is made (`/logs`).
enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

struct Api {
    control: Handle,
    logs: LogView,
    /// `metrics: true`: the TCP listener serves GET /metrics too.
    tcp_metrics: bool,
}

type Reply = Response<Body>;

enum Route<'a> {
    Health,
    Status,
    Service(&'a str),
    Act(&'a str, Action),
    Logs,
    Events,
    Metrics,
    Shutdown,
    Reload,
}

impl Api {
    async fn handle(&self, req: hyper::Request<Incoming>, scope: Scope) -> Reply {
        let path: Vec<String> = req
            .uri()
            .path()
            .trim_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let query = parse_query(req.uri().query().unwrap_or(""));
        let route = match (scope, path.as_slice()) {
            (_, ["health"]) => Route::Health,
            (Scope::Full, ["metrics"]) => Route::Metrics,
            (Scope::HealthOnly, ["metrics"]) if self.tcp_metrics => Route::Metrics,
            (Scope::HealthOnly, _) => {
                return not_found(&format!(
                    "{} is not served here: this listener only serves GET /health \
                     (and GET /metrics with `metrics: true` in the stack file)",
                    req.uri().path()
                ))
            }
            (Scope::Full, ["status"]) => Route::Status,
            (Scope::Full, ["services", name]) => Route::Service(name),
            (Scope::Full, ["services", name, action]) => match Action::parse(action) {
                Some(action) => Route::Act(name, action),
                None => {
                    return not_found(&format!(
                        "there is no action `{action}`: use start, stop or restart"
                    ))
                }
            },
            (Scope::Full, ["logs"]) => Route::Logs,
            (Scope::Full, ["events"]) => Route::Events,
            (Scope::Full, ["shutdown"]) => Route::Shutdown,
            (Scope::Full, ["reload"]) => Route::Reload,
            _ => {
                return not_found(&format!(
                    "no such resource: {}; see docs/api.md (GET /status, /services/NAME, /logs, /health, /events, /metrics; \
                     POST /services/NAME/start|stop|restart, /shutdown, /reload)",
                    req.uri().path()
                ))
            }
        };
        let wanted = match route {
            Route::Act(..) | Route::Shutdown | Route::Reload => Method::POST,
            _ => Method::GET,
        };
        if req.method() != wanted {
            return method_not_allowed(wanted);
        }
        match route {
            Route::Health => self.health().await,
            Route::Status => match self.status().await {
                Ok(st) => json(StatusCode::OK, &st),
                Err(r) => r,
            },
            Route::Service(name) => self.service(name).await,
            Route::Act(name, action) => {
                self.act(action, name, flag(&query, "with_dependents"))
                    .await
            }
            Route::Logs => self.logs(&query),
            Route::Events => self.events(),
            Route::Metrics => self.metrics().await,
            Route::Shutdown => self.shutdown().await,
            Route::Reload => self.reload().await,
        }
    }

    async fn status(&self) -> Result<StackStatus, Reply> {
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Request::Status(tx)) {
            return Err(gone());
        }
        rx.await.map_err(|_| gone())
    }

    async fn service(&self, name: &str) -> Reply {
        let st = match self.status().await {
            Ok(st) => st,
            Err(r) => return r,
        };
        match st.services.iter().find(|s| s.name == name) {
            Some(s) => json(StatusCode::OK, s),
            None => unknown_service(name, st.services.iter().map(|s| s.name.as_str())),
        }
    }

    async fn act(&self, action: Action, service: &str, with_dependents: bool) -> Reply {
        let (tx, rx) = oneshot::channel();
        let sent = self.control.send(Request::Act {
            action,
            service: service.to_owned(),
            with_dependents,
            reply: tx,
        });
        if !sent {
            return gone();
        }
        match rx.await {
            Ok(outcome) => {
                let result = action_result(outcome);
                json(
                    StatusCode::from_u16(result.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &result,
                )
            }
            Err(_) => gone(),
        }
    }

    async fn shutdown(&self) -> Reply {
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Request::Shutdown(tx)) || rx.await.is_err() {
            return gone();
        }
        json(
            StatusCode::OK,
            &action_result(Outcome::Done {
                message: format!(
                    "shutdown requested: cogno (pid {}) is stopping the stack",
                    std::process::id()
                ),
                took: Duration::ZERO,
            }),
        )
    }

    /// The stack file applied again: 200 with what was done, or 422 with
    /// the file's errors (nothing was changed).
    async fn reload(&self) -> Reply {
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Request::Reload(tx)) {
            return gone();
        }
        let Ok(answer) = rx.await else { return gone() };
        let (ok, code, message) = match answer {
            Ok(done) => (true, 200, done),
            Err(errors) => (false, 422, errors),
        };
        let result = ActionResult {
            ok,
            code,
            message,
            took_ms: 0,
        };
        json(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &result,
        )
    }

    async fn metrics(&self) -> Reply {
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Request::Metrics(tx)) {
            return gone();
        }
        let Ok(text) = rx.await else { return gone() };
        let mut r = Response::new(Body::Full(Some(text.into())));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    async fn health(&self) -> Reply {
        match self.status().await {
            Ok(st) => {
                let (code, doc) = health_document(&st, SystemTime::now());
                json(code, &doc)
            }
            Err(r) => r,
        }
    }

    fn logs(&self, query: &[(String, String)]) -> Reply {
        let known = || self.logs.services.iter().map(|(n, _)| n.as_str());
        let wanted: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k == "service")
            .flat_map(|(_, v)| v.split(','))
            .filter(|v| !v.is_empty())
            .collect();
        // `cogno` is the stack's own stream: its events (crate::events).
        let own = (String::from("cogno"), self.logs.events.ring.clone());
        if let Some(bad) = wanted
            .iter()
            .find(|w| **w != own.0 && !known().any(|n| n == **w))
        {
            return unknown_service(bad, known());
        }
        let n = match query.iter().rev().find(|(k, _)| k == "n") {
            None => 100,
            Some((_, v)) => match v.parse::<usize>() {
                Ok(n) => n,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("n must be a number of lines, not `{v}`"),
                    )
                }
            },
        };
        let selected: Vec<(String, SharedRing)> = self
            .logs
            .services
            .iter()
            .chain([&own])
            .filter(|(name, _)| wanted.is_empty() || wanted.contains(&name.as_str()))
            .cloned()
            .collect();
        // Marked seen before the rings are read: a change after this point
        // wakes the follower, so no line falls between the tail and the follow.
        let mut changes = self.logs.changes.clone();
        changes.borrow_and_update();
        let mut seqs = Vec::with_capacity(selected.len());
        let mut lines = Vec::new();
        for (k, (_, ring)) in selected.iter().enumerate() {
            let ring = lock(ring);
            seqs.push(ring.seq());
            lines.extend(ring.tail(n).into_iter().map(|l| (k, l)));
        }
        let follow = flag(query, "follow");
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            if !send_ndjson(&tx, &selected, lines, n).await || !follow {
                return;
            }
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
                let mut lines = Vec::new();
                for (k, (_, ring)) in selected.iter().enumerate() {
                    let ring = lock(ring);
                    lines.extend(ring.since(seqs[k]).into_iter().map(|l| (k, l)));
                    seqs[k] = ring.seq();
                }
                if !send_ndjson(&tx, &selected, lines, usize::MAX).await {
                    return;
                }
            }
        });
        ndjson_stream(rx)
    }

    /// `GET /events`: the stack's events from now on, one JSON object a line.
    fn events(&self) -> Reply {
        let mut events = self.logs.events.subscribe();
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    ev = crate::events::next(&mut events) => match ev {
                        Some(ev) => ev,
                        None => return,
                    },
                    _ = tx.closed() => return,
                };
                let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                line.push(b'\n');
                if tx.send(line.into()).await.is_err() {
                    return;
                }
            }
        });
        ndjson_stream(rx)
    }
}

/// A streamed NDJSON answer whose chunks come from `rx`.
fn ndjson_stream(rx: mpsc::Receiver<Bytes>) -> Reply {
    let mut r = Response::new(Body::Stream(rx));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// A ring whose lock was poisoned still holds valid lines: read them anyway.
fn lock(ring: &SharedRing) -> MutexGuard<'_, crate::logs::Ring> {
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

/// One line of `/logs`, in the order its fields are documented.
#[derive(Serialize)]
struct LogLine<'a> {
    t: String,
    service: &'a str,
    stream: &'static str,
    line: &'a str,
}

/// The last `n` of `lines` (each tagged with its service), in time order, as NDJSON.
/// Sends the last `n` of `lines` (each tagged with its service), in time
/// order, as NDJSON in chunks of about [`LOGS_CHUNK`] bytes: an answer's
/// memory does not grow with its size (the body channel holds a few
/// chunks). False when the client has gone.
async fn send_ndjson(
    tx: &mpsc::Sender<Bytes>,
    services: &[(String, SharedRing)],
    mut lines: Vec<(usize, Line)>,
    n: usize,
) -> bool {
    // Stable: lines of one service read at the same moment keep their order.
    lines.sort_by_key(|(_, l)| l.at);
    let skip = lines.len().saturating_sub(n);
    let mut out = Vec::with_capacity(LOGS_CHUNK);
    for (k, l) in &lines[skip..] {
        let entry = LogLine {
            t: rfc3339(l.at),
            service: &services[*k].0,
            stream: match l.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            },
            line: &l.text,
        };
        if serde_json::to_writer(&mut out, &entry).is_ok() {
            out.push(b'\n');
        }
        if out.len() >= LOGS_CHUNK && tx.send(std::mem::take(&mut out).into()).await.is_err() {
            return false;
        }
    }
    out.is_empty() || tx.send(out.into()).await.is_ok()
}

/// The health document (docs/api.md): the design's `/api/health` shape.
#[derive(Serialize)]
struct HealthDocument {
    /// healthy | degraded | unhealthy
    status: &'static str,
    version: String,
    timestamp: String,
    /// In the stack file's order.
    services: indexmap::IndexMap<String, ServiceHealth>,
}

#[derive(Serialize)]
struct ServiceHealth {
    /// pass | fail
    status: &'static str,
    #[serde(rename = "latencyMs", skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The stack's health document, and the HTTP status it is served with.
fn health_document(st: &StackStatus, now: SystemTime) -> (StatusCode, HealthDocument) {
    let critical_failing = st.services.iter().any(|s| s.critical && !s.passes());
    let status = match st.phase {
        Phase::Ready => "healthy",
        Phase::Starting | Phase::Stopping => "unhealthy",
        _ if critical_failing => "unhealthy",
        _ => "degraded",
    };
    let code = if status == "healthy" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let doc = HealthDocument {
        status,
        version: st.version.clone(),
        timestamp: rfc3339(now),
        services: st
            .services
            .iter()
            .map(|s| (s.name.clone(), service_health(s)))
            .collect(),
    };
    (code, doc)
}

fn service_health(s: &ServiceStatus) -> ServiceHealth {
    let pass = s.passes();
    ServiceHealth {
        status: if pass { "pass" } else { "fail" },
        latency_ms: s
            .health
            .as_ref()
            .and_then(|h| h.latency_ms)
            .map(|ms| (ms * 100.0).round() / 100.0),
        error: (!pass).then(|| match &s.reason {
            Some(r) => format!("{}: {r}", s.state),
            None => s.state.to_string(),
        }),
    }
}

/// An action's outcome as the API answers it: the body, whose `code` is
/// the HTTP status (docs/api.md).
fn action_result(outcome: Outcome) -> ActionResult {
    let ms = |took: Duration| took.as_millis() as u64;
    let (ok, code, message, took_ms) = match outcome {
        Outcome::Done { message, took } => (true, 200, message, ms(took)),
        Outcome::Failed { message, took } => (false, 500, message, ms(took)),
        Outcome::Refused(why) => {
            let code = match why {
                Refusal::UnknownService { .. } => 404,
                Refusal::ShuttingDown | Refusal::NeededBy { .. } => 409,
            };
            (false, code, why.to_string(), 0)
        }
    };
    ActionResult {
        ok,
        code,
        message,
        took_ms,
    }
}

fn json(code: StatusCode, value: &impl Serialize) -> Reply {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut r = Response::new(Body::Full(Some(body.into())));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Answers describe this moment; a cached one would be a lie.
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(code: StatusCode, message: &str) -> Reply {
    json(code, &serde_json::json!({ "error": message }))
}

fn not_found(message: &str) -> Reply {
    error(StatusCode::NOT_FOUND, message)
}

fn unknown_service<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Reply {
    let known: Vec<&str> = known.collect();
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({
            "error": format!("there is no service named `{name}`; known services: {}", known.join(", ")),
            "known": known,
        }),
    )
}

fn method_not_allowed(allowed: Method) -> Reply {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this resource only answers {allowed}"),
    );
    r.headers_mut().insert(
        ALLOW,
        HeaderValue::from_str(allowed.as_str()).unwrap_or(HeaderValue::from_static("GET")),
    );
    r
}

/// The supervisor has finished: the stack is down and cogno is exiting.
fn gone() -> Reply {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "cogno is exiting: the stack has stopped",
    )
}

/// `1`, `true`, `yes` or an empty value (`?follow`) turn a flag on.
fn flag(query: &[(String, String)], name: &str) -> bool {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .is_some_and(|(_, v)| matches!(v.as_str(), "" | "1" | "true" | "yes"))
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let q = parse_query("service=a%2Db&service=c&follow&n=5&bad=%zz%4");
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("service", "a-b"),
                ("service", "c"),
                ("follow", ""),
                ("n", "5"),
                ("bad", "%zz%4")
            ]
        );
        assert!(flag(&q, "follow"));
        assert!(!flag(&q, "with_dependents"));
    }
}
