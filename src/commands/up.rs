//! `cogno up`: the composition root. It loads the stack, runs the
//! pre-flight checks, prepares the bundled servers and the secrets, wires
//! the supervisor to its output sink and control server, and runs it.

use super::{data_dir, detach, env_lookup, is_pid1, Outcome, UpArgs};
use crate::bundled;
use crate::config::{self, Selection, Stack};
use crate::control;
use crate::datadir::DataDir;
use crate::error::Error;
use crate::logs::{OwnWriter, Sink, Style};
use crate::os::{limits, process, signals, trim};
use crate::supervisor::{self, Supervisor};
use futures_util::StreamExt;

pub fn run(args: UpArgs) -> Outcome {
    if args.detach.starts_detached() {
        return detach::start(&args.target, &args.detach);
    }
    // Set when this cogno is the detached one: its waiting parent's pipe.
    let notify = args.detach.notify_pipe();
    // Before anything else, and before any thread exists: signal state is per process.
    signals::reset_inherited();
    process::ensure_standard_fds();
    // cogno holds every secret of the stack: no core dump, no ptrace by others.
    if let Err(e) = limits::protect_memory() {
        eprintln!("warning: cannot keep cogno's memory out of core dumps: {e}");
    }
    if nix::unistd::geteuid().is_root() {
        limits::private_umask();
    }
    if let Err(e) = limits::raise_nofile() {
        eprintln!("warning: cannot raise cogno's file descriptor limit: {e}");
    }
    signals::exit_on_stop_signals();
    let started = std::time::Instant::now();
    let mut stack = args.target.config.load()?;
    if let Some(moves) = &args.throwaway {
        moves.apply(&mut stack);
    }
    if args.for_backup {
        super::child_stack::set_apart(&mut stack);
    }
    let stack = stack;
    let selection = args.select.resolve(&stack)?;
    let baseline = supervisor::Baseline::of(&stack);
    let data = data_dir(&args.target, &stack);
    // A running stack holds the ports too: say so rather than that a port is taken.
    control::server::check_not_running(&data)?;
    // No cogno runs here: what a killed one left running goes before anything
    // is checked (its ports) or started.
    for line in crate::leftovers::stop(&data) {
        eprintln!("cogno: {line}");
    }
    data.check_usable()?;
    // Before pre-flight, which refuses a cluster of another major.
    super::upgrade::auto(&stack, &data)?;
    // Everything that can be checked is checked before anything is written.
    let located = bundled::preflight(&stack, &data, &env_lookup)?;
    data.create()?;
    let migrated = data.migrate_layout()?;
    // Binding the socket first also makes sure no other cogno runs on this data directory.
    let listener = control::server::bind(&data)?;
    detach::listening(notify.as_ref());
    // From here on the event loop handles the stop signals; one that comes
    // in between waits for it. Held before any thread starts (the output
    // writer, below), so that they all inherit the mask and leave the
    // signal to the loop.
    signals::hold_stop_signals();
    let pid1 = is_pid1();
    let color = super::colored(&std::io::stdout());
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    // Detached, stdout is cogno.log: the services' output has files of its own.
    let sink = Sink::start_with(
        Style::new(&names, color),
        std::io::stdout(),
        notify.is_some(),
    );
    init_tracing(&sink, color);
    if !pid1 {
        if let Err(e) = signals::become_subreaper() {
            tracing::warn!(
                "cannot become a subreaper ({e}): orphans of services will escape supervision"
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the event loop: {e}")))?;
    let code = runtime.block_on(async {
        let mut signals = match signal_hook_tokio::Signals::new(supervisor::SIGNALS) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return 1;
            }
        };
        signals::unblock_stop_signals();
        tracing::info!(
            "cogno {} {} ({}, data in {})",
            env!("CARGO_PKG_VERSION"),
            if pid1 {
                "running as PID 1"
            } else {
                "running as a subreaper"
            },
            stack.file.display(),
            data.root().display()
        );
        if let Some((from, to)) = migrated {
            tracing::info!(
                "data directory {} migrated from layout version {from} to {to}",
                data.root().display()
            );
        }
        let mirror = notify.as_ref().and_then(|p| p.try_clone().ok());
        let progress = bundled::Progress::new(started, mirror);
        let (stack, derived) = match prepare(stack, &data, located, progress, &mut signals).await {
            Ok(prepared) => prepared,
            Err(code) => return code,
        };
        // A secret set in cogno's environment reaches only the services
        // entitled to it, through what cogno derives for each (first_run).
        let secret_names = bundled::secret_specs(&stack);
        let base_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| !secret_names.iter().any(|s| &s.name == k))
            .collect();
        let health_listen = stack.health_listen;
        let tcp_metrics = stack.metrics;
        let banner = ready_banner(&stack, &selection, &data);
        let names = stack.services.iter().map(|s| s.name.clone()).collect();
        let files = notify.is_some() || stack.log_files;
        let backups = stack
            .backup
            .clone()
            .map(|plan| scheduled_backups(plan, &args.target.config, &data));
        let mut supervisor =
            Supervisor::new(stack, selection, base_env, derived, sink.clone(), pid1);
        if let Some(b) = backups {
            supervisor.back_up(b);
        }
        supervisor.on_reload(
            baseline,
            Box::new(Reloader {
                config: args.target.config.clone(),
                moves: args.throwaway.clone(),
                for_backup: args.for_backup,
                data: data.clone(),
                secrets: None,
            }),
        );
        supervisor.never_watch(data.root());
        match crate::leftovers::Recorder::new(&data) {
            Ok(r) => supervisor.record_pids(r),
            Err(e) => tracing::warn!(
                "cannot record the services' pids in {}: {e} (were cogno killed, the next start \
                 could not stop what it left running)",
                data.service_pids().display()
            ),
        }
        if files {
            match crate::logfiles::FileLogs::start(&data, names) {
                Ok(f) => supervisor.write_files(f),
                Err(e) => tracing::warn!("the services' output goes to no file: {e}"),
            }
        }
        let marker_data = data.clone();
        supervisor.on_first_ready(move || {
            for line in banner {
                tracing::info!("{line}");
            }
            // fsync can take seconds on a busy disk: never on the event loop.
            std::thread::spawn(move || {
                if let Err(e) = marker_data.mark_initialized() {
                    tracing::warn!(
                        "cannot record the first complete start in {}: {e}",
                        marker_data.root().display()
                    );
                }
                match trim::release_startup_pages() {
                    Ok(bytes) => tracing::debug!("released {} KiB of startup pages", bytes >> 10),
                    Err(e) => tracing::debug!("cannot release startup pages: {e}"),
                }
            });
        });
        if let Err(e) = control::server::start(
            listener,
            health_listen,
            tcp_metrics,
            supervisor.control(),
            supervisor.log_view(),
        ) {
            tracing::error!("{e:#}");
            return e.status;
        }
        detach::serving(notify);
        supervisor.run(signals).await
    });
    // Pending timers would otherwise be waited for; nothing they do matters now.
    runtime.shutdown_background();
    // The socket is ours (bind refuses one that answers): leave no trace of a stopped stack.
    let _ = std::fs::remove_file(data.socket());
    sink.flush(std::time::Duration::from_secs(2));
    Ok(code)
}

