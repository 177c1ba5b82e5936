//! What a notification says: which of the stack's events are worth telling
//! (`Watch`, pure: unit-tested without processes), and the notice in the
//! forms its receivers take — a JSON body for webhooks and hooks' stdin,
//! with Slack's `text` and Discord's `content`, and environment variables
//! for a hook command.

use crate::config::NotifyOn;
use crate::events::Event;
use serde_json::{json, Value};
use std::collections::HashSet;

/// One notification, whatever receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event: NotifyOn,
    /// The service it is about; for `critical`, the one that stopped the stack.
    pub service: Option<String>,
    /// The state or phase before and after (`running` → `fatal`).
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: Option<String>,
    /// When it happened (RFC 3339, UTC).
    pub t: String,
    /// The machine cogno runs on, so one channel can serve several stacks.
    pub host: String,
}

impl Notice {
    /// One line for people, as a chat message shows it.
    pub fn text(&self) -> String {
        let about = self.service.as_deref().unwrap_or("the stack");
        let what = match self.event {
            NotifyOn::Fatal => format!("{about} has failed for good ({})", self.to_or("fatal")),
            NotifyOn::Critical => format!("the stack is stopping: critical service {about} failed"),
            NotifyOn::Unhealthy => format!("{about} is unhealthy"),
            NotifyOn::Recovered => format!("{about} has recovered"),
            NotifyOn::Ready => "the stack is ready".to_owned(),
            NotifyOn::Degraded => "the stack is degraded".to_owned(),
            NotifyOn::BackupFailed => "a scheduled backup failed".to_owned(),
        };
        let why = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        format!("cogno on {}: {what}{why}", self.host)
    }

