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
    let verb = action;
    let mut results = Vec::new();
    // One after another, as asked, and not past the first failure: later
    // services may well depend on the one that failed.
    for service in services {
        let mut path = format!("/services/{}/{verb}", percent_encode(service));
        if with_dependents {
            path.push_str("?with_dependents=1");
        }
        let result: ActionResult = request(socket, "POST", &path, None)?.json()?;
        if json {
            results.push(serde_json::json!({
                "service": service,
                "action": verb.to_string(),
                "ok": result.ok,
                "code": result.code,
                "message": result.message,
                "took_ms": result.took_ms,
            }));
            if !result.ok {
                break;
            }
            continue;
        }
        let took = fmt_latency(Duration::from_millis(result.took_ms));
        if !result.ok {
            return Err(Error::new(if result.code == 500 {
                format!("{service}: {verb} failed after {took}: {}", result.message)
            } else {
                result.message
            }));
        }
        match (action, result.message.as_str()) {
            (_, m) if m.starts_with("already") => println!("{service}: {m}"),
            (Action::Stop, _) => println!("{service}: stopped in {took}"),
            (Action::Start, m) => println!("{service}: started, {m} after {took}"),
            (Action::Restart, m) => println!("{service}: restarted, {m} after {took}"),
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

pub fn run(action: Action, args: ActionArgs) -> Outcome {
    act(
        &socket_path(&args.target),
        action,
        &args.services,
        args.with_dependents,
        args.json,
    )
}
