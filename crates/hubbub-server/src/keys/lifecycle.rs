//! The key-lifecycle housekeeper: saves usage counters, ends grace periods, records keys disabled
//! by a passed rotation deadline, and queues and sends notices. Runs every few seconds, and saves
//! usage once more at shutdown.

use crate::state::AppState;
use std::time::Duration;

/// How often the housekeeper runs.
pub const TICK: Duration = Duration::from_secs(5);
/// Usage is saved every this many ticks.
const SAVE_USAGE_EVERY: u32 = 6;

/// Runs until shutdown, then saves usage one last time.
pub async fn run(state: AppState, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = state.shutdown.cancelled() => break,
        }
        ticks = ticks.wrapping_add(1);
        let (state2, save) = (state.clone(), ticks.is_multiple_of(SAVE_USAGE_EVERY));
        let _ = tokio::task::spawn_blocking(move || housekeeping(&state2, save)).await;
        if state.cluster.is_some() {
            cluster_housekeeping(&state).await;
        }
        if !state.notifications.channels().is_empty() {
            let now = state.keys.clock().now_millis();
            crate::keys::notices::deliver(state.keys.store(), &state.notifications, &http, now).await;
        }
    }
    let keys = state.keys.clone();
    match tokio::task::spawn_blocking(move || keys.save_usage()).await {
        Ok(Ok(())) => tracing::debug!("key usage saved"),
        _ => tracing::warn!("key usage could not be saved at shutdown"),
    }
}

/// One pass. Blocking (SQLite).
pub fn housekeeping(state: &AppState, save_usage: bool) {
    if save_usage {
        if let Err(e) = state.keys.save_usage() {
            tracing::warn!(error = %e, "key usage could not be saved");
        }
    }
    // In cluster mode the key ring, notices and disabled keys go through the cluster
    // (`cluster_housekeeping`).
    if state.cluster.is_some() {
        return;
    }
    log_grace_ended(state.keys.end_grace());
    let now = state.keys.clock().now_millis();
    let ring = state.keys.current();
    let channels = state.notifications.channels();
    if !channels.is_empty() {
        for notice in crate::keys::notices::due(
            &ring,
            state.key_max_age_days,
            now,
            &state.primary_endpoint(),
        ) {
            if let Err(e) = state.keys.store().queue_notice(&notice, &channels, now) {
                tracing::warn!(error = %e, "a notice could not be queued");
            }
        }
    }
    for requirement in ring
        .requirements
        .iter()
        .filter(|r| ring.disabled(r.slot, now).is_some())
    {
        // The audit log itself says whether this key's disabling was recorded (once, ever).
        let already = state
            .keys
            .store()
            .audit_contains("key_disabled", requirement.slot, requirement.version)
            .unwrap_or(false);
        if !already {
            let detail = crate::keys::changes::disabled_detail(requirement);
            let entry = crate::keys::changes::disabled_entry(requirement, now, &detail);
            if let Err(e) = state.keys.store().append_audit(&entry) {
                tracing::warn!(error = %e, "could not record a disabled key");
                continue;
            }
            log_disabled(requirement);
        }
    }
}

fn log_grace_ended<E: std::fmt::Display>(ended: Result<Vec<crate::store::RetiringKey>, E>) {
    match ended {
        Ok(ended) => {
            for key in ended {
                tracing::info!(
                    slot = key.slot.as_str(),
                    version = key.version,
                    "grace period ended; the old key no longer verifies"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "grace periods could not be ended"),
    }
}

fn log_disabled(requirement: &crate::store::RotationRequirement) {
    tracing::warn!(
        slot = requirement.slot.as_str(),
        "a key passed its rotation deadline and no longer authenticates"
    );
}

/// Cluster mode: ends grace periods through the cluster's key bucket and records disabled keys on
/// the audit stream (deduplicated there, since every node's housekeeper sees the same facts).
/// Skipped while NATS is unreachable.
async fn cluster_housekeeping(state: &AppState) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    if !cluster.connected() {
        return;
    }
    cluster.publish_usage(&state.keys).await;
    log_grace_ended(crate::keys::changes::end_grace(state).await);
    let now = state.keys.clock().now_millis();
    let ring = state.keys.current();
    queue_claimed_notices(state, cluster, &ring, now).await;
    for requirement in ring
        .requirements
        .iter()
        .filter(|r| ring.disabled(r.slot, now).is_some())
    {
        let store = std::sync::Arc::clone(state.keys.store());
        let (slot, version) = (requirement.slot, requirement.version);
        let already = tokio::task::spawn_blocking(move || {
            store.audit_contains("key_disabled", slot, version)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        if already {
            continue;
        }
        match crate::keys::changes::record_disabled(cluster, now, requirement).await {
            Ok(()) => log_disabled(requirement),
            Err(e) => tracing::warn!(error = %e, "could not record a disabled key"),
        }
    }
}

/// Cluster mode: each due notice is queued by the one node that claims it, so operators get it
/// once, not once per node.
async fn queue_claimed_notices(
    state: &AppState,
    cluster: &crate::backplane::nats::Cluster,
    ring: &crate::keys::KeyRing,
    now: crate::clock::UnixMillis,
) {
    if state.notifications.channels().is_empty() {
        return;
    }
    let due = crate::keys::notices::due(ring, state.key_max_age_days, now, &state.primary_endpoint());
    for notice in due {
        let settled = cluster
            .settled_notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&notice.dedup);
        if settled {
            continue;
        }
        match cluster.claim_notice(&notice.dedup).await {
            crate::backplane::nats::notices::Claim::Unknown => continue,
            crate::backplane::nats::notices::Claim::Theirs => {}
            crate::backplane::nats::notices::Claim::Mine => {
                let (store, notifications) = (
                    std::sync::Arc::clone(state.keys.store()),
                    std::sync::Arc::clone(&state.notifications),
                );
                let queued_notice = notice.clone();
                let queued = tokio::task::spawn_blocking(move || {
                    store.queue_notice(&queued_notice, &notifications.channels(), now)
                })
                .await;
                if !matches!(queued, Ok(Ok(_))) {
                    tracing::warn!("a notice could not be queued; trying again");
                    continue;
                }
            }
        }
        cluster
            .settled_notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(notice.dedup);
    }
}
