//! The OS user a service runs as, looked up once (when the stack is loaded)
//! and used by the config checks, pre-flight and the supervisor alike.

use crate::error::Error;
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::path::PathBuf;

/// The user a service runs as, resolved before forking (nothing that
/// allocates or reads files may run between fork and exec).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the system's user database, with its supplementary groups.
    pub fn lookup(name: &str) -> Result<RunAs, Error> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| Error::new(format!("cannot look up user `{name}`: {e}")))?
            .ok_or_else(|| {
                Error::config(format!("user `{name}` does not exist on this system")).help(format!(
                    "create it (useradd --system {name}) or use another user"
                ))
            })?;
        let cname =
            CString::new(name).map_err(|_| Error::config(format!("invalid user name `{name}`")))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).unwrap_or_else(|_| vec![user.gid]);
        Ok(RunAs {
            name: name.to_owned(),
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
        })
    }
}
