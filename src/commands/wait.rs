//! `cogno wait` and the wait of `cogno up --detach`: follow the stack's
//! events until the stack (or some of its services) is ready, or has
//! failed — then say why, with the failed services' last output lines.
//!
//! The wait reacts to `GET /events`: it subscribes first, then reads the
//! status once, and reads it again after each event, so that it returns as
//! soon as the event that made the stack ready arrives (no polling).

use super::logs::LogLine;
use super::Outcome;
use crate::control::client::{get_status, percent_encode, request};
use crate::control::{Phase, ServiceState, ServiceStatus, StackStatus};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::events::Event;
use std::io::{BufRead, BufReader};
use std::time::Duration;

/// Output lines shown of each failed service.
const LAST_LINES: usize = 15;
/// Lines of cogno's own log shown when it has exited.
const OWN_LINES: usize = 8;

pub fn run(data: &DataDir, services: &[String], timeout: Option<Duration>) -> Outcome {
    let waited_for = (data.clone(), services.to_vec());
    let message = with_timeout(timeout, data, services, move || {
        until_ready(&waited_for.0, &waited_for.1, |ev| {
            eprintln!("{}", ev.text())
        })
    })?;
    println!("{message}");
    Ok(0)
}

/// Runs `wait` on a thread of its own and gives its result, or, once
/// `timeout` has passed, the error of [`timed_out`] for `services` of the
/// stack in `data` (the blocking reads of the wait need no timeouts of
/// their own then).
pub(super) fn with_timeout(
    timeout: Option<Duration>,
    data: &DataDir,
    services: &[String],
    wait: impl FnOnce() -> Result<String, Error> + Send + 'static,
) -> Result<String, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait());
    });
    let outcome = match timeout {
        Some(t) => rx.recv_timeout(t).map_err(|_| {
            timed_out(data, services, t).help(
                "the stack goes on starting in the background: `cogno status` shows what each \
                 service is doing, `cogno logs SERVICE` its output, `cogno down` stops it",
            )
        }),
        None => rx
            .recv()
            .map_err(|_| Error::new("the wait ended without a result")),
    };
    outcome?
}

/// The error for a stack (or `services`) still not ready after `waited`:
/// what each service that is not ready is doing and why, and its last
/// output lines, read from the running cogno. The caller says what
/// becomes of the stack (its help).
pub(super) fn timed_out(data: &DataDir, services: &[String], waited: Duration) -> Error {
    let after = format!("not ready after {}", crate::fmt::fmt_duration(waited));
    let Ok(status) = get_status(&data.socket()) else {
        return Error::new(format!(
            "{after}: cogno is still preparing the stack (its control socket does not answer yet)"
        ));
    };
    let late: Vec<&ServiceStatus> = status
        .services
        .iter()
        .filter(|s| !s.passes() && (services.is_empty() || services.contains(&s.name)))
        .collect();
    // The supervisor's own account leaves out the services not selected.
    let why = if services.is_empty() {
        status.not_ready.join("; ")
    } else {
        late.iter()
            .map(|s| describe(s))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let names: Vec<String> = late.iter().map(|s| s.name.clone()).collect();
    failure(data, format!("{after}: {why}"), &names)
}

/// `NAME is STATE (REASON)`: one service that is not ready, and why.
fn describe(s: &ServiceStatus) -> String {
    match s.reason.as_deref().or(s.last_exit.as_deref()) {
        Some(r) => format!("{} is {} ({r})", s.name, s.state),
        None => format!("{} is {}", s.name, s.state),
    }
}

/// Where the stack (or `services`) is, as a wait sees it.
enum Verdict {
    Ready(String),
    /// What failed, and the services whose output says why.
    Failed(String, Vec<String>),
    Pending,
}

/// Blocks until `services` (the whole stack when empty) are ready: Ok with
/// one line saying so, or an error saying what failed and why, with the
/// failed services' last output lines. `on_event` sees each event of a
/// watched service as it comes, for a progress display.
pub(super) fn until_ready(
    data: &DataDir,
    services: &[String],
    mut on_event: impl FnMut(&Event),
) -> Result<String, Error> {
    let socket = data.socket();
    // Subscribed before the status is read: no event in between is missed.
    let reply = match request(&socket, "GET", "/events", None) {
        Ok(r) => r,
        // A detached cogno that served and has exited already (a critical
        // service failed at once): its files say why.
        Err(crate::control::client::Failure::NotRunning(..)) if crate::logfiles::has_own(data) => {
            return Err(gone(data, services))
        }
        Err(e) => return Err(e.into()),
    };
    if reply.status != 200 {
        return Err(reply.refusal());
    }
    let mut events = BufReader::new(reply.body);
    let mut line = Vec::new();
    loop {
        let status = match get_status(&socket) {
            Ok(s) => s,
            // Answered before and gone now: cogno has exited (a critical
            // service failed, or it was stopped).
            Err(_) => return Err(gone(data, services)),
        };
        match verdict(&status, services)? {
            Verdict::Ready(msg) => return Ok(msg),
            Verdict::Failed(why, failed) => return Err(failure(data, why, &failed)),
            Verdict::Pending => {}
        }
        line.clear();
        match events.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Err(gone(data, services)),
            Ok(_) => {}
        }
        if let Ok(ev) = serde_json::from_slice::<Event>(&line) {
            let watched = match &ev.service {
                Some(s) => services.is_empty() || services.contains(s),
                None => true,
            };
            if watched && ev.kind != "ready" {
                on_event(&ev);
            }
        }
    }
}

