//! Every key change, written once: what a change does to a ring (a pure function built on the
//! [`KeyRing`] transitions, with the audit events that record it) and one way to apply it,
//! through the backplane: one SQLite transaction on a single node, a compare-and-set on the
//! shared ring in a cluster. Either way the change is durable before it is acknowledged, and the
//! caller gets the ring now in force on this node.

use crate::backplane::{Backplane, SharedError};
use crate::clock::UnixMillis;
use crate::error::ApiError;
use crate::keys::{KeyRing, Keys, Planned};
use crate::secret::Secret;
use crate::store::{AuditEvent, RetiringKey, RotationRequirement, StoreError};
use axum::http::StatusCode;
use hubbub_proto::keys::KeySlot;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KeyChangeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Shared(#[from] SharedError),
}

impl KeyChangeError {
    /// The HTTP answer: 503 while the nodes cannot agree on a change, 500 otherwise. Never
    /// carries key material.
    pub fn into_api(self, what: &str) -> ApiError {
        match self {
            KeyChangeError::Shared(SharedError::Refused(reason)) => {
                tracing::warn!(error = %reason, "{what} refused");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    reason,
                )
            }
            other => {
                tracing::error!(error = %other, "{what} failed");
                ApiError::internal(format!("{what} could not be stored; nothing was changed"))
            }
        }
    }
}

/// A key change, as the handlers and the housekeeper ask for it.
#[derive(Debug, Clone)]
pub enum Change {
    /// The slot gets `value`; with `grace_until` the old value keeps verifying until then.
    Regenerate {
        slot: KeySlot,
        value: Secret,
        grace_until: Option<UnixMillis>,
    },
    /// The slot's current key must be rotated by `deadline`.
    RequireRotation {
        slot: KeySlot,
        deadline: UnixMillis,
        reason: String,
    },
    /// Old values whose grace period is over stop verifying, and earlier values replaced before
    /// `forget_before` are no longer recognised (the housekeeper's change).
    ExpireGrace { forget_before: UnixMillis },
    /// Every earlier value of `slot` still in a grace period stops verifying now.
    EndGrace { slot: KeySlot },
    /// Sets (or with `None` clears) the rotation policy.
    SetPolicy(Option<super::policy::RotationPolicy>),
    /// One rotation step: the standby slot gets `value` and becomes active. With `due_only`, only
    /// when the policy's step is due (the housekeeper's change; in a cluster one node wins).
    RotateStep { value: Secret, due_only: bool },
    /// The due step is put off until `until`, for `reason` (the standby key is still in use).
    PostponeStep { until: UnixMillis, reason: String },
    /// The sinks received the active value `(slot, version)`.
    SinksDelivered { slot: KeySlot, version: u64 },
    /// `slot` gets `value` now and no earlier value of it verifies any more (as a regeneration
    /// without grace); with `disconnect`, every node closes the connections a value of the slot
    /// signed.
    Revoke {
        slot: KeySlot,
        value: Secret,
        disconnect: bool,
    },
    /// Access keys stop (`true`) or start again (`false`) authenticating REST calls and client
    /// tokens (`disableLocalAuth`).
    SetLocalAuth { disabled: bool },
}

/// Who asked for a change, and from where (never key material).
#[derive(Debug, Clone)]
pub struct Origin {
    pub actor: std::sync::Arc<str>,
    pub source: Option<String>,
}

impl Origin {
    /// A change asked for on the admin listener by `actor`, from `peer`.
    pub fn admin(actor: impl Into<std::sync::Arc<str>>, peer: std::net::SocketAddr) -> Self {
        Self {
            actor: actor.into(),
            source: Some(peer.ip().to_string()),
        }
    }

    /// A change the deployment's configuration asks for at start (`--disable-local-auth`).
    pub fn config() -> Self {
        Self {
            actor: "config".into(),
            source: None,
        }
    }

    /// A change the service makes by itself (a grace period ending, a deadline passing).
    pub fn policy() -> Self {
        Self {
            actor: "policy".into(),
            source: None,
        }
    }
}

