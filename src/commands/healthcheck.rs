//! `cogno healthcheck`: exit 0 when the stack is ready, else 1 with one line
//! saying why (for a container's HEALTHCHECK).

use super::Outcome;
use crate::control::client::get_status;
use crate::control::{Phase, ServiceState, StackStatus};
use std::path::Path;

pub fn healthcheck(socket: &Path) -> Outcome {
    let (ready, line) = verdict(&get_status(socket)?);
    println!("{line}");
    Ok(i32::from(!ready))
}

/// Whether the stack is ready, and the one line that says so or why not.
pub(super) fn verdict(st: &StackStatus) -> (bool, String) {
    // The status answer carries fresh checks (a request asks for one when
    // the last is old), and a running service whose check fails now is not
    // healthy, even before `retries` failures make it `unhealthy` (say,
    // PostgreSQL recovering from a backend crash).
    let failing: Vec<String> = st
        .services
        .iter()
        .filter(|s| s.state == ServiceState::Running)
        .filter_map(|s| {
            let h = s.health.as_ref().filter(|h| h.status == "fail")?;
            Some(format!(
                "{}: its last health check failed: {}",
                s.name,
                h.error.as_deref().unwrap_or("no reason given")
            ))
        })
        .collect();
    if st.phase == Phase::Ready && failing.is_empty() {
        let healthy = crate::fmt::count(st.services.len(), "service");
        return (true, format!("ready: {healthy} healthy"));
    }
    if st.phase == Phase::Ready {
        return (
            false,
            format!("not ready: degraded ({})", failing.join("; ")),
        );
    }
    if st.not_ready.is_empty() {
        (false, format!("not ready: {}", st.phase))
    } else {
        (
            false,
            format!("not ready: {} ({})", st.phase, st.not_ready.join("; ")),
        )
    }
}
