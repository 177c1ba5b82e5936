//! cogno's integration tests: one test binary (one link step instead of one
//! per file), with the tests grouped by behaviour in the modules below. They
//! run the real `cogno` binary against real processes and servers.

// Helpers are shared by the modules; not every module uses every one.
#![allow(dead_code)]

mod common;

mod app;
mod bundled;
mod cli;
mod config_errors;
mod control;
mod detach;
mod hardening;
mod health;
mod lifecycle;
mod mcp;
mod metrics;
mod notify;
mod paths;
mod pid1;
mod run;
mod schedule;
mod subset;
mod supervisor;
mod upgrade;
mod watch;
