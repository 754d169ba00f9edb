//! Key lifecycle on the admin listener: enforced rotation (`require-rotation`), ending a grace
//! period early (`end-grace`), key usage, and the audit log with paging.

use crate::admin::{keys_view, Actor, KeysView, ADMIN_ACTOR, MAX_ADMIN_BODY_BYTES};
use crate::clock::{parse_deadline, rfc3339};
use crate::error::{read_body, ApiError};
use crate::keys::changes::{self, Change, Origin};
use crate::keys::usage::UsageSnapshot;
use crate::state::AppState;
use crate::store::AuditRecord;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubbub_proto::keys::KeySlot;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest page of the audit log.
const MAX_AUDIT_PAGE: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/keys/require-rotation", post(require_rotation))
        .route("/admin/keys/end-grace", post(end_grace))
        .route("/admin/keys/revoke", post(revoke))
        .route("/admin/keys/usage", get(usage))
        .route("/admin/keys/stale-callers", get(stale_callers))
        .route("/admin/audit", get(audit))
        .route("/admin/notices", get(notices))
        .route("/admin/local-auth", get(local_auth).put(set_local_auth))
        .route("/admin/identities/usage", get(identity_usage))
}

#[derive(Serialize)]
struct IdentityUsage {
    value: Vec<crate::oidc::IdentityUse>,
}

