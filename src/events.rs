//! The stack's events — state transitions (which include health changes and
//! restarts), operator actions and notifications' outcomes — as a live
//! stream for `cogno events`, `GET /events` and the notifier
//! (`crate::notify`), and as the `cogno` stream of `cogno logs`; changes
//! of the stack's phase among them.
//!
//! The supervisor publishes on a tokio broadcast channel: sending never
//! waits, so a slow subscriber cannot stall supervision. A subscriber that
//! falls more than [`CAPACITY`] events behind loses the oldest ones and is
//! told so by a `lagged` event (see `control::server`).

use crate::logs::{SharedRing, Stream};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Events a subscriber may be behind before it misses some.
const CAPACITY: usize = 1024;

/// One event, as `GET /events` sends it (docs/api.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, to the millisecond.
    pub t: String,
    /// transition | action | reload | watch | ready | phase | notification |
    /// backup | backup_failed | lagged
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    pub fn new(kind: &str, service: Option<&str>) -> Event {
        Event {
            t: crate::fmt::rfc3339(SystemTime::now()),
            kind: kind.to_owned(),
            service: service.map(str::to_owned),
            from: None,
            to: None,
            reason: None,
        }
    }

    /// One line for people, without the time: `web: running → backoff (exit
    /// status 1)`, `stack: ready → degraded (web is backoff (…))`.
    pub fn text(&self) -> String {
        // A phase event's service is the cause of a critical stop, which its
        // reason names: the line is about the stack.
        let mut s = match (&self.service, self.kind.as_str()) {
            (_, "phase") => "stack: ".to_owned(),
            (Some(name), _) => format!("{name}: "),
            (None, _) => String::new(),
        };
        match (&self.from, &self.to) {
            (Some(from), Some(to)) => s.push_str(&format!("{from} → {to}")),
            _ => s.push_str(&self.kind),
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!(" ({r})"));
        }
        s
    }
}

/// The publishing side, owned by the supervisor; cloned into the control API.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Recent events as text, the `cogno` stream of `cogno logs`.
    pub ring: SharedRing,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            tx: broadcast::Sender::new(CAPACITY),
            ring: Default::default(),
        }
    }
}

impl Events {
    /// Publishes `ev` to every subscriber and to the `cogno` log stream. Never waits.
    pub fn publish(&self, ev: Event) {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_line(Stream::Stdout, &ev.text());
        // No subscriber is not an error: the event is simply not streamed.
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// A subscriber's next event; None once cogno is done. One that fell behind
/// gets a `lagged` event saying how many it missed, then goes on from the
/// oldest event still held.
pub async fn next(rx: &mut broadcast::Receiver<Event>) -> Option<Event> {
    match rx.recv().await {
        Ok(ev) => Some(ev),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            let mut ev = Event::new("lagged", None);
            ev.reason = Some(format!("{n} events were missed"));
            Some(ev)
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_and_goes_on() {
        let events = Events::default();
        let mut rx = events.subscribe();
        for i in 0..CAPACITY + 10 {
            let mut ev = Event::new("transition", Some("web"));
            ev.reason = Some(i.to_string());
            events.publish(ev);
        }
        let lagged = next(&mut rx).await.unwrap();
        assert_eq!(lagged.kind, "lagged");
        assert_eq!(lagged.text(), "lagged (10 events were missed)");
        assert_eq!(next(&mut rx).await.unwrap().reason.as_deref(), Some("10"));
        // The log stream keeps what a ring keeps, whoever subscribes.
        let tail = events.ring.lock().unwrap().tail(1);
        assert_eq!(tail[0].text, format!("web: transition ({})", CAPACITY + 9));
    }
}
