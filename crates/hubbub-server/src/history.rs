//! The last hour of this node's traffic for the portal's charts: every [`INTERVAL`] a sample of
//! the open connections and the traffic counters so far (a fixed ring of [`POINTS`] samples, so
//! its size never grows). The portal gets the counts within each interval, the interval in
//! progress last; key use per minute comes from the keys' own minute buckets.

use crate::clock::UnixMillis;
use crate::dataplane::traffic::TrafficCounts;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const POINTS: usize = 360;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: UnixMillis,
    connections: u64,
    traffic: TrafficCounts,
}

/// The samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

/// One interval: the connections open at its end, and what happened within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPoint {
    /// The interval's end (RFC 3339).
    pub at: String,
    pub connections: u64,
    pub messages_received: u64,
    pub messages_delivered: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl History {
    /// Records the state at `at`.
    pub fn sample(&self, at: UnixMillis, connections: u64, traffic: TrafficCounts) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == POINTS {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at,
            connections,
            traffic,
        });
    }

    /// Each interval of the last hour, oldest first, and the one in progress up to `now` (with
    /// `connections` and `traffic` as they are now). The first sample is a point of its own with
    /// nothing counted, so two points show from the start.
    pub fn points(
        &self,
        now: UnixMillis,
        connections: u64,
        traffic: TrafficCounts,
    ) -> Vec<TrafficPoint> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let current = Sample {
            at: now,
            connections,
            traffic,
        };
        let mut points = Vec::with_capacity(samples.len() + 1);
        if let Some(first) = samples.front() {
            points.push(point(first, first));
        }
        let mut previous = samples.front();
        for sample in samples.iter().skip(1).chain(std::iter::once(&current)) {
            if let Some(before) = previous {
                points.push(point(before, sample));
            }
            previous = Some(sample);
        }
        points
    }
}

fn point(before: &Sample, after: &Sample) -> TrafficPoint {
    let (a, b) = (&before.traffic, &after.traffic);
    TrafficPoint {
        at: crate::clock::rfc3339(after.at),
        connections: after.connections,
        // Saturating: a counter never goes back, but a sample may race a hub's first count.
        messages_received: b.messages_received().saturating_sub(a.messages_received()),
        messages_delivered: b.messages_delivered.saturating_sub(a.messages_delivered),
        bytes_received: b.bytes_received.saturating_sub(a.bytes_received),
        bytes_sent: b.bytes_sent.saturating_sub(a.bytes_sent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(n: u64) -> TrafficCounts {
        TrafficCounts {
            messages_delivered: n,
            messages_received_rest: n / 2,
            ..Default::default()
        }
    }

    #[test]
    fn points_are_counts_within_each_interval() {
        let history = History::default();
        history.sample(0, 1, delivered(0));
        history.sample(10_000, 3, delivered(10));
        let points = history.points(15_000, 2, delivered(16));
        let got: Vec<(u64, u64, u64)> = points
            .iter()
            .map(|p| (p.connections, p.messages_delivered, p.messages_received))
            .collect();
        assert_eq!(got, vec![(1, 0, 0), (3, 10, 5), (2, 6, 3)]);
        assert_eq!(points[2].at, crate::clock::rfc3339(15_000));
    }

    #[test]
    fn keeps_one_hour() {
        let history = History::default();
        for i in 0..POINTS as i64 + 50 {
            history.sample(i * 10_000, 0, delivered(i as u64));
        }
        let points = history.points(10_000_000, 0, delivered(1000));
        assert_eq!(points.len(), POINTS + 1);
        assert_eq!(points[1].messages_delivered, 1);
    }

    #[test]
    fn nothing_sampled_yet_is_no_points() {
        let history = History::default();
        assert!(history.points(0, 0, TrafficCounts::default()).is_empty());
    }
}
