//! `cogno reload`: the running cogno reads its stack file again and applies
//! it (what SIGHUP does), answering with what it did to each service — or
//! with the file's errors, the running stack untouched.

use super::Outcome;
use crate::control::client::request;
use crate::control::ActionResult;
use crate::error::EXIT_CONFIG;
use std::path::Path;

pub fn reload(socket: &Path) -> Outcome {
    let r: ActionResult = request(socket, "POST", "/reload", None)?.json()?;
    if r.ok {
        print!("{}", r.message);
        return Ok(0);
    }
    // Already rendered by the running cogno, as `cogno check` renders them.
    eprint!("{}", r.message);
    eprintln!("the running stack is unchanged");
    Ok(EXIT_CONFIG)
}
