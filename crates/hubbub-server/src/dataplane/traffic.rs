//! What each hub's connections sent and were sent: messages and bytes, counted on the hot path
//! without a shared cache line. Each thread adds to its own shard (a cache line of its own);
//! reading sums the shards, which only a scrape, the portal or the history sampler does.
//!
//! Hub labels are bounded: the first [`MAX_HUB_LABELS`] hubs are counted by name, any later one
//! under [`OTHER_HUBS`], so no caller can grow the metrics without a bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// Shards per hub: threads beyond this share one (they still rarely collide).
const SHARDS: usize = 16;
/// Hubs counted by name; later ones are counted together.
pub const MAX_HUB_LABELS: usize = 1000;
/// The label of the hubs beyond [`MAX_HUB_LABELS`].
pub const OTHER_HUBS: &str = "_other";

/// One thread's counts, alone on its cache line (128 bytes: adjacent-line prefetching pairs
/// lines on common CPUs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    delivered: AtomicU64,
    received_rest: AtomicU64,
    received_client: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

/// The shard of the calling thread: threads take shards round-robin as they first count.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// One hub's traffic on this node.
#[derive(Debug, Default)]
pub struct Traffic {
    shards: [Shard; SHARDS],
}

/// A hub's traffic summed at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficCounts {
    /// Messages handed to connections (one per connection a message reached).
    pub messages_delivered: u64,
    /// Messages sent with the REST API.
    pub messages_received_rest: u64,
    /// Messages clients sent: to groups, and events for the event handler.
    pub messages_received_client: u64,
    /// Bytes written to client sockets (WebSocket payloads).
    pub bytes_sent: u64,
    /// Bytes read from client sockets (WebSocket payloads).
    pub bytes_received: u64,
}

impl TrafficCounts {
    pub fn messages_received(&self) -> u64 {
        self.messages_received_rest + self.messages_received_client
    }

    fn plus(self, other: TrafficCounts) -> TrafficCounts {
        TrafficCounts {
            messages_delivered: self.messages_delivered + other.messages_delivered,
            messages_received_rest: self.messages_received_rest + other.messages_received_rest,
            messages_received_client: self.messages_received_client
                + other.messages_received_client,
            bytes_sent: self.bytes_sent + other.bytes_sent,
            bytes_received: self.bytes_received + other.bytes_received,
        }
    }
}

impl Traffic {
    fn shard(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    /// `count` connections were handed a message.
    pub fn delivered(&self, count: usize) {
        if count > 0 {
            self.shard().delivered.fetch_add(count as u64, Relaxed);
        }
    }

    /// The REST API took a message to send.
    pub fn received_rest(&self) {
        self.shard().received_rest.fetch_add(1, Relaxed);
    }

    /// A client sent a message (to a group, or an event).
    pub fn received_client(&self) {
        self.shard().received_client.fetch_add(1, Relaxed);
    }

    pub fn bytes_sent(&self, bytes: usize) {
        if bytes > 0 {
            self.shard().bytes_sent.fetch_add(bytes as u64, Relaxed);
        }
    }

    pub fn bytes_received(&self, bytes: usize) {
        if bytes > 0 {
            self.shard().bytes_received.fetch_add(bytes as u64, Relaxed);
        }
    }

    /// Every shard summed.
    pub fn counts(&self) -> TrafficCounts {
        self.shards
            .iter()
            .map(|s| TrafficCounts {
                messages_delivered: s.delivered.load(Relaxed),
                messages_received_rest: s.received_rest.load(Relaxed),
                messages_received_client: s.received_client.load(Relaxed),
                bytes_sent: s.bytes_sent.load(Relaxed),
                bytes_received: s.bytes_received.load(Relaxed),
            })
            .fold(TrafficCounts::default(), TrafficCounts::plus)
    }
}

/// Every hub's traffic on this node, by hub label. Entries are never removed: counters only
/// grow, and a hub that comes back continues its own.
#[derive(Debug, Default)]
pub struct TrafficTable {
    hubs: RwLock<HashMap<Arc<str>, Arc<Traffic>>>,
}

impl TrafficTable {
    /// The traffic of hub `name` (canonical), or of [`OTHER_HUBS`] once the table is full.
    pub fn hub(&self, name: &str) -> Arc<Traffic> {
        if let Some(traffic) = self.read().get(name) {
            return Arc::clone(traffic);
        }
        let mut hubs = self.hubs.write().unwrap_or_else(|p| p.into_inner());
        let label: Arc<str> = if hubs.len() < MAX_HUB_LABELS || hubs.contains_key(name) {
            name.into()
        } else {
            OTHER_HUBS.into()
        };
        Arc::clone(hubs.entry(label).or_default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Traffic>>> {
        self.hubs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The counts of hub `name`, if it was ever counted (a look never adds a hub).
    pub fn counts_of(&self, name: &str) -> Option<TrafficCounts> {
        self.read().get(name).map(|t| t.counts())
    }

    /// Each hub label and its counts, sorted by label.
    pub fn counts(&self) -> Vec<(Arc<str>, TrafficCounts)> {
        let mut all: Vec<_> = self
            .read()
            .iter()
            .map(|(name, traffic)| (Arc::clone(name), traffic.counts()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every hub's counts added up.
    pub fn total(&self) -> TrafficCounts {
        self.read()
            .values()
            .map(|t| t.counts())
            .fold(TrafficCounts::default(), TrafficCounts::plus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_across_threads() {
        let traffic = Arc::new(Traffic::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let traffic = Arc::clone(&traffic);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        traffic.delivered(3);
                        traffic.received_client();
                        traffic.bytes_sent(10);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        traffic.received_rest();
        traffic.bytes_received(7);
        assert_eq!(
            traffic.counts(),
            TrafficCounts {
                messages_delivered: 24_000,
                messages_received_rest: 1,
                messages_received_client: 8000,
                bytes_sent: 80_000,
                bytes_received: 7,
            }
        );
    }

    #[test]
    fn hubs_beyond_the_limit_share_one_label() {
        let table = TrafficTable::default();
        for i in 0..MAX_HUB_LABELS {
            table.hub(&format!("hub{i}")).received_rest();
        }
        table.hub("one_more").received_rest();
        table.hub("and_another").received_rest();
        table.hub("hub0").received_rest();
        let counts = table.counts();
        assert_eq!(counts.len(), MAX_HUB_LABELS + 1);
        let other = counts.iter().find(|(n, _)| &**n == OTHER_HUBS).unwrap();
        assert_eq!(other.1.messages_received_rest, 2);
        let hub0 = counts.iter().find(|(n, _)| &**n == "hub0").unwrap();
        assert_eq!(hub0.1.messages_received_rest, 2);
        assert_eq!(
            table.total().messages_received_rest,
            MAX_HUB_LABELS as u64 + 3
        );
    }
}
