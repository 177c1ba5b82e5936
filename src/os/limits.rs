//! Process-wide limits and protections cogno sets for itself at start:
//! nothing of it may be dumped (it holds every secret of the stack), and
//! its own file-descriptor limit is raised so that supervision keeps a
//! reserve; services get the limit cogno was started with back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The soft RLIMIT_NOFILE cogno was started with, for its children
/// (u64::MAX: not changed, nothing to restore).
static ORIGINAL_NOFILE: AtomicU64 = AtomicU64::new(u64::MAX);

/// The umask cogno was started with, for its children (u32::MAX: not
/// changed, nothing to restore).
static ORIGINAL_UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

/// No core dump and no ptrace attach by other users of cogno's memory, which
/// holds every secret: not dumpable, core size 0.
pub fn protect_memory() -> std::io::Result<()> {
    // SAFETY: prctl and setrlimit with plain integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises cogno's soft file-descriptor limit to its hard limit: health
/// listeners, pipes and probes must never leave supervision without one.
/// The original soft limit is kept for services ([`original_nofile`]): some
/// programs misbehave with a very high limit (select(), loops over every fd).
pub fn raise_nofile() -> std::io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= lim.rlim_max {
            return Ok(());
        }
        let original = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        ORIGINAL_NOFILE.store(original, Ordering::Relaxed);
    }
    Ok(())
}

/// The soft file-descriptor limit a child should get back, if cogno raised its own.
pub fn original_nofile() -> Option<u64> {
    let v = ORIGINAL_NOFILE.load(Ordering::Relaxed);
    (v != u64::MAX).then_some(v)
}

/// As root, what cogno creates is private (umask 077) unless it gives a
/// mode on purpose (DATA 0755, DATA/run 0711): under an inherited umask 000
/// DATA and DATA/.cogno would be writable by everyone. Services get the
/// original umask back ([`original_umask`]): their files are theirs to decide.
pub fn private_umask() {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    ORIGINAL_UMASK.store(old.bits(), Ordering::Relaxed);
}

/// The umask a child should get back, if cogno changed its own.
pub fn original_umask() -> Option<libc::mode_t> {
    let v = ORIGINAL_UMASK.load(Ordering::Relaxed);
    (v != u32::MAX).then_some(v as libc::mode_t)
}

/// How much lower than its parent's a background job's CPU priority is
/// (`nice 10`, as logrotate's or a backup cron job's usually are).
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the CPU priority of this thread, and of every thread and process
/// it starts from now on, by [`BACKGROUND_NICE`]: a backup's compression
/// then waits for the servers and the app, rather than they for it. Best
/// effort: a failure leaves the priority as it was.
pub fn background_priority() {
    // SAFETY: nice takes an integer and changes only the calling thread's
    // priority (Linux), which the threads and processes it starts inherit.
    let _ = unsafe { libc::nice(BACKGROUND_NICE) };
}