/// A change applied: the ring now in force on this node, and the old values it ended.
#[derive(Debug, Clone)]
pub struct Applied {
    pub ring: Arc<KeyRing>,
    pub ended: Vec<RetiringKey>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Change {
    /// Regenerating `slot` with a fresh value from the OS random source; a grace period applies
    /// to access keys only, and a zero one is none.
    pub fn regenerate(
        slot: KeySlot,
        grace: Option<Duration>,
        now: UnixMillis,
    ) -> Result<Self, StoreError> {
        Ok(Change::Regenerate {
            slot,
            value: Secret::generate().map_err(StoreError::Random)?,
            grace_until: grace
                .filter(|g| !g.is_zero() && slot != KeySlot::Salt)
                .map(|g| now + millis(g)),
        })
    }

    /// What this change makes of `ring` at `now`; `None` when there is nothing to do. Pure: a
    /// cluster applies it again, with the same value, after losing a race.
    pub fn plan(&self, ring: &KeyRing, now: UnixMillis, origin: &Origin) -> Option<Planned> {
        let event = |event: &'static str, slot: KeySlot| AuditEvent {
            at: now,
            event,
            slot: Some(slot),
            actor: origin.actor.to_string(),
            source: origin.source.clone(),
            ..AuditEvent::default()
        };
        match self {
            Change::Regenerate {
                slot,
                value,
                grace_until,
            } => {
                let (next, old_version, ended) =
                    ring.regenerated(*slot, value.clone(), now, *grace_until);
                let new_version = old_version + 1;
                let record = AuditEvent {
                    old_version: Some(old_version),
                    new_version: Some(new_version),
                    detail: grace_until.map(|until| {
                        format!(
                            "the old key is accepted until {}",
                            crate::clock::rfc3339(until)
                        )
                    }),
                    dedup: Some(format!("regenerated/{}/{new_version}", slot.as_str())),
                    ..event("regenerated", *slot)
                };
                let mut events = vec![record];
                let why = format!(
                    "ended by regenerating the {slot} key without a grace period (version {new_version})"
                );
                events.extend(ended.iter().map(|key| grace_ended(event, key, &why)));
                Some(Planned {
                    ring: next,
                    events,
                    ended,
                })
            }
            Change::SetLocalAuth { disabled } => {
                if ring.local_auth_disabled == *disabled {
                    return None;
                }
                let mut next = ring.clone();
                next.local_auth_disabled = *disabled;
                let name = if *disabled {
                    "local_auth_disabled"
                } else {
                    "local_auth_enabled"
                };
                Some(Planned {
                    ring: next,
                    events: vec![AuditEvent {
                        slot: None,
                        ..event(name, KeySlot::Primary)
                    }],
                    ended: Vec::new(),
                })
            }
            Change::SetPolicy(policy) => {
                if ring.policy == *policy {
                    return None;
                }
                let mut next = ring.clone();
                next.policy = policy.clone();
                let record = match policy {
                    Some(p) => AuditEvent {
                        detail: Some(format!(
                            "every {} s, active key {}{}, {} sink(s)",
                            p.every_ms / 1000,
                            p.active,
                            p.only_if_idle_ms
                                .map(|w| format!(
                                    ", only if the standby key was idle {} s",
                                    w / 1000
                                ))
                                .unwrap_or_default(),
                            p.sinks.len()
                        )),
                        ..event("rotation_policy_set", p.active)
                    },
                    None => AuditEvent {
                        slot: None,
                        ..event("rotation_policy_cleared", KeySlot::Primary)
                    },
                };
                Some(Planned {
                    ring: next,
                    events: vec![record],
                    ended: Vec::new(),
                })
            }
            Change::RotateStep { value, due_only } => {
                let policy = ring.policy.as_ref()?;
                if *due_only && policy.next_step_at > now {
                    return None;
                }
                let standby = policy.standby();
                let (mut next, old_version, ended) =
                    ring.regenerated(standby, value.clone(), now, None);
                let new_version = old_version + 1;
                let mut stepped = policy.clone();
                stepped.active = standby;
                stepped.next_step_at = now + policy.every_ms;
                stepped.last_outcome = Some(super::policy::Outcome {
                    at: now,
                    result: "rotated".into(),
                    detail: format!(
                        "the {standby} key (version {new_version}) is active; the {} key stays valid until the next step",
                        policy.active
                    ),
                });
                next.policy = Some(stepped);
                let record = AuditEvent {
                    old_version: Some(old_version),
                    new_version: Some(new_version),
                    detail: Some(format!("rotation step: the {standby} key is now active")),
                    dedup: Some(format!("rotation_step/{}/{new_version}", standby.as_str())),
                    ..event("rotation_step", standby)
                };
                let mut events = vec![record];
                let why =
                    format!("ended by a rotation step (the {standby} key, version {new_version})");
                events.extend(ended.iter().map(|key| grace_ended(event, key, &why)));
                Some(Planned {
                    ring: next,
                    events,
                    ended,
                })
            }
            Change::PostponeStep { until, reason } => {
                let policy = ring.policy.as_ref()?;
                if policy.next_step_at > now {
                    return None;
                }
                let mut postponed = policy.clone();
                postponed.next_step_at = *until;
                postponed.last_outcome = Some(super::policy::Outcome {
                    at: now,
                    result: "postponed".into(),
                    detail: reason.clone(),
                });
                let mut next = ring.clone();
                next.policy = Some(postponed);
                let record = AuditEvent {
                    detail: Some(format!("until {}: {reason}", crate::clock::rfc3339(*until))),
                    ..event("rotation_postponed", policy.standby())
                };
                Some(Planned {
                    ring: next,
                    events: vec![record],
                    ended: Vec::new(),
                })
            }
            Change::SinksDelivered { slot, version } => {
                let policy = ring.policy.as_ref()?;
                if policy.delivered == Some((*slot, *version)) {
                    return None;
                }
                let mut delivered = policy.clone();
                delivered.delivered = Some((*slot, *version));
                let mut next = ring.clone();
                next.policy = Some(delivered);
                let record = AuditEvent {
                    new_version: Some(*version),
                    detail: Some(format!(
                        "{} sink(s) hold the {slot} connection string",
                        policy.sinks.len()
                    )),
                    dedup: Some(format!("sinks_written/{}/{version}", slot.as_str())),
                    ..event("sinks_written", *slot)
                };
                Some(Planned {
                    ring: next,
                    events: vec![record],
                    ended: Vec::new(),
                })
            }
            Change::Revoke {
                slot,
                value,
                disconnect,
            } => {
                let (mut next, old_version, ended) =
                    ring.regenerated(*slot, value.clone(), now, None);
                let new_version = old_version + 1;
                if *disconnect {
                    next.revocations.retain(|r| r.slot != *slot);
                    next.revocations.push(crate::keys::Revocation {
                        slot: *slot,
                        up_to_version: old_version,
                        at: now,
                    });
                }
                let record = AuditEvent {
                    old_version: Some(old_version),
                    new_version: Some(new_version),
                    detail: Some(if *disconnect {
                        format!("revoked; connections signed with versions up to {old_version} are closed")
                    } else {
                        "revoked; open connections stay".to_string()
                    }),
                    dedup: Some(format!("revoked/{}/{new_version}", slot.as_str())),
                    ..event("revoked", *slot)
                };
                let mut events = vec![record];
                let why = format!("ended by revoking the {slot} key (version {new_version})");
                events.extend(ended.iter().map(|key| grace_ended(event, key, &why)));
                Some(Planned {
                    ring: next,
                    events,
                    ended,
                })
            }
            Change::RequireRotation {
                slot,
                deadline,
                reason,
            } => {
                let requirement = RotationRequirement {
                    slot: *slot,
                    version: ring.slot(*slot).version,
                    deadline: *deadline,
                    reason: reason.clone(),
                    required_at: now,
                    actor: origin.actor.to_string(),
                };
                let record = AuditEvent {
                    old_version: Some(requirement.version),
                    detail: Some(format!(
                        "rotate by {}: {reason}",
                        crate::clock::rfc3339(*deadline)
                    )),
                    ..event("rotation_required", *slot)
                };
                Some(Planned {
                    ring: ring.with_requirement(requirement),
                    events: vec![record],
                    ended: Vec::new(),
                })
            }
            Change::ExpireGrace { .. } | Change::EndGrace { .. } => {
                let (next, ended, why) = match self {
                    Change::EndGrace { slot } => {
                        let (next, ended) = ring.without_grace_of(*slot, now);
                        (next, ended, "ended early")
                    }
                    Change::ExpireGrace { forget_before } => {
                        let (next, ended) = ring.without_ended_grace(now, *forget_before);
                        (next, ended, "")
                    }
                    _ => unreachable!("matched above"),
                };
                if ended.is_empty() && next.previous.len() == ring.previous.len() {
                    return None;
                }
                let events = ended
                    .iter()
                    .map(|key| grace_ended(event, key, why))
                    .collect();
                Some(Planned {
                    ring: next,
                    events,
                    ended,
                })
            }
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Change::Regenerate { .. } => "key regenerated",
            Change::RequireRotation { .. } => "key rotation required",
            Change::ExpireGrace { .. } | Change::EndGrace { .. } => "grace period ended",
            Change::Revoke { .. } => "key revoked",
            Change::SetPolicy(_) => "rotation policy changed",
            Change::RotateStep { .. } => "rotation step",
            Change::PostponeStep { .. } => "rotation step postponed",
            Change::SinksDelivered { .. } => "sinks written",
            Change::SetLocalAuth { disabled: true } => "local auth disabled",
            Change::SetLocalAuth { disabled: false } => "local auth enabled",
        }
    }
}

