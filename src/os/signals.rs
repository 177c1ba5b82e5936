//! Process-wide signal setup, done once before any thread or child exists.
//!
//! A parent may hand cogno blocked or ignored signals (util-linux
//! `unshare --fork` leaves SIGTERM and SIGINT blocked in its child): as PID 1
//! that would make `docker stop` silently do nothing until its SIGKILL. So
//! cogno starts from a clean slate, and its children inherit that.

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};

/// Unblocks every signal and resets inherited "ignore" dispositions to the
/// default. SIGPIPE stays ignored for cogno itself (a closed stdout must be
/// an error, not death); children get it back at its default on exec.
pub fn reset_inherited() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE) {
            continue;
        }
        // SAFETY: querying then resetting a disposition; no handler code runs.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig as libc::c_int, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// When cogno is not PID 1, orphans of its services would be adopted by the
/// real init and escape supervision; as a subreaper, cogno adopts them.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
