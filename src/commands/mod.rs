//! The command layer: one clap grammar, one dispatch, one file per command.
//! `up` is the composition root; `check` and `env` read the stack file; the
//! remote commands talk to a running stack through `control::client`;
//! `backup`, `restore` and `upgrade` work on the data directory and the servers.
//!
//! This module also finds the stack file and the data directory, the same
//! way for every command.

mod act;
mod backup;
mod check;
mod child_stack;
mod detach;
mod env;
mod ephemeral;
mod events;
mod healthcheck;
mod logs;
mod mcp;
mod reload;
mod restore;
mod run;
mod selection;
mod shutdown;
mod status;
mod up;
mod upgrade;
mod wait;

use crate::config::{self, Stack};
use crate::control::Action;
use crate::datadir::DataDir;
use crate::error::Error;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::{Path, PathBuf};

/// `cogno --version`: the crate's version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("COGNO_COMMIT"),
    ")"
);

const EXAMPLES: &str = "\
Examples:
  cogno up                          # the built-in stack: PostgreSQL, Redis, Temporal
  cogno up --config stack.yaml      # your stack file
  cogno up web --profile debug      # web and what it needs, plus the `debug` profile's services
  cogno up -d                       # in the background; returns once the stack is ready
  cogno check --config stack.yaml   # validate it and print the start plan
  cogno env > .env                  # connection settings for an app run outside cogno
  cogno run -- npm test             # a command with them, against the running stack
  cogno run --ephemeral -- go test ./...  # ... against a throwaway copy of the stack
  cogno status                      # a running stack, from another terminal
  cogno logs -f web                 # follow one service's output
  cogno reload                      # apply the edited stack file (as SIGHUP does)
  cogno down                        # stop it in order; returns once everything is gone
  cogno backup --to /backups        # one archive of the stack's data, running or stopped
  cogno restore ARCHIVE --data DIR  # a data directory from it, then `cogno up`
  cogno upgrade postgres            # the stopped stack's cluster to the new PostgreSQL major

Docs: docs/quick-start.md, docs/configuration.md (every key), docs/cli.md (every command),
docs/troubleshooting.md";

