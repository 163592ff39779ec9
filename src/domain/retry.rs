//! The retry policy: the one place that decides when a failed delivery is tried again.

use super::Invalid;
use std::time::Duration;

/// Delays before each retry, after the first attempt fails. Once they are used up the delivery
/// is `failed`. Each delay gets ±20% jitter so a recovering receiver is not hit by a wall of
/// retries at the same instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// The default: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27 hours).
    pub const DEFAULT: &'static str = "0s,5s,5m,30m,2h,5h,10h,10h";

    /// Parses a comma-separated list of delays such as `0s,5s,5m,30m,2h` (units ms, s, m, h, d).
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let mut delays = Vec::new();
        for (i, part) in text.split(',').enumerate() {
            let part = part.trim();
            if part.is_empty() && text.trim().is_empty() {
                break;
            }
            delays.push(
                parse_duration(part).map_err(|e| {
                    Invalid::new(format!("retry schedule entry {}: {}", i + 1, e.0))
                })?,
            );
        }
        if delays.len() > 50 {
            return Err(Invalid::new("the retry schedule has more than 50 entries"));
        }
        if delays
            .iter()
            .any(|d| *d > Duration::from_secs(7 * 24 * 3600))
        {
            return Err(Invalid::new("a retry delay is longer than 7 days"));
        }
        Ok(Self(delays))
    }

    /// The delays, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// How long to wait after the `attempts`-th failed attempt (counting from 1), or `None` when
    /// the schedule is exhausted. `unit` in [0, 1) picks the jitter; pass a random number.
    pub fn delay_after(&self, attempts: u32, unit: f64) -> Option<Duration> {
        let base = *self
            .0
            .get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
        let factor = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// Total attempts a delivery gets: the first plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::parse(Self::DEFAULT).expect("the default schedule parses")
    }
}

/// Parses `250ms`, `5s`, `5m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, Invalid> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| Invalid::new(format!("`{text}` needs a unit: ms, s, m, h or d")))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| Invalid::new(format!("`{text}` is not a duration such as 5s or 30m")))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(Invalid::new(format!(
                "`{text}` has an unknown unit; use ms, s, m, h or d"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 9);
        assert_eq!(s.delay_after(1, 0.5), Some(Duration::ZERO));
        assert_eq!(s.delay_after(2, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(9, 0.5), None);
        let total: u64 = s.delays().iter().map(Duration::as_secs).sum();
        assert!((26 * 3600..28 * 3600).contains(&total));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = RetrySchedule::parse("100s").unwrap();
        assert_eq!(s.delay_after(1, 0.0), Some(Duration::from_secs(80)));
        assert_eq!(s.delay_after(1, 0.999_999).map(|d| d.as_secs()), Some(119));
    }

    #[test]
    fn bad_schedules_name_the_entry() {
        assert!(
            RetrySchedule::parse("5s,abc")
                .unwrap_err()
                .0
                .contains("entry 2")
        );
        assert!(RetrySchedule::parse("5").unwrap_err().0.contains("unit"));
        assert!(RetrySchedule::parse("5w").is_err());
        assert!(RetrySchedule::parse("8d").is_err());
        assert_eq!(RetrySchedule::parse("").unwrap().max_attempts(), 1);
        assert_eq!(
            RetrySchedule::parse("250ms").unwrap().delays(),
            &[Duration::from_millis(250)]
        );
    }
}
