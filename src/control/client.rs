//! The CLI side of the control API: `cogno status`, `logs`, `start`, `stop`,
//! `restart`, `healthcheck` and `shutdown`.

use super::Action;
use std::path::Path;

pub fn status(socket: &Path, json: bool) -> i32 {
    let _ = (socket, json);
    1
}

pub fn logs(socket: &Path, services: &[String], follow: bool, lines: usize) -> i32 {
    let _ = (socket, services, follow, lines);
    1
}

pub fn act(socket: &Path, action: Action, services: &[String], with_dependents: bool) -> i32 {
    let _ = (socket, action, services, with_dependents);
    1
}

pub fn healthcheck(socket: &Path) -> i32 {
    let _ = socket;
    1
}

pub fn shutdown(socket: &Path) -> i32 {
    let _ = socket;
    1
}
