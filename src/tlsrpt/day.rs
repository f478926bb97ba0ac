//! UTC calendar days, the unit TLS-RPT counts and reports in (RFC 8460
//! §4.1: one report per UTC day). Pure date arithmetic on days since the
//! Unix epoch (civil-from-days shared with the `Date:` header code; its
//! inverse here), so no date crate is needed.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One UTC day, as days since 1970-01-01.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Day(pub i64);

const DAY_SECS: u64 = 86_400;

impl Day {
    /// The UTC day `t` falls in (times before 1970 count as day 0).
    pub fn of(t: SystemTime) -> Day {
        let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Day((secs / DAY_SECS) as i64)
    }

    /// 00:00:00Z of this day.
    pub fn start(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.max(0) as u64 * DAY_SECS)
    }

    /// 00:00:00Z of the next day: when this day's reports become due.
    pub fn end(self) -> SystemTime {
        self.next().start()
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }

    pub fn prev(self) -> Day {
        Day(self.0 - 1)
    }

    /// `(year, month, day)` in the proleptic Gregorian calendar.
    pub fn ymd(self) -> (i64, u32, u32) {
        crate::smtp::server::headers::civil_from_days(self.0)
    }

    /// The day of a civil date; `None` for an impossible date.
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Option<Day> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day(era * 146_097 + doe - 719_468))
    }

    /// `YYYY-MM-DD`, strictly.
    pub fn parse(text: &str) -> Option<Day> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let s = &text[r];
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        Day::from_ymd(i64::from(num(0..4)?), num(5..7)?, num(8..10)?)
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_round_trip() {
        for (text, n) in [
            ("1970-01-01", 0),
            ("2000-02-29", 11_016),
            ("2016-04-01", 16_892),
            ("2026-12-05", 20_792),
            ("2100-03-01", 47_541),
        ] {
            let day = Day::parse(text).unwrap();
            assert_eq!(day, Day(n), "{text}");
            assert_eq!(day.to_string(), text);
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        for n in 0..146_097 {
            let (y, m, d) = Day(n).ymd();
            assert_eq!(Day::from_ymd(y, m, d), Some(Day(n)));
        }
    }

    #[test]
    fn bad_dates_are_refused() {
        for text in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "26-01-01x",
            "2026-01-32",
            "+026-01-01",
        ] {
            assert_eq!(Day::parse(text), None, "{text}");
        }
        assert!(Day::parse("2024-02-29").is_some());
    }

    #[test]
    fn a_day_runs_from_midnight_to_midnight_utc() {
        let day = Day::parse("2026-12-05").unwrap();
        assert_eq!(Day::of(day.start()), day);
        assert_eq!(Day::of(day.end() - Duration::from_secs(1)), day);
        assert_eq!(Day::of(day.end()), day.next());
        assert_eq!(day.next().prev(), day);
    }
}
