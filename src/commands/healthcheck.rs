//! `cogno healthcheck`: exit 0 when the stack is ready, else 1 with one line
//! saying why (for a container's HEALTHCHECK).

use crate::control::client::get_status;
use crate::control::Phase;
use std::path::Path;

pub fn healthcheck(socket: &Path) -> i32 {
    let st = match get_status(socket) {
        Ok(st) => st,
        Err(e) => return e.report(),
    };
    if st.phase == Phase::Ready {
        println!("ready: {} services healthy", st.services.len());
        return 0;
    }
    if st.not_ready.is_empty() {
        println!("not ready: {}", st.phase);
    } else {
        println!("not ready: {} ({})", st.phase, st.not_ready.join("; "));
    }
    1
}
