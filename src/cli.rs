//! The command line: argument parsing, finding the stack file and the data
//! directory, and the `up` and `check` commands.

use crate::bundled;
use crate::config::{self, fmt_duration, Condition, Stack};
use crate::control;
use crate::logs::{OwnWriter, Sink, Style};
use crate::process;
use crate::secrets;
use crate::signals;
use crate::supervisor::{self, Supervisor};
use crate::trim;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Exit status for a configuration or usage error (nothing was started or written).
pub const EXIT_CONFIG: i32 = 2;

#[derive(Parser)]
#[command(
    name = "cogno",
    version,
    about = "Init and process supervisor: runs a whole stack (PostgreSQL, Redis, Temporal, apps) from one command",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the stack in the foreground until SIGTERM/SIGINT
    Up(StackArgs),
    /// Validate the stack file and print the start plan; starts nothing
    Check(ConfigArg),
    /// Print the environment app services get (connection URLs, secrets) as a sourceable .env
    Env(StackArgs),
    /// Show the stack's phase and every service's state; exit 0 only when ready
    Status {
        #[command(flatten)]
        target: StackArgs,
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show recent output of all (or some) services, interleaved in time order
    Logs {
        #[command(flatten)]
        target: StackArgs,
        /// Only these services
        services: Vec<String>,
        /// Keep following new lines
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many recent lines to show first
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
    },
    /// Start stopped or failed services and wait until they are healthy
    Start(ActionArgs),
    /// Stop services (dependants must be stopped too: --with-dependents)
    Stop(ActionArgs),
    /// Restart services and wait until they are healthy again
    Restart(ActionArgs),
    /// Exit 0 if the stack is ready, else 1 with one line saying why (for HEALTHCHECK)
    Healthcheck(StackArgs),
    /// Stop the whole stack in order, like SIGTERM
    Shutdown(StackArgs),
}

#[derive(Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub target: StackArgs,
    /// Services to act on
    #[arg(required = true)]
    pub services: Vec<String>,
    /// Also stop the services that depend on these first (and, for restart, start them again after)
    #[arg(long)]
    pub with_dependents: bool,
}

#[derive(Args)]
pub struct ConfigArg {
    /// Stack file [default: $COGNO_CONFIG, else ./cogno.yaml]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Data directory [default: $COGNO_DATA_DIR, else `data_dir` in the stack file, else ./data, or /data as PID 1]
    #[arg(long, short = 'd', value_name = "DIR")]
    pub data: Option<PathBuf>,
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The stack `cogno up` runs when no stack file is given or found.
const QUICKSTART: &str = include_str!("../config/quickstart.yaml");
const QUICKSTART_NAME: &str = "<built-in quick-start stack>";

impl ConfigArg {
    /// The stack file named by --config or $COGNO_CONFIG, else ./cogno.yaml
    /// if it exists; None means the built-in quick-start stack.
    fn path(&self) -> Option<PathBuf> {
        let named = self
            .config
            .clone()
            .or_else(|| env_lookup("COGNO_CONFIG").map(PathBuf::from));
        named.or_else(|| Some(PathBuf::from("cogno.yaml")).filter(|p| p.exists()))
    }

