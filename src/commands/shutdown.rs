//! `cogno shutdown`: stop the whole stack in order, like SIGTERM.

use crate::control::client::request;
use crate::control::ActionResult;
use std::path::Path;

pub fn shutdown(socket: &Path) -> i32 {
    let reply = match request(socket, "POST", "/shutdown", None) {
        Ok(r) => r,
        Err(e) => return e.report(),
    };
    match reply.json::<ActionResult>() {
        Ok(r) if r.ok => {
            println!("{}", r.message);
            0
        }
        Ok(r) => {
            eprintln!("error: {}", r.message);
            1
        }
        Err(e) => e.report(),
    }
}
