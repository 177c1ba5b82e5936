//! `cogno healthcheck`: exit 0 when the stack is ready, else 1 with one line
//! saying why (for a container's HEALTHCHECK).

use super::Outcome;
use crate::control::client::get_status;
use crate::control::{Phase, ServiceState};
use std::path::Path;

pub fn healthcheck(socket: &Path) -> Outcome {
    let st = get_status(socket)?;
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
        println!(
            "ready: {} healthy",
            crate::fmt::count(st.services.len(), "service")
        );
        return Ok(0);
    }
    if st.phase == Phase::Ready {
        println!("not ready: degraded ({})", failing.join("; "));
        return Ok(1);
    }
    if st.not_ready.is_empty() {
        println!("not ready: {}", st.phase);
    } else {
        println!("not ready: {} ({})", st.phase, st.not_ready.join("; "));
    }
    Ok(1)
}
