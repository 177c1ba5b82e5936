//! `cogno start|stop|restart SERVICE…`: an operator's actions, each
//! answered once the service is healthy, stopped, or has failed.

use super::{socket_path, ActionArgs};
use crate::control::client::{percent_encode, request};
use crate::control::{Action, ActionResult};
use crate::fmt::fmt_latency;
use std::path::Path;
use std::time::Duration;

pub fn act(socket: &Path, action: Action, services: &[String], with_dependents: bool) -> i32 {
    let verb = action;
    // One after another, as asked, and not past the first failure: later
    // services may well depend on the one that failed.
    for service in services {
        let mut path = format!("/services/{}/{verb}", percent_encode(service));
        if with_dependents {
            path.push_str("?with_dependents=1");
        }
        let reply = match request(socket, "POST", &path, None) {
            Ok(r) => r,
            Err(e) => return e.report(),
        };
        let result: ActionResult = match reply.json() {
            Ok(r) => r,
            Err(e) => return e.report(),
        };
        let took = fmt_latency(Duration::from_millis(result.took_ms));
        if !result.ok {
            if result.code == 500 {
                eprintln!(
                    "error: {service}: {verb} failed after {took}: {}",
                    result.message
                );
            } else {
                eprintln!("error: {}", result.message);
            }
            return 1;
        }
        match (action, result.message.as_str()) {
            (_, m) if m.starts_with("already") => println!("{service}: {m}"),
            (Action::Stop, _) => println!("{service}: stopped in {took}"),
            (Action::Start, m) => println!("{service}: started, {m} after {took}"),
            (Action::Restart, m) => println!("{service}: restarted, {m} after {took}"),
        }
    }
    0
}

pub fn run(action: Action, args: ActionArgs) -> i32 {
    act(
        &socket_path(&args.target),
        action,
        &args.services,
        args.with_dependents,
    )
}
