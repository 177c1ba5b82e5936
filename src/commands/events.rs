//! `cogno events`: the stack's events as they happen — state transitions,
//! health changes, restarts, operator actions — until the stack stops.

use super::logs::stream_lines;
use super::Outcome;
use crate::control::client::request;
use crate::events::Event;
use std::path::Path;

pub fn events(socket: &Path, json: bool) -> Outcome {
    let reply = request(socket, "GET", "/events", None)?;
    if reply.status != 200 {
        return Err(reply.refusal());
    }
    stream_lines(reply.body, |line, out| {
        match serde_json::from_slice::<Event>(line) {
            Ok(ev) if !json => writeln!(out, "{} {}", ev.t, ev.text()),
            _ => out.write_all(line),
        }
    })
}
