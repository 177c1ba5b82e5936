//! The CLI side of the control API: `cogno status`, `logs`, `start`, `stop`,
//! `restart`, `healthcheck` and `shutdown`.
//!
//! A few requests per command over a Unix socket do not need an HTTP stack
//! or an event loop: requests are written by hand and answers parsed with
//! blocking std I/O (including chunked bodies, for `logs -f`), which keeps
//! `cogno healthcheck` and `cogno status` down to a process start and one
//! round trip.

use super::{Action, ActionResult, StackStatus};
use crate::supervisor::fmt_latency;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest wait for a status answer: the supervisor answers at once unless
/// it is wedged, and a health check must not hang.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

pub fn status(socket: &Path, json: bool) -> i32 {
    let st = match get_status(socket) {
        Ok(st) => st,
        Err(e) => return e.report(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
    } else {
        print!("{}", render_status(&st));
    }
    i32::from(st.phase != "ready")
}

pub fn logs(socket: &Path, services: &[String], follow: bool, lines: usize) -> i32 {
    // The prefixes are padded to the longest name in the stack, as `cogno up` pads them.
    let width = match get_status(socket) {
        Ok(st) => st
            .services
            .iter()
            .map(|s| s.name.len())
            .chain(["cogno".len()])
            .max()
            .unwrap_or(0),
        Err(e) => return e.report(),
    };
    let mut path = format!("/logs?n={lines}");
    for s in services {
        path.push_str("&service=");
        path.push_str(&percent_encode(s));
    }
    if follow {
        path.push_str("&follow=1");
    }
    let reply = match request(socket, "GET", &path, None) {
        Ok(r) => r,
        Err(e) => return e.report(),
    };
    if reply.status != 200 {
        return reply.refusal();
    }
    let mut body = BufReader::new(reply.body);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        match body.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            // The stack stopped while following: its output has ended too.
            Err(_) => break,
        }
        let written = match serde_json::from_slice::<LogLine>(&line) {
            Ok(l) => {
                let mark = if l.stream == "stderr" { '!' } else { '|' };
                writeln!(out, "{:<width$} {mark} {}", l.service, l.line)
            }
            Err(_) => out.write_all(&line),
        };
        // Flushed whenever the next read may wait, so `-f` shows lines as they come.
        let flushed = if body.buffer().is_empty() {
            out.flush()
        } else {
            Ok(())
        };
        if written.and(flushed).is_err() {
            // The reader went away (`cogno logs | head`): nothing left to do.
            return 0;
        }
    }
    let _ = out.flush();
    0
}

#[derive(Deserialize)]
struct LogLine {
    service: String,
    stream: String,
    line: String,
}

pub fn act(socket: &Path, action: Action, services: &[String], with_dependents: bool) -> i32 {
    let verb = match action {
        Action::Start => "start",
        Action::Stop => "stop",
        Action::Restart => "restart",
    };
    // One after another, as asked, and not past the first failure: later
    // services may well depend on the one that failed.
    for service in services {
        let mut path = format!("/services/{}/{verb}", percent_encode(service));
        if with_dependents {
            path.push_str("?with_dependents=1");
        }
        let reply = match request(socket, "POST", &path, None) {
            Ok(r) => r,
            Err(e) => return e.report(),
        };
        let result: ActionResult = match reply.json() {
            Ok(r) => r,
            Err(e) => return e.report(),
        };
        let took = fmt_latency(Duration::from_millis(result.took_ms));
        if !result.ok {
            if result.code == 500 {
                eprintln!(
                    "error: {service}: {verb} failed after {took}: {}",
                    result.message
                );
            } else {
                eprintln!("error: {}", result.message);
            }
            return 1;
        }
        match (action, result.message.as_str()) {
            (_, m) if m.starts_with("already") => println!("{service}: {m}"),
            (Action::Stop, _) => println!("{service}: stopped in {took}"),
            (Action::Start, m) => println!("{service}: started, {m} after {took}"),
            (Action::Restart, m) => println!("{service}: restarted, {m} after {took}"),
        }
    }
    0
}