#[derive(Parser)]
#[command(
    name = "cogno",
    version = VERSION,
    about = "Init and process supervisor: runs a whole stack (PostgreSQL, Redis, Temporal, apps) from one command",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// When to colour output: auto (on a terminal, unless NO_COLOR or CLICOLOR=0; CLICOLOR_FORCE forces it), always, never
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// Whether to colour what is written to `stream`: `--color`, else the
/// conventions anstream follows (NO_COLOR, CLICOLOR, CLICOLOR_FORCE, TERM,
/// and whether it is a terminal).
pub(crate) fn colored(stream: &impl anstream::stream::RawStream) -> bool {
    anstream::AutoStream::choice(stream) != anstream::ColorChoice::Never
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the stack in the foreground until SIGTERM/SIGINT (or in the background: --detach)
    Up(UpArgs),
    /// Validate the stack file and print the start plan (and what a selection starts); starts nothing
    Check(CheckArgs),
    /// Print the environment app services get (connection URLs, secrets) as a sourceable .env
    Env {
        #[command(flatten)]
        target: StackArgs,
        /// Print it as a JSON object instead (docs/cli.md)
        #[arg(long)]
        json: bool,
    },
    /// Run a command with the environment app services get, against the running stack or (--ephemeral) a throwaway copy
    Run(run::RunArgs),
    /// Show the stack's phase and every service's state; exit 0 only when ready
    #[command(visible_alias = "ps")]
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
        /// How many recent lines to show first (--since and --grep choose among these)
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
        /// Start each line with its time (RFC 3339, UTC, milliseconds)
        #[arg(long)]
        timestamps: bool,
        /// Only lines since this long ago (`5m`, `2h`) or since this RFC 3339 time
        #[arg(long, value_name = "D|TIME", value_parser = logs::parse_since)]
        since: Option<String>,
        /// Only lines containing this text (a plain substring, case-sensitive)
        #[arg(long, value_name = "PATTERN")]
        grep: Option<String>,
        /// One JSON object per line (NDJSON), as GET /logs sends them
        #[arg(long)]
        json: bool,
    },
    /// Follow the stack's events: state transitions, health changes, restarts, operator actions
    Events {
        #[command(flatten)]
        target: StackArgs,
        /// One JSON object per line (NDJSON), as GET /events sends them
        #[arg(long)]
        json: bool,
    },
    /// Start stopped or failed services and wait until they are healthy
    Start(ActionArgs),
    /// Stop services (dependants must be stopped too: --with-dependents)
    Stop(ActionArgs),
    /// Restart services and wait until they are healthy again
    Restart(ActionArgs),
    /// Exit 0 if the stack is ready, else 1 with one line saying why (for HEALTHCHECK)
    Healthcheck(StackArgs),
    /// Read the stack file again and apply it to the running stack (as SIGHUP does): add, remove, restart what changed
    Reload(StackArgs),
    /// Stop the whole stack in order, like SIGTERM, and return at once
    Shutdown(StackArgs),
    /// Stop the whole stack in order and wait until every process is gone
    Down(StackArgs),
    /// Wait until the stack (or these services) is ready; non-zero with the reason if it fails or times out
    Wait {
        #[command(flatten)]
        target: StackArgs,
        /// Only these services (and not the whole stack)
        services: Vec<String>,
        /// Give up after this long (`30s`, `5m`) [default: no limit]
        #[arg(long, value_name = "D", value_parser = config::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Write one archive of the stack's data (PostgreSQL, Redis, Temporal, secrets), without stopping it (a stopped stack's servers are started for it, then stopped)
    Backup(backup::BackupArgs),
    /// Make a data directory from a backup archive (never over existing data); then `cogno up`
    Restore(restore::RestoreArgs),
    /// Upgrade the stopped stack's PostgreSQL cluster to the binaries' major version with pg_upgrade (or --rollback)
    Upgrade(upgrade::UpgradeArgs),
    /// Serve the running stack to AI agents and editors: a Model Context Protocol server on stdin/stdout
    Mcp(StackArgs),
    /// Print a shell completion script (e.g. `cogno completions bash > /etc/bash_completion.d/cogno`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, in roff (e.g. `cogno man > /usr/local/share/man/man1/cogno.1`)
    Man,
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
    /// Print the results as JSON (docs/cli.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub target: StackArgs,
    #[command(flatten)]
    pub select: selection::SelectArgs,
    #[command(flatten)]
    pub detach: detach::DetachArgs,
    /// A throwaway copy for `cogno run --ephemeral`: the bundled servers on
    /// these ports (SERVICE=PORT[:UI_PORT],…), no TCP health listener
    #[arg(long, hide = true, value_name = "PORTS")]
    pub throwaway: Option<ephemeral::Moves>,
    /// Started by `cogno backup` for a stopped stack: no TCP health
    /// listener, no scheduled backups (`child_stack::set_apart`)
    #[arg(long, hide = true)]
    pub for_backup: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub select: selection::SelectArgs,
    /// Print the plan as JSON (docs/cli.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct ConfigArg {
    /// Stack file [default: $COGNO_CONFIG, else ./cogno.yaml]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read `${…}` variables from FILE instead of the .env beside the stack file (repeatable; later files win; cogno's environment wins over all)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
}

#[derive(Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Data directory [default: $COGNO_DATA_DIR, else `data_dir` in the stack file, else ./data, or /data as PID 1]
    #[arg(long, short = 'D', value_name = "DIR")]
    pub data: Option<PathBuf>,
}

