//! cogno: an init and process supervisor that runs a whole stack — bundled
//! infrastructure and app processes — from one command, as PID 1 of a
//! container or natively for development.

mod bundled;
mod cli;
mod config;
mod control;
mod files;
mod health;
mod logs;
mod oom;
mod process;
mod reaper;
mod secrets;
mod signals;
mod supervisor;
mod trim;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Up(args) => cli::up(args),
        cli::Command::Check(args) => cli::check(args),
        cli::Command::Env(args) => cli::env(args),
        cli::Command::Status { target, json } => {
            control::client::status(&cli::socket_path(&target), json)
        }
        cli::Command::Logs {
            target,
            services,
            follow,
            lines,
        } => control::client::logs(&cli::socket_path(&target), &services, follow, lines),
        cli::Command::Start(a) => cli::act(control::Action::Start, a),
        cli::Command::Stop(a) => cli::act(control::Action::Stop, a),
        cli::Command::Restart(a) => cli::act(control::Action::Restart, a),
        cli::Command::Healthcheck(target) => {
            control::client::healthcheck(&cli::socket_path(&target))
        }
        cli::Command::Shutdown(target) => control::client::shutdown(&cli::socket_path(&target)),
    };
    std::process::exit(code);
}
