//! `cogno status`: the stack's phase and every service's state.

use super::Outcome;
use crate::control::{client, BackupStatus, Phase, ServiceState, StackStatus};
use crate::fmt::{human, latency};
use std::io::IsTerminal;
use std::path::Path;

/// The widest a cell gets; longer ones are cut with `…` (an exit reason can
/// hold a whole PATH).
const MAX_CELL: usize = 60;

pub fn status(socket: &Path, json: bool) -> Outcome {
    let st = client::get_status(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
    } else {
        let out = std::io::stdout();
        let width = out.is_terminal().then(terminal_width).flatten();
        print!("{}", render_status(&st, width, super::colored(&out)));
    }
    Ok(i32::from(st.phase != Phase::Ready))
}

/// The columns of the terminal on stdout, if it says.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize; fd 1 is only read.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0)
            .then_some(usize::from(ws.ws_col))
    }
}

/// `text` in at most `max` characters, cut with `…`.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The colour of a state on a terminal: green when it is where it should
/// be, yellow on its way, red when it needs someone.
fn state_color(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Running | ServiceState::Completed => "\x1b[32m",
        ServiceState::Waiting
        | ServiceState::Starting
        | ServiceState::Exiting
        | ServiceState::Backoff
        | ServiceState::Stopping => "\x1b[33m",
        ServiceState::Blocked
        | ServiceState::Unhealthy
        | ServiceState::Failed
        | ServiceState::Fatal => "\x1b[31m",
        ServiceState::Stopped | ServiceState::Exited => "\x1b[2m",
    }
}

/// The phase on top (with what is missing), then one row per service, fit
/// to `width` columns when the terminal says how wide it is.
fn render_status(st: &StackStatus, width: Option<usize>, color: bool) -> String {
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
    let mut states = vec![None];
    for s in &st.services {
        // A result is only news while the service has a process to probe.
        let probed = matches!(
            s.state,
            ServiceState::Starting | ServiceState::Running | ServiceState::Unhealthy
        );
        let health = match &s.health {
            Some(h) if probed => match h.latency_ms {
                Some(ms) => format!("{} {}", h.status, latency(ms)),
                None => h.status.clone(),
            },
            _ => "-".to_owned(),
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
        states.push(Some(s.state));
    }
    let mut widths = [0; 7];
    for row in &mut rows {
        for (w, cell) in widths.iter_mut().zip(row.iter_mut()) {
            *cell = cut(cell, MAX_CELL);
            *w = (*w).max(cell.chars().count());
        }
    }
    // The last column takes what the others leave of the terminal.
    let before_last: usize = widths[..6].iter().map(|w| w + 2).sum();
    let last = width.map_or(MAX_CELL, |w| w.saturating_sub(before_last).max(10));
    for (row, state) in rows.iter().zip(states) {
        let mut line = String::new();
        for (k, (cell, w)) in row.iter().zip(widths).enumerate() {
            let text = if k == row.len() - 1 {
                cut(cell, last)
            } else {
                format!("{cell:<w$}  ")
            };
            match state.filter(|_| color && k == 1) {
                // Padding outside the colour, so columns stay aligned.
                Some(st) => line.push_str(&format!(
                    "{}{cell}\x1b[0m{}",
                    state_color(st),
                    &text[cell.len()..]
                )),
                None => line.push_str(&text),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(b) = &st.backup {
        out.push('\n');
        out.push_str(&backup_lines(b));
    }
    out
}

/// The scheduled backups: the last one's outcome and when the next is due.
fn backup_lines(b: &BackupStatus) -> String {
    let last = match &b.last {
        None => "none yet".to_owned(),
        Some(r) => {
            let outcome = match (&r.archive, &r.error) {
                (_, Some(why)) => format!("failed: {why}"),
                (Some(a), None) => a.clone(),
                (None, None) => "done".to_owned(),
            };
            format!("{} {outcome} (took {})", r.started, human(r.took_ms))
        }
    };
    let next = match (&b.running_since, &b.next) {
        (Some(since), _) => format!("running since {since}"),
        (None, Some(at)) => at.clone(),
        (None, None) => "never (the schedule is not due again)".to_owned(),
    };
    format!(
        "last backup: {last}\nnext backup: {next} (schedule `{}`, keeping {} in {})\n",
        b.schedule, b.keep, b.to
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{HealthStatus, ServiceStatus};

    fn service(name: &str, state: ServiceState, last_exit: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state,
            reason: None,
            pid: None,
            uptime_ms: None,
            restarts: 0,
            last_exit: last_exit.map(str::to_owned),
            health: Some(HealthStatus {
                status: "pass".into(),
                latency_ms: Some(1.3),
                error: None,
            }),
            critical: false,
            oneshot: false,
        }
    }

    fn stack(services: Vec<ServiceStatus>) -> StackStatus {
        StackStatus {
            phase: Phase::Degraded,
            not_ready: Vec::new(),
            uptime_ms: 1000,
            version: "0.1.0".into(),
            pid: 1,
            services,
            backup: None,
        }
    }

    #[test]
    fn fits_the_terminal_and_shows_no_stale_health() {
        let long = format!(
            "could not start: `ghost` was not found in PATH ({})",
            "/usr/bin:".repeat(40)
        );
        let st = stack(vec![
            service("web", ServiceState::Running, None),
            service("api", ServiceState::Stopped, Some("exited with code 0")),
            service("ghost", ServiceState::Fatal, Some(&long)),
        ]);
        let out = render_status(&st, Some(80), false);
        for line in out.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
        let api = out.lines().find(|l| l.starts_with("api")).unwrap();
        assert!(
            !api.contains("pass"),
            "a stopped service shows no health: {api}"
        );
        let web = out.lines().find(|l| l.starts_with("web")).unwrap();
        assert!(web.contains("pass 1.3ms"), "{web}");
        let ghost = out.lines().find(|l| l.starts_with("ghost")).unwrap();
        assert!(ghost.ends_with('…'), "{ghost}");
        // Without a terminal, cells still keep to a sane width.
        let piped = render_status(&st, None, false);
        assert!(piped.lines().all(|l| l.chars().count() < 200), "{piped}");
    }

    #[test]
    fn states_are_coloured_on_a_terminal_with_columns_aligned() {
        let st = stack(vec![
            service("web", ServiceState::Running, None),
            service("ghost", ServiceState::Fatal, None),
        ]);
        let out = render_status(&st, Some(120), true);
        assert!(out.contains("\x1b[31mfatal\x1b[0m"), "{out:?}");
        assert!(out.contains("\x1b[32mrunning\x1b[0m"), "{out:?}");
        let plain = render_status(&st, Some(120), false);
        let strip = out
            .replace("\x1b[31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(strip, plain);
    }
}
