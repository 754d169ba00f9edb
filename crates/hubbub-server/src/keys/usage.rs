//! Key usage: per access slot, how many REST requests and client connections it authenticated,
//! overall and per minute over the last hour, and when it was last used. Recorded with relaxed
//! atomics on the hot path (no locks); saved to the store periodically and at shutdown.

use crate::clock::UnixMillis;
use crate::store::UsageRecord;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Minutes kept per slot.
const WINDOW_MINUTES: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseKind {
    Rest,
    Connection,
}

#[derive(Debug, Default)]
struct Minute {
    minute: AtomicI64,
    rest: AtomicU64,
    connections: AtomicU64,
    /// Uses of an earlier value in its grace period (this node's; not stored).
    retiring: AtomicU64,
}

#[derive(Debug)]
struct SlotCounters {
    rest: AtomicU64,
    connections: AtomicU64,
    last_used_at: AtomicI64,
    minutes: [Minute; WINDOW_MINUTES],
    /// Uses of an earlier value of the slot in its grace period (not counted above).
    retiring_uses: AtomicU64,
    retiring_last_used_at: AtomicI64,
}

impl SlotCounters {
    /// The buckets of the minutes of the last hour (up to `now`'s), in no order.
    fn last_hour(&self, now: UnixMillis) -> impl Iterator<Item = &Minute> {
        let current = minute_of(now);
        self.minutes.iter().filter(move |b| {
            (0..WINDOW_MINUTES as i64).contains(&(current - b.minute.load(Ordering::Relaxed)))
        })
    }

    /// The bucket of `now`'s minute, started afresh on the minute's first use.
    fn bucket(&self, now: UnixMillis) -> &Minute {
        let minute = minute_of(now);
        let bucket = &self.minutes[minute.rem_euclid(WINDOW_MINUTES as i64) as usize];
        let seen = bucket.minute.load(Ordering::Relaxed);
        if seen != minute
            && bucket
                .minute
                .compare_exchange(seen, minute, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // The bucket held an older minute.
            bucket.rest.store(0, Ordering::Relaxed);
            bucket.connections.store(0, Ordering::Relaxed);
            bucket.retiring.store(0, Ordering::Relaxed);
        }
        bucket
    }
}

impl Default for SlotCounters {
    fn default() -> Self {
        Self {
            rest: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            last_used_at: AtomicI64::new(0),
            minutes: std::array::from_fn(|_| Minute::default()),
            retiring_uses: AtomicU64::new(0),
            retiring_last_used_at: AtomicI64::new(0),
        }
    }
}

/// A read of one slot's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageSnapshot {
    pub rest_requests: u64,
    pub client_connections: u64,
    #[serde(skip, default)]
    pub last_used_at: Option<UnixMillis>,
    pub rest_requests_last_hour: u64,
    pub client_connections_last_hour: u64,
    /// REST requests plus connections in the last 15 minutes.
    pub uses_last_15_minutes: u64,
    /// Uses of an earlier value in its grace period (not counted above), and the last one.
    pub retiring_uses: u64,
    #[serde(skip, default)]
    pub retiring_last_used_at: Option<UnixMillis>,
}

impl UsageSnapshot {
    /// The usage a stored record describes at `now`.
    pub fn of_record(record: &UsageRecord, now: UnixMillis) -> Self {
        let usage = Usage::default();
        usage.load(0, record);
        usage.snapshot(0, now)
    }

    /// Both usages together (cluster mode: this node's and the others').
    pub fn plus(self, other: UsageSnapshot) -> Self {
        Self {
            rest_requests: self.rest_requests + other.rest_requests,
            client_connections: self.client_connections + other.client_connections,
            last_used_at: self.last_used_at.max(other.last_used_at),
            rest_requests_last_hour: self.rest_requests_last_hour + other.rest_requests_last_hour,
            client_connections_last_hour: self.client_connections_last_hour
                + other.client_connections_last_hour,
            uses_last_15_minutes: self.uses_last_15_minutes + other.uses_last_15_minutes,
            retiring_uses: self.retiring_uses + other.retiring_uses,
            retiring_last_used_at: self.retiring_last_used_at.max(other.retiring_last_used_at),
        }
    }

    /// The older name used by `GET /admin/keys`.
    pub fn authenticated_requests(&self) -> u64 {
        self.rest_requests
    }
}

/// Counters of the two access slots (index 0 primary, 1 secondary).
#[derive(Debug, Default)]
pub struct Usage {
    slots: [SlotCounters; 2],
}

fn minute_of(now: UnixMillis) -> i64 {
    now.div_euclid(60_000)
}

