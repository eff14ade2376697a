//! Time windows: when a route is open, in a time zone's wall-clock time (`auth.during`).
//!
//! A window is a set of weekdays and a daily span `from`..`to` (minutes; `to` may be 24:00). A
//! span whose `from` is after its `to` runs overnight: it opens at `from` on a listed day and
//! closes at `to` the next morning, so `days: [fri], from: "22:00", to: "06:00"` is Friday night
//! into Saturday. The time zone's rules (daylight saving time included) come from the IANA
//! database built into the binary: on the day clocks change, the window keeps its wall-clock
//! hours and is an hour shorter or longer in real time.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::fmt;

/// Minutes in a day: `to`'s largest value (24:00).
pub const DAY: u16 = 24 * 60;

#[derive(Debug, Clone)]
pub struct TimeWindow {
    pub zone: TimeZone,
    /// The zone's name as configured, for messages.
    pub zone_name: String,
    /// Open on these days, Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight, `from` in 0..DAY, `to` in 1..=DAY, never equal.
    pub from: u16,
    pub to: u16,
}

impl TimeWindow {
    /// Whether the instant `now` (Unix seconds) is inside the window.
    pub fn contains(&self, now: u64) -> bool {
        let instant = i64::try_from(now)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok());
        let Some(instant) = instant else {
            return false;
        };
        let local = self.zone.to_datetime(instant);
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let day = local.weekday().to_monday_zero_offset() as usize;
        if self.from < self.to {
            self.days[day] && (self.from..self.to).contains(&minute)
        } else {
            // Overnight: the evening of a listed day, or the morning after one.
            (self.days[day] && minute >= self.from)
                || (self.days[(day + 6) % 7] && minute < self.to)
        }
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `mon`..`sun`, in any case: its index, Monday first.
pub fn day_index(name: &str) -> Option<usize> {
    DAY_NAMES.iter().position(|d| d.eq_ignore_ascii_case(name))
}

/// `HH:MM` as minutes after midnight; `24:00` only when `end_of_day` is allowed.
pub fn minutes(text: &str, end_of_day: bool) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end_of_day => Some(DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl fmt::Display for TimeWindow {
    /// `mon-fri 08:00-18:00 Europe/Berlin`, as a refusal states it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listed: Vec<usize> = (0..7).filter(|&d| self.days[d]).collect();
        let contiguous = listed.windows(2).all(|w| w[1] == w[0] + 1);
        match listed.as_slice() {
            [_, _, _, _, _, _, _] => f.write_str("every day")?,
            [first, .., last] if contiguous => {
                write!(f, "{}-{}", DAY_NAMES[*first], DAY_NAMES[*last])?
            }
            _ => {
                let names: Vec<&str> = listed.iter().map(|&d| DAY_NAMES[d]).collect();
                f.write_str(&names.join(","))?
            }
        }
        let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(
            f,
            " {}-{} {}",
            hhmm(self.from),
            hhmm(self.to),
            self.zone_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(zone: &str, days: &[usize], from: &str, to: &str) -> TimeWindow {
        let mut set = [false; 7];
        for &d in days {
            set[d] = true;
        }
        TimeWindow {
            zone: TimeZone::get(zone).unwrap(),
            zone_name: zone.to_string(),
            days: set,
            from: minutes(from, false).unwrap(),
            to: minutes(to, true).unwrap(),
        }
    }

    /// Unix seconds of a UTC date and time.
    fn utc(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_second() as u64
    }

    const MON_FRI: [usize; 5] = [0, 1, 2, 3, 4];

    #[test]
    fn office_hours_in_berlin_follow_the_zone_and_its_summer_time() {
        let w = window("Europe/Berlin", &MON_FRI, "08:00", "18:00");
        // Wednesday 2 December 2026: CET, UTC+1. 08:00 local is 07:00 UTC.
        assert!(!w.contains(utc("2026-12-02T06:59:59Z")));
        assert!(w.contains(utc("2026-12-02T07:00:00Z")));
        assert!(w.contains(utc("2026-12-02T16:59:59Z")));
        assert!(!w.contains(utc("2026-12-02T17:00:00Z")), "18:00 is closed");
        // Saturday.
        assert!(!w.contains(utc("2026-12-05T10:00:00Z")));
        // Wednesday 1 July 2026: CEST, UTC+2. 08:00 local is 06:00 UTC.
        assert!(w.contains(utc("2026-07-01T06:00:00Z")));
        assert!(!w.contains(utc("2026-07-01T16:00:00Z")), "18:00 CEST");
        // Monday 30 March 2026, the day after clocks went forward (29 March, a Sunday).
        assert!(w.contains(utc("2026-03-30T06:30:00Z")));
        assert!(
            !w.contains(utc("2026-03-27T06:30:00Z")),
            "07:30 CET on the Friday before"
        );
    }

    #[test]
    fn a_window_is_read_in_its_own_zone_not_the_hosts() {
        let w = window("America/New_York", &[0], "09:00", "17:00");
        // Monday 7 December 2026, 09:30 in New York is 14:30 UTC; 10:00 UTC is 05:00 there.
        assert!(w.contains(utc("2026-12-07T14:30:00Z")));
        assert!(!w.contains(utc("2026-12-07T10:00:00Z")));
        // Tuesday 01:00 UTC is still Monday 20:00 in New York: closed by the hour, not the day.
        assert!(!w.contains(utc("2026-12-08T01:00:00Z")));
    }

    #[test]
    fn an_overnight_window_runs_into_the_next_morning() {
        // Friday 22:00 to Saturday 06:00, UTC.
        let w = window("UTC", &[4], "22:00", "06:00");
        assert!(
            !w.contains(utc("2026-12-04T21:59:00Z")),
            "Friday evening, before"
        );
        assert!(w.contains(utc("2026-12-04T22:00:00Z")));
        assert!(w.contains(utc("2026-12-05T05:59:00Z")), "Saturday morning");
        assert!(!w.contains(utc("2026-12-05T06:00:00Z")));
        assert!(
            !w.contains(utc("2026-12-05T23:00:00Z")),
            "Saturday night is not listed"
        );
        assert!(
            !w.contains(utc("2026-12-04T03:00:00Z")),
            "Friday morning follows Thursday"
        );
    }

    #[test]
    fn the_whole_day_ends_at_24_00() {
        let w = window("UTC", &[6], "00:00", "24:00");
        assert!(w.contains(utc("2026-12-06T00:00:00Z")));
        assert!(w.contains(utc("2026-12-06T23:59:59Z")));
        assert!(!w.contains(utc("2026-12-07T00:00:00Z")));
    }

    #[test]
    fn times_and_days_parse_strictly_and_windows_read_back() {
        assert_eq!(minutes("08:30", false), Some(510));
        assert_eq!(minutes("24:00", true), Some(DAY));
        for bad in ["24:00", "8:30", "08:60", "25:00", "0830", "", "08:3x"] {
            assert_eq!(minutes(bad, false), None, "{bad}");
        }
        assert_eq!(minutes("24:01", true), None);
        assert_eq!(day_index("Fri"), Some(4));
        assert_eq!(day_index("friday"), None);
        assert_eq!(
            window("Europe/Berlin", &MON_FRI, "08:00", "18:00").to_string(),
            "mon-fri 08:00-18:00 Europe/Berlin"
        );
        assert_eq!(
            window("UTC", &[0, 2, 4], "22:00", "06:00").to_string(),
            "mon,wed,fri 22:00-06:00 UTC"
        );
        assert_eq!(
            window("UTC", &[0, 1, 2, 3, 4, 5, 6], "00:00", "24:00").to_string(),
            "every day 00:00-24:00 UTC"
        );
    }
}
