//! Key changes as the handlers and the housekeeper ask for them: on a single node, one SQLite
//! transaction (`Keys`); in cluster mode, a compare-and-set on the cluster's key bucket, then the
//! event on the audit stream. Either way the caller gets the ring now in force on this node.

use crate::backplane::nats::ClusterError;
use crate::error::ApiError;
use crate::keys::KeyRing;
use crate::secret::Secret;
use crate::state::AppState;
use crate::store::{AuditEntry, RetiringKey, RotationRequirement, StoreError};
use axum::http::StatusCode;
use hubbub_proto::keys::KeySlot;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KeyChangeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the key change was interrupted")]
    Interrupted,
}

impl KeyChangeError {
    /// The HTTP answer: 503 while the cluster cannot agree on a change, 500 otherwise. Never
    /// carries key material.
    pub fn into_api(self, what: &str) -> ApiError {
        match self {
            KeyChangeError::Cluster(e @ (ClusterError::Unavailable | ClusterError::Failed(_))) => {
                tracing::warn!(error = %e, "{what} refused");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    e.to_string(),
                )
            }
            other => {
                tracing::error!(error = %other, "{what} failed");
                ApiError::internal(format!("{what} could not be stored; nothing was changed"))
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, KeyChangeError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| KeyChangeError::Interrupted)??)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Replaces one slot with a fresh value; with a grace period (access keys only) the old value
/// keeps verifying until it ends.
pub async fn regenerate(
    state: &AppState,
    slot: KeySlot,
    actor: &'static str,
    source: String,
    grace: Option<Duration>,
) -> Result<Arc<KeyRing>, KeyChangeError> {
    let Some(cluster) = &state.cluster else {
        let keys = state.keys.clone();
        return blocking(move || keys.regenerate(slot, actor, Some(&source), grace)).await;
    };
    let value = Secret::generate().map_err(|e| KeyChangeError::Store(StoreError::Random(e)))?;
    let now = state.keys.clock().now_millis();
    let grace_until = grace
        .filter(|g| !g.is_zero() && slot != KeySlot::Salt)
        .map(|g| now + millis(g));
    let (ring, old_version) = cluster
        .ring
        .change(cluster, |ring| {
            Some(ring.regenerated(slot, value.clone(), now, grace_until))
        })
        .await?;
    let old_version = old_version.unwrap_or_default();
    let new_version = old_version + 1;
    let detail = grace_until.map(|until| {
        format!(
            "the old key is accepted until {}",
            crate::clock::rfc3339(until)
        )
    });
    let entry = AuditEntry {
        at: now,
        event: "regenerated",
        slot: Some(slot),
        old_version: Some(old_version),
        new_version: Some(new_version),
        actor,
        source: Some(&source),
        detail: detail.as_deref(),
    };
    if let Err(e) = cluster
        .audit
        .record(
            &entry,
            Some(format!("regenerated/{}/{new_version}", slot.as_str())),
        )
        .await
    {
        tracing::error!(error = %e, "the key changed but its audit event was not stored");
    }
    tracing::info!(
        slot = slot.as_str(),
        old_version,
        new_version,
        actor,
        grace = grace_until.is_some(),
        "key regenerated in the cluster"
    );
    Ok(ring)
}

/// Demands that the slot's current key be rotated by `deadline`.
pub async fn require_rotation(
    state: &AppState,
    slot: KeySlot,
    deadline: i64,
    reason: String,
    actor: &'static str,
    source: String,
) -> Result<Arc<KeyRing>, KeyChangeError> {
    let Some(cluster) = &state.cluster else {
        let keys = state.keys.clone();
        return blocking(move || {
            keys.require_rotation(slot, deadline, &reason, actor, Some(&source))
        })
        .await;
    };
    let now = state.keys.clock().now_millis();
    let (ring, requirement) = cluster
        .ring
        .change(cluster, |ring| {
            let requirement = RotationRequirement {
                slot,
                version: ring.slot(slot).version,
                deadline,
                reason: reason.clone(),
                required_at: now,
                actor: actor.to_string(),
            };
            Some((ring.with_requirement(requirement.clone()), requirement))
        })
        .await?;
    if let Some(requirement) = requirement {
        let detail = format!(
            "rotate by {}: {}",
            crate::clock::rfc3339(deadline),
            requirement.reason
        );
        let entry = AuditEntry {
            at: now,
            event: "rotation_required",
            slot: Some(slot),
            old_version: Some(requirement.version),
            actor,
            source: Some(&source),
            detail: Some(&detail),
            ..AuditEntry::default()
        };
        if let Err(e) = cluster.audit.record(&entry, None).await {
            tracing::error!(error = %e, "the requirement was stored but its audit event was not");
        }
    }
    tracing::info!(slot = slot.as_str(), actor, "key rotation required");
    Ok(ring)
}

/// Forgets old values whose grace period is over; returns them.
pub async fn end_grace(state: &AppState) -> Result<Vec<RetiringKey>, KeyChangeError> {
    let Some(cluster) = &state.cluster else {
        let keys = state.keys.clone();
        return blocking(move || keys.end_grace()).await;
    };
    let now = state.keys.clock().now_millis();
    if !state.keys.current().retiring.iter().any(|k| k.until <= now) {
        return Ok(Vec::new());
    }
    let (_, ended) = cluster
        .ring
        .change(cluster, |ring| {
            let (next, ended) = ring.without_ended_grace(now);
            (!ended.is_empty()).then_some((next, ended))
        })
        .await?;
    let ended = ended.unwrap_or_default();
    for key in &ended {
        let entry = AuditEntry {
            at: now,
            event: "grace_ended",
            slot: Some(key.slot),
            old_version: Some(key.version),
            actor: "policy",
            ..AuditEntry::default()
        };
        let dedup = format!("grace_ended/{}/{}", key.slot.as_str(), key.version);
        if let Err(e) = cluster.audit.record(&entry, Some(dedup)).await {
            tracing::warn!(error = %e, "could not record the end of a grace period");
        }
    }
    Ok(ended)
}

/// The audit detail of a key disabled by its passed rotation deadline.
pub fn disabled_detail(requirement: &RotationRequirement) -> String {
    format!("rotation deadline passed: {}", requirement.reason)
}

/// The audit entry for a key disabled by its passed rotation deadline (`detail` from
/// [`disabled_detail`]).
pub fn disabled_entry<'a>(
    requirement: &RotationRequirement,
    now: i64,
    detail: &'a str,
) -> AuditEntry<'a> {
    AuditEntry {
        at: now,
        event: "key_disabled",
        slot: Some(requirement.slot),
        old_version: Some(requirement.version),
        actor: "policy",
        detail: Some(detail),
        ..AuditEntry::default()
    }
}

/// Cluster mode: records, once in the whole cluster, that a key passed its rotation deadline (a
/// single node's housekeeper appends to its store directly).
pub async fn record_disabled(
    cluster: &crate::backplane::nats::Cluster,
    now: i64,
    requirement: &RotationRequirement,
) -> Result<(), KeyChangeError> {
    let detail = disabled_detail(requirement);
    let entry = disabled_entry(requirement, now, &detail);
    let dedup = format!(
        "key_disabled/{}/{}",
        requirement.slot.as_str(),
        requirement.version
    );
    cluster.audit.record(&entry, Some(dedup)).await?;
    Ok(())
}
