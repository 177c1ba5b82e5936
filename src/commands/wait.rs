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
use crate::os::process::Watched;
use std::io::{BufRead, BufReader, ErrorKind};
use std::time::{Duration, Instant};

/// Output lines shown of each failed service.
const LAST_LINES: usize = 15;
/// Lines of cogno's own log shown when it has exited.
const OWN_LINES: usize = 8;
/// How long a cogno that stopped answering is given to exit before its
/// files are read: its services' stop timeouts are its own business.
const EXIT_WAIT: Duration = Duration::from_secs(10);

pub fn run(data: &DataDir, services: &[String], timeout: Option<Duration>) -> Outcome {
    let message = until_ready(data, services, timeout, |ev| eprintln!("{}", ev.text()))?;
    println!("{message}");
    Ok(0)
}

/// Runs `wait` on a thread of its own and gives its result, or an error
/// once `timeout` has passed: for a wait that blocks where no deadline
/// reaches (`up --detach` reading its child's pipe). The thread is left
/// behind on timeout; the command exits right after.
pub(super) fn with_timeout(
    timeout: Option<Duration>,
    wait: impl FnOnce() -> Result<String, Error> + Send + 'static,
) -> Result<String, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait());
    });
    match timeout {
        Some(t) => rx
            .recv_timeout(t)
            .map_err(|_| gave_up(t, None))
            .and_then(|r| r),
        None => rx
            .recv()
            .map_err(|_| Error::new("the wait ended without a result"))?,
    }
}

/// The error of a wait that reached its deadline, with what was still
/// missing when known.
fn gave_up(after: Duration, missing: Option<&str>) -> Error {
    let missing = missing.map(|m| format!(": {m}")).unwrap_or_default();
    Error::new(format!(
        "not ready after {}{missing}; gave up waiting (the stack goes on starting in the background)",
        crate::fmt::fmt_duration(after)
    ))
    .help("`cogno status` shows what each service is doing, `cogno logs` their output")
}

/// What is missing of `services` (the whole stack when empty): the
/// supervisor's own account of each service not ready (`web is starting
/// (…)`), which leaves out the services not selected.
fn missing<'s>(status: &'s StackStatus, services: &[String]) -> Vec<&'s str> {
    status
        .not_ready
        .iter()
        .map(String::as_str)
        .filter(|l| {
            services.is_empty() || services.iter().any(|s| l.starts_with(&format!("{s} is ")))
        })
        .collect()
}

/// The error for a stack still not ready after `waited` that is given up
/// on for good (`cogno run --ephemeral` stops it next): what is missing,
/// and each missing service's last output lines, read now from its running
/// cogno. The caller gives its help.
pub(super) fn not_ready(data: &DataDir, waited: Duration) -> Error {
    let after = format!("not ready after {}", crate::fmt::fmt_duration(waited));
    let Ok(status) = get_status(&data.socket()) else {
        return Error::new(format!("{after}: its cogno does not answer"));
    };
    let missing = missing(&status, &[]);
    let names: Vec<String> = status
        .services
        .iter()
        .filter(|s| {
            missing
                .iter()
                .any(|l| l.starts_with(&format!("{} is ", s.name)))
        })
        .map(|s| s.name.clone())
        .collect();
    failure(data, format!("{after}: {}", missing.join("; ")), &names)
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
/// failed services' last output lines, or, after `timeout`, one saying
/// what is still not ready. `on_event` sees each event of a watched
/// service as it comes, for a progress display.
pub(super) fn until_ready(
    data: &DataDir,
    services: &[String],
    timeout: Option<Duration>,
    mut on_event: impl FnMut(&Event),
) -> Result<String, Error> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let socket = data.socket();
    // Subscribed before the status is read: no event in between is missed.
    let reply = match request(&socket, "GET", "/events", None) {
        Ok(r) => r,
        // A detached cogno that served and has exited already (a critical
        // service failed at once): its files say why.
        Err(crate::control::client::Failure::NotRunning(..)) if crate::logfiles::has_own(data) => {
            return Err(gone(data, services, None))
        }
        Err(e) => return Err(e.into()),
    };
    if reply.status != 200 {
        return Err(reply.refusal());
    }
    let mut events = BufReader::new(reply.body);
    // The cogno that answers: when it stops answering, its last words are
    // in its files only once it has exited.
    let cogno = Watched::peer_of(events.get_ref().stream()).ok();
    let mut line = Vec::new();
    loop {
        let status = match get_status(&socket) {
            Ok(s) => s,
            // Answered before and gone now: cogno has exited (a critical
            // service failed, or it was stopped).
            Err(_) => return Err(gone(data, services, cogno.as_ref())),
        };
        match verdict(&status, services)? {
            Verdict::Ready(msg) => return Ok(msg),
            Verdict::Failed(why, failed) => return Err(failure(data, why, &failed)),
            Verdict::Pending => {}
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let timed_out = || {
            let missing = missing(&status, services).join("; ");
            gave_up(
                timeout.unwrap_or_default(),
                Some(missing.as_str()).filter(|m| !m.is_empty()),
            )
        };
        if left == Some(Duration::ZERO) {
            return Err(timed_out());
        }
        // A zero timeout would mean "none": `left` is not zero here.
        events
            .get_ref()
            .stream()
            .set_read_timeout(left)
            .map_err(|e| Error::new(format!("cannot follow cogno's events: {e}")))?;
        line.clear();
        match events.read_until(b'\n', &mut line) {
            Ok(0) => return Err(gone(data, services, cogno.as_ref())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out())
            }
            Err(_) => return Err(gone(data, services, cogno.as_ref())),
            Ok(_) => {}
        }
        if let Ok(ev) = serde_json::from_slice::<Event>(&line) {
            let watched = match &ev.service {
                Some(s) => services.is_empty() || services.contains(s),
                None => true,
            };
            // The stack's own `ready` and `phase` events: the verdict says them.
            if watched && !matches!(ev.kind.as_str(), "ready" | "phase") {
                on_event(&ev);
            }
        }
    }
}