pub(crate) fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The stack `cogno up` runs when no stack file is given or found.
const QUICKSTART: &str = include_str!("../../config/quickstart.yaml");
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

    fn load(&self) -> Result<Stack, Error> {
        let path = self.path();
        let vars = config::interpolation_vars(path.as_deref(), &self.env_file)?;
        let lookup = |name: &str| env_lookup(name).or_else(|| config::env_file_lookup(&vars, name));
        match path {
            Some(path) => config::load(&path, &lookup),
            None => config::parse(QUICKSTART, Path::new(QUICKSTART_NAME), &lookup),
        }
    }
}

/// Where a running cogno's control socket is, found the way `up` finds its data directory.
/// The stack file is only read when the data directory is not given; if it
/// cannot be read, the default data directory is used.
pub fn socket_path(args: &StackArgs) -> PathBuf {
    target_data(args).socket()
}

/// The data directory of the stack a remote command talks to: see [`socket_path`].
pub fn target_data(args: &StackArgs) -> DataDir {
    let explicit = args
        .data
        .clone()
        .or_else(|| env_lookup("COGNO_DATA_DIR").map(PathBuf::from));
    match explicit {
        Some(d) => DataDir::new(d),
        None => match args.config.load() {
            Ok(stack) => data_dir(args, &stack),
            Err(_) => DataDir::new(if is_pid1() { "/data" } else { "./data" }),
        },
    }
}

pub(crate) fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// `--data`, else `$COGNO_DATA_DIR`, else the file's `data_dir` (relative to
/// the file), else ./data natively and /data as PID 1.
pub fn data_dir(args: &StackArgs, stack: &Stack) -> DataDir {
    let dir = data_dir_as_given(args, stack);
    // Absolute: bundled servers change directory (postgres into its cluster),
    // and paths handed to them must still point at the same place.
    DataDir::new(std::path::absolute(&dir).unwrap_or(dir))
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

/// What a command ends with: its exit status, or an error for the user,
/// which [`main`] prints (the one place errors are rendered).
pub type Outcome = Result<i32, Error>;

/// Parses the command line, runs the command, and gives cogno's exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    anstream::ColorChoice::write_global(match cli.color {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    });
    let outcome = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Check(args) => check::run(args),
        Command::Env { target, json } => env::run(target, json),
        Command::Run(args) => run::run(args),
        Command::Status { target, json } => status::status(&socket_path(&target), json),
        Command::Logs {
            target,
            services,
            follow,
            lines,
            timestamps,
            since,
            grep,
            json,
        } => logs::logs(
            &target_data(&target),
            &services,
            follow,
            lines,
            &logs::Filter {
                since,
                grep,
                timestamps,
                json,
            },
        ),
        Command::Events { target, json } => events::events(&socket_path(&target), json),
        Command::Start(a) => act::run(Action::Start, a),
        Command::Stop(a) => act::run(Action::Stop, a),
        Command::Restart(a) => act::run(Action::Restart, a),
        Command::Healthcheck(target) => healthcheck::healthcheck(&socket_path(&target)),
        Command::Reload(target) => reload::reload(&socket_path(&target)),
        Command::Shutdown(target) => shutdown::shutdown(&socket_path(&target)),
        Command::Down(target) => shutdown::down(&socket_path(&target)),
        Command::Wait {
            target,
            services,
            timeout,
        } => wait::run(&target_data(&target), &services, timeout),
        Command::Backup(args) => backup::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cogno", &mut script);
            print_bytes(&script, "the completion script")
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_bytes(&page, "the man page"),
                Err(e) => Err(Error::new(format!("cannot render the man page: {e}"))),
            }
        }
    };
    outcome.unwrap_or_else(|e| e.report())
}

/// Writes `bytes` (`what`) to stdout. A reader that went away (`| head`) is
/// not an error: it has what it wanted.
fn print_bytes(bytes: &[u8], what: &str) -> Outcome {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::new(format!("cannot write {what}: {e}")))
        }
        _ => Ok(0),
    }
}
