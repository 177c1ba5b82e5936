//! Notifications (`notify:`): telling a hook command and webhooks about the
//! stack's troubles — a service FATAL, a critical failure stopping the stack,
//! unhealthy, recovered, the stack ready or degraded.
//!
//! The notifier only listens: it subscribes to `crate::events`' broadcast
//! like `cogno events` does, so the supervisor neither knows nor waits for
//! it. Each target (the command, each webhook) has its own task and a
//! bounded queue; a delivery has a timeout and a bounded number of retries
//! with backoff; a full queue drops the notice. Every delivery, retry, failure
//! and drop is itself an event (kind `notification`) and a log line.

mod hook;
pub mod notice;
mod webhook;

use crate::config::Notify;
use crate::events::{Event, Events};
use crate::fmt::fmt_duration;
use crate::os::reaper::Waiters;
use notice::{Notice, Watch};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

/// Notices a target may have waiting before new ones are dropped.
const QUEUE: usize = 32;
/// The wait before the first retry; it doubles with each further one.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Something a notice is delivered to.
trait Target: Send + Sync {
    /// How logs and events name it (a webhook by its host only: its path
    /// is often the credential).
    fn name(&self) -> &str;
    /// One attempt; the caller bounds it with the timeout.
    fn deliver<'a>(
        &'a self,
        notice: &'a Notice,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The running notifier: what `cogno up` waits on, briefly, before it exits
/// so that the notice of a critical failure is not lost with the process.
pub struct Notifier {
    pending: Arc<watch::Sender<usize>>,
}

impl Notifier {
    /// Starts the notifier's tasks; it hears every event published from now on.
    pub fn start(cfg: &Notify, events: &Events, waiters: &Waiters) -> Notifier {
        let pending = Arc::new(watch::Sender::new(0));
        let mut queues = Vec::new();
        let mut targets: Vec<Box<dyn Target>> = Vec::new();
        if let Some(argv) = &cfg.command {
            targets.push(Box::new(hook::Hook::new(argv, cfg, waiters.clone())));
        }
        if !cfg.webhooks.is_empty() {
            let client = webhook::client(&cfg.ca);
            for w in &cfg.webhooks {
                targets.push(Box::new(webhook::Webhook::new(w, client.clone())));
            }
        }
        for target in targets {
            let (tx, rx) = mpsc::channel(QUEUE);
            let name = target.name().to_owned();
            let worker = Worker {
                target,
                events: events.clone(),
                timeout: cfg.timeout,
                retries: cfg.retries,
                pending: pending.clone(),
            };
            tokio::spawn(worker.run(rx));
            queues.push((name, tx));
        }
        let dispatch = Dispatch {
            on: cfg.on.clone(),
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
            queues,
            events: events.clone(),
            pending: pending.clone(),
        };
        tokio::spawn(dispatch.run(events.subscribe()));
        Notifier { pending }
    }

    /// Resolves once no notice is queued or being delivered. The caller
    /// bounds the wait.
    pub async fn idle(&self) {
        // The dispatcher runs on this thread: let it take the last events
        // off the broadcast before counting what is pending.
        tokio::task::yield_now().await;
        let _ = self.pending.subscribe().wait_for(|n| *n == 0).await;
    }
}

/// Reads the stack's events and queues the notices users asked for.
struct Dispatch {
    on: Vec<crate::config::NotifyOn>,
    host: String,
    queues: Vec<(String, mpsc::Sender<Notice>)>,
    events: Events,
    pending: Arc<watch::Sender<usize>>,
}

impl Dispatch {
    /// Until cogno is done: the stack's events from `rx`.
    async fn run(self, mut rx: tokio::sync::broadcast::Receiver<Event>) {
        let mut watch = Watch::default();
        while let Some(ev) = crate::events::next(&mut rx).await {
            if ev.kind == "lagged" {
                warn!("notifications: {}; some notices may not be sent", ev.text());
                continue;
            }
            let Some(notice) = watch.notice(&ev, &self.host) else {
                continue;
            };
            if !self.on.contains(&notice.event) {
                continue;
            }
            for (name, tx) in &self.queues {
                self.pending.send_modify(|n| *n += 1);
                if tx.try_send(notice.clone()).is_err() {
                    self.pending.send_modify(|n| *n -= 1);
                    let why = format!("{QUEUE} notices are already waiting; this one is dropped");
                    report(&self.events, &notice, name, "dropped", &why);
                }
            }
        }
    }
}

/// Delivers one target's notices, one at a time.
struct Worker {
    target: Box<dyn Target>,
    events: Events,
    timeout: Duration,
    retries: u32,
    pending: Arc<watch::Sender<usize>>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Notice>) {
        while let Some(notice) = rx.recv().await {
            self.deliver(&notice).await;
            self.pending.send_modify(|n| *n -= 1);
        }
    }

    async fn deliver(&self, notice: &Notice) {
        let name = self.target.name();
        let attempts = self.retries + 1;
        for attempt in 1..=attempts {
            let outcome = tokio::time::timeout(self.timeout, self.target.deliver(notice))
                .await
                .unwrap_or_else(|_| Err(format!("no answer in {}", fmt_duration(self.timeout))));
            let why = match outcome {
                Ok(()) => return report(&self.events, notice, name, "delivered", "delivered"),
                Err(why) => why,
            };
            if attempt == attempts {
                let why = format!(
                    "{why}; gave up after {}",
                    crate::fmt::count(attempts as usize, "attempt")
                );
                return report(&self.events, notice, name, "failed", &why);
            }
            let wait = retry_wait(attempt);
            let why = format!(
                "{why} (attempt {attempt} of {attempts}); retrying in {}",
                fmt_duration(wait)
            );
            report(&self.events, notice, name, "retrying", &why);
            tokio::time::sleep(wait).await;
        }
    }
}

/// The wait after failed attempt `n` (1-based): 1 s, 2 s, 4 s… at most a minute.
fn retry_wait(n: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(MAX_RETRY_WAIT)
}

/// A delivery's outcome, as a `notification` event and a log line.
fn report(events: &Events, notice: &Notice, target: &str, outcome: &str, why: &str) {
    let reason = format!("{} to {target}: {why}", notice.event.as_str());
    match outcome {
        "delivered" => info!("notification {reason}"),
        "failed" | "dropped" => error!("notification {reason}"),
        _ => warn!("notification {reason}"),
    }
    let mut ev = Event::new("notification", notice.service.as_deref());
    ev.to = Some(outcome.to_owned());
    ev.reason = Some(reason);
    events.publish(ev);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| retry_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