    fn load(&self) -> Result<Stack, i32> {
        let loaded = match self.path() {
            Some(path) => config::load(&path, &env_lookup),
            None => config::parse(QUICKSTART, Path::new(QUICKSTART_NAME), &env_lookup),
        };
        loaded.map_err(|d| {
            eprint!("{d}");
            EXIT_CONFIG
        })
    }
}

/// Where a running cogno's control socket is, found the way `up` finds its data directory.
/// The stack file is only read when the data directory is not given; if it
/// cannot be read, the default data directory is used.
pub fn socket_path(args: &StackArgs) -> PathBuf {
    let explicit = args
        .data
        .clone()
        .or_else(|| env_lookup("COGNO_DATA_DIR").map(PathBuf::from));
    let data = match explicit {
        Some(d) => d,
        None => match args.config.load() {
            Ok(stack) => data_dir(args, &stack),
            Err(_) => PathBuf::from(if is_pid1() { "/data" } else { "./data" }),
        },
    };
    control::server::socket_in(&data)
}

fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// `--data`, else `$COGNO_DATA_DIR`, else the file's `data_dir` (relative to
/// the file), else ./data natively and /data as PID 1.
pub fn data_dir(args: &StackArgs, stack: &Stack) -> PathBuf {
    let dir = data_dir_as_given(args, stack);
    // Absolute: bundled servers change directory (postgres into its cluster),
    // and paths handed to them must still point at the same place.
    std::path::absolute(&dir).unwrap_or(dir)
}

fn data_dir_as_given(args: &StackArgs, stack: &Stack) -> PathBuf {
    if let Some(d) = args
        .data
        .clone()
        .or_else(|| env_lookup("COGNO_DATA_DIR").map(PathBuf::from))
    {
        return d;
    }
    if let Some(d) = &stack.data_dir {
        let base = stack
            .file
            .parent()
            .filter(|p| p.exists())
            .unwrap_or(Path::new("."));
        return base.join(d);
    }
    PathBuf::from(if is_pid1() { "/data" } else { "./data" })
}

pub fn up(args: StackArgs) -> i32 {
    // Before anything else, and before any thread exists: signal state is per process.
    signals::reset_inherited();
    process::ensure_standard_fds();
    let started = std::time::Instant::now();
    let mut stack = match args.config.load() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let data = data_dir(&args, &stack);
    // Everything that can be checked is checked before anything is written.
    let located = match bundled::preflight(&stack, &data) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&data) {
        eprintln!(
            "error: cannot create the data directory {}: {e}\n  = help: pass --data DIR with a writable directory",
            data.display()
        );
        return EXIT_CONFIG;
    }
    // Binding the socket first also makes sure no other cogno runs on this data directory.
    let listener = match control::server::bind(&control::server::socket_in(&data)) {
        Ok(l) => l,
        Err(e) => {
            eprint!("{e}");
            return EXIT_CONFIG;
        }
    };
    let pid1 = is_pid1();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    let sink = Sink::start(Style::new(&names, color), std::io::stdout());
    init_tracing(&sink, color);
    if !pid1 {
        if let Err(e) = signals::become_subreaper() {
            tracing::warn!(
                "cannot become a subreaper ({e}): orphans of services will escape supervision"
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the event loop: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(async {
        let signals = match signal_hook_tokio::Signals::new(supervisor::SIGNALS) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return 1;
            }
        };
        tracing::info!(
            "cogno {} {} ({}, data in {})",
            env!("CARGO_PKG_VERSION"),
            if pid1 {
                "running as PID 1"
            } else {
                "running as a subreaper"
            },
            stack.file.display(),
            data.display()
        );
        let mut progress = bundled::Progress::new(started);
        let derived = match first_run(&mut stack, &data, &located, &mut progress) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{e}");
                return EXIT_CONFIG;
            }
        };
        let base_env: Vec<(String, String)> = std::env::vars().collect();
        let health_listen = stack.health_listen;
        let banner = ready_banner(&stack, &data);
        let mut supervisor = Supervisor::new(stack, base_env, derived, sink.clone(), pid1);
        let marker_data = data.clone();
        supervisor.on_first_ready(move || {
            for line in banner {
                tracing::info!("{line}");
            }
            // fsync can take seconds on a busy disk: never on the event loop.
            std::thread::spawn(move || {
                if let Err(e) = bundled::mark_initialized(&marker_data) {
                    tracing::warn!(
                        "cannot record the first complete start in {}: {e}",
                        marker_data.display()
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
            supervisor.control(),
            supervisor.log_view(),
        ) {
            tracing::error!("{e}");
            return 1;
        }
        supervisor.run(signals).await
    });
    // Pending timers would otherwise be waited for; nothing they do matters now.
    runtime.shutdown_background();
    // The socket is ours (bind refuses one that answers): leave no trace of a stopped stack.
    let _ = std::fs::remove_file(control::server::socket_in(&data));
    sink.flush(std::time::Duration::from_secs(2));
    code
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

/// Secrets and bundled-service files, before anything starts. Returns what
/// each service gets in its environment from cogno.
fn first_run(
    stack: &mut Stack,
    data: &Path,
    located: &bundled::Located,
    progress: &mut bundled::Progress,
) -> Result<Vec<Vec<(String, String)>>, String> {
    let specs = bundled::secret_specs(stack);
    if specs.is_empty() {
        return Ok(vec![Vec::new(); stack.services.len()]);
    }
    let secrets = secrets::load_or_create(data, &specs, &env_lookup).map_err(|e| e.0)?;
    let kept = specs.len() - secrets.generated.len() - secrets.from_env.len();
    progress.step(format!(
        "secrets: {} generated, {kept} kept, {} from the environment ({})",
        secrets.generated.len(),
        secrets.from_env.len(),
        secrets.file.display()
    ));
    let versions = bundled::prepare(stack, data, &secrets, located, progress)?;
    if let Err(e) = bundled::record_creation(data, &versions) {
        tracing::warn!("cannot record what created {}: {e}", data.display());
    }
    let derived = bundled::derived_env(stack, &secrets);
    Ok(stack
        .services
        .iter()
        .map(|s| {
            let mut env = derived.clone();
            // The probe of the bundled PostgreSQL provisions the app's role as the superuser.
            if s.bundled
                .as_ref()
                .is_some_and(|b| b.kind == config::Kind::Postgres)
            {
                if let Some(v) = secrets.get(bundled::POSTGRES_ADMIN_PASSWORD) {
                    env.push((bundled::POSTGRES_ADMIN_PASSWORD.to_owned(), v.to_owned()));
                }
            }
            env
        })
        .collect())
}

/// What a new user needs once everything is healthy: where things are, never secret values.
fn ready_banner(stack: &Stack, data: &Path) -> Vec<String> {
    let mut lines = vec!["ready. What runs here:".to_owned()];
    for svc in &stack.services {
        let what = match &svc.bundled {
            Some(b) => match b.kind {
                config::Kind::Postgres => format!(
                    "postgresql://127.0.0.1:{} (database {})",
                    b.port,
                    bundled::APP_DB
                ),
                config::Kind::Redis => format!("redis://127.0.0.1:{}", b.port),
                config::Kind::Temporal => format!(
                    "temporal at 127.0.0.1:{} (namespace {})",
                    b.port, b.namespace
                ),
            },
            None => match &svc.health {
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
            data.join("secrets").join(".env").display()
        ));
    }
    lines.push("  `cogno status` shows every service, `cogno logs -f` follows their output".into());
    lines
}

/// `cogno env`: the environment app services get, for an app run outside cogno.
pub fn env(args: StackArgs) -> i32 {
    let stack = match args.config.load() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let data = data_dir(&args, &stack);
    let specs = bundled::secret_specs(&stack);
    let secrets = match secrets::load_or_create(&data, &specs, &env_lookup) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    println!(
        "# The environment cogno gives app services (stack {}).",
        stack.file.display()
    );
    println!("# It contains secrets: keep it out of logs and version control.");
    let mut vars = bundled::derived_env(&stack, &secrets);
    vars.extend(stack.env.iter().cloned());
    for (k, v) in vars.iter().filter(|(k, _)| !k.is_empty()) {
        // Single quotes: nothing in the value is expanded when the file is sourced.
        println!("{k}='{}'", v.replace('\'', "'\\''"));
    }
    0
}

pub fn check(args: ConfigArg) -> i32 {
    match args.load() {
        Ok(stack) => {
            print!("{}", describe(&stack));
            0
        }
        Err(code) => code,
    }
}

pub fn condition_name(c: Condition) -> &'static str {
    match c {
        Condition::Started => "started",
        Condition::Healthy => "healthy",
        Condition::Completed => "completed",
    }
}

/// The resolved start plan, as `cogno check` prints it.
pub fn describe(stack: &Stack) -> String {
    let mut out = format!(
        "{}: ok, {} services in {} tiers\n\nstart plan (a tier starts once what it waits for is ready):\n",
        stack.file.display(),
        stack.services.len(),
        stack.plan.tiers.len()
    );
    let width = stack
        .services
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for (t, tier) in stack.plan.tiers.iter().enumerate() {
        for (k, &i) in tier.iter().enumerate() {
            let s = &stack.services[i];
            let label = if k == 0 {
                format!("tier {}", t + 1)
            } else {
                String::new()
            };
            let kind = if s.oneshot { "oneshot" } else { "service" };
            let mut waits: Vec<String> = s
                .depends_on
                .iter()
                .filter(|d| !d.implicit)
                .map(|d| {
                    format!(
                        "{} {}",
                        stack.services[d.on].name,
                        condition_name(d.condition)
                    )
                })
                .collect();
            let lower: Vec<&str> = s
                .depends_on
                .iter()
                .filter(|d| d.implicit)
                .map(|d| stack.services[d.on].name.as_str())
                .collect();
            if !lower.is_empty() {
                waits.push(format!("{} (lower priority)", lower.join(", ")));
            }
            let waits = if waits.is_empty() {
                String::new()
            } else {
                format!("  waits for: {}", waits.join("; "))
            };
            out.push_str(&format!(
                "  {label:<7} {:<width$}  {kind}, priority {}{waits}\n",
                s.name, s.priority
            ));
        }
    }
    let timeouts: Vec<_> = stack.services.iter().map(|s| s.stop_timeout).collect();
    let (total, chain) = stack.plan.longest_stop_chain(&timeouts);
    let chain: Vec<&str> = chain
        .iter()
        .map(|&i| stack.services[i].name.as_str())
        .collect();
    out.push_str(&format!(
        "\nshutdown: reverse order, within shutdown_budget {}; longest chain {} (stop timeouts add up to {}; \
         whatever is left when the budget is used up is killed)\n",
        fmt_duration(stack.shutdown_budget),
        chain.join(" → "),
        fmt_duration(total),
    ));
    out
}

pub fn act(action: control::Action, args: ActionArgs) -> i32 {
    control::client::act(
        &socket_path(&args.target),
        action,
        &args.services,
        args.with_dependents,
    )
}
