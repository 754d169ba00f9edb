//! The key ring: primary, secondary and salt, read lock-free on the hot path and regenerated one
//! slot at a time (written to the store first, then swapped in memory).

use crate::clock::{SharedClock, UnixMillis};
use crate::secret::Secret;
use crate::store::{Instance, Store, StoreError, StoredSlot};
use arc_swap::ArcSwap;
use hubbub_proto::connection_string::ConnectionString;
use hubbub_proto::keys::{KeySlot, WebPubSubKeys};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One slot's current value.
#[derive(Debug, Clone)]
pub struct SlotKey {
    pub value: Secret,
    pub version: u64,
    pub created_at: UnixMillis,
}

impl From<StoredSlot> for SlotKey {
    fn from(s: StoredSlot) -> Self {
        Self {
            value: s.value,
            version: s.version,
            created_at: s.created_at,
        }
    }
}

/// An immutable snapshot of the three slots.
#[derive(Debug, Clone)]
pub struct KeyRing {
    pub primary: SlotKey,
    pub secondary: SlotKey,
    pub salt: SlotKey,
}

/// The access-key slots, in the order tokens are tried.
pub const ACCESS_SLOTS: [KeySlot; 2] = [KeySlot::Primary, KeySlot::Secondary];

impl KeyRing {
    pub fn slot(&self, slot: KeySlot) -> &SlotKey {
        match slot {
            KeySlot::Primary => &self.primary,
            KeySlot::Secondary => &self.secondary,
            KeySlot::Salt => &self.salt,
        }
    }

    fn with_slot(&self, slot: KeySlot, key: SlotKey) -> Self {
        let mut ring = self.clone();
        match slot {
            KeySlot::Primary => ring.primary = key,
            KeySlot::Secondary => ring.secondary = key,
            KeySlot::Salt => ring.salt = key,
        }
        ring
    }

    /// The HMAC keys of the access slots (UTF-8 bytes of the key strings), primary first.
    pub fn access_key_bytes(&self) -> [&[u8]; 2] {
        [
            self.primary.value.expose().as_bytes(),
            self.secondary.value.expose().as_bytes(),
        ]
    }

    /// The `listKeys` / `key show` shape for a public endpoint.
    pub fn web_pub_sub_keys(&self, endpoint: &str) -> WebPubSubKeys {
        WebPubSubKeys {
            primary_key: self.primary.value.expose().to_string(),
            secondary_key: self.secondary.value.expose().to_string(),
            primary_connection_string: ConnectionString::render(
                endpoint,
                self.primary.value.expose(),
            ),
            secondary_connection_string: ConnectionString::render(
                endpoint,
                self.secondary.value.expose(),
            ),
        }
    }
}

/// Per access slot: how often and when it last authenticated something.
#[derive(Debug, Default)]
struct SlotUsage {
    authenticated_requests: AtomicU64,
    last_used_at: AtomicI64,
}

/// A read of one slot's usage counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSnapshot {
    pub authenticated_requests: u64,
    pub last_used_at: Option<UnixMillis>,
}

/// Cheap-to-clone handle to the key ring.
#[derive(Clone)]
pub struct Keys(Arc<Inner>);

struct Inner {
    ring: ArcSwap<KeyRing>,
    store: Arc<Store>,
    clock: SharedClock,
    /// Held while a slot is written to the store and swapped in memory, so that two concurrent
    /// regenerations are applied to memory in the order they were committed.
    write: Mutex<()>,
    usage: [SlotUsage; 2],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

impl Keys {
    /// Builds the ring from what the store holds.
    pub fn new(store: Arc<Store>, instance: &Instance, clock: SharedClock) -> Self {
        let stored = &instance.keys;
        let ring = KeyRing {
            primary: stored.primary.clone().into(),
            secondary: stored.secondary.clone().into(),
            salt: stored.salt.clone().into(),
        };
        Self(Arc::new(Inner {
            ring: ArcSwap::from_pointee(ring),
            store,
            clock,
            write: Mutex::new(()),
            usage: Default::default(),
        }))
    }

