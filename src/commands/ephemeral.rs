//! `cogno run --ephemeral`: a throwaway copy of the stack for one command.
//!
//! Every bundled server gets a free port (and Temporal's Web UI another), the
//! TCP health listener is left out, and the data directory is a fresh
//! temporary one, so that any number of copies of one stack run side by
//! side. The stack is a [`ChildStack`]: a child `cogno up` told its ports
//! with the hidden `--throwaway` argument (and, when services are named, to
//! start only those and their dependencies), its output in a file beside
//! its data, waited for until an overall deadline (`--wait-timeout`), and
//! stopped in order when the command has ended; then the directory is
//! removed.
//!
//! What a SIGKILLed `cogno run` leaves is the temporary directory,
//! `$TMPDIR/cogno-run-*` (its stack stops by itself: `child_stack`).

use super::child_stack::{self, ChildStack, Launch};
use super::run::Relay;
use super::StackArgs;
use crate::config::{Probe, Stack};
use crate::datadir::DataDir;
use crate::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long `cogno run --ephemeral` waits for its stack to be ready by
/// default: the built-in stack's first start (initdb, Temporal's schema)
/// takes seconds, a busy CI machine several times that.
pub(super) const DEFAULT_WAIT: &str = "120s";

/// What a throwaway stack is to be: which services it starts (none named:
/// all), and how long it may take to be ready.
pub(super) struct Wanted<'a> {
    pub services: &'a [String],
    pub timeout: Duration,
}

/// A running throwaway stack; dropping it stops the stack and removes its
/// directory (in that order: the fields drop in order).
pub(super) struct Throwaway<'r> {
    stack: ChildStack<'r>,
    _dir: RemovedOnDrop,
}

impl<'r> Throwaway<'r> {
    /// Starts a throwaway copy of `stack` (whose ports it moves), or of the
    /// services `wanted` names and their dependencies, and waits until it is
    /// ready — at most `wanted.timeout`.
    pub(super) fn start(
        target: &StackArgs,
        stack: &mut Stack,
        wanted: &Wanted,
        relay: &'r Relay,
    ) -> Result<Throwaway<'r>, Error> {
        let started = Instant::now();
        let moves = Moves::pick(stack)?;
        moves.apply(stack);
        let dir = RemovedOnDrop(temp_dir()?);
        let log_path = dir.0.join("cogno.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", log_path.display())))?;
        let child = ChildStack::start(
            Launch {
                name: "the throwaway stack",
                aftermath: format!(
                    "the command was not run; the stack is stopped and {} removed",
                    dir.0.display()
                ),
                target,
                data: DataDir::new(dir.0.join("data")),
                log,
                log_path,
                up_args: vec![format!("--throwaway={moves}")],
                services: wanted.services,
                timeout: wanted.timeout,
            },
            relay,
        )?;
        let ports = if moves.0.is_empty() {
            String::new()
        } else {
            format!("ports {moves}; ")
        };
        eprintln!(
            "cogno run: throwaway stack ready in {} ({ports}data in {}, removed afterwards)",
            crate::fmt::fmt_duration(started.elapsed()),
            child.data().root().display()
        );
        Ok(Throwaway {
            stack: child,
            _dir: dir,
        })
    }

    pub(super) fn data(&self) -> &DataDir {
        self.stack.data()
    }

    /// Stops the stack in order, waits until its cogno has exited, removes its directory.
    pub(super) fn stop(self) {
        drop(self);
    }
}

/// The throwaway stack's directory, removed when dropped.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!(
                "cogno run: cannot remove the throwaway stack's directory {}: {e}",
                self.0.display()
            );
        }
    }
}

/// A fresh directory under $TMPDIR, 0711 like a data directory's parent:
/// the bundled servers' users (when cogno runs as root) pass through it.
fn temp_dir() -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let mut last = None;
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "cogno-run-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {
                // The umask may have taken bits away.
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711));
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    Err(Error::new(format!(
        "cannot create a temporary directory in {}: {}",
        base.display(),
        last.map_or_else(|| "no free name".to_owned(), |e| e.to_string())
    ))
    .help("set TMPDIR to a writable directory"))
}

/// The ports a throwaway stack's bundled servers listen on instead of the
/// stack file's, as `cogno run` hands them to its `cogno up`
/// (`--throwaway=postgres=40123,temporal=40124:40125`; empty when there is
/// no bundled server).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Moves(Vec<Move>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Move {
    service: String,
    port: u16,
    ui_port: Option<u16>,
}

impl Moves {
    /// A free port for every port a bundled server of `stack` listens on,
    /// all held at once so that they differ, then released for the servers.
    fn pick(stack: &Stack) -> Result<Moves, Error> {
        let mut held = Vec::new();
        let mut free = || -> Result<u16, Error> {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr().map(|a| (a.port(), l)))
                .map_err(|e| Error::new(format!("cannot find a free port on 127.0.0.1: {e}")))?;
            held.push(l.1);
            Ok(l.0)
        };
        let mut moves = Vec::new();
        for svc in &stack.services {
            if let Some(b) = &svc.bundled {
                moves.push(Move {
                    service: svc.name.clone(),
                    port: free()?,
                    ui_port: b.ui_port.map(|_| free()).transpose()?,
                });
            }
        }
        Ok(Moves(moves))
    }

    /// Puts the bundled servers on their new ports (their own health checks
    /// follow), and sets the stack apart ([`child_stack::set_apart`]): the
    /// TCP health listener's fixed address two copies would share, and the
    /// scheduled backups of data that is thrown away, are left out.
    pub fn apply(&self, stack: &mut Stack) {
        child_stack::set_apart(stack);
        for m in &self.0 {
            let Some(svc) = stack.services.iter_mut().find(|s| s.name == m.service) else {
                continue;
            };
            for b in svc
                .bundled
                .iter_mut()
                .chain(svc.health.as_mut().and_then(|h| match &mut h.probe {
                    Probe::Bundled { server, .. } => Some(server),
                    _ => None,
                }))
            {
                b.port = m.port;
                if b.ui_port.is_some() {
                    b.ui_port = m.ui_port;
                }
            }
        }
    }
}

impl fmt::Display for Moves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}={}", m.service, m.port)?;
            if let Some(ui) = m.ui_port {
                write!(f, ":{ui}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Moves {
    type Err = String;

    fn from_str(s: &str) -> Result<Moves, String> {
        let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port `{p}`"));
        s.split(',')
            .filter(|m| !m.is_empty())
            .map(|m| {
                let (service, ports) = m
                    .split_once('=')
                    .ok_or_else(|| format!("`{m}` is not SERVICE=PORT[:UI_PORT]"))?;
                let (p, ui) = match ports.split_once(':') {
                    Some((p, ui)) => (p, Some(port(ui)?)),
                    None => (ports, None),
                };
                Ok(Move {
                    service: service.to_owned(),
                    port: port(p)?,
                    ui_port: ui,
                })
            })
            .collect::<Result<_, _>>()
            .map(Moves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_survive_the_command_line() {
        for text in ["", "postgres=40001", "postgres=40001,temporal=40002:40003"] {
            let moves: Moves = text.parse().unwrap();
            assert_eq!(moves.to_string(), text);
        }
        assert!("postgres".parse::<Moves>().is_err());
        assert!("postgres=x".parse::<Moves>().is_err());
        assert!("temporal=1:99999".parse::<Moves>().is_err());
    }
}
