//! `delivery.route.message_rate` / `connection_rate`: "N/sec", "N/min" or
//! "N/hour" ("" = unlimited), the syntax KumoMTA's shaping uses. The typed
//! [`Rate`] knows its emission interval and burst; the bucket itself is
//! `delivery::shaping`.

use std::fmt;
use std::time::Duration;

/// N events per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Parses `"600/min"`; `Ok(None)` for `""` (unlimited). The error quotes
    /// the value; the caller adds the key path.
    pub fn parse(text: &str) -> Result<Option<Rate>, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        let bad = || {
            format!("invalid rate {text:?} (expected \"N/sec\", \"N/min\" or \"N/hour\", or \"\" for unlimited)")
        };
        let (n, unit) = t.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!(
                "rate {text:?} allows nothing; use \"\" for unlimited or hold the domain"
            ));
        }
        Ok(Some(Rate { count, per }))
    }

    /// Time between two events at the steady rate (GCRA's emission interval).
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }

    /// Events allowed at once: one second's worth, at least one. A replica
    /// that was idle may send this many back to back, never more.
    pub fn burst(&self) -> u32 {
        let per_sec = u128::from(self.count) * 1000 / self.per.as_millis().max(1);
        u32::try_from(per_sec).unwrap_or(u32::MAX).max(1)
    }

    /// The stricter of two limits (the one with the longer interval).
    pub fn stricter(a: Option<Rate>, b: Option<Rate>) -> Option<Rate> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if a.interval() >= b.interval() { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "sec",
            60 => "min",
            _ => "hour",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_units_and_empty() {
        let r = Rate::parse("600/min").unwrap().unwrap();
        assert_eq!((r.count, r.per), (600, Duration::from_secs(60)));
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert_eq!(r.burst(), 10);
        assert_eq!(r.to_string(), "600/min");
        let r = Rate::parse(" 5 / sec ").unwrap().unwrap();
        assert_eq!((r.interval(), r.burst()), (Duration::from_millis(200), 5));
        let r = Rate::parse("120/hour").unwrap().unwrap();
        assert_eq!((r.interval(), r.burst()), (Duration::from_secs(30), 1));
        assert_eq!(Rate::parse("").unwrap(), None);
    }

    #[test]
    fn refuses_what_is_not_a_rate() {
        for bad in [
            "600", "600/day", "x/min", "-1/min", "/min", "0/min", "1.5/sec",
        ] {
            let e = Rate::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn the_stricter_rate_has_the_longer_interval() {
        let fast = Rate::parse("10/sec").unwrap();
        let slow = Rate::parse("60/min").unwrap();
        assert_eq!(Rate::stricter(fast, slow), slow);
        assert_eq!(Rate::stricter(slow, fast), slow);
        assert_eq!(Rate::stricter(None, fast), fast);
        assert_eq!(Rate::stricter(None, None), None);
    }
}
