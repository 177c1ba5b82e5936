//! `cogno logs`: recent output of the services (and cogno's own `cogno`
//! stream of events), filtered by time or text, and `-f` to follow it.

use super::{colored, Outcome};
use crate::control::client::{get_status, percent_encode, request, Body};
use crate::error::Error;
use crate::logs::{Stream, Style};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::SystemTime;

/// What `cogno logs` shows of the lines it gets.
pub struct Filter {
    /// Only lines at or after this instant (RFC 3339 as the API sends it).
    pub since: Option<String>,
    /// Only lines containing this text (a plain substring, not a regex).
    pub grep: Option<String>,
    pub timestamps: bool,
    pub json: bool,
}

/// `--since`: a duration back from now (`5m`) or an RFC 3339 instant.
pub fn parse_since(s: &str) -> Result<String, String> {
    if let Some(t) = crate::fmt::parse_rfc3339(s) {
        return Ok(crate::fmt::rfc3339(t));
    }
    let d = crate::config::parse_duration(s).map_err(|_| {
        format!("`{s}` is neither a duration (`30s`, `5m`, `2h`) nor an RFC 3339 time (`2026-01-31T12:00:00Z`)")
    })?;
    Ok(crate::fmt::rfc3339(
        SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    ))
}

pub fn logs(
    socket: &Path,
    services: &[String],
    follow: bool,
    lines: usize,
    filter: &Filter,
) -> Outcome {
    // The prefixes are padded to the longest name in the stack, as `cogno up`
    // pads them, and coloured the same way (each service its stack-file index).
    let names: Vec<String> = get_status(socket)?
        .services
        .into_iter()
        .map(|s| s.name)
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let style = Style::new(&refs, !filter.json && colored(&std::io::stdout()));
    let body = fetch(socket, services, lines, follow)?;
    stream_lines(body, |line, out| {
        let Ok(l) = serde_json::from_slice::<LogLine>(line) else {
            return out.write_all(line);
        };
        if !filter.shows(&l) {
            return Ok(());
        }
        if filter.json {
            return out.write_all(line);
        }
        if filter.timestamps {
            write!(out, "{} ", l.t)?;
        }
        let stream = if l.stream == "stderr" {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let idx = names.iter().position(|n| *n == l.service);
        out.write_all(&style.prefix(&l.service, idx.unwrap_or(usize::MAX), stream))?;
        writeln!(out, "{}", l.line)
    })
}

impl Filter {
    /// Whether `--since` and `--grep` let this line through.
    pub(super) fn shows(&self, l: &LogLine) -> bool {
        self.since.as_ref().is_none_or(|t| l.t >= *t)
            && self.grep.as_ref().is_none_or(|g| l.line.contains(g))
    }
}

/// `GET /logs`: the last `lines` lines of `services` (all when empty, the
/// `cogno` stream of events included), then new ones if `follow`; NDJSON,
/// one [`LogLine`] a line.
pub(super) fn fetch(
    socket: &Path,
    services: &[String],
    lines: usize,
    follow: bool,
) -> Result<Body, Error> {
    let mut path = format!("/logs?n={lines}");
    for s in services {
        path.push_str("&service=");
        path.push_str(&percent_encode(s));
    }
    if follow {
        path.push_str("&follow=1");
    }
    let reply = request(socket, "GET", &path, None)?;
    if reply.status != 200 {
        return Err(reply.refusal());
    }
    Ok(reply.body)
}

/// Copies an NDJSON answer to stdout, one line at a time through `each`,
/// until it ends (or the stack stops, while following).
pub(super) fn stream_lines(
    body: impl Read,
    mut each: impl FnMut(&[u8], &mut dyn Write) -> std::io::Result<()>,
) -> Outcome {
    let mut body = BufReader::new(body);
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
        let written = each(&line, &mut out);
        // Flushed whenever the next read may wait, so `-f` shows lines as they come.
        let flushed = if body.buffer().is_empty() {
            out.flush()
        } else {
            Ok(())
        };
        if written.and(flushed).is_err() {
            // The reader went away (`cogno logs | head`): nothing left to do.
            return Ok(0);
        }
    }
    let _ = out.flush();
    Ok(0)
}

/// One line of `GET /logs`.
#[derive(Deserialize)]
pub(super) struct LogLine {
    pub t: String,
    pub service: String,
    pub stream: String,
    pub line: String,
}
