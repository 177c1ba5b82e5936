//! `cogno run [SERVICE…] -- CMD ARGS…`: a command run with the environment
//! app services get, against the running stack or (`--ephemeral`) against a
//! throwaway copy of it (`ephemeral.rs`).
//!
//! The command runs as the invoking user, with stdin, stdout and stderr
//! inherited, in `cogno run`'s own process group (so that a terminal's
//! Ctrl-C reaches it directly), and `cogno run` exits with its status
//! (128 + the signal when a signal ended it).

use super::env::app_environment;
use super::ephemeral::{Throwaway, Wanted, DEFAULT_WAIT};
use super::{data_dir, env_lookup, Outcome, StackArgs};
use crate::bundled;
use crate::config::Stack;
use crate::control::client;
use crate::error::Error;
use crate::os::process::SERVICE_ENV;
use crate::secrets::Secrets;
use crate::supervisor::service_env;
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: StackArgs,
    /// Start a throwaway copy of the stack on free ports with a temporary data directory, run the command against it, then stop it and remove the directory
    #[arg(long)]
    pub ephemeral: bool,
    /// With --ephemeral: give up when the throwaway stack is not ready after this long (`90s`, `5m`); it is stopped and removed, and the command not run
    #[arg(long, requires = "ephemeral", value_name = "D", value_parser = crate::config::parse_duration, default_value = DEFAULT_WAIT)]
    pub wait_timeout: std::time::Duration,
    /// Give the command exactly these services' environment (their env and env_file too) instead of the stack's app environment; with --ephemeral, start only them and their dependencies
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(args: RunArgs) -> Outcome {
    // Before any thread: from here on a stop signal is relayed, never fatal to cogno run.
    let relay = Relay::start()?;
    let mut stack = args.target.config.load()?;
    let services = pick(&stack, &args.services)?;
    if args.ephemeral {
        let wanted = Wanted {
            services: &args.services,
            timeout: args.wait_timeout,
        };
        let throwaway = match Throwaway::start(&args.target, &mut stack, &wanted, &relay) {
            Ok(t) => t,
            // Stopped before the command started: the stack is gone already (Drop).
            Err(_) if relay.received().is_some() => return Ok(relay.interrupted_status()),
            Err(e) => return Err(e),
        };
        if relay.received().is_some() {
            throwaway.stop();
            return Ok(relay.interrupted_status());
        }
        let secrets = bundled::load_secrets(&stack, throwaway.data(), &env_lookup)?;
        let env = environment(&stack, &secrets, &services);
        let code = run_command(&args.command, &env, &relay);
        throwaway.stop();
        return code;
    }
    let data = data_dir(&args.target, &stack);
    // Connection settings are only worth having for a stack that runs.
    client::get_status(&data.socket()).map_err(|f| {
        Error::from(f).help(
            "`cogno run --ephemeral -- CMD` starts a throwaway copy of the stack for the command instead",
        )
    })?;
    let secrets = bundled::load_secrets(&stack, &data, &env_lookup)?;
    let env = environment(&stack, &secrets, &services);
    run_command(&args.command, &env, &relay)
}

