//! cogno: an init and process supervisor that runs a whole stack — bundled
//! infrastructure and app processes — from one command, as PID 1 of a
//! container or natively for development.
//!
//! How the crate is laid out (docs/architecture.md has the event flow):
//!
//! - [`commands`]: the command line — one clap grammar, one dispatch, one
//!   file per command. `commands::up` is the composition root that wires
//!   everything below together. `src/main.rs` only calls [`commands::main`].
//! - [`config`]: the stack file — parsing (`raw`), interpolation, building a
//!   validated [`config::Stack`] with its start plan, compiler-grade errors.
//! - [`supervisor`]: one event loop owning every service's state machine;
//!   [`health`] runs probes, [`logs`] forwards output, [`control`] serves and
//!   calls the control API; [`logfiles`] keeps output in DATA/logs and
//!   [`leftovers`] stops what a killed cogno left running; [`events`]
//!   streams what happens and [`notify`] tells a hook command and webhooks
//!   about it; [`watch`] turns saved files into restarts (`watch:`);
//!   [`backups`] runs the scheduled backups.
//! - [`bundled`]: PostgreSQL, Redis and Temporal, run from `kind:` alone,
//!   each a `bundled::Server` with its static facts in `config::kinds`
//!   (docs/architecture.md: adding a bundled server); [`secrets`] generates
//!   and keeps the stack's secrets; [`datadir`] owns the data directory: its
//!   layout, pre-flight checks, stamps and crash-safe writes.
//! - [`os`]: OS plumbing, apart from policy — spawning, reaping, signals,
//!   /proc readers, OOM detection, releasing startup pages.
//! - Leaves used everywhere: [`fmt`] (durations and instants for people),
//!   [`schedule`] (cron expressions) and [`user`] (the OS user a service runs as).

pub mod backups;
pub mod bundled;
pub mod commands;
pub mod config;
pub mod control;
pub mod datadir;
pub mod error;
pub mod events;
pub mod fmt;
pub mod health;
pub mod leftovers;
pub mod logfiles;
pub mod logs;
pub mod notify;
pub mod os;
pub mod schedule;
pub mod secrets;
pub mod supervisor;
pub mod testkit;
pub mod user;
pub mod watch;
