//! The key ring: an immutable snapshot of the three slots (primary, secondary, salt) with what
//! decides whether a key may still authenticate (rotation deadlines, old values in a grace
//! period), and the pure transitions every key change is built from, on one node or many.

use crate::clock::UnixMillis;
use crate::secret::Secret;
use crate::store::{
    AuditEvent, PreviousKey, RetiringKey, RingRows, RotationRequirement, StoredSlot,
};
use hubbub_proto::connection_string::ConnectionString;
use hubbub_proto::keys::{KeySlot, WebPubSubKeys};

/// One slot's current value: as stored.
pub type SlotKey = StoredSlot;

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
    /// Earlier access-key values, kept only to recognise the tokens they signed (stale callers).
    pub previous: Vec<PreviousKey>,
    /// The latest revocation with disconnect of each slot: every node closes its connections
    /// whose token a value of the slot up to that version signed. Not kept in the store (no
    /// connection outlives a restart); carried by the cluster's ring.
    pub revocations: Vec<Revocation>,
    /// The rotation policy, if one is set.
    pub policy: Option<super::policy::RotationPolicy>,
    /// Access keys no longer authenticate REST calls or client tokens (identity-provider tokens
    /// and tokens from `:generateToken` still do); `disableLocalAuth`.
    pub local_auth_disabled: bool,
}

/// Connections whose token a value of `slot` up to `up_to_version` signed are to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub slot: KeySlot,
    pub up_to_version: u64,
    pub at: UnixMillis,
}

/// The revocations a node has enforced, with the connections each closed there. Held while
/// enforcing, so a caller waiting for it sees the count.
#[derive(Debug, Default)]
pub struct Enforced(pub(crate) tokio::sync::Mutex<Vec<(Revocation, usize)>>);

impl Revocation {
    /// Whether a connection whose token `signed_by` signed is to be closed.
    pub fn covers(&self, signed_by: Option<(KeySlot, u64)>) -> bool {
        signed_by.is_some_and(|(slot, version)| slot == self.slot && version <= self.up_to_version)
    }
}

/// Earlier values kept per access slot, at most (the oldest is forgotten first).
pub const MAX_PREVIOUS_PER_SLOT: usize = 8;

/// What a key change makes of a ring: the next ring, the audit events that record the change,
/// and the old values it ended.
#[derive(Debug, Clone)]
pub struct Planned {
    pub ring: KeyRing,
    pub events: Vec<AuditEvent>,
    pub ended: Vec<RetiringKey>,
}

/// The access-key slots, in the order tokens are tried.
pub const ACCESS_SLOTS: [KeySlot; 2] = [KeySlot::Primary, KeySlot::Secondary];

/// A key a token may be verified with.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub slot: KeySlot,
    /// The version of the value (the slot's current one, or an earlier one in its grace).
    pub version: u64,
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

    pub(crate) fn with_slot(&self, slot: KeySlot, key: SlotKey) -> Self {
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
    /// slot is cleared. With `grace_until` the old value keeps verifying until then (but never
    /// past a rotation deadline it had); without, every earlier value of the slot still in a
    /// grace period stops verifying too, so regenerating after a leak revokes. Returns the new
    /// ring, the slot's previous version, and the earlier values whose grace this ended.
    pub fn regenerated(
        &self,
        slot: KeySlot,
        value: Secret,
        now: UnixMillis,
        grace_until: Option<UnixMillis>,
    ) -> (KeyRing, u64, Vec<RetiringKey>) {
        let old = self.slot(slot);
        let deadline = self.requirement(slot).map(|r| r.deadline);
        let mut ring = self.with_slot(
            slot,
            SlotKey {
                value,
                version: old.version + 1,
                created_at: now,
            },
        );
        if slot != KeySlot::Salt {
            ring.previous
                .retain(|k| !(k.slot == slot && k.version == old.version));
            ring.previous.push(PreviousKey {
                slot,
                version: old.version,
                value: old.value.clone(),
                replaced_at: now,
            });
            let of_slot = ring.previous.iter().filter(|k| k.slot == slot).count();
            if of_slot > MAX_PREVIOUS_PER_SLOT {
                let oldest = ring
                    .previous
                    .iter()
                    .filter(|k| k.slot == slot)
                    .map(|k| k.version)
                    .min();
                ring.previous
                    .retain(|k| !(k.slot == slot && Some(k.version) == oldest));
            }
        }
        let mut ended = Vec::new();
        match grace_until {
            Some(until) => {
                ring.retiring
                    .retain(|k| !(k.slot == slot && k.version == old.version));
                ring.retiring.push(RetiringKey {
                    slot,
                    version: old.version,
                    value: old.value.clone(),
                    until: deadline.map_or(until, |d| until.min(d)),
                });
            }
            None => {
                let (of_slot, kept) = ring.retiring.into_iter().partition(|k| k.slot == slot);
                ring.retiring = kept;
                ended = of_slot;
                ended.retain(|k: &RetiringKey| k.until > now);
            }
        }
        (ring, old.version, ended)
    }

    /// The ring with `requirement` replacing any requirement on its slot. Earlier values of the
    /// slot still in a grace period stop verifying at its deadline at the latest.
    pub fn with_requirement(&self, requirement: RotationRequirement) -> KeyRing {
        let mut ring = self.clone();
        ring.requirements.retain(|r| r.slot != requirement.slot);
        for key in ring
            .retiring
            .iter_mut()
            .filter(|k| k.slot == requirement.slot)
        {
            key.until = key.until.min(requirement.deadline);
        }
        ring.requirements.push(requirement);
        ring
    }

    /// The old values whose grace period is over at `now`, and the ring without them and
    /// without the earlier values replaced before `forget_before` (no longer recognised).
    pub fn without_ended_grace(
        &self,
        now: UnixMillis,
        forget_before: UnixMillis,
    ) -> (KeyRing, Vec<RetiringKey>) {
        let mut ring = self.clone();
        let (ended, kept) = self.retiring.iter().cloned().partition(|k| k.until <= now);
        ring.retiring = kept;
        ring.previous.retain(|k| k.replaced_at >= forget_before);
        (ring, ended)
    }

    /// The ring without any earlier value of `slot` (its grace ended now, early), and the values
    /// whose grace was still running.
    pub fn without_grace_of(&self, slot: KeySlot, now: UnixMillis) -> (KeyRing, Vec<RetiringKey>) {
        let mut ring = self.clone();
        let (of_slot, kept): (Vec<RetiringKey>, _) =
            self.retiring.iter().cloned().partition(|k| k.slot == slot);
        ring.retiring = kept;
        let running = of_slot.into_iter().filter(|k| k.until > now).collect();
        (ring, running)
    }

    /// Keys that may verify an access token now: primary, secondary, then old values whose grace
    /// has not ended.
    pub fn candidates(&self, now: UnixMillis) -> Vec<Candidate<'_>> {
        let mut keys = vec![
            Candidate {
                slot: KeySlot::Primary,
                version: self.primary.version,
                key: self.primary.value.expose().as_bytes(),
                retiring: false,
            },
            Candidate {
                slot: KeySlot::Secondary,
                version: self.secondary.version,
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
                    version: k.version,
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

    /// The ring as the store keeps it.
    pub fn rows(&self) -> RingRows<'_> {
        RingRows {
            slots: KeySlot::ALL.map(|slot| (slot, self.slot(slot))),
            requirements: &self.requirements,
            retiring: &self.retiring,
            previous: &self.previous,
            policy: self
                .policy
                .as_ref()
                .map(|p| serde_json::to_string(p).unwrap_or_default()),
            local_auth_disabled: self.local_auth_disabled,
        }
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