/// `GET /admin/identities/usage`: what each identity-provider caller used on this node (by
/// issuer and subject), most recent first.
async fn identity_usage(State(state): State<AppState>) -> Json<IdentityUsage> {
    Json(IdentityUsage {
        value: state.oidc.as_ref().map(|o| o.usage()).unwrap_or_default(),
    })
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LocalAuth {
    /// Access keys do not authenticate REST calls or client tokens.
    disabled: bool,
}

/// `GET /admin/local-auth`: whether access keys authenticate.
async fn local_auth(State(state): State<AppState>) -> Json<LocalAuth> {
    Json(LocalAuth {
        disabled: state.keys.current().local_auth_disabled,
    })
}

/// `PUT /admin/local-auth {"disabled": true}`: turns access keys off (or on again) on every node,
/// durably and audited (`local_auth_disabled`, `local_auth_enabled`).
async fn set_local_auth(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<LocalAuth>, ApiError> {
    let request: LocalAuth = json_body(body, &headers, r#"{"disabled": true}"#).await?;
    let applied = changes::apply(
        &state.keys,
        &state.backplane,
        Change::SetLocalAuth {
            disabled: request.disabled,
        },
        Origin::admin(actor, peer),
    )
    .await
    .map_err(|e| e.into_api("changing local auth"))?;
    Ok(Json(LocalAuth {
        disabled: applied.ring.local_auth_disabled,
    }))
}

/// An access key's slot from a request's `keyType` (`Primary` or `Secondary`; `what` says what
/// the salt cannot have).
fn access_slot(key_type: &str, what: &str) -> Result<KeySlot, ApiError> {
    let slot: KeySlot = key_type
        .parse()
        .map_err(|e: hubbub_proto::keys::UnknownKeySlot| {
            ApiError::bad_request("InvalidKeyType", e.to_string())
        })?;
    if slot == KeySlot::Salt {
        return Err(ApiError::bad_request(
            "InvalidKeyType",
            format!("{what} for Primary or Secondary, not Salt"),
        ));
    }
    Ok(slot)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequireRotation {
    key_type: String,
    by: String,
    reason: String,
}

async fn require_rotation(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<KeysView>, ApiError> {
    let request: RequireRotation = json_body(
        body,
        &headers,
        r#"{"keyType": "Primary", "by": "7d", "reason": "..."}"#,
    )
    .await?;
    let slot = access_slot(&request.key_type, "rotation can be required")?;
    let now = state.keys.clock().now_millis();
    let deadline = parse_deadline(&request.by, now).ok_or_else(|| {
        ApiError::bad_request(
            "InvalidDeadline",
            "'by' must be an RFC 3339 time (2026-12-01T00:00:00Z) or a duration (30m, 12h, 7d)",
        )
    })?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(ApiError::bad_request(
            "InvalidReason",
            "'reason' must say why, in at most 1000 characters",
        ));
    }
    let change = Change::RequireRotation {
        slot,
        deadline,
        reason: reason.to_string(),
    };
    let origin = Origin::admin(ADMIN_ACTOR, peer);
    let applied = changes::apply(&state.keys, &state.backplane, change, origin)
        .await
        .map_err(|e| e.into_api("the requirement"))?;
    Ok(Json(keys_view(&state, &applied.ring)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndGrace {
    key_type: String,
}

/// One earlier value whose grace period was ended.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ended {
    key_type: KeySlot,
    version: u64,
}

/// The keys, and the earlier values whose grace period this call ended (none when none ran).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndGraceView {
    #[serde(flatten)]
    keys: KeysView,
    ended: Vec<Ended>,
}

/// `POST /admin/keys/end-grace {"keyType": "Primary"}`: every earlier value of the key still in a
/// grace period stops verifying now (audited); a key regenerated after a leak is then revoked
/// for good.
async fn end_grace(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<EndGraceView>, ApiError> {
    let request: EndGrace = json_body(body, &headers, r#"{"keyType": "Primary"}"#).await?;
    let slot = access_slot(&request.key_type, "grace periods are")?;
    let origin = Origin::admin(actor, peer);
    let applied = changes::apply(
        &state.keys,
        &state.backplane,
        Change::EndGrace { slot },
        origin,
    )
    .await
    .map_err(|e| e.into_api("ending the grace period"))?;
    Ok(Json(EndGraceView {
        keys: keys_view(&state, &applied.ring),
        ended: applied
            .ended
            .iter()
            .map(|k| Ended {
                key_type: k.slot,
                version: k.version,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Revoke {
    key_type: String,
    #[serde(default)]
    disconnect: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RevokedView {
    #[serde(flatten)]
    keys: KeysView,
    /// The slot and the version that is no longer accepted (nor any earlier one).
    revoked: Ended,
    disconnect: bool,
    /// Connections this node closed (each node closes its own, and audits the count).
    closed_connections: usize,
}

/// `POST /admin/keys/revoke {"keyType","disconnect"}`: a new value now, no earlier value accepted
/// any more, and with `disconnect` the connections a value of the slot signed closed on every
/// node.
async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<RevokedView>, ApiError> {
    let request: Revoke = json_body(
        body,
        &headers,
        r#"{"keyType": "Primary", "disconnect": true}"#,
    )
    .await?;
    let slot: KeySlot =
        request
            .key_type
            .parse()
            .map_err(|e: hubbub_proto::keys::UnknownKeySlot| {
                ApiError::bad_request("InvalidKeyType", e.to_string())
            })?;
    let value = crate::secret::Secret::generate()
        .map_err(|e| changes::KeyChangeError::from(crate::store::StoreError::Random(e)))
        .map_err(|e| e.into_api("the key"))?;
    let origin = Origin::admin(actor, peer);
    let change = Change::Revoke {
        slot,
        value,
        disconnect: request.disconnect,
    };
    let applied = changes::apply(&state.keys, &state.backplane, change, origin)
        .await
        .map_err(|e| e.into_api("revoking the key"))?;
    let closed_connections = if request.disconnect {
        let revocation = applied
            .ring
            .revocations
            .iter()
            .find(|r| r.slot == slot)
            .copied();
        state.enforce_revocations(revocation.as_ref()).await
    } else {
        0
    };
    Ok(Json(RevokedView {
        keys: keys_view(&state, &applied.ring),
        revoked: Ended {
            key_type: slot,
            version: applied.ring.slot(slot).version.saturating_sub(1),
        },
        disconnect: request.disconnect,
        closed_connections,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SlotUsage {
    #[serde(flatten)]
    usage: UsageSnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<String>,
    /// The last use of an earlier value in its grace period.
    #[serde(skip_serializing_if = "Option::is_none")]
    retiring_last_used_at: Option<String>,
}

async fn usage(State(state): State<AppState>) -> Json<HashMap<&'static str, SlotUsage>> {
    let mut out = HashMap::new();
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        if let Some(usage) = state.keys.usage(slot) {
            out.insert(
                slot.as_str(),
                SlotUsage {
                    last_used_at: usage.last_used_at.map(rfc3339),
                    retiring_last_used_at: usage.retiring_last_used_at.map(rfc3339),
                    usage,
                },
            );
        }
    }
    Json(out)
}

/// One caller seen with a token signed by a regenerated key value.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StaleCallerView {
    pub key_type: &'static str,
    pub version: u64,
    pub kind: String,
    pub hub: String,
    pub source_address: String,
    pub user_agent: String,
    pub count: u64,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

/// Every stale caller this node knows, most recently seen first.
pub fn stale_caller_views(state: &AppState) -> Vec<StaleCallerView> {
    state
        .keys
        .stale_callers()
        .list()
        .into_iter()
        .map(|c| StaleCallerView {
            key_type: c.slot.as_str(),
            version: c.version,
            kind: c.kind,
            hub: c.hub,
            source_address: c.source_address,
            user_agent: c.user_agent,
            count: c.count,
            first_seen_at: rfc3339(c.first_seen_at),
            last_seen_at: rfc3339(c.last_seen_at),
        })
        .collect()
}

async fn stale_callers(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "value": stale_caller_views(&state) }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NoticeItem {
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<String>,
    #[serde(flatten)]
    notice: crate::store::Notice,
}

/// The latest notices and how their delivery went.
async fn notices(State(state): State<AppState>) -> Result<Json<Vec<NoticeItem>>, ApiError> {
    let store = state.keys.store().clone();
    let list = tokio::task::spawn_blocking(move || store.notices())
        .await
        .map_err(|_| ApiError::internal("reading notices was interrupted"))?
        .map_err(|_| ApiError::internal("notices could not be read"))?;
    Ok(Json(
        list.into_iter()
            .map(|notice| NoticeItem {
                created_at: rfc3339(notice.created_at),
                sent_at: notice.sent_at.map(rfc3339),
                notice,
            })
            .collect(),
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditItem {
    at: String,
    #[serde(flatten)]
    record: AuditRecord,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditPage {
    value: Vec<AuditItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

async fn audit(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<AuditPage>, ApiError> {
    let since = query
        .get("since")
        .map(|s| {
            parse_deadline(s, 0).ok_or_else(|| {
                ApiError::bad_request("InvalidQueryParameter", "'since' must be an RFC 3339 time")
            })
        })
        .transpose()?;
    let after = query
        .get("after")
        .map(|a| {
            a.parse::<i64>().map_err(|_| {
                ApiError::bad_request("InvalidQueryParameter", "'after' must be an event id")
            })
        })
        .transpose()?;
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_AUDIT_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidQueryParameter",
                    format!("'limit' must be 1 to {MAX_AUDIT_PAGE}"),
                )
            })?,
        None => 100,
    };
    let store = state.keys.store().clone();
    let records = tokio::task::spawn_blocking(move || store.audit(since, after, limit + 1))
        .await
        .map_err(|_| ApiError::internal("reading the audit log was interrupted"))?
        .map_err(|_| ApiError::internal("the audit log could not be read"))?;
    let more = records.len() > limit;
    let value: Vec<AuditItem> = records
        .into_iter()
        .take(limit)
        .map(|record| AuditItem {
            at: rfc3339(record.at),
            record,
        })
        .collect();
    let next_link = match (more, value.last()) {
        (true, Some(last)) => {
            let since = query.get("since").map(|s| {
                format!(
                    "&since={}",
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                )
            });
            Some(format!(
                "/admin/audit?after={}&limit={limit}{}",
                last.record.id,
                since.unwrap_or_default()
            ))
        }
        _ => None,
    };
    Ok(Json(AuditPage { value, next_link }))
}

/// A request body read (at most the admin limit) and parsed as JSON; a body that is not is
/// refused with 400 and `example`, the shape expected.
async fn json_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
    headers: &HeaderMap,
    example: &str,
) -> Result<T, ApiError> {
    let body = read_body(body, headers, MAX_ADMIN_BODY_BYTES).await?;
    serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "InvalidRequestBody",
            format!("the body must be JSON like {example}"),
        )
    })
}
