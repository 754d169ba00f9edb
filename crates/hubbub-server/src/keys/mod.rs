//! Keys: the handle to the current key ring (read lock-free on the hot path; a change is written
//! to the store first, then swapped in memory) and the key lifecycle around it.
//!
//! | submodule | its one job |
//! |---|---|
//! | [`ring`] | the immutable ring and the pure transitions every key change is built from |
//! | [`changes`] | every key change (regenerate, require rotation, end grace), written once |
//! | [`auth`] | verifies REST and client tokens against the ring |
//! | [`usage`] | per-key usage counters: lock-free on the hot path, saved periodically |
//! | [`stale`] | callers still signing with a regenerated key value, bounded, saved periodically |
//! | [`lifecycle`] | the housekeeper: usage, grace periods, disabled keys, notices, rotation steps |
//! | [`policy`] | rotation policies: alternating active and standby slots, and their sinks |
//! | [`sinks`] | writing the active connection string to files, commands and webhooks |
//! | [`events`] | key events (from the audit log) and first stale callers, for CloudEvents |
//! | [`notices`] | notices about keys by email and webhook, queued once, retried until delivered |

pub mod auth;
pub mod changes;
pub mod events;
pub mod lifecycle;
pub mod notices;
pub mod policy;
pub mod ring;
pub mod rotation;
pub mod sinks;
pub mod stale;
pub mod usage;

pub use ring::{Candidate, KeyRing, Planned, Revocation, SlotKey, ACCESS_SLOTS};

use crate::clock::SharedClock;
use crate::store::{AuditEvent, Instance, Store, StoreError};
use arc_swap::ArcSwap;
use hubbub_proto::keys::KeySlot;
use std::sync::{Arc, Mutex};
use usage::{Usage, UsageSnapshot, UseKind};
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
    /// Callers seen with tokens signed by a regenerated key value.
    stale: stale::StaleCallers,
    /// Bumped whenever a new ring is swapped in.
    changed: tokio::sync::watch::Sender<u64>,
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
            primary: stored.primary.clone(),
            secondary: stored.secondary.clone(),
            salt: stored.salt.clone(),
            requirements: store.rotation_requirements()?,
            retiring: store.retiring_keys()?,
            previous: store.previous_keys()?,
            revocations: Vec::new(),
            policy: store
                .rotation_policy()?
                .and_then(|json| serde_json::from_str(&json).ok()),
            local_auth_disabled: store.local_auth_disabled()?,
        };
        let store_stale = store.stale_callers()?;
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
            stale: stale::StaleCallers::load(store_stale),
            changed: tokio::sync::watch::Sender::new(0),
        })))
    }

    /// A receiver that changes whenever a new ring is in force (a change here, or one another
    /// node made).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changed.subscribe()
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

    /// Makes `ring` the current one, written to the store first (a ring that another node
    /// changed: its events are recorded where the change was made). Blocking (SQLite).
    pub fn install(&self, ring: KeyRing) -> Result<Arc<KeyRing>, StoreError> {
        let _write = self.lock_write();
        self.0.store.save_ring(&ring.rows(), &[])?;
        let ring = Arc::new(ring);
        self.0.ring.store(Arc::clone(&ring));
        self.0.changed.send_modify(|n| *n += 1);
        Ok(ring)
    }

    /// A key change on this node alone: under the write lock, `plan` turns the current ring into
    /// the next one and the events that record it; both are written to the store in one durable
    /// transaction, and only then is the next ring swapped in. `None` from `plan`: nothing to do.
    /// Blocking (SQLite + fsync): call it from a blocking thread.
    pub fn commit(
        &self,
        plan: impl FnOnce(&KeyRing) -> Option<Planned>,
    ) -> Result<(Arc<KeyRing>, Option<Planned>), StoreError> {
        let _write = self.lock_write();
        let current = self.current();
        let Some(planned) = plan(&current) else {
            return Ok((current, None));
        };
        let entries: Vec<_> = planned.events.iter().map(AuditEvent::entry).collect();
        self.0.store.save_ring(&planned.ring.rows(), &entries)?;
        let next = Arc::new(planned.ring.clone());
        self.0.ring.store(Arc::clone(&next));
        self.0.changed.send_modify(|n| *n += 1);
        Ok((next, Some(planned)))
    }

    /// Counts one thing authenticated by an access slot (by an earlier value in its grace
    /// period when `retiring`, counted apart). A few relaxed atomic operations.
    pub fn record_use(&self, slot: KeySlot, kind: UseKind, retiring: bool) {
        if let Some(index) = slot_index(slot) {
            let now = self.0.clock.now_millis();
            if retiring {
                self.0.usage.record_retiring(index, now);
            } else {
                self.0.usage.record(index, kind, now);
            }
        }
    }

    /// Records a caller refused because an earlier value of `slot` signed its token.
    pub fn record_stale(&self, slot: KeySlot, version: u64, caller: &stale::Caller<'_>) {
        self.0
            .stale
            .record(slot, version, caller, self.0.clock.now_millis());
    }

    /// The callers seen with tokens an earlier key value signed, and their counts.
    pub fn stale_callers(&self) -> &stale::StaleCallers {
        &self.0.stale
    }

    /// Saves the stale callers if they changed, forgetting those of versions no longer
    /// recognised. Blocking (SQLite).
    pub fn save_stale_callers(&self) -> Result<(), StoreError> {
        let ring = self.current();
        self.0.stale.retain_versions(|slot, version| {
            ring.previous
                .iter()
                .any(|k| k.slot == slot && k.version == version)
        });
        let Some(callers) = self.0.stale.take_changed() else {
            return Ok(());
        };
        self.0.store.save_stale_callers(&callers).inspect_err(|_| {
            self.0.stale.mark_changed();
        })
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

    /// Uses of `slot` per minute over the last hour, oldest first, minutes without any left out:
    /// (minute, REST requests and connections on every node, uses of an earlier value in its
    /// grace period on this node).
    pub fn usage_minutes(&self, slot: KeySlot) -> Vec<(i64, u64, u64)> {
        let Some(index) = slot_index(slot) else {
            return Vec::new();
        };
        let now = self.0.clock.now_millis();
        let mut minutes = std::collections::BTreeMap::<i64, (u64, u64)>::new();
        for (minute, uses, retiring) in self.0.usage.minutes(index, now) {
            let entry = minutes.entry(minute).or_default();
            entry.0 += uses;
            entry.1 += retiring;
        }
        let oldest = Usage::oldest_minute(now);
        for (minute, rest, connections) in &self.0.remote_usage.load()[index].minutes {
            if *minute >= oldest {
                minutes.entry(*minute).or_default().0 += rest + connections;
            }
        }
        minutes
            .into_iter()
            .map(|(minute, (uses, retiring))| (minute, uses, retiring))
            .collect()
    }

    /// This node's own usage of the two access slots, as records (to share with the cluster).
    pub fn local_usage(&self) -> [crate::store::UsageRecord; 2] {
        let now = self.0.clock.now_millis();
        [0, 1].map(|index| self.0.usage.to_record(index, now))
    }

    /// REST requests and connections `slot`'s current value authenticated within `window_ms`
    /// (by the minute, at most the last hour), on this node and (in a cluster) the others.
    pub fn uses_within(&self, slot: KeySlot, window_ms: i64) -> u64 {
        let Some(index) = slot_index(slot) else {
            return 0;
        };
        let since = Usage::minute(self.0.clock.now_millis() - window_ms);
        let remote: u64 = self.0.remote_usage.load()[index]
            .minutes
            .iter()
            .filter(|(minute, _, _)| *minute >= since)
            .map(|(_, rest, connections)| rest + connections)
            .sum();
        self.0.usage.uses_since(index, since) + remote
    }

    /// Cluster mode: the other nodes' usage, summed per access slot.
    pub fn set_remote_usage(&self, records: [crate::store::UsageRecord; 2]) {
        self.0.remote_usage.store(Arc::new(records));
    }

    /// Writes the usage counters (and the stale callers, if they changed) to the store.
    /// Blocking.
    pub fn save_usage(&self) -> Result<(), StoreError> {
        let now = self.0.clock.now_millis();
        let records: Vec<_> = ACCESS_SLOTS
            .iter()
            .filter_map(|&slot| slot_index(slot).map(|i| (slot, self.0.usage.to_record(i, now))))
            .collect();
        self.0
            .store
            .save_usage(&records, Usage::oldest_minute(now))?;
        self.save_stale_callers()
    }
}

