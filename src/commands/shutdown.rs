//! `cogno shutdown`: stop the whole stack in order, like SIGTERM.

use super::Outcome;
use crate::control::client::request;
use crate::control::ActionResult;
use crate::error::Error;
use std::path::Path;

pub fn shutdown(socket: &Path) -> Outcome {
    let r: ActionResult = request(socket, "POST", "/shutdown", None)?.json()?;
    if !r.ok {
        return Err(Error::new(r.message));
    }
    println!("{}", r.message);
    Ok(0)
}