fn init_tracing(sink: &Sink, color: bool) {
    let level = std::env::var("COGNO_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(OwnWriter(sink.clone()))
        .with_max_level(level)
        .without_time()
        .with_target(false)
        .with_ansi(color)
        .init();
}

/// Runs [`first_run`] on a thread of its own while this one keeps answering
/// signals: a stop during initdb (or anything else it runs) is acted on at
/// once instead of after it. On SIGTERM, SIGINT or SIGQUIT every process the
/// preparation started is SIGKILLed, which makes it return; what it leaves
/// (initdb's scratch directory, never a half-made cluster) is cleaned by the
/// next start. Returns the prepared stack and each service's derived
/// environment, or cogno's exit status.
async fn prepare(
    mut stack: Stack,
    data: &DataDir,
    located: bundled::Located,
    mut progress: bundled::Progress,
    signals: &mut signal_hook_tokio::Signals,
) -> Result<(Stack, Vec<Vec<(String, String)>>), i32> {
    let (tx, mut done) = tokio::sync::oneshot::channel();
    let thread_data = data.clone();
    std::thread::spawn(move || {
        let derived = first_run(&mut stack, &thread_data, &located, &mut progress);
        let _ = tx.send((stack, derived));
    });
    let stopped_by = loop {
        tokio::select! {
            finished = &mut done => match finished {
                Ok((stack, Ok(derived))) => return Ok((stack, derived)),
                Ok((_, Err(e))) => {
                    tracing::error!("{e:#}");
                    return Err(e.status);
                }
                Err(_) => {
                    tracing::error!("the first-run preparation ended without a result");
                    return Err(1);
                }
            },
            Some(sig) = signals.next() => {
                if let Some(name) = stop_signal_name(sig) {
                    break name;
                }
            }
        }
    };
    tracing::warn!(
        "{stopped_by} received during the first-run preparation: stopping it now, before any service starts"
    );
    let killed = kill_descendants();
    let outcome = done.await;
    let completed = matches!(outcome, Ok((_, Ok(_))));
    if let Ok((_, Err(e))) = outcome {
        // What the killed step reports (initdb killed by SIGKILL) is not news.
        tracing::debug!("the preparation ended with: {e:#}");
    }
    let code = i32::from(killed > 0 && !completed);
    tracing::info!(
        "stopped during preparation ({}; the next `cogno up` takes it from there) (exit status {code})",
        if killed > 0 {
            format!("{killed} of its processes killed")
        } else {
            "nothing was running".to_owned()
        }
    );
    Err(code)
}

/// The name of a signal that stops cogno, or None for the others.
fn stop_signal_name(sig: i32) -> Option<&'static str> {
    use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
    [SIGTERM, SIGINT, SIGQUIT]
        .contains(&sig)
        .then(|| nix::sys::signal::Signal::try_from(sig).map_or("signal", |s| s.as_str()))
}

