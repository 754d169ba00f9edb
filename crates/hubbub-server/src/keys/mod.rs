//! The key ring: primary, secondary and salt, read lock-free on the hot path and changed one slot
//! at a time (written to the store first, then swapped in memory). Also carries what decides
//! whether a key may still authenticate: rotation deadlines and old values in a grace period.

pub mod auth;
pub mod changes;
pub mod lifecycle;
pub mod notices;
pub mod usage;

use crate::clock::{SharedClock, UnixMillis};
use crate::secret::Secret;
use crate::store::{
    Instance, KeyChange, RetiringKey, RotationRequirement, Store, StoreError, StoredSlot,
};
use crate::keys::usage::{Usage, UsageSnapshot, UseKind};
use arc_swap::ArcSwap;
use hubbub_proto::connection_string::ConnectionString;
use hubbub_proto::keys::{KeySlot, WebPubSubKeys};
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

/// An immutable snapshot of the three slots and their lifecycle state.
#[derive(Debug, Clone)]
pub struct KeyRing {
    pub primary: SlotKey,
    pub secondary: SlotKey,
    pub salt: SlotKey,
    /// Rotation requirements on the current access keys.
    pub requirements: Vec<RotationRequirement>,
    /// Old access-key values still accepted for verification.
    pub retiring: Vec<RetiringKey>,
}

/// The access-key slots, in the order tokens are tried.
pub const ACCESS_SLOTS: [KeySlot; 2] = [KeySlot::Primary, KeySlot::Secondary];

