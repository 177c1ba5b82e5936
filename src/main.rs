//! cogno: an init and process supervisor that runs a whole stack — bundled
//! infrastructure and app processes — from one command, as PID 1 of a
//! container or natively for development.

mod cli;
mod config;
mod health;
mod logs;
mod process;
mod reaper;
mod signals;
mod supervisor;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Up(args) => cli::up(args),
        cli::Command::Check(args) => cli::check(args),
    };
    std::process::exit(code);
}
