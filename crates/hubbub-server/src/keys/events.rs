//! Key events that are not notices, read from the audit log (so one path serves one node or
//! many: in a cluster every node's log has every event, and the notice claim makes one node send
//! each): a key regenerated, revoked or stepped by a rotation policy; and the first stale caller
//! of each key version. Queued as notices of their own kinds, which only the CloudEvents channel
//! takes.

use super::notices::texts::key_event;
use crate::clock::UnixMillis;
use crate::state::AppState;
use crate::store::{AuditRecord, NewNotice};
use hubbub_proto::keys::KeySlot;

/// Audit events read per pass, at most.
const PAGE: usize = 500;

fn notice_of(record: &AuditRecord, endpoint: &str) -> Option<NewNotice> {
    let kind = match record.event.as_str() {
        "regenerated" => "key_regenerated",
        "revoked" => "key_revoked",
        "rotation_step" => "rotation_step",
        _ => return None,
    };
    let slot: KeySlot = record.slot.as_deref()?.parse().ok()?;
    let version = record.new_version?;
    let detail = record.detail.clone().unwrap_or_default();
    Some(key_event(
        kind,
        slot,
        version,
        format!("The {slot} key is now version {version} ({})", record.event),
        format!(
            "The {slot} key was {} by {}: version {version}. {detail}",
            match record.event.as_str() {
                "rotation_step" => "rotated (a policy step)",
                other => other,
            },
            record.actor
        ),
        serde_json::json!({"previousVersion": record.old_version, "actor": record.actor, "reason": detail}),
        endpoint,
    ))
}

/// Queues the key events since the last pass, and the first stale caller of each version.
pub async fn queue(state: &AppState, now: UnixMillis) {
    if state
        .notifications
        .channels_for("key_regenerated")
        .is_empty()
    {
        return;
    }
    let endpoint = state.primary_endpoint();
    let after = *state.key_events.0.lock().unwrap_or_else(|p| p.into_inner());
    let store = std::sync::Arc::clone(state.keys.store());
    let mut due = Vec::new();
    match after {
        // The first pass starts at the end of the log: events from before this start are old.
        None => {
            let last = tokio::task::spawn_blocking(move || store.audit_last_id()).await;
            if let Ok(Ok(last)) = last {
                *state.key_events.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
            }
        }
        Some(id) => {
            let records =
                tokio::task::spawn_blocking(move || store.audit(None, Some(id), PAGE)).await;
            let Ok(Ok(records)) = records else {
                return;
            };
            due.extend(records.iter().filter_map(|r| notice_of(r, &endpoint)));
            if let Some(last) = records.iter().map(|r| r.id).max() {
                *state.key_events.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
            }
        }
    }
    // The first caller seen with each stale key version (deduplicated by version).
    let mut seen = std::collections::HashSet::new();
    for caller in state.keys.stale_callers().list() {
        if !seen.insert((caller.slot, caller.version)) {
            continue;
        }
        due.push(key_event(
            "first_stale_caller",
            caller.slot,
            caller.version,
            format!("An app still uses the regenerated {} key (version {})", caller.slot, caller.version),
            format!(
                "A {} call for hub '{}' from {} ({}) was refused: its token was signed with the {} key version {}, which was regenerated. Update that app's connection string.",
                caller.kind, caller.hub, caller.source_address, caller.user_agent, caller.slot, caller.version
            ),
            serde_json::json!({"kind": caller.kind, "hub": caller.hub, "sourceAddress": caller.source_address, "userAgent": caller.user_agent}),
            &endpoint,
        ));
    }
    queue_notices(state, due, now).await;
}

/// Queues each notice once: in a cluster, on the one node that claims it.
pub async fn queue_notices(state: &AppState, due: Vec<crate::store::NewNotice>, now: UnixMillis) {
    if state.notifications.channels().is_empty() {
        return;
    }
    for notice in due {
        if state.notices_settled.contains(&notice.dedup) {
            continue;
        }
        match state.backplane.claim_notice(&notice.dedup).await {
            crate::backplane::Claim::Unknown => continue,
            crate::backplane::Claim::Theirs => {}
            crate::backplane::Claim::Mine => {
                let (store, notifications) = (
                    std::sync::Arc::clone(state.keys.store()),
                    std::sync::Arc::clone(&state.notifications),
                );
                let queued_notice = notice.clone();
                let queued = tokio::task::spawn_blocking(move || {
                    let channels = notifications.channels_for(&queued_notice.kind);
                    store.queue_notice(&queued_notice, &channels, now)
                })
                .await;
                if !matches!(queued, Ok(Ok(_))) {
                    tracing::warn!("a notice could not be queued; trying again");
                    continue;
                }
            }
        }
        state.notices_settled.insert(&notice.dedup);
    }
}
