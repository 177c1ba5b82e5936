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

/// The signals that stop cogno.
const STOP: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];

/// Until the event loop handles them, SIGTERM, SIGINT and SIGQUIT end cogno
/// at once, with 128 + the signal. Without this, as PID 1 — where a signal
/// with the default action is ignored — a stop during pre-flight (which may
/// download PostgreSQL for minutes) would wait for it to end. Pre-flight
/// writes nothing a next start could trip over.
pub fn exit_on_stop_signals() {
    extern "C" fn exit_now(sig: libc::c_int) {
        const MSG: &[u8] = b"cogno: stopped before anything was started\n";
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(128 + sig);
        }
    }
    for sig in STOP {
        // SAFETY: installing a handler that only makes async-signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = exit_now as *const () as libc::sighandler_t;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Hands the stop signals over to the event loop's handlers: blocks them and
/// puts their default action back, so that nothing chains to the handler of
/// [`exit_on_stop_signals`]. One that arrives meanwhile stays pending;
/// [`unblock_stop_signals`] lets it through once the loop's handlers exist.
pub fn hold_stop_signals() {
    let mut set = SigSet::empty();
    for sig in STOP {
        set.add(Signal::try_from(sig).expect("a signal"));
        // SAFETY: resetting a disposition; no handler code runs.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

/// See [`hold_stop_signals`].
pub fn unblock_stop_signals() {
    let mut set = SigSet::empty();
    for sig in STOP {
        set.add(Signal::try_from(sig).expect("a signal"));
    }
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
}
