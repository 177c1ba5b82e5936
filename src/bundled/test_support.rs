//! What the bundled servers' unit tests share besides `crate::testkit`:
//! real servers, killed when a test fails.

use crate::user::RunAs;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};

/// A running server (output discarded), killed on drop.
pub struct Server(pub Child);

impl Server {
    pub fn start(command: &[String], run_as: Option<&RunAs>) -> Server {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(u) = run_as {
            cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
        Server(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", command[0])),
        )
    }

    /// SIGTERM, as cogno stops these servers, and the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.0.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
