//! Cron schedules (`backup.schedule`): parsed once by the config builder,
//! read in the machine's local time (`TZ`, else /etc/localtime), and asked
//! for the next instant they are due. Five fields (minute hour day month
//! weekday), or six with seconds first; no year field.

use chrono::{DateTime, Local};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::time::SystemTime;

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    /// As written, for logs and status.
    text: String,
}

impl Schedule {
    /// `text` as a schedule, or why it is not one (croner's reason).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn five_and_six_fields_parse_seven_do_not() {
        assert!(Schedule::parse("0 3 * * *").is_ok());
        assert!(Schedule::parse("*/2 * * * * *").is_ok());
        assert!(Schedule::parse("0 0 3 * * * 2030").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
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
