//! The key-lifecycle housekeeper: saves usage counters, ends grace periods, records keys disabled
//! by a passed rotation deadline, and queues and sends notices. Runs every few seconds, and saves
//! usage once more at shutdown.

use super::changes::{self, Change, Origin};
use super::notices;
use super::KeyRing;
use crate::clock::UnixMillis;
use crate::state::AppState;
use crate::store::{RetiringKey, RotationRequirement};
use std::sync::Arc;
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
        if ticks.is_multiple_of(SAVE_USAGE_EVERY) {
            save_usage(&state).await;
        }
        housekeeping(&state, &http).await;
        if !state.notifications.channels().is_empty() {
            let now = state.keys.clock().now_millis();
            notices::deliver(state.keys.store(), &state.notifications, &http, now).await;
        }
    }
    match save_usage(&state).await {
        true => tracing::debug!("key usage saved"),
        false => tracing::warn!("key usage could not be saved at shutdown"),
    }
}

async fn save_usage(state: &AppState) -> bool {
    let keys = state.keys.clone();
    match tokio::task::spawn_blocking(move || keys.save_usage()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "key usage could not be saved");
            false
        }
        Err(_) => false,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// One pass: shares usage with the other nodes, ends grace periods, queues due notices (each
/// claimed by one node), and records keys disabled by a passed deadline (once, ever). Every
/// change goes through the backplane; skipped while the other nodes cannot be reached, since
/// every node's housekeeper sees the same facts.
async fn housekeeping(state: &AppState, http: &reqwest::Client) {
    let backplane = &state.backplane;
    if !backplane.reachable() {
        return;
    }
    backplane.share_usage(&state.keys).await;
    let window = i64::from(state.stale_key_window_days) * 24 * 3600 * 1000;
    let forget_before = state.keys.clock().now_millis() - window;
    let ended = changes::apply(
        &state.keys,
        backplane,
        Change::ExpireGrace { forget_before },
        Origin::policy(),
    )
    .await;
    log_grace_ended(ended.map(|applied| applied.ended));
    super::rotation::run_due(state, http).await;
    let now = state.keys.clock().now_millis();
    let ring = state.keys.current();
    queue_claimed_notices(state, &ring, now).await;
    super::events::queue(state, now).await;
    for requirement in ring
        .requirements
        .iter()
        .filter(|r| ring.disabled(r.slot, now).is_some())
    {
        // The audit log itself says whether this key's disabling was recorded (once, ever).
        let store = Arc::clone(state.keys.store());
        let (slot, version) = (requirement.slot, requirement.version);
        let already = blocking(move || store.audit_contains("key_disabled", slot, version))
            .await
            .and_then(Result::ok)
            .unwrap_or(false);
        if already {
            continue;
        }
        let event = changes::disabled_event(requirement, now);
        match backplane.record(&state.keys, event).await {
            Ok(()) => log_disabled(requirement),
            Err(e) => tracing::warn!(error = %e, "could not record a disabled key"),
        }
    }
}

fn log_grace_ended<E: std::fmt::Display>(ended: Result<Vec<RetiringKey>, E>) {
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

fn log_disabled(requirement: &RotationRequirement) {
    tracing::warn!(
        slot = requirement.slot.as_str(),
        "a key passed its rotation deadline and no longer authenticates"
    );
}

/// Each due notice is queued by the one node that claims it, so operators get it once, not once
/// per node (on a single node, every notice is this node's; the store queues each once).
async fn queue_claimed_notices(state: &AppState, ring: &KeyRing, now: UnixMillis) {
    let due = notices::due(ring, state.key_max_age_days, now, &state.primary_endpoint());
    super::events::queue_notices(state, due, now).await;
}
