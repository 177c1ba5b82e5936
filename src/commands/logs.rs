//! `cogno logs`: recent output of the services (and cogno's own `cogno`
//! stream of events), filtered by time or text, and `-f` to follow it.

use super::{colored, Outcome};
use crate::control::client::{get_status, percent_encode, request, Body};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::logfiles;
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
    data: &DataDir,
    services: &[String],
    follow: bool,
    lines: usize,
    filter: &Filter,
) -> Outcome {
    let socket = data.socket();
    let running = get_status(&socket);
    // The prefixes are padded to the longest name in the stack, as `cogno up`
    // pads them, and coloured the same way (each service its stack-file index).
    let names: Vec<String> = match &running {
        Ok(status) => status.services.iter().map(|s| s.name.clone()).collect(),
        Err(_) => logfiles::services(data),
    };
    let wanted: Vec<&String> = if services.is_empty() {
        names.iter().collect()
    } else {
        services.iter().collect()
    };
    // The log files (a detached cogno's, or `logs: {files: true}`) hold more
    // than the ring and outlast cogno: the history comes from them when
    // every service asked for has one.
    let from_files = !wanted.is_empty() && wanted.iter().all(|s| logfiles::has(data, s));
    let running = match running {
        Ok(_) => true,
        Err(_) if from_files => false,
        Err(e) => return Err(e.into()),
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let style = Style::new(&refs, !filter.json && colored(&std::io::stdout()));
    let history = if from_files {
        file_history(data, &wanted, lines)
    } else {
        Vec::new()
    };
    let live: Box<dyn Read> = if running && (follow || !from_files) {
        let n = if from_files { 0 } else { lines };
        Box::new(fetch(&socket, services, n, follow)?)
    } else {
        Box::new(std::io::empty())
    };
    stream_lines(std::io::Cursor::new(history).chain(live), |line, out| {
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

/// The last `n` lines of `services` from their log files, in time order,
/// as NDJSON lines like those of `GET /logs`.
fn file_history(data: &DataDir, services: &[&String], n: usize) -> Vec<u8> {
    let mut all: Vec<LogLine> = Vec::new();
    for s in services {
        all.extend(logfiles::tail(data, s, n).into_iter().map(|l| LogLine {
            t: crate::fmt::rfc3339(l.at),
            service: (*s).clone(),
            stream: match l.stream {
                Stream::Stdout => "stdout".into(),
                Stream::Stderr => "stderr".into(),
            },
            line: l.text,
        }));
    }
    // Stable: lines of one service read at the same moment keep their order.
    all.sort_by(|a, b| a.t.cmp(&b.t));
    let mut out = Vec::new();
    for l in &all[all.len().saturating_sub(n)..] {
        if let Ok(json) = serde_json::to_vec(l) {
            out.extend_from_slice(&json);
            out.push(b'\n');
        }
    }
    out
}

/// One line of `GET /logs`.
#[derive(Deserialize, serde::Serialize)]
pub(super) struct LogLine {
    pub t: String,
    pub service: String,
    pub stream: String,
    pub line: String,
}