    /// The current snapshot. Lock-free.
    pub fn current(&self) -> Arc<KeyRing> {
        self.0.ring.load_full()
    }

    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    /// Replaces one slot with a freshly generated value: durable in the store before it takes
    /// effect in memory and before this returns. Blocking (SQLite + fsync): call it from a
    /// blocking thread.
    pub fn regenerate(
        &self,
        slot: KeySlot,
        actor: &str,
        source: Option<&str>,
    ) -> Result<Arc<KeyRing>, StoreError> {
        let value = Secret::generate().map_err(StoreError::Random)?;
        let _write = self.0.write.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.0.clock.now_millis();
        let (stored, old_version) = self.0.store.replace_key(slot, &value, now, actor, source)?;
        let ring = Arc::new(self.current().with_slot(slot, stored.into()));
        self.0.ring.store(Arc::clone(&ring));
        tracing::info!(
            slot = slot.as_str(),
            old_version,
            new_version = ring.slot(slot).version,
            actor,
            "key regenerated"
        );
        Ok(ring)
    }

    /// Counts one thing authenticated by an access slot. Two relaxed atomic writes.
    pub fn record_use(&self, slot: KeySlot) {
        if let Some(usage) = self.usage_of(slot) {
            usage.authenticated_requests.fetch_add(1, Ordering::Relaxed);
            usage
                .last_used_at
                .fetch_max(self.0.clock.now_millis(), Ordering::Relaxed);
        }
    }

    pub fn usage(&self, slot: KeySlot) -> Option<UsageSnapshot> {
        self.usage_of(slot).map(|u| {
            let last = u.last_used_at.load(Ordering::Relaxed);
            UsageSnapshot {
                authenticated_requests: u.authenticated_requests.load(Ordering::Relaxed),
                last_used_at: (last != 0).then_some(last),
            }
        })
    }

    fn usage_of(&self, slot: KeySlot) -> Option<&SlotUsage> {
        match slot {
            KeySlot::Primary => Some(&self.0.usage[0]),
            KeySlot::Secondary => Some(&self.0.usage[1]),
            KeySlot::Salt => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn keys() -> (tempfile::TempDir, Keys, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let instance = store.load_or_init(1_000).unwrap();
        let keys = Keys::new(Arc::clone(&store), &instance, ManualClock::new(2_000));
        (dir, keys, store)
    }

    #[test]
    fn regenerate_replaces_exactly_one_slot_in_memory_and_on_disk() {
        let (_dir, keys, store) = keys();
        let before = keys.current();
        let after = keys.regenerate(KeySlot::Primary, "test", None).unwrap();
        assert_ne!(after.primary.value, before.primary.value);
        assert_eq!(after.primary.version, 2);
        assert_eq!(after.primary.created_at, 2_000);
        assert_eq!(after.secondary.value, before.secondary.value);
        assert_eq!(after.salt.value, before.salt.value);
        let on_disk = store.load_or_init(0).unwrap().keys;
        assert_eq!(on_disk.primary.value, after.primary.value);
    }

    #[test]
    fn concurrent_regenerations_of_both_slots_are_all_kept() {
        let (_dir, keys, store) = keys();
        let threads: Vec<_> = [KeySlot::Primary, KeySlot::Secondary]
            .into_iter()
            .flat_map(|slot| std::iter::repeat_n(slot, 10))
            .map(|slot| {
                let keys = keys.clone();
                std::thread::spawn(move || keys.regenerate(slot, "test", None).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ring = keys.current();
        assert_eq!(ring.primary.version, 11);
        assert_eq!(ring.secondary.version, 11);
        let on_disk = store.load_or_init(0).unwrap().keys;
        assert_eq!(on_disk.primary.value, ring.primary.value);
        assert_eq!(on_disk.secondary.value, ring.secondary.value);
    }

    #[test]
    fn usage_counts_per_access_slot() {
        let (_dir, keys, _store) = keys();
        keys.record_use(KeySlot::Secondary);
        keys.record_use(KeySlot::Secondary);
        let usage = keys.usage(KeySlot::Secondary).unwrap();
        assert_eq!(usage.authenticated_requests, 2);
        assert_eq!(usage.last_used_at, Some(2_000));
        assert_eq!(
            keys.usage(KeySlot::Primary).unwrap().authenticated_requests,
            0
        );
        assert!(keys.usage(KeySlot::Salt).is_none());
    }

    #[test]
    fn connection_strings_carry_the_endpoint_and_each_key() {
        let (_dir, keys, _store) = keys();
        let ring = keys.current();
        let shown = ring.web_pub_sub_keys("http://localhost:8080");
        assert_eq!(
            shown.primary_connection_string,
            format!(
                "Endpoint=http://localhost:8080;AccessKey={};Version=1.0;",
                ring.primary.value.expose()
            )
        );
        assert_eq!(shown.secondary_key, ring.secondary.value.expose());
    }
}
