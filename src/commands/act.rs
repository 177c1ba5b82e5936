//! `cogno start|stop|restart SERVICE…`: an operator's actions, each
//! answered once the service is healthy, stopped, or has failed.

use super::{socket_path, ActionArgs, Outcome};
use crate::control::client::{percent_encode, request};
use crate::control::{Action, ActionResult};
use crate::error::Error;
use crate::fmt::fmt_latency;
use std::path::Path;
use std::time::Duration;

/// Acts on each of `services` in turn. With `json`, prints one document
/// once done (or stopped by a failure): `{"ok": …, "results": [{"service",
/// "action", "ok", "code", "message", "took_ms"}…]}` (docs/cli.md).
pub fn act(
    socket: &Path,
    action: Action,
    services: &[String],
    with_dependents: bool,
    json: bool,
) -> Outcome {
    let mut results = Vec::new();
    // One after another, as asked, and not past the first failure: later
    // services may well depend on the one that failed.
    for service in services {
        if !json {
            println!("{}", act_one(socket, action, service, with_dependents)?);
            continue;
        }
        let result = post(socket, action, service, with_dependents)?;
        results.push(serde_json::json!({
            "service": service,
            "action": action.to_string(),
            "ok": result.ok,
            "code": result.code,
            "message": result.message,
            "took_ms": result.took_ms,
        }));
        if !result.ok {
            break;
        }
    }
    if json {
        let ok = results.iter().all(|r| r["ok"] == true);
        println!("{}", serde_json::json!({ "ok": ok, "results": results }));
        // The document says what failed; the status says that something did.
        return Ok(if ok { 0 } else { 1 });
    }
    Ok(0)
}

/// Carries out `action` on one service and says how it went in one line
/// (`web: restarted, healthy after 1.2s`), or why it failed or was refused,
/// in the words `cogno start|stop|restart` prints (`cogno mcp` reuses them).
pub(super) fn act_one(
    socket: &Path,
    action: Action,
    service: &str,
    with_dependents: bool,
) -> Result<String, Error> {
    let verb = action;
    let result = post(socket, action, service, with_dependents)?;
    let took = fmt_latency(Duration::from_millis(result.took_ms));
    if !result.ok {
        return Err(Error::new(if result.code == 500 {
            format!("{service}: {verb} failed after {took}: {}", result.message)
        } else {
            result.message
        }));
    }
    Ok(match (action, result.message.as_str()) {
        (_, m) if m.starts_with("already") => format!("{service}: {m}"),
        (Action::Stop, _) => format!("{service}: stopped in {took}"),
        (Action::Start, m) => format!("{service}: started, {m} after {took}"),
        (Action::Restart, m) => format!("{service}: restarted, {m} after {took}"),
    })
}

/// Asks the running stack to carry out `action` on one service.
fn post(
    socket: &Path,
    action: Action,
    service: &str,
    with_dependents: bool,
) -> Result<ActionResult, Error> {
    let mut path = format!("/services/{}/{action}", percent_encode(service));
    if with_dependents {
        path.push_str("?with_dependents=1");
    }
    Ok(request(socket, "POST", &path, None)?.json()?)
}

pub fn run(action: Action, args: ActionArgs) -> Outcome {
    act(
        &socket_path(&args.target),
        action,
        &args.services,
        args.with_dependents,
        args.json,
    )
}
