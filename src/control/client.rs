//! The CLI side of the control API: its transport. The remote commands
//! (`cogno status`, `logs`, `start`…, in `commands/`) use it.
//!
//! A few requests per command over a Unix socket do not need an HTTP stack
//! or an event loop: requests are written by hand and answers parsed with
//! blocking std I/O (including chunked bodies, for `logs -f`), which keeps
//! `cogno healthcheck` and `cogno status` down to a process start and one
//! round trip.

use super::StackStatus;
use crate::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest wait for a status answer: the supervisor answers at once unless
/// it is wedged, and a health check must not hang.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

pub fn get_status(socket: &Path) -> Result<StackStatus, Failure> {
    let reply = request(socket, "GET", "/status", Some(STATUS_TIMEOUT))?;
    if reply.status != 200 {
        let message = reply.error_message();
        return Err(Failure::Other(message));
    }
    reply.json()
}

/// Why a command could not get an answer.
pub enum Failure {
    /// Nothing listens on the socket.
    NotRunning(String, std::io::Error),
    Other(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::NotRunning(path, e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no socket there".to_owned(),
                    std::io::ErrorKind::ConnectionRefused => {
                        "the socket does not answer".to_owned()
                    }
                    _ => e.to_string(),
                };
                // One line (a HEALTHCHECK shows one), saying where it looked:
                // the stack may well run, with another data directory.
                Error::new(format!(
                    "no cogno is running on {path} ({why}): start the stack with `cogno up`, \
                     or pass --data DIR (or set COGNO_DATA_DIR) if it runs with another data directory"
                ))
            }
            Failure::Other(message) => Error::new(message),
        }
    }
}

/// An answer: its status, and its body (decoded from chunks if need be).
pub struct Reply {
    pub status: u16,
    pub body: Body,
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

    pub fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, Failure> {
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

    /// The refusal a non-200 answer carries, as an error.
    pub fn refusal(self) -> Error {
        Error::new(self.error_message())
    }
}

/// Sends one request (no body) and reads the status line and headers.
pub fn request(
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
pub enum Body {
    Plain(std::io::Take<BufReader<UnixStream>>),
    Chunked {
        inner: BufReader<UnixStream>,
        /// Bytes left in the current chunk.
        left: u64,
        done: bool,
    },
}

impl Body {
    /// The connection: a follower of `/events` bounds its reads with it
    /// and learns which process answers (`Watched::peer_of`).
    pub fn stream(&self) -> &UnixStream {
        match self {
            Body::Plain(r) => r.get_ref().get_ref(),
            Body::Chunked { inner, .. } => inner.get_ref(),
        }
    }
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
pub fn percent_encode(s: &str) -> String {
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