impl Usage {
    /// Counts a use of an earlier value of `slot` in its grace period.
    pub fn record_retiring(&self, slot: usize, now: UnixMillis) {
        if let Some(counters) = self.slots.get(slot) {
            counters.retiring_uses.fetch_add(1, Ordering::Relaxed);
            counters
                .retiring_last_used_at
                .fetch_max(now, Ordering::Relaxed);
            counters
                .bucket(now)
                .retiring
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record(&self, slot: usize, kind: UseKind, now: UnixMillis) {
        let Some(counters) = self.slots.get(slot) else {
            return;
        };
        let total = match kind {
            UseKind::Rest => &counters.rest,
            UseKind::Connection => &counters.connections,
        };
        total.fetch_add(1, Ordering::Relaxed);
        counters.last_used_at.fetch_max(now, Ordering::Relaxed);
        let bucket = counters.bucket(now);
        let count = match kind {
            UseKind::Rest => &bucket.rest,
            UseKind::Connection => &bucket.connections,
        };
        count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, slot: usize, now: UnixMillis) -> UsageSnapshot {
        let Some(counters) = self.slots.get(slot) else {
            return UsageSnapshot::default();
        };
        let current = minute_of(now);
        let (mut rest_hour, mut connections_hour, mut last_15) = (0, 0, 0);
        for bucket in &counters.minutes {
            let minute = bucket.minute.load(Ordering::Relaxed);
            let age = current - minute;
            if !(0..WINDOW_MINUTES as i64).contains(&age) {
                continue;
            }
            let (rest, connections) = (
                bucket.rest.load(Ordering::Relaxed),
                bucket.connections.load(Ordering::Relaxed),
            );
            rest_hour += rest;
            connections_hour += connections;
            if age < 15 {
                last_15 += rest + connections;
            }
        }
        let last = counters.last_used_at.load(Ordering::Relaxed);
        let retiring_last = counters.retiring_last_used_at.load(Ordering::Relaxed);
        UsageSnapshot {
            rest_requests: counters.rest.load(Ordering::Relaxed),
            client_connections: counters.connections.load(Ordering::Relaxed),
            last_used_at: (last != 0).then_some(last),
            rest_requests_last_hour: rest_hour,
            client_connections_last_hour: connections_hour,
            uses_last_15_minutes: last_15,
            retiring_uses: counters.retiring_uses.load(Ordering::Relaxed),
            retiring_last_used_at: (retiring_last != 0).then_some(retiring_last),
        }
    }

    /// REST requests and connections of `slot` in the minutes from `since_minute` on.
    pub fn uses_since(&self, slot: usize, since_minute: i64) -> u64 {
        let Some(counters) = self.slots.get(slot) else {
            return 0;
        };
        counters
            .minutes
            .iter()
            .filter(|b| b.minute.load(Ordering::Relaxed) >= since_minute)
            .map(|b| b.rest.load(Ordering::Relaxed) + b.connections.load(Ordering::Relaxed))
            .sum()
    }

    /// This node's uses of `slot` in each minute of the last hour that had any, oldest first:
    /// (minute, REST requests and connections, uses of an earlier value in its grace period).
    pub fn minutes(&self, slot: usize, now: UnixMillis) -> Vec<(i64, u64, u64)> {
        let Some(counters) = self.slots.get(slot) else {
            return Vec::new();
        };
        let mut minutes: Vec<(i64, u64, u64)> = counters
            .last_hour(now)
            .map(|b| {
                (
                    b.minute.load(Ordering::Relaxed),
                    b.rest.load(Ordering::Relaxed) + b.connections.load(Ordering::Relaxed),
                    b.retiring.load(Ordering::Relaxed),
                )
            })
            .filter(|(_, uses, retiring)| uses + retiring > 0)
            .collect();
        minutes.sort_unstable();
        minutes
    }

    /// The minute `now` falls in.
    pub fn minute(now: UnixMillis) -> i64 {
        minute_of(now)
    }

    /// What to store for one slot.
    pub fn to_record(&self, slot: usize, now: UnixMillis) -> UsageRecord {
        let counters = &self.slots[slot.min(1)];
        let mut minutes: Vec<(i64, u64, u64)> = counters
            .last_hour(now)
            .map(|b| {
                (
                    b.minute.load(Ordering::Relaxed),
                    b.rest.load(Ordering::Relaxed),
                    b.connections.load(Ordering::Relaxed),
                )
            })
            .filter(|(_, r, c)| (r + c) > 0)
            .collect();
        minutes.sort_unstable();
        let last = counters.last_used_at.load(Ordering::Relaxed);
        let retiring_last = counters.retiring_last_used_at.load(Ordering::Relaxed);
        UsageRecord {
            rest_requests: counters.rest.load(Ordering::Relaxed),
            client_connections: counters.connections.load(Ordering::Relaxed),
            last_used_at: (last != 0).then_some(last),
            minutes,
            retiring_uses: counters.retiring_uses.load(Ordering::Relaxed),
            retiring_last_used_at: (retiring_last != 0).then_some(retiring_last),
        }
    }

    /// Restores one slot from the store.
    pub fn load(&self, slot: usize, record: &UsageRecord) {
        let counters = &self.slots[slot.min(1)];
        counters.rest.store(record.rest_requests, Ordering::Relaxed);
        counters
            .connections
            .store(record.client_connections, Ordering::Relaxed);
        counters
            .last_used_at
            .store(record.last_used_at.unwrap_or(0), Ordering::Relaxed);
        counters
            .retiring_uses
            .store(record.retiring_uses, Ordering::Relaxed);
        counters
            .retiring_last_used_at
            .store(record.retiring_last_used_at.unwrap_or(0), Ordering::Relaxed);
        for (minute, rest, connections) in &record.minutes {
            let bucket = &counters.minutes[minute.rem_euclid(WINDOW_MINUTES as i64) as usize];
            bucket.minute.store(*minute, Ordering::Relaxed);
            bucket.rest.store(*rest, Ordering::Relaxed);
            bucket.connections.store(*connections, Ordering::Relaxed);
        }
    }

    /// Several records as one: totals added, minutes added minute by minute, the latest use.
    pub fn sum<'a>(records: impl IntoIterator<Item = &'a UsageRecord>) -> UsageRecord {
        let mut sum = UsageRecord::default();
        let mut minutes = std::collections::BTreeMap::<i64, (u64, u64)>::new();
        for record in records {
            sum.rest_requests += record.rest_requests;
            sum.client_connections += record.client_connections;
            sum.last_used_at = sum.last_used_at.max(record.last_used_at);
            sum.retiring_uses += record.retiring_uses;
            sum.retiring_last_used_at = sum.retiring_last_used_at.max(record.retiring_last_used_at);
            for (minute, rest, connections) in &record.minutes {
                let entry = minutes.entry(*minute).or_default();
                entry.0 += rest;
                entry.1 += connections;
            }
        }
        sum.minutes = minutes.into_iter().map(|(m, (r, c))| (m, r, c)).collect();
        sum
    }

    /// The oldest minute worth keeping.
    pub fn oldest_minute(now: UnixMillis) -> i64 {
        minute_of(now) - WINDOW_MINUTES as i64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn totals_windows_and_last_use() {
        let usage = Usage::default();
        let t0 = 1_000 * MIN;
        usage.record(0, UseKind::Rest, t0);
        usage.record(0, UseKind::Connection, t0 + 5 * MIN);
        usage.record(0, UseKind::Rest, t0 + 30 * MIN);
        let now = t0 + 40 * MIN;
        let s = usage.snapshot(0, now);
        assert_eq!((s.rest_requests, s.client_connections), (2, 1));
        assert_eq!(
            (s.rest_requests_last_hour, s.client_connections_last_hour),
            (2, 1)
        );
        assert_eq!(s.uses_last_15_minutes, 1);
        assert_eq!(s.last_used_at, Some(t0 + 30 * MIN));
        let later = usage.snapshot(0, t0 + 65 * MIN);
        assert_eq!(
            later.rest_requests_last_hour, 1,
            "the first minute left the window"
        );
        assert_eq!(later.rest_requests, 2, "totals stay");
        assert_eq!(usage.snapshot(1, now), UsageSnapshot::default());
    }

    #[test]
    fn a_bucket_is_reused_for_a_new_minute() {
        let usage = Usage::default();
        usage.record(1, UseKind::Rest, 0);
        usage.record(1, UseKind::Rest, 60 * MIN);
        let s = usage.snapshot(1, 60 * MIN);
        assert_eq!(s.rest_requests_last_hour, 1);
        assert_eq!(s.rest_requests, 2);
    }

    #[test]
    fn records_of_several_nodes_add_up() {
        let (a, b) = (Usage::default(), Usage::default());
        let now = 500 * MIN;
        a.record(0, UseKind::Rest, now - 2 * MIN);
        a.record(0, UseKind::Rest, now);
        b.record(0, UseKind::Rest, now);
        b.record(0, UseKind::Connection, now - 20 * MIN);
        let sum = Usage::sum([&a.to_record(0, now), &b.to_record(0, now)]);
        let s = UsageSnapshot::of_record(&sum, now);
        assert_eq!((s.rest_requests, s.client_connections), (3, 1));
        assert_eq!(s.rest_requests_last_hour, 3);
        assert_eq!(s.uses_last_15_minutes, 3);
        assert_eq!(s.last_used_at, Some(now));
        let together = a.snapshot(0, now).plus(b.snapshot(0, now));
        assert_eq!(together, s);
    }

    #[test]
    fn records_round_trip() {
        let usage = Usage::default();
        let now = 500 * MIN;
        for i in 0..5 {
            usage.record(0, UseKind::Rest, now - i * MIN);
        }
        usage.record(0, UseKind::Connection, now);
        let record = usage.to_record(0, now);
        let restored = Usage::default();
        restored.load(0, &record);
        assert_eq!(restored.snapshot(0, now), usage.snapshot(0, now));
    }
}