pub fn healthcheck(socket: &Path) -> i32 {
    let st = match get_status(socket) {
        Ok(st) => st,
        Err(e) => return e.report(),
    };
    if st.phase == "ready" {
        println!("ready: {} services healthy", st.services.len());
        return 0;
    }
    if st.not_ready.is_empty() {
        println!("not ready: {}", st.phase);
    } else {
        println!("not ready: {} ({})", st.phase, st.not_ready.join("; "));
    }
    1
}

pub fn shutdown(socket: &Path) -> i32 {
    let reply = match request(socket, "POST", "/shutdown", None) {
        Ok(r) => r,
        Err(e) => return e.report(),
    };
    match reply.json::<ActionResult>() {
        Ok(r) if r.ok => {
            println!("{}", r.message);
            0
        }
        Ok(r) => {
            eprintln!("error: {}", r.message);
            1
        }
        Err(e) => e.report(),
    }
}

fn get_status(socket: &Path) -> Result<StackStatus, Failure> {
    let reply = request(socket, "GET", "/status", Some(STATUS_TIMEOUT))?;
    if reply.status != 200 {
        let message = reply.error_message();
        return Err(Failure::Other(message));
    }
    reply.json()
}

/// The phase on top (with what is missing), then one row per service.
fn render_status(st: &StackStatus) -> String {
    let mut out = format!(
        "{}: {} services, up {} (cogno {}, pid {})\n",
        st.phase,
        st.services.len(),
        human(st.uptime_ms),
        st.version,
        st.pid
    );
    for why in &st.not_ready {
        out.push_str(&format!("  - {why}\n"));
    }
    out.push('\n');
    let mut rows = vec![[
        "SERVICE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "LAST EXIT",
    ]
    .map(String::from)];
    for s in &st.services {
        let health = match &s.health {
            None => "-".to_owned(),
            Some(h) => match h.latency_ms {
                Some(ms) => format!("{} {}", h.status, latency(ms)),
                None => h.status.clone(),
            },
        };
        rows.push([
            s.name.clone(),
            s.state.clone(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.uptime_ms.map_or("-".into(), human),
            s.restarts.to_string(),
            health,
            s.last_exit.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (k, (cell, w)) in row.iter().zip(widths).enumerate() {
            if k == row.len() - 1 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `850ms`, `42s`, `5m12s`, `3h07m`, `2d4h`: uptimes at a glance.
fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn latency(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Why a command could not get an answer.
enum Failure {
    /// Nothing listens on the socket.
    NotRunning(String, std::io::Error),
    Other(String),
}

impl Failure {
    /// Prints the one-line error and gives the exit status.
    fn report(self) -> i32 {
        match self {
            Failure::NotRunning(path, e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no socket there".to_owned(),
                    std::io::ErrorKind::ConnectionRefused => {
                        "the socket does not answer".to_owned()
                    }
                    _ => e.to_string(),
                };
                eprintln!(
                    "error: no cogno is running on {path} ({why}): start the stack with `cogno up`"
                );
            }
            Failure::Other(message) => eprintln!("error: {message}"),
        }
        1
    }
}

/// An answer: its status, and its body (decoded from chunks if need be).
struct Reply {
    status: u16,
    body: Body,
}

impl Reply {
    fn text(self) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        let mut reader = self.body;
        reader
            .read_to_end(&mut body)
            .map_err(|e| Failure::Other(format!("reading cogno's answer: {e}")))?;
        Ok(body)
    }

    fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, Failure> {
        let status = self.status;
        let body = self.text()?;
        serde_json::from_slice(&body).map_err(|_| {
            let body = String::from_utf8_lossy(&body);
            let error = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
            Failure::Other(
                error.unwrap_or_else(|| {
                    format!("unexpected answer (HTTP {status}): {}", body.trim())
                }),
            )
        })
    }

    /// The `error` of a JSON error answer.
    fn error_message(self) -> String {
        let status = self.status;
        match self.json::<serde_json::Value>() {
            Ok(v) => match v.get("error").and_then(|e| e.as_str()) {
                Some(e) => e.to_owned(),
                None => format!("unexpected answer (HTTP {status}): {v}"),
            },
            Err(Failure::Other(m)) => m,
            Err(Failure::NotRunning(..)) => format!("HTTP {status}"),
        }
    }

    fn refusal(self) -> i32 {
        eprintln!("error: {}", self.error_message());
        1
    }
}

/// Sends one request (no body) and reads the status line and headers.
fn request(
    socket: &Path,
    method: &str,
    path: &str,
    timeout: Option<Duration>,
) -> Result<Reply, Failure> {
    let shown = socket.display().to_string();
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => Failure::NotRunning(shown.clone(), e),
        std::io::ErrorKind::PermissionDenied => Failure::Other(format!(
            "cannot use the control socket {shown}: permission denied (only the user cogno runs as may use it)"
        )),
        _ => Failure::Other(format!("cannot connect to the control socket {shown}: {e}")),
    })?;
    let io = |e: std::io::Error| Failure::Other(format!("talking to cogno on {shown}: {e}"));
    stream.set_read_timeout(timeout).map_err(io)?;
    let length = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: cogno\r\nConnection: close\r\n{length}\r\n")
                .as_bytes(),
        )
        .map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(io)? == 0 {
        return Err(Failure::Other(format!(
            "cogno closed {shown} without answering: it is stopping"
        )));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Failure::Other(format!("{shown} did not answer HTTP: {:?}", line.trim())))?;
    let (mut chunked, mut content_length) = (false, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse::<u64>().ok();
            }
        }
    }
    let body = if chunked {
        Body::Chunked {
            inner: reader,
            left: 0,
            done: false,
        }
    } else if let Some(n) = content_length {
        Body::Plain(reader.take(n))
    } else {
        Body::Plain(reader.take(u64::MAX))
    };
    Ok(Reply { status, body })
}