fn verdict(status: &StackStatus, services: &[String]) -> Result<Verdict, Error> {
    if status.phase == Phase::Ready && services.is_empty() {
        return Ok(Verdict::Ready(format!(
            "the stack is ready: {}",
            crate::fmt::count(status.services.len(), "service")
        )));
    }
    let watched: Vec<&ServiceStatus> = if services.is_empty() {
        status.services.iter().collect()
    } else {
        let mut watched = Vec::new();
        for name in services {
            let Some(s) = status.services.iter().find(|s| &s.name == name) else {
                let known: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
                return Err(
                    Error::config(format!("no service `{name}` in the running stack"))
                        .help(format!("its services: {}", known.join(", "))),
                );
            };
            watched.push(s);
        }
        watched
    };
    // Only what cannot come back by itself fails the wait: a service that
    // is starting, in backoff or unhealthy (liveness may restart it) can
    // still make the stack ready — a degraded stack after a crash too.
    let mut failed = Vec::new();
    let mut reasons = Vec::new();
    for s in &watched {
        if matches!(
            s.state,
            ServiceState::Failed
                | ServiceState::Fatal
                | ServiceState::Exited
                | ServiceState::Stopped
        ) {
            let why = s.reason.as_deref().or(s.last_exit.as_deref());
            reasons.push(match why {
                Some(r) => format!("{} is {} ({r})", s.name, s.state),
                None => format!("{} is {}", s.name, s.state),
            });
            failed.push(s.name.clone());
        }
    }
    Ok(if !failed.is_empty() {
        Verdict::Failed(reasons.join("; "), failed)
    } else if status.phase == Phase::Stopping {
        // A critical service's exit stops the stack before its own state
        // may have settled: the output of what was not up says why.
        let down = watched.iter().filter(|s| !s.passes());
        Verdict::Failed(
            "the stack is stopping".into(),
            down.map(|s| s.name.clone()).collect(),
        )
    } else if services.is_empty() || watched.iter().any(|s| !s.passes()) {
        Verdict::Pending
    } else {
        Verdict::Ready(format!("ready: {}", services.join(", ")))
    })
}

/// cogno stopped answering while the wait went on: the end of its own log
/// (why it stopped) and the services' last lines, from the log files.
/// `cogno`, the process that answered, is waited for (a while) first: a
/// stack stopped by a critical service closes its socket before its cogno
/// has stopped the rest and written the last lines of every file.
fn gone(data: &DataDir, services: &[String], cogno: Option<&Watched>) -> Error {
    if let Some(c) = cogno {
        let _ = c.wait_for(Some(EXIT_WAIT));
    }
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
