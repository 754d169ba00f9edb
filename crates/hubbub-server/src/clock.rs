//! Time as a dependency: the real clock in production, a settable one in tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_millis(&self) -> UnixMillis;

    fn now_secs(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }
}

/// Shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> UnixMillis {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: UnixMillis) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(start)))
    }

    /// Starts at the current real time.
    pub fn starting_now() -> Arc<Self> {
        Self::new(SystemClock.now_millis())
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    pub fn set_millis(&self, millis: UnixMillis) {
        self.0.store(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 text for a timestamp, e.g. `2026-11-25T17:35:42.123Z`.
pub fn rfc3339(millis: UnixMillis) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| millis.to_string())
}

/// Parses `30s`, `15m`, `2h`, `7d` (a whole number and one unit).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let secs = match unit {
        "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

/// A deadline: an RFC 3339 time, or a duration from `now` (`7d`).
pub fn parse_deadline(text: &str, now: UnixMillis) -> Option<UnixMillis> {
    if let Some(duration) = parse_duration(text) {
        return Some(now + i64::try_from(duration.as_millis()).ok()?);
    }
    let time =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_secs(), 1);
        clock.advance_secs(5);
        assert_eq!(clock.now_millis(), 6_000);
    }

    #[test]
    fn durations_and_deadlines() {
        assert_eq!(
            parse_duration("15m"),
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("7d"),
            Some(std::time::Duration::from_secs(604_800))
        );
        assert_eq!(parse_duration("1.5h"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("10y"), None);
        assert_eq!(parse_deadline("2h", 1_000), Some(1_000 + 7_200_000));
        assert_eq!(
            parse_deadline("2023-11-14T22:13:20Z", 0),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_deadline("tomorrow", 0), None);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