/// Applies a change through the backplane: durable before it returns, in force on this node
/// when it returns.
pub async fn apply(
    keys: &Keys,
    backplane: &Backplane,
    change: Change,
    origin: Origin,
) -> Result<Applied, KeyChangeError> {
    let now = keys.clock().now_millis();
    if let Change::ExpireGrace { forget_before } = change {
        let ring = keys.current();
        if !ring.retiring.iter().any(|k| k.until <= now)
            && !ring.previous.iter().any(|k| k.replaced_at < forget_before)
        {
            // The common case, every housekeeping tick: nothing to ask of the store or the
            // cluster.
            return Ok(Applied {
                ring,
                ended: Vec::new(),
            });
        }
    }
    let described = change.describe();
    let (ring, planned) = backplane
        .change_keys(keys, move |ring| change.plan(ring, now, &origin))
        .await?;
    let Some(planned) = planned else {
        return Ok(Applied {
            ring,
            ended: Vec::new(),
        });
    };
    for event in &planned.events {
        tracing::info!(
            slot = event.slot.map(KeySlot::as_str),
            old_version = event.old_version,
            new_version = event.new_version,
            actor = %event.actor,
            "{described}"
        );
    }
    Ok(Applied {
        ring,
        ended: planned.ended,
    })
}

/// The `grace_ended` event of one earlier value (`why`: empty when its time was simply over).
fn grace_ended(
    event: impl Fn(&'static str, KeySlot) -> AuditEvent,
    key: &RetiringKey,
    why: &str,
) -> AuditEvent {
    AuditEvent {
        old_version: Some(key.version),
        detail: (!why.is_empty()).then(|| why.to_string()),
        dedup: Some(format!("grace_ended/{}/{}", key.slot.as_str(), key.version)),
        ..event("grace_ended", key.slot)
    }
}

/// The audit event for a key disabled by its passed rotation deadline, recorded once.
pub fn disabled_event(requirement: &RotationRequirement, now: UnixMillis) -> AuditEvent {
    AuditEvent {
        at: now,
        event: "key_disabled",
        slot: Some(requirement.slot),
        old_version: Some(requirement.version),
        actor: "policy".into(),
        detail: Some(format!("rotation deadline passed: {}", requirement.reason)),
        dedup: Some(format!(
            "key_disabled/{}/{}",
            requirement.slot.as_str(),
            requirement.version
        )),
        ..AuditEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_keys as keys;

    fn local(keys: &Keys, change: Change) -> Applied {
        let now = keys.clock().now_millis();
        let origin = Origin {
            actor: "admin".into(),
            source: Some("127.0.0.1".into()),
        };
        let (ring, planned) = keys.commit(|ring| change.plan(ring, now, &origin)).unwrap();
        Applied {
            ring,
            ended: planned.map(|p| p.ended).unwrap_or_default(),
        }
    }

    fn regenerate(keys: &Keys, slot: KeySlot, grace: Option<Duration>) -> Arc<KeyRing> {
        let change = Change::regenerate(slot, grace, keys.clock().now_millis()).unwrap();
        local(keys, change).ring
    }

    #[test]
    fn local_auth_is_switched_durably_audited_and_only_when_it_changes() {
        let (_dir, keys, store, _) = keys();
        assert!(!keys.current().local_auth_disabled);
        let off = local(&keys, Change::SetLocalAuth { disabled: true }).ring;
        assert!(off.local_auth_disabled);
        assert!(
            store.local_auth_disabled().unwrap(),
            "on disk before it is in force"
        );
        let again = local(&keys, Change::SetLocalAuth { disabled: true }).ring;
        assert!(again.local_auth_disabled);
        let events: Vec<String> = store
            .audit(None, None, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .filter(|e| e.starts_with("local_auth"))
            .collect();
        assert_eq!(events, ["local_auth_disabled"], "a no-op records nothing");
        // A REST token signed with a valid key is refused, naming the switch.
        let endpoint =
            hubbub_proto::audience::PublicEndpoint::parse("http://localhost:8080").unwrap();
        let token = hubbub_proto::jwt::sign(
            &serde_json::json!({"aud": "http://localhost:8080/api/hubs/h/:send", "exp": 9_999_999_999i64})
                .as_object()
                .unwrap()
                .clone(),
            off.primary.value.expose().as_bytes(),
            None,
        );
        let refused = crate::keys::auth::verify_rest_token(
            &token,
            &off,
            &[endpoint],
            "/api/hubs/h/:send",
            2_000,
            0,
        );
        assert_eq!(
            refused,
            Err(crate::keys::auth::AuthError::LocalAuthDisabled)
        );
        let on = local(&keys, Change::SetLocalAuth { disabled: false }).ring;
        assert!(!on.local_auth_disabled && !store.local_auth_disabled().unwrap());
    }

    #[test]
    fn regenerate_replaces_exactly_one_slot_in_memory_and_on_disk_with_its_event() {
        let (_dir, keys, store, _) = keys();
        let before = keys.current();
        let after = regenerate(&keys, KeySlot::Primary, None);
        assert_ne!(after.primary.value, before.primary.value);
        assert_eq!(after.primary.version, 2);
        assert_eq!(after.primary.created_at, 2_000);
        assert_eq!(after.secondary.value, before.secondary.value);
        assert_eq!(after.salt.value, before.salt.value);
        let on_disk = store.load_or_init(0).unwrap().keys;
        assert_eq!(on_disk.primary.value, after.primary.value);
        let last = store.audit(None, None, 100).unwrap().pop().unwrap();
        assert_eq!(
            (
                last.event.as_str(),
                last.slot.as_deref(),
                last.old_version,
                last.new_version,
                last.source.as_deref()
            ),
            (
                "regenerated",
                Some("primary"),
                Some(1),
                Some(2),
                Some("127.0.0.1")
            )
        );
    }

    #[test]
    fn concurrent_regenerations_of_both_slots_are_all_kept() {
        let (_dir, keys, store, _) = keys();
        let threads: Vec<_> = [KeySlot::Primary, KeySlot::Secondary]
            .into_iter()
            .flat_map(|slot| std::iter::repeat_n(slot, 10))
            .map(|slot| {
                let keys = keys.clone();
                std::thread::spawn(move || regenerate(&keys, slot, None))
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
    fn a_requirement_disables_the_key_at_its_deadline_and_regenerating_clears_it() {
        let (_dir, keys, store, clock) = keys();
        let change = Change::RequireRotation {
            slot: KeySlot::Primary,
            deadline: 10_000,
            reason: "leaked".into(),
        };
        let ring = local(&keys, change).ring;
        assert!(ring.requirement(KeySlot::Primary).is_some());
        assert!(ring.disabled(KeySlot::Primary, 9_999).is_none());
        assert!(ring.disabled(KeySlot::Primary, 10_000).is_some());
        assert!(ring.disabled(KeySlot::Secondary, 10_000).is_none());
        let stored = store.rotation_requirements().unwrap();
        assert_eq!((stored.len(), stored[0].actor.as_str()), (1, "admin"));
        let last = store.audit(None, None, 100).unwrap().pop().unwrap();
        assert_eq!(last.event, "rotation_required");
        assert!(last.detail.unwrap().ends_with(": leaked"));
        clock.set_millis(20_000);
        let ring = regenerate(&keys, KeySlot::Primary, None);
        assert!(ring.requirement(KeySlot::Primary).is_none());
        assert!(store.rotation_requirements().unwrap().is_empty());
    }

    #[test]
    fn grace_keeps_the_old_value_verifying_until_it_ends() {
        let (_dir, keys, store, clock) = keys();
        let old = keys.current().primary.value.clone();
        let ring = regenerate(&keys, KeySlot::Primary, Some(Duration::from_secs(60)));
        let has_old = |ring: &KeyRing, now| {
            ring.candidates(now)
                .iter()
                .any(|c| c.retiring && c.key == old.expose().as_bytes())
        };
        assert!(has_old(&ring, 2_000));
        assert!(!has_old(&ring, 62_000));
        assert_eq!(store.retiring_keys().unwrap().len(), 1);
        assert!(
            local(&keys, Change::ExpireGrace { forget_before: 0 })
                .ended
                .is_empty(),
            "not over yet"
        );
        clock.set_millis(62_000);
        let applied = local(&keys, Change::ExpireGrace { forget_before: 0 });
        assert_eq!(applied.ended.len(), 1);
        assert!(applied.ring.retiring.is_empty());
        assert!(store.retiring_keys().unwrap().is_empty());
        let last = store.audit(None, None, 100).unwrap().pop().unwrap();
        assert_eq!(
            (last.event.as_str(), last.actor.as_str()),
            ("grace_ended", "admin")
        );
    }

    fn verifies(ring: &KeyRing, value: &Secret, now: UnixMillis) -> bool {
        ring.candidates(now)
            .iter()
            .any(|c| c.key == value.expose().as_bytes())
    }

    fn events(store: &crate::store::Store) -> Vec<(String, Option<u64>, Option<String>)> {
        store
            .audit(None, None, 100)
            .unwrap()
            .into_iter()
            .map(|r| (r.event, r.old_version, r.detail))
            .collect()
    }

    #[test]
    fn regenerating_without_grace_revokes_values_still_in_a_grace_period() {
        let (_dir, keys, store, _) = keys();
        let leaked = keys.current().primary.value.clone();
        let week = Some(Duration::from_secs(7 * 24 * 3600));
        let ring = regenerate(&keys, KeySlot::Primary, week);
        assert!(verifies(&ring, &leaked, 3_000), "kept by the grace period");
        let ring = regenerate(&keys, KeySlot::Primary, None);
        assert!(
            !verifies(&ring, &leaked, 3_000),
            "revoked by the second regeneration"
        );
        assert!(ring.retiring.is_empty());
        assert!(store.retiring_keys().unwrap().is_empty(), "on disk too");
        let last = events(&store).pop().unwrap();
        assert_eq!((last.0.as_str(), last.1), ("grace_ended", Some(1)));
        assert!(last.2.unwrap().contains("without a grace period"));
    }

    #[test]
    fn a_grace_period_can_be_ended_early_for_one_slot() {
        let (_dir, keys, store, _) = keys();
        let old_primary = keys.current().primary.value.clone();
        let old_secondary = keys.current().secondary.value.clone();
        let hour = Some(Duration::from_secs(3600));
        regenerate(&keys, KeySlot::Primary, hour);
        regenerate(&keys, KeySlot::Secondary, hour);
        let applied = local(
            &keys,
            Change::EndGrace {
                slot: KeySlot::Primary,
            },
        );
        assert_eq!(applied.ended.len(), 1);
        assert!(!verifies(&applied.ring, &old_primary, 3_000));
        assert!(
            verifies(&applied.ring, &old_secondary, 3_000),
            "the other slot's grace runs on"
        );
        let last = events(&store).pop().unwrap();
        assert_eq!(
            (last.0.as_str(), last.2.as_deref()),
            ("grace_ended", Some("ended early"))
        );
        let nothing = local(
            &keys,
            Change::EndGrace {
                slot: KeySlot::Primary,
            },
        );
        assert!(nothing.ended.is_empty(), "nothing left to end");
    }

    #[test]
    fn a_rotation_deadline_also_ends_the_grace_of_earlier_values() {
        let (_dir, keys, _store, _) = keys();
        let first = keys.current().primary.value.clone();
        let week = Some(Duration::from_secs(7 * 24 * 3600));
        regenerate(&keys, KeySlot::Primary, week);
        // Required after a regeneration with grace: the retiring value stops at the deadline.
        let ring = local(
            &keys,
            Change::RequireRotation {
                slot: KeySlot::Primary,
                deadline: 60_000,
                reason: "leaked".into(),
            },
        )
        .ring;
        assert!(verifies(&ring, &first, 59_999));
        assert!(!verifies(&ring, &first, 60_000));
        // Regenerated with grace while a deadline is set: the old value ends at the deadline.
        let second = ring.primary.value.clone();
        let ring = regenerate(&keys, KeySlot::Primary, week);
        assert!(verifies(&ring, &second, 59_999));
        assert!(
            !verifies(&ring, &second, 60_000),
            "grace never outlives the deadline"
        );
    }

    #[test]
    fn salt_and_zero_grace_keep_no_old_value() {
        let salt = Change::regenerate(KeySlot::Salt, Some(Duration::from_secs(9)), 0).unwrap();
        let zero = Change::regenerate(KeySlot::Primary, Some(Duration::ZERO), 0).unwrap();
        for change in [salt, zero] {
            assert!(matches!(
                change,
                Change::Regenerate {
                    grace_until: None,
                    ..
                }
            ));
        }
    }
}
