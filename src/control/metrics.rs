//! `GET /metrics`: the stack in Prometheus' text exposition format (0.0.4),
//! for the control socket and, with `metrics: true`, `health_listen`.
//! The supervisor keeps one [`ServiceMetrics`] per service, fed where the
//! data flows (each step of the state machine, each probe result), and
//! renders a scrape into one String (docs/operations.md, "Metrics").

use super::{Phase, ServiceState, StackStatus};
use crate::os::process::ExitReason;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Upper bounds, in seconds, of the health check latency buckets: probes
/// answer in about a millisecond when all is well, seconds when not.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const STATES: [ServiceState; 13] = [
    ServiceState::Waiting,
    ServiceState::Blocked,
    ServiceState::Starting,
    ServiceState::Running,
    ServiceState::Unhealthy,
    ServiceState::Exiting,
    ServiceState::Backoff,
    ServiceState::Stopping,
    ServiceState::Stopped,
    ServiceState::Completed,
    ServiceState::Exited,
    ServiceState::Failed,
    ServiceState::Fatal,
];

const PHASES: [Phase; 4] = [
    Phase::Starting,
    Phase::Ready,
    Phase::Degraded,
    Phase::Stopping,
];

/// What the status snapshot does not say of a service: totals since cogno
/// started, and when its current state began.
#[derive(Debug)]
pub struct ServiceMetrics {
    failed_starts: u64,
    /// The state machine's count of failed starts in a row, last seen.
    in_a_row: u32,
    checks_pass: u64,
    checks_fail: u64,
    /// Per bucket (not cumulative); the last is +Inf.
    latency: [u64; BUCKETS.len() + 1],
    latency_sum: f64,
    last_exit_code: Option<i32>,
    state: ServiceState,
    since: Instant,
}

impl ServiceMetrics {
    pub fn new(now: Instant) -> ServiceMetrics {
        ServiceMetrics {
            failed_starts: 0,
            in_a_row: 0,
            checks_pass: 0,
            checks_fail: 0,
            latency: [0; BUCKETS.len() + 1],
            latency_sum: 0.0,
            last_exit_code: None,
            state: ServiceState::Waiting,
            since: now,
        }
    }

    /// Counts one health check's result.
    pub fn probe(&mut self, ok: bool, latency: Duration) {
        if ok {
            self.checks_pass += 1;
        } else {
            self.checks_fail += 1;
        }
        let s = latency.as_secs_f64();
        let k = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[k] += 1;
        self.latency_sum += s;
    }

    /// Takes in the state machine as it is after a step: a new state, a
    /// failed start (its count in a row rose), an exit.
    pub fn observe(
        &mut self,
        state: ServiceState,
        failed_in_a_row: u32,
        last_exit: Option<&ExitReason>,
        now: Instant,
    ) {
        if state != self.state {
            self.state = state;
            self.since = now;
        }
        if failed_in_a_row > self.in_a_row {
            self.failed_starts += u64::from(failed_in_a_row - self.in_a_row);
        }
        self.in_a_row = failed_in_a_row;
        self.last_exit_code = match last_exit {
            Some(ExitReason::Code(c)) => Some(*c),
            // As a shell reports it.
            Some(ExitReason::Signal { signal, .. }) => Some(128 + *signal as i32),
            Some(ExitReason::LikelyOom) => Some(128 + libc::SIGKILL),
            _ => self.last_exit_code,
        };
    }
}

/// Writes `# HELP` and `# TYPE` for one metric.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP cogno_{name} {help}\n# TYPE cogno_{name} {kind}"
    );
}

/// A label value, escaped as the format asks (backslash, quote, newline).
fn label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One sample `cogno_NAME{service="S"EXTRA} VALUE`.
fn sample(
    out: &mut String,
    name: &str,
    service: &str,
    extra: impl std::fmt::Display,
    value: impl std::fmt::Display,
) {
    let _ = write!(out, "cogno_{name}{{service=\"");
    label(out, service);
    let _ = writeln!(out, "\"{extra}}} {value}");
}