/// A key a token may be verified with.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub slot: KeySlot,
    pub key: &'a [u8],
    /// An old value in its grace period.
    pub retiring: bool,
}

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
        ring.requirements.retain(|r| r.slot != slot);
        ring
    }

    /// The ring after `slot` got `value` at `now` (its version + 1): a rotation requirement on the
    /// slot is cleared, and the old value keeps verifying until `grace_until` when one is given.
    /// Returns the new ring and the slot's previous version.
    pub fn regenerated(
        &self,
        slot: KeySlot,
        value: Secret,
        now: UnixMillis,
        grace_until: Option<UnixMillis>,
    ) -> (KeyRing, u64) {
        let old = self.slot(slot);
        let mut ring = self.with_slot(
            slot,
            SlotKey {
                value,
                version: old.version + 1,
                created_at: now,
            },
        );
        if let Some(until) = grace_until {
            ring.retiring
                .retain(|k| !(k.slot == slot && k.version == old.version));
            ring.retiring.push(RetiringKey {
                slot,
                version: old.version,
                value: old.value.clone(),
                until,
            });
        }
        (ring, old.version)
    }

    /// The ring with `requirement` replacing any requirement on its slot.
    pub fn with_requirement(&self, requirement: RotationRequirement) -> KeyRing {
        let mut ring = self.clone();
        ring.requirements.retain(|r| r.slot != requirement.slot);
        ring.requirements.push(requirement);
        ring
    }

    /// The old values whose grace period is over at `now`, and the ring without them.
    pub fn without_ended_grace(&self, now: UnixMillis) -> (KeyRing, Vec<RetiringKey>) {
        let mut ring = self.clone();
        let (ended, kept) = self.retiring.iter().cloned().partition(|k| k.until <= now);
        ring.retiring = kept;
        (ring, ended)
    }

    /// Keys that may verify an access token now: primary, secondary, then old values whose grace
    /// has not ended.
    pub fn candidates(&self, now: UnixMillis) -> Vec<Candidate<'_>> {
        let mut keys = vec![
            Candidate {
                slot: KeySlot::Primary,
                key: self.primary.value.expose().as_bytes(),
                retiring: false,
            },
            Candidate {
                slot: KeySlot::Secondary,
                key: self.secondary.value.expose().as_bytes(),
                retiring: false,
            },
        ];
        keys.extend(
            self.retiring
                .iter()
                .filter(|k| k.until > now)
                .map(|k| Candidate {
                    slot: k.slot,
                    key: k.value.expose().as_bytes(),
                    retiring: true,
                }),
        );
        keys
    }

    /// The requirement on a slot's current key, if any.
    pub fn requirement(&self, slot: KeySlot) -> Option<&RotationRequirement> {
        self.requirements
            .iter()
            .find(|r| r.slot == slot && r.version == self.slot(slot).version)
    }

    /// The requirement whose deadline has passed, disabling the slot's current key.
    pub fn disabled(&self, slot: KeySlot, now: UnixMillis) -> Option<&RotationRequirement> {
        self.requirement(slot).filter(|r| now >= r.deadline)
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

/// Cheap-to-clone handle to the key ring.
#[derive(Clone)]
pub struct Keys(Arc<Inner>);

struct Inner {
    ring: ArcSwap<KeyRing>,
    store: Arc<Store>,
    clock: SharedClock,
    /// Held while a change is written to the store and swapped in memory, so that concurrent
    /// changes reach memory in the order they were committed.
    write: Mutex<()>,
    usage: Usage,
    /// Cluster mode: the other nodes' usage of each access slot, summed.
    remote_usage: ArcSwap<[crate::store::UsageRecord; 2]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

fn slot_index(slot: KeySlot) -> Option<usize> {
    match slot {
        KeySlot::Primary => Some(0),
        KeySlot::Secondary => Some(1),
        KeySlot::Salt => None,
    }
}

impl Keys {
    /// Builds the ring (and usage counters) from what the store holds.
    pub fn load(
        store: Arc<Store>,
        instance: &Instance,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let stored = &instance.keys;
        let ring = KeyRing {
            primary: stored.primary.clone().into(),
            secondary: stored.secondary.clone().into(),
            salt: stored.salt.clone().into(),
            requirements: store.rotation_requirements()?,
            retiring: store.retiring_keys()?,
        };
        let usage = Usage::default();
        for slot in ACCESS_SLOTS {
            if let Some(index) = slot_index(slot) {
                usage.load(index, &store.load_usage(slot)?);
            }
        }
        Ok(Self(Arc::new(Inner {
            ring: ArcSwap::from_pointee(ring),
            store,
            clock,
            write: Mutex::new(()),
            usage,
            remote_usage: ArcSwap::from_pointee(Default::default()),
        })))
    }

    /// The current snapshot. Lock-free.
    pub fn current(&self) -> Arc<KeyRing> {
        self.0.ring.load_full()
    }

    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.0.store
    }

    fn lock_write(&self) -> std::sync::MutexGuard<'_, ()> {
        self.0.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `ring` the current one, mirrored to the store first (cluster mode: the ring came
    /// from the cluster's key bucket). Blocking (SQLite).
    pub fn install(&self, ring: KeyRing) -> Result<Arc<KeyRing>, StoreError> {
        let _write = self.lock_write();
        self.0.store.mirror_ring(&ring)?;
        let ring = Arc::new(ring);
        self.0.ring.store(Arc::clone(&ring));
        Ok(ring)
    }

    /// Replaces one slot with a freshly generated value: durable in the store before it takes
    /// effect in memory and before this returns. With a grace period, the old value keeps
    /// verifying tokens until it ends. Clears a rotation requirement on the slot. Blocking
    /// (SQLite + fsync): call it from a blocking thread.
    pub fn regenerate(
        &self,
        slot: KeySlot,
        actor: &str,
        source: Option<&str>,
        grace: Option<std::time::Duration>,
    ) -> Result<Arc<KeyRing>, StoreError> {
        let value = Secret::generate().map_err(StoreError::Random)?;
        let _write = self.lock_write();
        let now = self.0.clock.now_millis();
        let grace_until = grace
            .filter(|g| !g.is_zero() && slot != KeySlot::Salt)
            .map(|g| now + i64::try_from(g.as_millis()).unwrap_or(i64::MAX / 2));
        let change = KeyChange {
            actor,
            source,
            grace_until,
        };
        let old = self.current();
        let (stored, old_version) = self.0.store.replace_key(slot, &value, now, &change)?;
        let mut ring = old.with_slot(slot, stored.into());
        if let Some(until) = grace_until {
            ring.retiring.push(RetiringKey {
                slot,
                version: old_version,
                value: old.slot(slot).value.clone(),
                until,
            });
        }
        let ring = Arc::new(ring);
        self.0.ring.store(Arc::clone(&ring));
        tracing::info!(
            slot = slot.as_str(),
            old_version,
            new_version = ring.slot(slot).version,
            actor,
            grace = grace_until.is_some(),
            "key regenerated"
        );
        Ok(ring)
    }

    /// Demands that the slot's current key be rotated by `deadline`; after it, the key stops
    /// authenticating until the slot is regenerated. Blocking.
    pub fn require_rotation(
        &self,
        slot: KeySlot,
        deadline: UnixMillis,
        reason: &str,
        actor: &str,
        source: Option<&str>,
    ) -> Result<Arc<KeyRing>, StoreError> {
        let _write = self.lock_write();
        let old = self.current();
        let requirement = RotationRequirement {
            slot,
            version: old.slot(slot).version,
            deadline,
            reason: reason.to_string(),
            required_at: self.0.clock.now_millis(),
            actor: actor.to_string(),
        };
        self.0.store.require_rotation(&requirement, source)?;
        let mut ring = (*old).clone();
        ring.requirements.retain(|r| r.slot != slot);
        ring.requirements.push(requirement);
        let ring = Arc::new(ring);
        self.0.ring.store(Arc::clone(&ring));
        tracing::info!(slot = slot.as_str(), actor, "key rotation required");
        Ok(ring)
    }

    /// Drops old values whose grace period is over (store first, then memory). Blocking.
    pub fn end_grace(&self) -> Result<Vec<RetiringKey>, StoreError> {
        let _write = self.lock_write();
        let now = self.0.clock.now_millis();
        if !self.current().retiring.iter().any(|k| k.until <= now) {
            return Ok(Vec::new());
        }
        let ended = self.0.store.end_grace(now)?;
        let mut ring = (*self.current()).clone();
        ring.retiring.retain(|k| k.until > now);
        self.0.ring.store(Arc::new(ring));
        Ok(ended)
    }

    /// Counts one thing authenticated by an access slot. A few relaxed atomic operations.
    pub fn record_use(&self, slot: KeySlot, kind: UseKind) {
        if let Some(index) = slot_index(slot) {
            self.0.usage.record(index, kind, self.0.clock.now_millis());
        }
    }

    /// A slot's usage: this node's, plus the other nodes' in cluster mode.
    pub fn usage(&self, slot: KeySlot) -> Option<UsageSnapshot> {
        let now = self.0.clock.now_millis();
        slot_index(slot).map(|index| {
            let local = self.0.usage.snapshot(index, now);
            let remote = &self.0.remote_usage.load()[index];
            if remote.rest_requests + remote.client_connections == 0 {
                local
            } else {
                local.plus(UsageSnapshot::of_record(remote, now))
            }
        })
    }

    /// This node's own usage of the two access slots, as records (to share with the cluster).
    pub fn local_usage(&self) -> [crate::store::UsageRecord; 2] {
        let now = self.0.clock.now_millis();
        [0, 1].map(|index| self.0.usage.to_record(index, now))
    }

    /// Cluster mode: the other nodes' usage, summed per access slot.
    pub fn set_remote_usage(&self, records: [crate::store::UsageRecord; 2]) {
        self.0.remote_usage.store(Arc::new(records));
    }

    /// Writes the usage counters to the store. Blocking.
    pub fn save_usage(&self) -> Result<(), StoreError> {
        let now = self.0.clock.now_millis();
        let records: Vec<_> = ACCESS_SLOTS
            .iter()
            .filter_map(|&slot| slot_index(slot).map(|i| (slot, self.0.usage.to_record(i, now))))
            .collect();
        self.0.store.save_usage(&records, Usage::oldest_minute(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn keys() -> (tempfile::TempDir, Keys, Arc<Store>, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let instance = store.load_or_init(1_000).unwrap();
        let clock = ManualClock::new(2_000);
        let keys = Keys::load(Arc::clone(&store), &instance, clock.clone()).unwrap();
        (dir, keys, store, clock)
    }

    #[test]
    fn regenerate_replaces_exactly_one_slot_in_memory_and_on_disk() {
        let (_dir, keys, store, _) = keys();
        let before = keys.current();
        let after = keys
            .regenerate(KeySlot::Primary, "test", None, None)
            .unwrap();
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
        let (_dir, keys, store, _) = keys();
        let threads: Vec<_> = [KeySlot::Primary, KeySlot::Secondary]
            .into_iter()
            .flat_map(|slot| std::iter::repeat_n(slot, 10))
            .map(|slot| {
                let keys = keys.clone();
                std::thread::spawn(move || keys.regenerate(slot, "test", None, None).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ring = keys.current();
        assert_eq!((ring.primary.version, ring.secondary.version), (11, 11));
        let on_disk = store.load_or_init(0).unwrap().keys;
        assert_eq!(on_disk.primary.value, ring.primary.value);
        assert_eq!(on_disk.secondary.value, ring.secondary.value);
    }

    #[test]
    fn ring_changes_as_pure_functions_and_installing_a_ring_mirrors_it() {
        let (_dir, keys, store, _) = keys();
        let ring = keys.current();
        let value = Secret::new("new-value".into());
        let (next, old_version) =
            ring.regenerated(KeySlot::Secondary, value.clone(), 5_000, Some(9_000));
        assert_eq!(old_version, 1);
        assert_eq!(
            (next.secondary.version, next.secondary.created_at),
            (2, 5_000)
        );
        assert_eq!(next.secondary.value, value);
        assert_eq!(
            next.primary.value, ring.primary.value,
            "other slots untouched"
        );
        assert_eq!(next.retiring.len(), 1);
        assert_eq!(next.retiring[0].value, ring.secondary.value);
        let requirement = RotationRequirement {
            slot: KeySlot::Primary,
            version: 1,
            deadline: 10_000,
            reason: "r".into(),
            required_at: 5_000,
            actor: "a".into(),
        };
        let next = next.with_requirement(requirement.clone());
        let next = next.with_requirement(RotationRequirement {
            deadline: 20_000,
            ..requirement
        });
        assert_eq!(next.requirements.len(), 1, "one requirement per slot");
        let (after, ended) = next.without_ended_grace(9_000);
        assert_eq!((ended.len(), after.retiring.len()), (1, 0));
        let (_, none) = next.without_ended_grace(8_999);
        assert!(none.is_empty());

        keys.install(after.clone()).unwrap();
        assert_eq!(keys.current().secondary.value, value);
        let on_disk = store.load_or_init(0).unwrap().keys;
        assert_eq!(on_disk.secondary.value, value);
        assert_eq!(on_disk.secondary.version, 2);
        assert_eq!(store.rotation_requirements().unwrap()[0].deadline, 20_000);
        assert!(store.retiring_keys().unwrap().is_empty());
        let reloaded = Keys::load(
            Arc::clone(&store),
            &store.load_or_init(0).unwrap(),
            ManualClock::new(0),
        )
        .unwrap();
        assert_eq!(reloaded.current().secondary.value, value);
    }

    #[test]
    fn usage_counts_per_access_slot_and_survives_a_reload() {
        let (_dir, keys, store, _) = keys();
        keys.record_use(KeySlot::Secondary, UseKind::Rest);
        keys.record_use(KeySlot::Secondary, UseKind::Connection);
        let usage = keys.usage(KeySlot::Secondary).unwrap();
        assert_eq!((usage.rest_requests, usage.client_connections), (1, 1));
        assert_eq!(usage.last_used_at, Some(2_000));
        assert!(keys.usage(KeySlot::Salt).is_none());
        keys.save_usage().unwrap();
        let instance = store.load_or_init(0).unwrap();
        let reloaded = Keys::load(Arc::clone(&store), &instance, ManualClock::new(2_000)).unwrap();
        assert_eq!(reloaded.usage(KeySlot::Secondary), Some(usage));
    }

    #[test]
    fn a_requirement_disables_the_key_at_its_deadline_and_regenerating_clears_it() {
        let (_dir, keys, store, clock) = keys();
        let ring = keys
            .require_rotation(KeySlot::Primary, 10_000, "leaked", "admin", None)
            .unwrap();
        assert!(ring.requirement(KeySlot::Primary).is_some());
        assert!(ring.disabled(KeySlot::Primary, 9_999).is_none());
        assert!(ring.disabled(KeySlot::Primary, 10_000).is_some());
        assert!(ring.disabled(KeySlot::Secondary, 10_000).is_none());
        clock.set_millis(20_000);
        let ring = keys
            .regenerate(KeySlot::Primary, "admin", None, None)
            .unwrap();
        assert!(ring.requirement(KeySlot::Primary).is_none());
        assert!(store.rotation_requirements().unwrap().is_empty());
    }

    #[test]
    fn grace_keeps_the_old_value_verifying_until_it_ends() {
        let (_dir, keys, store, clock) = keys();
        let old = keys.current().primary.value.clone();
        let ring = keys
            .regenerate(
                KeySlot::Primary,
                "admin",
                None,
                Some(std::time::Duration::from_secs(60)),
            )
            .unwrap();
        let has_old = |ring: &KeyRing, now| {
            ring.candidates(now)
                .iter()
                .any(|c| c.retiring && c.key == old.expose().as_bytes())
        };
        assert!(has_old(&ring, 2_000));
        assert!(!has_old(&ring, 62_000));
        assert_eq!(store.retiring_keys().unwrap().len(), 1);
        clock.set_millis(62_000);
        let ended = keys.end_grace().unwrap();
        assert_eq!(ended.len(), 1);
        assert!(keys.current().retiring.is_empty());
        assert!(store.retiring_keys().unwrap().is_empty());
        let events = store.audit(None, None, 100).unwrap();
        assert_eq!(events.last().unwrap().event, "grace_ended");
    }
}
