//! The restart decision: once an instance is gone, what its restart policy,
//! the way it ended, its recent history and how long it was healthy say
//! should happen next. Pure: no clock, no I/O; the table test below is the
//! policy's specification (docs/behaviour.md, "Starting and restarting").

use crate::config::{Backoff, RestartPolicy, Service};
use std::time::Duration;

/// The part of a service's configuration the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub policy: RestartPolicy,
    pub oneshot: bool,
    pub max_restarts: u32,
    pub backoff: Backoff,
}

impl Rule {
    pub fn of(svc: &Service) -> Rule {
        Rule {
            policy: svc.restart,
            oneshot: svc.oneshot,
            max_restarts: svc.max_restarts,
            backoff: svc.backoff,
        }
    }
}

/// The streaks the policy counts; reset by an operator's start or restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Consecutive starts that ended before the service became healthy.
    pub failed_starts: u32,
    /// Consecutive crashes after being healthy (reset after `reset_after` healthy).
    pub crash_streak: u32,
    /// Consecutive spawns that failed for lack of descriptors or processes
    /// (reset by the next spawn that succeeds).
    pub starved: u32,
}

/// How an instance ended, as far as the policy cares.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub exit: Exit,
    /// How long it had been healthy when it ended; None if it never was.
    pub healthy_for: Option<Duration>,
}

/// Whose doing an ending was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with code 0.
    Success,
    /// It failed: a code other than 0, a signal, a spawn or exec it caused to fail.
    Failure,
    /// Its program cannot be run as it is (missing, not executable): no
    /// attempt can succeed until someone installs it or fixes `command`.
    CannotRun,
    /// It was never started: cogno was out of descriptors (EMFILE, ENFILE)
    /// or the system out of processes (EAGAIN from fork). Not the service's
    /// failure — idle clients of `health_listen` or a fork bomb elsewhere
    /// must not make it FATAL — so it is retried and counts toward nothing.
    Starved,
}

/// The waits between spawns that failed for lack of descriptors or
/// processes: short ones, whatever the service's `backoff:` says, as the
/// service itself is fine (doubling from the first to the longest).
const STARVED_RETRY_FIRST: Duration = Duration::from_millis(100);
pub const STARVED_RETRY_MAX: Duration = Duration::from_secs(1);

/// The state a service is left in when it is not restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A oneshot that exited 0.
    Completed,
    /// Ended, and its policy says not to restart it.
    Exited,
    /// Failed, and its policy says not to restart it.
    Failed,
    /// `max_restarts` failed starts in a row.
    Fatal,
}

/// What happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay` (zero: at once).
    Restart { delay: Duration, after: Why },
    /// It could not be started for lack of descriptors or processes: try
    /// again after `delay`; `attempt` counts the tries of this episode.
    Retry { delay: Duration, attempt: u32 },
    /// Leave it in this state.
    GiveUp { end: End, after: Why },
}

/// Which rule applied: the log line that announces the decision differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A oneshot that exited 0.
    Completed,
    /// It ended before ever becoming healthy (a oneshot always counts as this).
    FailedStart { attempt: u32 },
    /// It ended after having been healthy.
    AfterRunning,
    /// Its program cannot be run: given up at once, without retries.
    CannotRun,
}

