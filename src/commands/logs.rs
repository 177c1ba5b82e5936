//! `cogno logs`: recent output of the services, and `-f` to follow it.

use super::Outcome;
use crate::control::client::{get_status, percent_encode, request};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

pub fn logs(socket: &Path, services: &[String], follow: bool, lines: usize) -> Outcome {
    // The prefixes are padded to the longest name in the stack, as `cogno up` pads them.
    let width = get_status(socket)?
        .services
        .iter()
        .map(|s| s.name.len())
        .chain(["cogno".len()])
        .max()
        .unwrap_or(0);
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
            return Ok(0);
        }
    }
    let _ = out.flush();
    Ok(0)
}

#[derive(Deserialize)]
struct LogLine {
    service: String,
    stream: String,
    line: String,
}