/// SIGKILLs every process below cogno (initdb and the bootstrap postgres it
/// runs, a version check…), the whole tree gathered first so that none is
/// missed by being reparented; returns how many there were.
fn kill_descendants() -> usize {
    let mut tree = Vec::new();
    let mut next = vec![nix::unistd::getpid()];
    while let Some(p) = next.pop() {
        let children = crate::os::procfs::children_of(p);
        next.extend(&children);
        tree.extend(children);
    }
    for pid in &tree {
        let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
    }
    tree.len()
}

/// Secrets and bundled-service files, before anything starts. Returns what
/// each service gets in its environment from cogno.
fn first_run(
    stack: &mut Stack,
    data: &DataDir,
    located: &bundled::Located,
    progress: &mut bundled::Progress,
) -> Result<Vec<Vec<(String, String)>>, Error> {
    let specs = bundled::secret_specs(stack);
    if specs.is_empty() {
        return Ok(vec![Vec::new(); stack.services.len()]);
    }
    let secrets = bundled::load_secrets(stack, data, &env_lookup)?;
    let kept = specs.len() - secrets.generated.len() - secrets.from_env.len();
    progress.step(format!(
        "secrets: {} generated, {kept} kept, {} from the environment ({})",
        secrets.generated.len(),
        secrets.from_env.len(),
        secrets.file.display()
    ));
    let versions = bundled::prepare(stack, data, &secrets, located, progress)?;
    if let Err(e) = data.record_creation(&versions) {
        tracing::warn!("cannot record what created {}: {e}", data.root().display());
    }
    Ok(bundled::derived_envs(stack, &secrets))
}

