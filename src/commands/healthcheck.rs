//! `cogno healthcheck`: exit 0 when the stack is ready, else 1 with one line
//! saying why (for a container's HEALTHCHECK).

use super::Outcome;
use crate::control::client::get_status;
use crate::control::Phase;
use std::path::Path;

pub fn healthcheck(socket: &Path) -> Outcome {
    let st = get_status(socket)?;
    if st.phase == Phase::Ready {
        println!("ready: {} services healthy", st.services.len());
        return Ok(0);
    }
    if st.not_ready.is_empty() {
        println!("not ready: {}", st.phase);
    } else {
        println!("not ready: {} ({})", st.phase, st.not_ready.join("; "));
    }
    Ok(1)
}
