//! `cogno status`: the stack's phase and every service's state.

use crate::control::{client, Phase, StackStatus};
use crate::fmt::{human, latency};
use std::path::Path;

pub fn status(socket: &Path, json: bool) -> i32 {
    let st = match client::get_status(socket) {
        Ok(st) => st,
        Err(e) => return e.report(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
    } else {
        print!("{}", render_status(&st));
    }
    i32::from(st.phase != Phase::Ready)
}

/// The phase on top (with what is missing), then one row per service.
fn render_status(st: &StackStatus) -> String {
    let mut out = format!(
        "{}: {} services, up {} (cogno {}, pid {})\n",
        st.phase,
        st.services.len(),
        human(st.uptime_ms),
        st.version,
        st.pid
    );
    for why in &st.not_ready {
        out.push_str(&format!("  - {why}\n"));
    }
    out.push('\n');
    let mut rows = vec![[
        "SERVICE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "LAST EXIT",
    ]
    .map(String::from)];
    for s in &st.services {
        let health = match &s.health {
            None => "-".to_owned(),
            Some(h) => match h.latency_ms {
                Some(ms) => format!("{} {}", h.status, latency(ms)),
                None => h.status.clone(),
            },
        };
        rows.push([
            s.name.clone(),
            s.state.to_string(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.uptime_ms.map_or("-".into(), human),
            s.restarts.to_string(),
            health,
            s.last_exit.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (k, (cell, w)) in row.iter().zip(widths).enumerate() {
            if k == row.len() - 1 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