/// A fresh instance's keys in a temporary data directory, with a manual clock at 2 s.
#[cfg(test)]
pub(crate) fn test_keys() -> (
    tempfile::TempDir,
    Keys,
    Arc<Store>,
    Arc<crate::clock::ManualClock>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let instance = store.load_or_init(1_000).unwrap();
    let clock = crate::clock::ManualClock::new(2_000);
    let keys = Keys::load(Arc::clone(&store), &instance, clock.clone()).unwrap();
    (dir, keys, store, clock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::secret::Secret;
    use crate::store::RotationRequirement;

    use super::test_keys as keys;

    #[test]
    fn ring_changes_as_pure_functions_and_installing_a_ring_mirrors_it() {
        let (_dir, keys, store, _) = keys();
        let ring = keys.current();
        let value = Secret::new("new-value".into());
        let (next, old_version, ended) =
            ring.regenerated(KeySlot::Secondary, value.clone(), 5_000, Some(9_000));
        assert!(ended.is_empty(), "with a grace period nothing else ends");
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
        let (after, ended) = next.without_ended_grace(9_000, 0);
        assert_eq!((ended.len(), after.retiring.len()), (1, 0));
        let (_, none) = next.without_ended_grace(8_999, 0);
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
        keys.record_use(KeySlot::Secondary, UseKind::Rest, false);
        keys.record_use(KeySlot::Secondary, UseKind::Connection, false);
        keys.record_use(KeySlot::Secondary, UseKind::Rest, true);
        let usage = keys.usage(KeySlot::Secondary).unwrap();
        assert_eq!((usage.rest_requests, usage.client_connections), (1, 1));
        assert_eq!(usage.last_used_at, Some(2_000));
        assert_eq!(
            (usage.retiring_uses, usage.retiring_last_used_at),
            (1, Some(2_000)),
            "a value in its grace period is counted apart"
        );
        assert!(keys.usage(KeySlot::Salt).is_none());
        keys.save_usage().unwrap();
        let instance = store.load_or_init(0).unwrap();
        let reloaded = Keys::load(Arc::clone(&store), &instance, ManualClock::new(2_000)).unwrap();
        assert_eq!(reloaded.usage(KeySlot::Secondary), Some(usage));
    }
}
