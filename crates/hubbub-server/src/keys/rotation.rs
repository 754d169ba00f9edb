//! Running a rotation policy: due steps (postponed while the standby key is in use, with
//! `only_if_idle`), a step on demand, and the sinks kept in step with the active key. Every
//! change goes through [`changes::apply`], so on one node or many it is durable before it is
//! acknowledged, and a due step is taken once.

use super::changes::{self, Applied, Change, KeyChangeError, Origin};
use super::policy::{Retry, RotationPolicy};
use super::sinks::{self, Delivery};
use crate::clock::UnixMillis;
use crate::state::AppState;
use crate::store::StoreError;
use hubbub_proto::connection_string::ConnectionString;

/// The first wait before a failed sink is tried again (doubling, at most [`MAX_RETRY_MS`]).
const FIRST_RETRY_MS: i64 = 10_000;
const MAX_RETRY_MS: i64 = 15 * 60 * 1000;

/// The connection string of the policy's active key.
fn active_connection_string(state: &AppState, policy: &RotationPolicy) -> (u64, String) {
    let ring = state.keys.current();
    let key = ring.slot(policy.active);
    let endpoint = state.primary_endpoint();
    (
        key.version,
        ConnectionString::render(&endpoint, key.value.expose()),
    )
}

/// Why the standby key must not be regenerated yet, if it is in use within the idle window.
fn standby_in_use(state: &AppState, policy: &RotationPolicy, now: UnixMillis) -> Option<String> {
    let window = policy.only_if_idle_ms?;
    let standby = policy.standby();
    let uses = state.keys.uses_within(standby, window);
    let callers: Vec<String> = state
        .keys
        .stale_callers()
        .list()
        .into_iter()
        .filter(|c| c.slot == standby && c.last_seen_at >= now - window)
        .take(5)
        .map(|c| {
            format!(
                "{} {} from {} ({})",
                c.kind, c.hub, c.source_address, c.user_agent
            )
        })
        .collect();
    if uses == 0 && callers.is_empty() {
        return None;
    }
    let mut reason = format!(
        "the {standby} key (standby) was used {uses} time(s) in the last {} min",
        window / 60_000
    );
    if !callers.is_empty() {
        reason.push_str(&format!(
            "; still on an older value: {}",
            callers.join(", ")
        ));
    }
    Some(reason)
}

/// One step now (the operator's `key rotate`), whatever the due time and the idle window.
pub async fn step_now(state: &AppState, origin: Origin) -> Result<Applied, KeyChangeError> {
    let value = crate::secret::Secret::generate().map_err(StoreError::Random)?;
    let change = Change::RotateStep {
        value,
        due_only: false,
    };
    changes::apply(&state.keys, &state.backplane, change, origin).await
}

/// The housekeeper's part: a due step is taken (or postponed while the standby key is in use),
/// then the sinks are brought in step with the active key.
pub async fn run_due(state: &AppState, http: &reqwest::Client) {
    let now = state.keys.clock().now_millis();
    let Some(policy) = state.keys.current().policy.clone() else {
        return;
    };
    if policy.next_step_at <= now {
        let change = match standby_in_use(state, &policy, now) {
            Some(reason) => {
                let until = now + policy.only_if_idle_ms.unwrap_or(60_000).max(60_000);
                tracing::warn!(%reason, "rotation step postponed");
                Change::PostponeStep { until, reason }
            }
            None => match crate::secret::Secret::generate() {
                Ok(value) => Change::RotateStep {
                    value,
                    due_only: true,
                },
                Err(e) => {
                    tracing::error!(error = %e, "no random source for a rotation step");
                    return;
                }
            },
        };
        if let Err(e) =
            changes::apply(&state.keys, &state.backplane, change, Origin::policy()).await
        {
            tracing::warn!(error = %e, "the due rotation step did not happen; it is tried again");
        }
    }
    if let Err(e) = deliver(state, http, false).await {
        tracing::warn!(error = %e, "a sink did not take the active connection string; it is tried again");
    }
}

/// Writes the active connection string to the sinks unless they hold it already (or, with
/// `force`, always); on success the policy records it. Failed sinks are retried with backoff.
pub async fn deliver(
    state: &AppState,
    http: &reqwest::Client,
    force: bool,
) -> Result<bool, String> {
    let Some(policy) = state.keys.current().policy.clone() else {
        return Ok(false);
    };
    let (version, connection_string) = active_connection_string(state, &policy);
    let target = (policy.active, version);
    if !force && policy.delivered == Some(target) {
        return Ok(false);
    }
    let now = state.keys.clock().now_millis();
    if !force {
        let retry = *state
            .sink_retries
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if retry.is_some_and(|r| r.target == target && r.next_at > now) {
            return Ok(false);
        }
    }
    let delivery = Delivery {
        slot: policy.active,
        version,
        connection_string: &connection_string,
    };
    let written = sinks::write_all(&policy.sinks, &delivery, &state.notifications, http).await;
    // Whether this is the first failure for this value (then audited), with the lock released
    // before anything is awaited.
    let first_failure = {
        let mut retries = state
            .sink_retries
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &written {
            Ok(()) => {
                *retries = None;
                false
            }
            Err(_) => {
                let delay = match *retries {
                    Some(r) if r.target == target => (r.delay * 2).min(MAX_RETRY_MS),
                    _ => FIRST_RETRY_MS,
                };
                let first = retries.is_none_or(|r| r.target != target);
                *retries = Some(Retry {
                    target,
                    next_at: now + delay,
                    delay,
                });
                first
            }
        }
    };
    match written {
        Ok(()) => {
            let change = Change::SinksDelivered {
                slot: policy.active,
                version,
            };
            changes::apply(&state.keys, &state.backplane, change, Origin::policy())
                .await
                .map_err(|e| e.to_string())?;
            Ok(true)
        }
        Err(reason) => {
            if first_failure {
                let event = crate::store::AuditEvent {
                    at: now,
                    event: "sink_failed",
                    slot: Some(policy.active),
                    new_version: Some(version),
                    actor: "policy".into(),
                    detail: Some(reason.chars().take(500).collect()),
                    ..Default::default()
                };
                if let Err(e) = state.backplane.record(&state.keys, event).await {
                    tracing::warn!(error = %e, "could not record a failed sink");
                }
                let notice = super::notices::texts::sink_failed(
                    policy.active,
                    version,
                    &reason,
                    &state.primary_endpoint(),
                );
                super::events::queue_notices(state, vec![notice], now).await;
            }
            Err(reason)
        }
    }
}
