//! `cogno shutdown` and `cogno down`: stop the whole stack in order, like
//! SIGTERM. `shutdown` returns once cogno has the request; `down` waits
//! until cogno has exited, which it does once every service is gone.

use super::Outcome;
use crate::control::client::request;
use crate::control::ActionResult;
use crate::error::Error;
use crate::os::process::Watched;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub fn shutdown(socket: &Path) -> Outcome {
    println!("{}", ask(socket)?);
    Ok(0)
}

pub fn down(socket: &Path) -> Outcome {
    // Held before asking, so that the process waited for is the one asked.
    let cogno = UnixStream::connect(socket)
        .ok()
        .and_then(|s| Watched::peer_of(&s).ok());
    eprintln!("{}; waiting until it has exited", ask(socket)?);
    match cogno {
        Some(cogno) => cogno.wait().map_err(|e| {
            Error::new(format!(
                "cannot wait for cogno (pid {}) to exit: {e}",
                cogno.pid
            ))
        })?,
        // No pidfd (an old kernel, another PID namespace): cogno closes its
        // socket once every service is down, just before it exits.
        None => {
            while UnixStream::connect(socket).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    println!("the stack is down: every service has stopped and cogno has exited");
    Ok(0)
}

/// Asks the running cogno to stop the stack; its answer.
fn ask(socket: &Path) -> Result<String, Error> {
    let r: ActionResult = request(socket, "POST", "/shutdown", None)?.json()?;
    if !r.ok {
        return Err(Error::new(r.message));
    }
    Ok(r.message)
}