/// `backup:`'s backups: this cogno's own `backup`, on the same stack file,
/// env files and data directory as `up` (absolute: the paths must not
/// depend on a working directory).
fn scheduled_backups(
    plan: config::BackupPlan,
    config: &super::ConfigArg,
    data: &DataDir,
) -> crate::backups::Backups {
    let abs = |p: &std::path::Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let mut command = vec![abs(&exe), "backup".to_owned()];
    if let Some(file) = &config.config {
        command.extend(["--config".to_owned(), abs(file)]);
    }
    for f in &config.env_file {
        command.extend(["--env-file".to_owned(), abs(f)]);
    }
    command.extend(["--data".to_owned(), abs(data.root())]);
    crate::backups::Backups::new(plan, command, data.backups())
}

/// How `cogno reload` and SIGHUP read the stack file again: as `up` did
/// (the same file, env files and environment, a throwaway copy's ports),
/// with what cogno derives for each service from the secrets kept in the
/// data directory — which a changed bundled server's files are rendered with.
struct Reloader {
    config: super::ConfigArg,
    moves: Option<super::ephemeral::Moves>,
    /// Started by `cogno backup`: set apart, as at the start.
    for_backup: bool,
    data: DataDir,
    /// Those of the stack last loaded.
    secrets: Option<crate::secrets::Secrets>,
}

impl supervisor::Reloader for Reloader {
    fn load(&mut self) -> Result<(Stack, supervisor::Derived), Error> {
        let mut stack = self.config.load()?;
        if let Some(moves) = &self.moves {
            moves.apply(&mut stack);
        }
        if self.for_backup {
            super::child_stack::set_apart(&mut stack);
        }
        if bundled::secret_specs(&stack).is_empty() {
            let n = stack.services.len();
            return Ok((stack, vec![Vec::new(); n]));
        }
        let secrets = bundled::load_secrets(&stack, &self.data, &env_lookup)?;
        let derived = bundled::derived_envs(&stack, &secrets);
        self.secrets = Some(secrets);
        Ok((stack, derived))
    }

    fn reconfigure(
        &mut self,
        new: &mut config::Service,
        old: &config::Service,
    ) -> Result<(), Error> {
        let secrets = self
            .secrets
            .as_ref()
            .ok_or_else(|| Error::new("internal error: no secrets for a bundled server"))?;
        bundled::reconfigure(new, old, &self.data, secrets)
    }
}

/// What a new user needs once everything is healthy: where things are, never secret values.
fn ready_banner(stack: &Stack, selection: &Selection, data: &DataDir) -> Vec<String> {
    let mut lines = vec!["ready. What runs here:".to_owned()];
    let selected = stack.services.iter().zip(&selection.chosen);
    for (svc, _) in selected.filter(|(_, &chosen)| chosen) {
        let what = match (&svc.bundled, &svc.schedule) {
            (Some(b), _) => bundled::server(b.kind).banner(b),
            // Its runs come with the clock, not with the stack's readiness.
            (None, Some(s)) => format!("scheduled (oneshot, `{}`)", s.text()),
            // The stack is only ready once its oneshots have completed.
            (None, None) if svc.oneshot => "completed (oneshot)".into(),
            (None, None) => match &svc.health {
                Some(h) => match &h.probe {
                    config::Probe::Http { url, .. } => url.clone(),
                    config::Probe::Tcp(a) => a.clone(),
                    _ => "running".into(),
                },
                None => "running".into(),
            },
        };
        lines.push(format!("  {:<10} {what}", svc.name));
    }
    if !bundled::secret_specs(stack).is_empty() {
        lines.push(format!(
            "  secrets in {} (`cogno env` prints the connection settings)",
            data.secrets_file().display()
        ));
    }
    lines.push("  `cogno status` shows every service, `cogno logs -f` follows their output".into());
    lines
}
