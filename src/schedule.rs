//! Cron schedules (`backup.schedule`): parsed once by the config builder,
//! read in the machine's local time (`TZ`, else /etc/localtime), and asked
//! for the next instant they are due. Five fields (minute hour day month
//! weekday), or six with seconds first; no year field.

use chrono::{DateTime, Local};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::time::SystemTime;

#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    /// As written, for logs and status.
    text: String,
}

/// As written: what a reload compares (croner's parsed form is no clearer).
impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl Schedule {
    /// `text` as a schedule, or why it is not one: croner's reason, with
    /// the field it is about when one field alone is wrong.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = parser().parse(text).map_err(|e| {
            let why = e.to_string();
            match bad_field(text) {
                Some(field) => format!("{field}: {why}"),
                None => why,
            }
        })?;
        Ok(Schedule {
            cron,
            text: text.to_owned(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `after` that the schedule is due; None
    /// when it never is again (`0 0 30 2 *`, the 30th of February).
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let local: DateTime<Local> = after.into();
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.into())
    }
}

/// Sleeps until the wall clock reaches `at` (the time a schedule gave): the
/// timer is all that wakes the caller, no polling.
pub async fn sleep_until(at: SystemTime) {
    tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// The first field that is wrong on its own (`the hour field \`25\``):
/// croner's errors do not say which one.
fn bad_field(text: &str) -> Option<String> {
    const NAMES: [&str; 6] = [
        "second",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
    ];
    let fields: Vec<&str> = text.split_whitespace().collect();
    let names = match fields.len() {
        5 => &NAMES[1..],
        6 => &NAMES[..],
        _ => return None,
    };
    (0..fields.len()).find_map(|i| {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[i] } else { "*" })
            .collect();
        parser()
            .parse(&alone.join(" "))
            .is_err()
            .then(|| format!("the {} field `{}`", names[i], fields[i]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn five_and_six_fields_parse_seven_do_not() {
        assert!(Schedule::parse("0 3 * * *").is_ok());
        assert!(Schedule::parse("*/2 * * * * *").is_ok());
        assert!(Schedule::parse("0 0 3 * * * 2030").is_err());
        assert_eq!(
            Schedule::parse("0 25 * * *").unwrap_err(),
            "the hour field `25`: Component error: Number out of bounds."
        );
        assert!(Schedule::parse("every day").is_err());
    }

    #[test]
    fn the_next_time_is_strictly_later_and_on_the_schedule() {
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let next = s.next_after(now).unwrap();
        assert_eq!(next, now + Duration::from_secs(5));
        assert_eq!(s.next_after(next).unwrap(), next + Duration::from_secs(5));
    }
}