/// The whole scrape. `services` is in the order of `st.services`.
pub fn render(st: &StackStatus, services: &[&ServiceMetrics], now: Instant) -> String {
    let mut out = String::with_capacity(1024 + st.services.len() * 3072);
    let all = || st.services.iter().zip(services.iter().copied());

    head(
        &mut out,
        "service_up",
        "gauge",
        "1 when the service is running (healthy, if it has a health check), else 0.",
    );
    for (s, _) in all() {
        let up = u8::from(s.state == ServiceState::Running);
        sample(&mut out, "service_up", &s.name, "", up);
    }
    head(
        &mut out,
        "service_state",
        "gauge",
        "1 for the service's current state, 0 for the others.",
    );
    for (s, _) in all() {
        for state in STATES {
            let v = u8::from(s.state == state);
            let extra = format_args!(",state=\"{state}\"");
            sample(&mut out, "service_state", &s.name, extra, v);
        }
    }
    head(
        &mut out,
        "service_restarts_total",
        "counter",
        "Times the service was started again since cogno started.",
    );
    for (s, _) in all() {
        sample(&mut out, "service_restarts_total", &s.name, "", s.restarts);
    }
    head(&mut out, "service_failed_starts_total", "counter", "Starts that failed: the program could not run, exited or missed its start deadline before it was healthy.");
    for (s, m) in all() {
        sample(
            &mut out,
            "service_failed_starts_total",
            &s.name,
            "",
            m.failed_starts,
        );
    }
    head(&mut out, "service_last_exit_code", "gauge", "Exit status of the service's last instance (128+N for signal N); absent until one has ended.");
    for (s, m) in all() {
        if let Some(c) = m.last_exit_code {
            sample(&mut out, "service_last_exit_code", &s.name, "", c);
        }
    }
    head(
        &mut out,
        "service_state_seconds",
        "gauge",
        "Seconds the service has been in its current state.",
    );
    for (s, m) in all() {
        let secs = now.saturating_duration_since(m.since).as_secs_f64();
        sample(
            &mut out,
            "service_state_seconds",
            &s.name,
            "",
            format_args!("{secs:.3}"),
        );
    }
    head(
        &mut out,
        "health_checks_total",
        "counter",
        "Health check results, by result (pass or fail).",
    );
    for (s, m) in all().filter(|(s, _)| s.health.is_some()) {
        sample(
            &mut out,
            "health_checks_total",
            &s.name,
            ",result=\"pass\"",
            m.checks_pass,
        );
        sample(
            &mut out,
            "health_checks_total",
            &s.name,
            ",result=\"fail\"",
            m.checks_fail,
        );
    }
    head(
        &mut out,
        "health_check_duration_seconds",
        "histogram",
        "How long health checks took to answer.",
    );
    for (s, m) in all().filter(|(s, _)| s.health.is_some()) {
        let mut cumulative = 0;
        for (k, n) in m.latency.iter().enumerate() {
            cumulative += n;
            let _ = write!(
                out,
                "cogno_health_check_duration_seconds_bucket{{service=\""
            );
            label(&mut out, &s.name);
            match BUCKETS.get(k) {
                Some(le) => {
                    let _ = writeln!(out, "\",le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "\",le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        sample(
            &mut out,
            "health_check_duration_seconds_sum",
            &s.name,
            "",
            m.latency_sum,
        );
        sample(
            &mut out,
            "health_check_duration_seconds_count",
            &s.name,
            "",
            cumulative,
        );
    }
    head(
        &mut out,
        "stack_phase",
        "gauge",
        "1 for the stack's current phase, 0 for the others.",
    );
    for phase in PHASES {
        let _ = writeln!(
            out,
            "cogno_stack_phase{{phase=\"{phase}\"}} {}",
            u8::from(st.phase == phase)
        );
    }
    process(&mut out, st);
    out
}

/// cogno's own process: memory, file descriptors, uptime, build.
fn process(out: &mut String, st: &StackStatus) {
    if let Some(rss) = rss_bytes() {
        head(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "cogno's resident memory.",
        );
        let _ = writeln!(out, "cogno_process_resident_memory_bytes {rss}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        head(
            out,
            "process_open_fds",
            "gauge",
            "File descriptors cogno has open.",
        );
        let _ = writeln!(out, "cogno_process_open_fds {}", fds.count());
    }
    head(
        out,
        "uptime_seconds",
        "gauge",
        "Seconds since cogno started.",
    );
    let _ = writeln!(
        out,
        "cogno_uptime_seconds {:.3}",
        st.uptime_ms as f64 / 1000.0
    );
    head(
        out,
        "build_info",
        "gauge",
        "Always 1; cogno's version and commit as labels.",
    );
    out.push_str("cogno_build_info{version=\"");
    label(out, &st.version);
    out.push_str("\",commit=\"");
    label(out, env!("COGNO_COMMIT"));
    out.push_str("\"} 1\n");
}

/// Resident pages (the second field of /proc/self/statm), in bytes.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_buckets_and_label_values_are_escaped() {
        let now = Instant::now();
        let mut m = ServiceMetrics::new(now);
        m.probe(true, Duration::from_micros(800));
        m.probe(false, Duration::from_secs(9));
        assert_eq!(m.latency[0], 1);
        assert_eq!(m.latency[BUCKETS.len()], 1);
        let mut out = String::new();
        label(&mut out, "a\"b\\c\nd");
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }
}