    fn to_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.to.as_deref().unwrap_or(default)
    }

    /// The JSON body (docs/operations.md): the event's fields, plus `text`
    /// (Slack) and `content` (Discord) so an incoming-webhook URL works as is.
    pub fn json(&self) -> Value {
        let text = self.text();
        json!({
            "event": self.event.as_str(),
            "service": self.service,
            "from": self.from,
            "to": self.to,
            "reason": self.reason,
            "t": self.t,
            "host": self.host,
            "text": text,
            "content": text,
        })
    }

    /// The environment of a hook command. COGNO_SERVICE is not one of them:
    /// it marks a service's processes, and a hook is none of them.
    pub fn env(&self) -> Vec<(String, String)> {
        let field = |v: &Option<String>| v.clone().unwrap_or_default();
        [
            ("COGNO_EVENT", self.event.as_str().to_owned()),
            ("COGNO_EVENT_SERVICE", field(&self.service)),
            ("COGNO_EVENT_FROM", field(&self.from)),
            ("COGNO_EVENT_TO", field(&self.to)),
            ("COGNO_EVENT_REASON", field(&self.reason)),
            ("COGNO_EVENT_TIME", self.t.clone()),
            ("COGNO_EVENT_HOST", self.host.clone()),
            ("COGNO_EVENT_TEXT", self.text()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Turns the stack's events into notices. It remembers which services have
/// been in trouble, so that their return to `running` is a `recovered`.
#[derive(Debug, Default)]
pub struct Watch {
    troubled: HashSet<String>,
}

impl Watch {
    /// The notice `ev` makes, whether or not anyone listens for its kind.
    pub fn notice(&mut self, ev: &Event, host: &str) -> Option<Notice> {
        let event = self.event(ev)?;
        Some(Notice {
            event,
            service: ev.service.clone(),
            from: ev.from.clone(),
            to: ev.to.clone(),
            reason: ev.reason.clone(),
            t: ev.t.clone(),
            host: host.to_owned(),
        })
    }

    fn event(&mut self, ev: &Event) -> Option<NotifyOn> {
        // The one event that is no change from one state to another.
        if ev.kind == "backup_failed" {
            return Some(NotifyOn::BackupFailed);
        }
        let to = ev.to.as_deref()?;
        Some(match (ev.kind.as_str(), to) {
            ("transition", "fatal" | "failed" | "unhealthy" | "backoff") => {
                self.troubled.insert(ev.service.clone()?);
                match to {
                    "unhealthy" => NotifyOn::Unhealthy,
                    "backoff" => return None,
                    _ => NotifyOn::Fatal,
                }
            }
            ("transition", "running") if self.troubled.remove(ev.service.as_deref()?) => {
                NotifyOn::Recovered
            }
            ("phase", "ready") => NotifyOn::Ready,
            ("phase", "degraded") => NotifyOn::Degraded,
            // A stop with a cause is a critical service's failure; without
            // one it is an operator's or a signal's.
            ("phase", "stopping") if ev.service.is_some() => NotifyOn::Critical,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, service: Option<&str>, from: &str, to: &str) -> Event {
        let mut e = Event::new(kind, service);
        e.from = Some(from.into());
        e.to = Some(to.into());
        e
    }

    fn events_of(watch: &mut Watch, evs: &[Event]) -> Vec<Option<NotifyOn>> {
        evs.iter()
            .map(|e| watch.notice(e, "h").map(|n| n.event))
            .collect()
    }

    #[test]
    fn troubles_and_their_end_make_notices() {
        let mut w = Watch::default();
        let got = events_of(
            &mut w,
            &[
                ev("transition", Some("web"), "starting", "running"),
                ev("transition", Some("web"), "running", "unhealthy"),
                ev("transition", Some("web"), "unhealthy", "running"),
                ev("transition", Some("web"), "running", "backoff"),
                ev("transition", Some("web"), "backoff", "starting"),
                ev("transition", Some("web"), "starting", "running"),
                ev("transition", Some("web"), "running", "fatal"),
                ev("transition", Some("web"), "fatal", "starting"),
                ev("transition", Some("web"), "starting", "running"),
                ev("phase", None, "starting", "ready"),
                ev("phase", None, "ready", "degraded"),
                ev("phase", None, "degraded", "stopping"),
                ev("phase", Some("db"), "ready", "stopping"),
                ev("action", Some("web"), "", "restart"),
                ev("notification", Some("web"), "", "failed"),
            ],
        );
        use NotifyOn::*;
        assert_eq!(
            got,
            [
                None,
                Some(Unhealthy),
                Some(Recovered),
                None,
                None,
                Some(Recovered),
                Some(Fatal),
                None,
                Some(Recovered),
                Some(Ready),
                Some(Degraded),
                None,
                Some(Critical),
                None,
                None,
            ]
        );
    }

    #[test]
    fn the_payload_carries_the_event_and_a_chat_text() {
        let mut e = ev("transition", Some("web"), "backoff", "fatal");
        e.reason = Some("exit status 1; 5 failed starts in a row".into());
        let n = Watch::default().notice(&e, "box1").unwrap();
        let body = n.json();
        assert_eq!(body["event"], "fatal");
        assert_eq!(body["service"], "web");
        assert_eq!(body["from"], "backoff");
        assert_eq!(body["to"], "fatal");
        assert_eq!(body["host"], "box1");
        assert_eq!(body["t"], e.t.as_str());
        let text = "cogno on box1: web has failed for good (fatal): exit status 1; 5 failed starts in a row";
        assert_eq!(body["text"], text, "Slack's field");
        assert_eq!(body["content"], text, "Discord's field");
        let env = n.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("COGNO_EVENT"), Some("fatal"));
        assert_eq!(get("COGNO_EVENT_SERVICE"), Some("web"));
        assert_eq!(get("COGNO_EVENT_TEXT"), Some(text));
        assert_eq!(
            get("COGNO_SERVICE"),
            None,
            "the marker of a service's processes"
        );
    }

    #[test]
    fn a_failed_backup_is_a_notice_and_a_successful_one_is_not() {
        let mut failed = Event::new("backup_failed", None);
        failed.reason = Some("cannot create /b: Not a directory".into());
        let n = Watch::default().notice(&failed, "h").unwrap();
        assert_eq!(n.event, NotifyOn::BackupFailed);
        assert_eq!(
            n.text(),
            "cogno on h: a scheduled backup failed: cannot create /b: Not a directory"
        );
        assert_eq!(n.json()["event"], "backup_failed");
        assert!(Watch::default()
            .notice(&Event::new("backup", None), "h")
            .is_none());
    }

    #[test]
    fn a_critical_stop_names_its_cause() {
        let mut e = ev("phase", Some("db"), "ready", "stopping");
        e.reason = Some("exit status 7".into());
        let n = Watch::default().notice(&e, "h").unwrap();
        assert_eq!(
            n.text(),
            "cogno on h: the stack is stopping: critical service db failed: exit status 7"
        );
        assert_eq!(n.json()["service"], "db");
    }
}
