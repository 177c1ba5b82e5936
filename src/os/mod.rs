//! OS plumbing, kept apart from policy: what the supervisor and the bundled
//! servers ask of Linux, and nothing about services or stacks.

pub mod limits;
pub mod oom;
pub mod process;
pub mod procfs;
pub mod reaper;
pub mod signals;
pub mod trim;

/// The longest path a Unix socket can be bound or reached at: `sun_path`
/// holds 108 bytes, the last of them the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