/// A response body as a reader.
enum Body {
    Plain(std::io::Take<BufReader<UnixStream>>),
    Chunked {
        inner: BufReader<UnixStream>,
        /// Bytes left in the current chunk.
        left: u64,
        done: bool,
    },
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (inner, left, done) = match self {
            Body::Plain(r) => return r.read(buf),
            Body::Chunked { inner, left, done } => (inner, left, done),
        };
        if *done || buf.is_empty() {
            return Ok(0);
        }
        if *left == 0 {
            // The size line, after the CRLF that ends the previous chunk.
            let mut line = String::new();
            while line.trim().is_empty() {
                line.clear();
                if inner.read_line(&mut line)? == 0 {
                    *done = true;
                    return Ok(0);
                }
            }
            let size = line.trim().split(';').next().unwrap_or("");
            *left = u64::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {size:?}"),
                )
            })?;
            if *left == 0 {
                *done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
        let n = inner.read(&mut buf[..want])?;
        if n == 0 {
            *done = true;
        }
        *left -= n as u64;
        Ok(n)
    }
}

/// Service names only hold `[A-Za-z0-9_-]`, but whatever is typed must
/// still reach the server as one path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human(850), "850ms");
        assert_eq!(human(42_000), "42s");
        assert_eq!(human(312_000), "5m12s");
        assert_eq!(human(3 * 3_600_000 + 7 * 60_000), "3h07m");
        assert_eq!(human(2 * 86_400_000 + 4 * 3_600_000), "2d4h");
        assert_eq!(latency(0.42), "0.4ms");
        assert_eq!(latency(31.6), "32ms");
        assert_eq!(latency(1420.0), "1.42s");
    }
}