/// The restart decision, and the history it leaves behind.
pub fn decide(rule: &Rule, mut history: History, ending: Ending) -> (Decision, History) {
    let success = match ending.exit {
        Exit::Success => true,
        Exit::Failure | Exit::CannotRun => false,
        // Whatever its policy: it never ran, so it never ended either.
        Exit::Starved => {
            history.starved += 1;
            let attempt = history.starved;
            let delay = (STARVED_RETRY_FIRST * (1 << (attempt - 1).min(4))).min(STARVED_RETRY_MAX);
            return (Decision::Retry { delay, attempt }, history);
        }
    };
    let restarts = match rule.policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !success,
        RestartPolicy::Never => false,
    };
    let not_restarted = if success { End::Exited } else { End::Failed };
    if ending.exit == Exit::CannotRun {
        history.failed_starts += 1;
        let end = if restarts { End::Fatal } else { not_restarted };
        let after = Why::CannotRun;
        return (Decision::GiveUp { end, after }, history);
    }
    if rule.oneshot && success {
        let after = Why::Completed;
        let end = End::Completed;
        return (Decision::GiveUp { end, after }, history);
    }
    let Some(healthy_for) = ending.healthy_for.filter(|_| !rule.oneshot) else {
        history.failed_starts += 1;
        let attempt = history.failed_starts;
        let after = Why::FailedStart { attempt };
        let decision = if !restarts {
            Decision::GiveUp {
                end: not_restarted,
                after,
            }
        } else if attempt >= rule.max_restarts {
            Decision::GiveUp {
                end: End::Fatal,
                after,
            }
        } else {
            let delay = rule.backoff.delay(attempt);
            Decision::Restart { delay, after }
        };
        return (decision, history);
    };
    let after = Why::AfterRunning;
    if !restarts {
        let end = not_restarted;
        return (Decision::GiveUp { end, after }, history);
    }
    if healthy_for >= rule.backoff.reset_after {
        history.crash_streak = 0;
    }
    history.crash_streak += 1;
    // The first crash after a healthy stretch is restarted at once.
    let delay = match history.crash_streak {
        1 => Duration::ZERO,
        n => rule.backoff.delay(n - 1),
    };
    (Decision::Restart { delay, after }, history)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use RestartPolicy::{Always, Never, OnFailure};

    const S: Duration = Duration::from_secs(1);

    /// A rule with max_restarts 3 and a 1 s × 2 backoff capped at 4 s, reset after 60 s.
    pub(in crate::supervisor) fn rule(policy: RestartPolicy, oneshot: bool) -> Rule {
        Rule {
            policy,
            oneshot,
            max_restarts: 3,
            backoff: Backoff {
                initial: S,
                max: 4 * S,
                multiplier: 2.0,
                reset_after: 60 * S,
            },
        }
    }

    fn restart(delay: Duration, after: Why) -> Decision {
        Decision::Restart { delay, after }
    }

    fn give_up(end: End, after: Why) -> Decision {
        Decision::GiveUp { end, after }
    }

    fn hist(failed_starts: u32, crash_streak: u32, starved: u32) -> History {
        History {
            failed_starts,
            crash_streak,
            starved,
        }
    }

    fn retry(delay: Duration, attempt: u32) -> Decision {
        Decision::Retry { delay, attempt }
    }

    /// Every row of the policy: (policy, oneshot, how it ended, healthy for,
    /// history before) → (decision, history after).
    #[test]
    fn restart_policy_matrix() {
        let fs = |attempt| Why::FailedStart { attempt };
        let ran = Why::AfterRunning;
        let never_healthy = None;
        let briefly = Some(S);
        let long = Some(60 * S);
        let (ok, failed, starved) = (Exit::Success, Exit::Failure, Exit::Starved);
        #[rustfmt::skip]
        let rows = [
            // A oneshot that exits 0 completes, whatever its policy.
            (Never, true, ok, never_healthy, hist(0, 0, 0), give_up(End::Completed, Why::Completed), hist(0, 0, 0)),
            (OnFailure, true, ok, long, hist(2, 0, 0), give_up(End::Completed, Why::Completed), hist(2, 0, 0)),
            // A failing oneshot is a failed start, even after a health check passed.
            (Never, true, failed, never_healthy, hist(0, 0, 0), give_up(End::Failed, fs(1)), hist(1, 0, 0)),
            (OnFailure, true, failed, long, hist(0, 0, 0), restart(S, fs(1)), hist(1, 0, 0)),
            // Failed starts: backoff.initial × multiplier^(n-1), capped, fatal at max_restarts.
            (Always, false, failed, never_healthy, hist(0, 0, 0), restart(S, fs(1)), hist(1, 0, 0)),
            (Always, false, failed, never_healthy, hist(1, 0, 0), restart(2 * S, fs(2)), hist(2, 0, 0)),
            (Always, false, ok, never_healthy, hist(2, 0, 0), give_up(End::Fatal, fs(3)), hist(3, 0, 0)),
            (OnFailure, false, failed, never_healthy, hist(2, 0, 0), give_up(End::Fatal, fs(3)), hist(3, 0, 0)),
            // A policy that does not restart: exited (code 0) or failed.
            (OnFailure, false, ok, never_healthy, hist(0, 0, 0), give_up(End::Exited, fs(1)), hist(1, 0, 0)),
            (Never, false, failed, never_healthy, hist(0, 0, 0), give_up(End::Failed, fs(1)), hist(1, 0, 0)),
            (Never, false, ok, briefly, hist(0, 0, 0), give_up(End::Exited, ran), hist(0, 0, 0)),
            (Never, false, failed, long, hist(0, 0, 0), give_up(End::Failed, ran), hist(0, 0, 0)),
            (OnFailure, false, ok, long, hist(0, 3, 0), give_up(End::Exited, ran), hist(0, 3, 0)),
            // Crashes after being healthy: the first at once, then backoff.
            (Always, false, ok, briefly, hist(0, 0, 0), restart(Duration::ZERO, ran), hist(0, 1, 0)),
            (OnFailure, false, failed, briefly, hist(0, 1, 0), restart(S, ran), hist(0, 2, 0)),
            (Always, false, failed, briefly, hist(0, 2, 0), restart(2 * S, ran), hist(0, 3, 0)),
            (Always, false, failed, briefly, hist(0, 9, 0), restart(4 * S, ran), hist(0, 10, 0)),
            // Healthy for reset_after: the streak starts over.
            (Always, false, failed, long, hist(0, 9, 0), restart(Duration::ZERO, ran), hist(0, 1, 0)),
            // A crash never counts towards max_restarts.
            (Always, false, failed, briefly, hist(0, 3, 0), restart(4 * S, ran), hist(0, 4, 0)),
            // No descriptors or processes to start it: retried whatever the
            // policy, within a second, counting toward neither streak.
            (Always, false, starved, never_healthy, hist(2, 0, 0), retry(S / 10, 1), hist(2, 0, 1)),
            (Never, false, starved, never_healthy, hist(0, 0, 0), retry(S / 10, 1), hist(0, 0, 1)),
            (Always, false, starved, never_healthy, hist(0, 0, 1), retry(S / 5, 2), hist(0, 0, 2)),
            (OnFailure, true, starved, never_healthy, hist(0, 0, 4), retry(S, 5), hist(0, 0, 5)),
            (Always, false, starved, never_healthy, hist(4, 2, 40), retry(S, 41), hist(4, 2, 41)),
        ];
        for (n, (policy, oneshot, exit, healthy_for, before, want, after)) in
            rows.into_iter().enumerate()
        {
            let ending = Ending { exit, healthy_for };
            let got = decide(&rule(policy, oneshot), before, ending);
            assert_eq!(
                got,
                (want, after),
                "row {n}: {policy} oneshot={oneshot} {ending:?} {before:?}"
            );
        }
    }

    /// A program that cannot run (missing, not executable) is given up on at
    /// once — fatal if its policy would have retried —, whatever the streaks.
    #[test]
    fn a_program_that_cannot_run_is_not_retried() {
        #[rustfmt::skip]
        let rows = [
            (Always, false, hist(0, 0, 0), give_up(End::Fatal, Why::CannotRun), hist(1, 0, 0)),
            (OnFailure, true, hist(0, 2, 0), give_up(End::Fatal, Why::CannotRun), hist(1, 2, 0)),
            (Never, false, hist(0, 0, 0), give_up(End::Failed, Why::CannotRun), hist(1, 0, 0)),
        ];
        for (policy, oneshot, before, want, after) in rows {
            let ending = Ending {
                exit: Exit::CannotRun,
                healthy_for: None,
            };
            let got = decide(&rule(policy, oneshot), before, ending);
            assert_eq!(got, (want, after), "{policy} oneshot={oneshot}");
        }
    }
}
