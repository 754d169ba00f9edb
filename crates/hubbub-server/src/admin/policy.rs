//! The rotation policy on the admin listener: `GET`/`PUT`/`DELETE /admin/keys/policy` and
//! `POST /admin/keys/rotate` (one step now). Setting a policy writes its sinks at once with the
//! active connection string.

use crate::admin::{Actor, MAX_ADMIN_BODY_BYTES};
use crate::clock::{parse_duration, rfc3339};
use crate::error::{read_body, ApiError};
use crate::keys::changes::{self, Change, Origin};
use crate::keys::policy::{self, RotationPolicy, Sink};
use crate::keys::rotation;
use crate::state::AppState;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubbub_proto::keys::KeySlot;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/keys/policy", get(show).put(set).delete(clear))
        .route("/admin/keys/rotate", post(rotate))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Held {
    key_type: &'static str,
    version: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutcomeView {
    at: String,
    result: String,
    detail: String,
}

/// A policy as the admin API and the CLI show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyView {
    active_key_type: &'static str,
    every_seconds: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    only_if_idle_seconds: Option<i64>,
    next_step_at: String,
    sinks: Vec<Sink>,
    /// The active value the sinks hold; `inStep` says whether that is the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    sinks_hold: Option<Held>,
    in_step: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_outcome: Option<OutcomeView>,
    /// Set by a request that wrote the sinks and one failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    sink_error: Option<String>,
}

fn view(state: &AppState, sink_error: Option<String>) -> Option<PolicyView> {
    let ring = state.keys.current();
    let p = ring.policy.as_ref()?;
    let active_version = ring.slot(p.active).version;
    Some(PolicyView {
        active_key_type: p.active.as_str(),
        every_seconds: p.every_ms / 1000,
        only_if_idle_seconds: p.only_if_idle_ms.map(|w| w / 1000),
        next_step_at: rfc3339(p.next_step_at),
        sinks: p.sinks.clone(),
        sinks_hold: p.delivered.map(|(slot, version)| Held {
            key_type: slot.as_str(),
            version,
        }),
        in_step: p.delivered == Some((p.active, active_version)),
        last_outcome: p.last_outcome.as_ref().map(|o| OutcomeView {
            at: rfc3339(o.at),
            result: o.result.clone(),
            detail: o.detail.clone(),
        }),
        sink_error,
    })
}

fn no_policy() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NoRotationPolicy",
        "no rotation policy is set; set one with `hubbub key policy set --every 30d --sink-file …`",
    )
}

async fn show(State(state): State<AppState>) -> Result<Json<PolicyView>, ApiError> {
    view(&state, None).map(Json).ok_or_else(no_policy)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetPolicy {
    every: String,
    #[serde(default)]
    only_if_idle: Option<String>,
    #[serde(default)]
    sinks: Vec<Sink>,
}

fn millis(text: &str, what: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    parse_duration(text)
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| (min..=max).contains(ms))
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidPolicy",
                format!(
                    "{what} must be a duration like 15m, 12h or 30d, from {} s to {} days",
                    min / 1000,
                    max / 86_400_000
                ),
            )
        })
}

async fn set(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<PolicyView>, ApiError> {
    let body = read_body(body, &headers, MAX_ADMIN_BODY_BYTES).await?;
    let request: SetPolicy = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "InvalidRequestBody",
            format!(
                r#"the body must be JSON like {{"every": "30d", "onlyIfIdle": "15m", "sinks": [{{"kind": "file", "path": "/…"}}]}} (line {}, column {})"#,
                e.line(),
                e.column()
            ),
        )
    })?;
    let every_ms = millis(
        &request.every,
        "every",
        policy::MIN_EVERY_MS,
        policy::MAX_EVERY_MS,
    )?;
    let only_if_idle_ms = request
        .only_if_idle
        .as_deref()
        .map(|w| millis(w, "onlyIfIdle", 60_000, policy::MAX_IDLE_MS))
        .transpose()?;
    if request.sinks.len() > policy::MAX_SINKS {
        return Err(ApiError::bad_request(
            "InvalidPolicy",
            format!("at most {} sinks", policy::MAX_SINKS),
        ));
    }
    for sink in &request.sinks {
        state
            .sink_rules
            .check(sink, state.notifications.webhook_secret.as_deref())
            .map_err(|e| ApiError::bad_request("InvalidSink", e))?;
    }
    let now = state.keys.clock().now_millis();
    let current = state.keys.current().policy.clone();
    let policy = RotationPolicy {
        every_ms,
        only_if_idle_ms,
        sinks: request.sinks,
        active: current.as_ref().map_or(KeySlot::Primary, |p| p.active),
        next_step_at: now + every_ms,
        delivered: None,
        last_outcome: current.and_then(|p| p.last_outcome),
    };
    let origin = Origin::admin(actor, peer);
    changes::apply(
        &state.keys,
        &state.backplane,
        Change::SetPolicy(Some(policy)),
        origin,
    )
    .await
    .map_err(|e| e.into_api("the rotation policy"))?;
    let sink_error = rotation::deliver(&state, &http(), true).await.err();
    view(&state, sink_error).map(Json).ok_or_else(no_policy)
}

async fn clear(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
) -> Result<StatusCode, ApiError> {
    let origin = Origin::admin(actor, peer);
    changes::apply(
        &state.keys,
        &state.backplane,
        Change::SetPolicy(None),
        origin,
    )
    .await
    .map_err(|e| e.into_api("the rotation policy"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// One step now: the standby key gets a new value and becomes active; the sinks are written.
async fn rotate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
) -> Result<Json<PolicyView>, ApiError> {
    if state.keys.current().policy.is_none() {
        return Err(no_policy());
    }
    let origin = Origin::admin(actor, peer);
    rotation::step_now(&state, origin)
        .await
        .map_err(|e| e.into_api("the rotation step"))?;
    let sink_error = rotation::deliver(&state, &http(), false).await.err();
    view(&state, sink_error).map(Json).ok_or_else(no_policy)
}
