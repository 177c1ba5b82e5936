//! OS plumbing, kept apart from policy: what the supervisor and the bundled
//! servers ask of Linux, and nothing about services or stacks.

pub mod limits;
pub mod oom;
pub mod process;
pub mod procfs;
pub mod reaper;
pub mod signals;
pub mod trim;