fn verdict(status: &StackStatus, services: &[String]) -> Result<Verdict, Error> {
    if services.is_empty() {
        let failed: Vec<String> = status
            .services
            .iter()
            .filter(|s| !s.passes())
            .map(|s| s.name.clone())
            .collect();
        return Ok(match status.phase {
            Phase::Ready => Verdict::Ready(format!(
                "the stack is ready: {}",
                crate::fmt::count(status.services.len(), "service")
            )),
            Phase::Starting => Verdict::Pending,
            Phase::Degraded | Phase::Stopping => Verdict::Failed(
                format!(
                    "the stack is {}: {}",
                    status.phase,
                    status.not_ready.join("; ")
                ),
                failed,
            ),
        });
    }
    let mut failed = Vec::new();
    let mut reasons = Vec::new();
    let mut pending = false;
    for name in services {
        let Some(s) = status.services.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
            return Err(
                Error::config(format!("no service `{name}` in the running stack"))
                    .help(format!("its services: {}", known.join(", "))),
            );
        };
        match s.state {
            ServiceState::Running | ServiceState::Completed => {}
            ServiceState::Failed
            | ServiceState::Fatal
            | ServiceState::Exited
            | ServiceState::Stopped => {
                reasons.push(describe(s));
                failed.push(name.clone());
            }
            _ => pending = true,
        }
    }
    Ok(if !failed.is_empty() {
        Verdict::Failed(reasons.join("; "), failed)
    } else if status.phase == Phase::Stopping {
        Verdict::Failed("the stack is stopping".into(), Vec::new())
    } else if pending {
        Verdict::Pending
    } else {
        Verdict::Ready(format!("ready: {}", services.join(", ")))
    })
}

/// cogno stopped answering while the wait went on: the end of its own log
/// (why it stopped) and the services' last lines, from the log files.
fn gone(data: &DataDir, services: &[String]) -> Error {
    let mut why = "cogno has exited before the stack was ready".to_owned();
    let own = crate::logfiles::own_tail(data, OWN_LINES);
    if !own.is_empty() {
        why.push_str(&format!(":\n  {}", own.join("\n  ")));
    }
    let named = if services.is_empty() {
        crate::logfiles::services(data)
    } else {
        services.to_vec()
    };
    failure(data, why, &named)
}

/// The error for a failed start: `why`, then the last lines of each of
/// `failed` — from the running cogno, else from the log files it wrote.
fn failure(data: &DataDir, why: String, failed: &[String]) -> Error {
    let mut message = why;
    for name in failed {
        let lines = last_lines(data, name);
        if lines.is_empty() {
            continue;
        }
        message.push_str(&format!("\nlast output of {name}:"));
        for l in lines {
            message.push_str(&format!("\n  {l}"));
        }
    }
    Error::new(message).help("`cogno logs SERVICE` shows more of its output")
}

fn last_lines(data: &DataDir, service: &str) -> Vec<String> {
    let path = format!("/logs?n={LAST_LINES}&service={}", percent_encode(service));
    let from_socket = request(&data.socket(), "GET", &path, Some(Duration::from_secs(5)))
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| {
            BufReader::new(r.body)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str::<LogLine>(&l).ok())
                .map(|l| l.line)
                .collect::<Vec<_>>()
        });
    match from_socket {
        Some(lines) if !lines.is_empty() => lines,
        _ => crate::logfiles::tail(data, service, LAST_LINES)
            .into_iter()
            .map(|l| l.text)
            .collect(),
    }
}
