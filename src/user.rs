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

/// The identity a service starts with: its resolved user, or cogno's own
/// when cogno is not root. Root with a `user:` that was not resolved fails
/// closed — the start fails, naming the user — and never runs it as root.
pub fn start_as<'a>(
    user: Option<&str>,
    run_as: Option<&'a RunAs>,
    root: bool,
) -> Result<Option<&'a RunAs>, String> {
    match (user, run_as) {
        (Some(name), None) if root => Err(format!(
            "user `{name}` was not resolved: cogno runs as root and never starts a service as root in its place"
        )),
        _ => Ok(run_as),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unresolved_user_never_means_root() {
        let nobody = RunAs {
            name: "nobody".into(),
            uid: Uid::from_raw(65534),
            gid: Gid::from_raw(65534),
            groups: Vec::new(),
            home: PathBuf::from("/nonexistent"),
        };
        let err = start_as(Some("app"), None, true).unwrap_err();
        assert!(err.contains("`app`"), "{err}");
        let as_nobody = start_as(Some("nobody"), Some(&nobody), true).unwrap();
        assert_eq!(as_nobody.map(|u| u.uid), Some(nobody.uid));
        // No `user:`, or cogno unprivileged: cogno's own user, as always.
        assert!(start_as(None, None, true).unwrap().is_none());
        assert!(start_as(Some("app"), None, false).unwrap().is_none());
    }
}