/// The indices of the named services, in the order given.
fn pick(stack: &Stack, names: &[String]) -> Result<Vec<usize>, Error> {
    names
        .iter()
        .map(|name| {
            stack
                .services
                .iter()
                .position(|s| &s.name == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
                    Error::config(format!("no service `{name}` in {}", stack.file.display())).help(
                        format!(
                            "its services are: {}; put the command after `--`",
                            known.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

/// What the command gets on top of the invoking user's environment: with no
/// service, the stack's app environment (what `cogno env` prints); else
/// each named service's own, as the supervisor computes it, in the order
/// given — for a bundled server, whose own has nothing for a client, the
/// stack's `env` and what the apps get of it (`DATABASE_URL`…). Like
/// sourcing `cogno env`, these win over the user's variables — a stale
/// DATABASE_URL in the shell must not point a test at another database.
fn environment(stack: &Stack, secrets: &Secrets, services: &[usize]) -> Vec<(String, String)> {
    if services.is_empty() {
        return app_environment(stack, secrets);
    }
    let derived = bundled::derived_envs(stack, secrets);
    services
        .iter()
        .flat_map(|&i| match &stack.services[i].bundled {
            Some(b) => {
                let client = bundled::server(b.kind).app_env(b, secrets);
                let client = client.into_iter().map(|v| (v.name, v.value));
                stack.env.iter().cloned().chain(client).collect()
            }
            None => service_env(&derived[i], &[], &stack.env, &stack.services[i], None),
        })
        // The marker says "a process of this service": the command is not one.
        .filter(|(k, _)| k != SERVICE_ENV)
        .collect()
}

/// Runs the command to its end; its exit status, 128 + the signal that ended it.
fn run_command(argv: &[String], env: &[(String, String)], relay: &Relay) -> Outcome {
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|e| {
            // The shell's statuses: 127 not found, 126 found but not runnable.
            let status = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            Error::new(format!("cannot run `{}`: {e}", argv[0]))
                .help("the command comes after `--` and is looked up in PATH")
                .status(status)
        })?;
    let pid = Pid::from_raw(child.id() as i32);
    relay.aim(Some(Target::Command(pid)));
    wait_unreaped(pid);
    relay.aim(None);
    let status = child
        .wait()
        .map_err(|e| Error::new(format!("cannot wait for `{}`: {e}", argv[0])))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// Waits until the child `pid` has exited, without reaping it: until it is
/// reaped its pid stays its own, and a relayed signal cannot reach another
/// process that took it.
pub(super) fn wait_unreaped(pid: Pid) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    while let Err(nix::errno::Errno::EINTR) =
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    {}
}

/// Where a stop signal to `cogno run` goes.
#[derive(Clone, Copy)]
pub(super) enum Target {
    /// The throwaway stack's cogno, in its own process group: SIGTERM, which
    /// stops the stack in order.
    Stack(Pid),
    /// The command, in our process group: the same signal, unless the
    /// terminal sent it to the whole group already.
    Command(Pid),
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT are caught on a thread of their own
/// and passed on to the current [`Target`], so that whatever happens, `cogno
/// run` lives to stop its stack and remove its directory.
pub(super) struct Relay {
    state: Arc<Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    target: Option<Target>,
    /// The first stop signal received.
    received: Option<i32>,
}

impl Relay {
    pub(super) fn start() -> Result<Relay, Error> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
            .map_err(|e| Error::new(format!("cannot install signal handlers: {e}")))?;
        let state = Arc::new(Mutex::new(RelayState::default()));
        let shared = state.clone();
        // In a terminal's foreground, its Ctrl-C and Ctrl-\ reach the command
        // (in our process group) directly: passed on too, they would come twice.
        let from_terminal = in_terminal_foreground();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                st.received.get_or_insert(signal);
                let Ok(sig) = Signal::try_from(signal) else {
                    continue;
                };
                let typed = from_terminal && matches!(signal, SIGINT | SIGQUIT);
                match st.target {
                    Some(Target::Stack(pid)) => {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                    Some(Target::Command(pid)) if !typed => {
                        let _ = kill(pid, sig);
                    }
                    _ => {}
                }
            }
        });
        Ok(Relay { state })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Relays signals to `target` from now on (None: to nobody). A signal
    /// that came before the target was there is passed on at once.
    pub(super) fn aim(&self, target: Option<Target>) {
        let mut st = self.lock();
        if let Some(sig) = st.received.and_then(|s| Signal::try_from(s).ok()) {
            match target {
                Some(Target::Stack(pid)) => {
                    let _ = kill(pid, Signal::SIGTERM);
                }
                Some(Target::Command(pid)) => {
                    let _ = kill(pid, sig);
                }
                None => {}
            }
        }
        st.target = target;
    }

    /// The first stop signal received, if any.
    pub(super) fn received(&self) -> Option<i32> {
        self.lock().received
    }

    /// The exit status for a run interrupted before its command started.
    fn interrupted_status(&self) -> i32 {
        let sig = self.received().unwrap_or(SIGTERM);
        eprintln!(
            "cogno run: interrupted by {} before the command started; the throwaway stack is stopped and its directory removed",
            Signal::try_from(sig).map_or("a signal", |s| s.as_str())
        );
        128 + sig
    }
}

/// Whether `cogno run` is in the foreground process group of the terminal on its stdin.
fn in_terminal_foreground() -> bool {
    // SAFETY: tcgetpgrp only reads the terminal's state; -1 when stdin is none.
    let fg = unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) };
    fg > 0 && fg == nix::unistd::getpgrp().as_raw()
}
