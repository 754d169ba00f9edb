//! The admin listener: the management API (`/admin/...`) and its ARM-shaped twins
//! (`.../listKeys`, `.../regenerateKey`) so the Azure management SDKs can manage keys.
//! Every route needs the admin token as a bearer token.

pub mod activity;
pub mod hubs;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod portal;

use crate::clock::rfc3339;
use crate::error::{read_body, ApiError};
use crate::keys::auth::bearer_token;
use crate::keys::changes::{self, Change, KeyChangeError, Origin};
use crate::keys::KeyRing;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubbub_proto::keys::{KeySlot, WebPubSubKeys};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest accepted admin request body.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

/// The actor recorded for changes made with the admin token.
pub const ADMIN_ACTOR: &str = "admin-token";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/keys", get(show_keys))
        .route("/admin/keys/regenerate", post(regenerate))
        .route("/admin/admin-token/rotate", post(rotate_admin_token))
        .merge(crate::admin::hubs::routes())
        .merge(crate::admin::activity::routes())
        .merge(crate::admin::lifecycle::routes())
        .merge(crate::admin::policy::routes())
        .route("/metrics", get(crate::admin::metrics::handler))
        .route("/admin/overview", get(overview))
        .route("/admin/health", get(health))
        .route("/admin/trace", get(trace))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .merge(crate::admin::portal::routes())
        .with_state(state)
}

/// Who made an admin request: the admin token, or a portal session.
#[derive(Debug, Clone)]
pub struct Actor(pub Arc<str>);

/// The actor recorded for changes made in the portal.
pub const PORTAL_ACTOR: &str = "portal";

/// Refuses (401) any request without the admin token. Constant-time comparison.
async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let arm = is_arm_path(request.uri().path());
    let refuse = |message: &str| {
        let error = ApiError::unauthorized(message);
        if arm { error.into_arm() } else { error }.into_response()
    };
    let mut request = request;
    match bearer_token(header.as_deref()) {
        Ok(token) if state.admin_token.matches(token) => {
            request.extensions_mut().insert(Actor(ADMIN_ACTOR.into()));
            next.run(request).await
        }
        Ok(token) if crate::oidc::is_identity_token(token) => {
            let Some(oidc) = state.oidc.as_ref() else {
                return refuse("the admin token is not valid");
            };
            // An identity with the admin role; the audit log names it.
            match oidc.verify(token, state.keys.clock().now_millis()).await {
                Ok(identity) if identity.admin => {
                    oidc.record_use(&identity, true, state.keys.clock().now_millis());
                    state.telemetry.identity(&identity.issuer, "admin");
                    let actor = format!("oidc:{}@{}", identity.subject, identity.issuer);
                    request.extensions_mut().insert(Actor(actor.into()));
                    next.run(request).await
                }
                Ok(_) => {
                    let e = crate::oidc::OidcError::Forbidden(format!(
                        "the admin API needs one of the roles {}",
                        oidc.settings().admin_roles.join(", ")
                    ));
                    state.identity_refused(None, &e);
                    let error = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string());
                    if arm { error.into_arm() } else { error }.into_response()
                }
                Err(e) => {
                    state.identity_refused(None, &e);
                    refuse(&e.to_string())
                }
            }
        }
        Ok(_) => refuse("the admin token is not valid"),
        Err(e) => {
            // A portal session: its cookie, plus its CSRF token on anything that changes state.
            let session = crate::admin::portal::session_id(request.headers())
                .and_then(|id| state.portal.csrf(&id));
            let Some(csrf) = session else {
                return refuse(&e.to_string());
            };
            let safe = matches!(
                *request.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            );
            let offered = request
                .headers()
                .get(crate::admin::portal::CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            if !safe && !offered.is_some_and(|t| csrf.matches(t)) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "the request lacks the portal's CSRF token",
                )
                .into_response();
            }
            request.extensions_mut().insert(Actor(PORTAL_ACTOR.into()));
            next.run(request).await
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HubOverview {
    name: String,
    connections: usize,
    event_handlers: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    connections: usize,
    messages_per_second: f64,
    hubs: Vec<HubOverview>,
}

/// Live connections, hubs, and the delivery rate since the previous call (at least 1 s apart).
async fn overview(State(state): State<AppState>) -> Json<Overview> {
    let live = state.hubs.all();
    let settings = state.hub_settings.all();
    let mut names: std::collections::BTreeSet<String> = settings.keys().cloned().collect();
    names.extend(live.iter().map(|h| h.name.to_string()));
    let hubs: Vec<HubOverview> = names
        .into_iter()
        .map(|name| HubOverview {
            connections: live
                .iter()
                .find(|h| *h.name == *name)
                .map_or(0, |h| h.connection_count()),
            event_handlers: settings.get(&name).map_or(0, |p| p.event_handlers.len()),
            name,
        })
        .collect();
    let delivered = state.hubs.traffic().total().messages_delivered;
    let now = std::time::Instant::now();
    let rate = {
        let mut sample = state.rate_sample.lock().unwrap_or_else(|p| p.into_inner());
        match *sample {
            Some((at, count)) if now.duration_since(at).as_secs_f64() >= 1.0 => {
                let rate =
                    (delivered.saturating_sub(count)) as f64 / now.duration_since(at).as_secs_f64();
                *sample = Some((now, delivered));
                rate
            }
            Some((at, count)) => {
                (delivered.saturating_sub(count)) as f64
                    / now.duration_since(at).as_secs_f64().max(0.001)
            }
            None => {
                *sample = Some((now, delivered));
                0.0
            }
        }
    };
    Json(Overview {
        connections: hubs.iter().map(|h| h.connections).sum(),
        messages_per_second: rate,
        hubs,
    })
}

/// ARM paths are case-insensitive, so they are matched here rather than by the router.
fn is_arm_path(path: &str) -> bool {
    path.get(..15)
        .is_some_and(|p| p.eq_ignore_ascii_case("/subscriptions/"))
}

async fn fallback(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    if let Some(hub) = crate::admin::hubs::arm_hub_path(request.uri().path()) {
        return crate::admin::hubs::arm(state.0, request, hub).await;
    }
    if is_arm_path(request.uri().path()) {
        if let Some(name) = arm_resource_name(request.uri().path()) {
            let actor = request
                .extensions()
                .get::<Actor>()
                .map_or_else(|| ADMIN_ACTOR.into(), |a| Arc::clone(&a.0));
            return arm_resource(state.0, peer.0, actor, request, name)
                .await
                .unwrap_or_else(|e| e.into_arm().into_response());
        }
        if request.method() != axum::http::Method::POST {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the ARM key operations are POST requests",
            )
            .into_arm()
            .into_response();
        }
        return arm(state, peer, request).await.into_response();
    }
    ApiError::not_found("no such admin operation").into_response()
}

/// One slot's metadata, as `GET /admin/keys` shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    pub version: u64,
    pub created_at: String,
    pub age_days: u64,
    /// `ok`, `dueSoon` (policy age reached within 30 days), `due`, `rotationRequired`, `disabled`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rotation: Option<RotationView>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub retiring: Vec<RetiringView>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub authenticated_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_used_at: Option<String>,
    /// The last use of an earlier value in its grace period.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retiring_last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<crate::keys::usage::UsageSnapshot>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationView {
    pub deadline: String,
    pub reason: String,
    pub required_at: String,
    pub actor: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetiringView {
    pub version: u64,
    pub until: String,
}

/// `GET /admin/keys`: the `WebPubSubKeys` fields plus per-slot metadata.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeysView {
    #[serde(flatten)]
    pub keys: WebPubSubKeys,
    pub primary: SlotView,
    pub secondary: SlotView,
    pub salt: SlotView,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

pub(crate) fn keys_view(state: &AppState, ring: &KeyRing) -> KeysView {
    let now = state.keys.clock().now_millis();
    let slot = |s: KeySlot| {
        let key = ring.slot(s);
        let usage = state.keys.usage(s);
        let due_at = match (s, state.key_max_age_days) {
            (KeySlot::Salt, _) | (_, None) => None,
            (_, Some(days)) => Some(key.created_at + i64::from(days) * DAY_MS),
        };
        let requirement = ring.requirement(s);
        let status = if ring.disabled(s, now).is_some() {
            "disabled"
        } else if requirement.is_some() {
            "rotationRequired"
        } else if due_at.is_some_and(|d| now >= d) {
            "due"
        } else if due_at.is_some_and(|d| now >= d - 30 * DAY_MS) {
            "dueSoon"
        } else {
            "ok"
        };
        SlotView {
            version: key.version,
            created_at: rfc3339(key.created_at),
            age_days: ((now - key.created_at).max(0) / DAY_MS) as u64,
            status: status.to_string(),
            due_at: due_at.map(rfc3339),
            rotation: requirement.map(|r| RotationView {
                deadline: rfc3339(r.deadline),
                reason: r.reason.clone(),
                required_at: rfc3339(r.required_at),
                actor: r.actor.clone(),
            }),
            retiring: ring
                .retiring
                .iter()
                .filter(|k| k.slot == s && k.until > now)
                .map(|k| RetiringView {
                    version: k.version,
                    until: rfc3339(k.until),
                })
                .collect(),
            authenticated_requests: usage.map(|u| u.authenticated_requests()),
            last_used_at: usage.and_then(|u| u.last_used_at).map(rfc3339),
            retiring_last_used_at: usage.and_then(|u| u.retiring_last_used_at).map(rfc3339),
            usage,
        }
    };
    KeysView {
        keys: ring.web_pub_sub_keys(&state.primary_endpoint()),
        primary: slot(KeySlot::Primary),
        secondary: slot(KeySlot::Secondary),
        salt: slot(KeySlot::Salt),
    }
}

async fn show_keys(State(state): State<AppState>) -> Json<KeysView> {
    Json(keys_view(&state, &state.keys.current()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegenerateRequest {
    key_type: serde_json::Value,
    #[serde(default)]
    grace: Option<String>,
}

/// Parses `{"keyType": "Primary" | "Secondary" | "Salt"}` (case-insensitive).
fn parse_regenerate(body: &[u8]) -> Result<KeySlot, ApiError> {
    parse_regenerate_with_grace(body).map(|(slot, _)| slot)
}

/// Parses `{"keyType": …, "grace": "15m"}`; the grace period is a Hubbub extension.
fn parse_regenerate_with_grace(
    body: &[u8],
) -> Result<(KeySlot, Option<std::time::Duration>), ApiError> {
    let grace = serde_json::from_slice::<RegenerateRequest>(body)
        .ok()
        .and_then(|r| r.grace)
        .map(|g| {
            crate::clock::parse_duration(&g)
                .filter(|d| *d <= std::time::Duration::from_secs(7 * 24 * 3600))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidGrace",
                        "grace must be a duration like 30s, 15m, 2h or 1d, at most 7d",
                    )
                })
        })
        .transpose()?;
    Ok((parse_slot(body)?, grace))
}

fn parse_slot(body: &[u8]) -> Result<KeySlot, ApiError> {
    let request: RegenerateRequest = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request(
            "InvalidRequestBody",
            r#"the body must be JSON like {"keyType": "Primary"}"#,
        )
    })?;
    let name = request.key_type.as_str().ok_or_else(|| {
        ApiError::bad_request(
            "InvalidKeyType",
            "keyType must be a string: Primary, Secondary or Salt",
        )
    })?;
    name.parse::<KeySlot>()
        .map_err(|e| ApiError::bad_request("InvalidKeyType", e.to_string()))
}

/// Regenerates (through the backplane: durable before it returns) and returns the new ring.
async fn regenerate_slot(
    state: &AppState,
    slot: KeySlot,
    source: SocketAddr,
    grace: Option<std::time::Duration>,
    actor: Arc<str>,
) -> Result<Arc<KeyRing>, ApiError> {
    let now = state.keys.clock().now_millis();
    let change = Change::regenerate(slot, grace, now)
        .map_err(|e| KeyChangeError::from(e).into_api("the key"))?;
    let origin = Origin::admin(actor, source);
    let applied = changes::apply(&state.keys, &state.backplane, change, origin)
        .await
        .map_err(|e| e.into_api("the key"))?;
    Ok(applied.ring)
}

async fn regenerate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<KeysView>, ApiError> {
    let body = read_body(body, &headers, MAX_ADMIN_BODY_BYTES).await?;
    let (slot, grace) = parse_regenerate_with_grace(&body)?;
    let ring = regenerate_slot(&state, slot, peer, grace, actor).await?;
    Ok(Json(keys_view(&state, &ring)))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RotatedAdminToken {
    admin_token: String,
    admin_token_file: String,
}

/// `POST /admin/admin-token/rotate`: a fresh admin token, durable (and in the admin token file)
/// before it answers; the old one stops working at once and portal sessions are signed out.
async fn rotate_admin_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
) -> Result<Json<RotatedAdminToken>, ApiError> {
    let store = Arc::clone(state.keys.store());
    let now = state.keys.clock().now_millis();
    let source = peer.ip().to_string();
    let (token, file) = tokio::task::spawn_blocking({
        let actor = Arc::clone(&actor);
        move || store.rotate_admin_token(now, &actor, Some(&source))
    })
    .await
    .map_err(|_| ApiError::internal("the rotation was interrupted"))?
    .map_err(|e| {
        tracing::error!(error = %e, "the admin token could not be rotated");
        ApiError::internal("the admin token could not be rotated; the old one still works")
    })?;
    state.admin_token.replace(token.clone());
    state.portal.end_all();
    tracing::info!(actor = %actor, "admin token rotated");
    Ok(Json(RotatedAdminToken {
        admin_token: token.expose().to_string(),
        admin_token_file: file.display().to_string(),
    }))
}

/// The ARM operations on `Microsoft.SignalRService/webPubSub/{name}`, matched case-insensitively
/// as ARM does. Any subscription, resource group and name address this one instance.
#[derive(Debug, PartialEq, Eq)]
enum ArmAction {
    ListKeys,
    RegenerateKey,
}

fn arm_action(path: &str) -> Option<ArmAction> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let [subscriptions, sub, groups, rg, providers, provider, kind, name, action] =
        segments.as_slice()
    else {
        return None;
    };
    let is = |s: &str, expected: &str| s.eq_ignore_ascii_case(expected);
    let shape_ok = is(subscriptions, "subscriptions")
        && is(groups, "resourceGroups")
        && is(providers, "providers")
        && is(provider, "Microsoft.SignalRService")
        && is(kind, "webPubSub")
        && [sub, rg, name].iter().all(|s| !s.is_empty());
    if !shape_ok {
        return None;
    }
    if is(action, "listKeys") {
        Some(ArmAction::ListKeys)
    } else if is(action, "regenerateKey") {
        Some(ArmAction::RegenerateKey)
    } else {
        None
    }
}

async fn arm(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Json<WebPubSubKeys>, ApiError> {
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let action = arm_action(&path).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "only POST .../providers/Microsoft.SignalRService/webPubSub/{name}/listKeys and .../regenerateKey are served",
        )
        .into_arm()
    })?;
    let endpoint = state.primary_endpoint();
    match action {
        ArmAction::ListKeys => Ok(Json(state.keys.current().web_pub_sub_keys(&endpoint))),
        ArmAction::RegenerateKey => {
            let body = read_body(request.into_body(), &headers, MAX_ADMIN_BODY_BYTES)
                .await
                .map_err(ApiError::into_arm)?;
            let slot = parse_regenerate(&body).map_err(ApiError::into_arm)?;
            let ring = regenerate_slot(&state, slot, peer, None, ADMIN_ACTOR.into())
                .await
                .map_err(ApiError::into_arm)?;
            Ok(Json(ring.web_pub_sub_keys(&endpoint)))
        }
    }
}

/// The resource name of `.../providers/Microsoft.SignalRService/webPubSub/{name}` (the instance
/// itself, not one of its operations), matched case-insensitively.
fn arm_resource_name(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let [subscriptions, sub, groups, rg, providers, provider, kind, name] = segments.as_slice()
    else {
        return None;
    };
    let is = |s: &str, expected: &str| s.eq_ignore_ascii_case(expected);
    (is(subscriptions, "subscriptions")
        && is(groups, "resourceGroups")
        && is(providers, "providers")
        && is(provider, "Microsoft.SignalRService")
        && is(kind, "webPubSub")
        && [sub, rg, name].iter().all(|s| !s.is_empty()))
    .then(|| (*name).to_string())
}

/// The instance as an ARM `WebPubSubResource`: `GET` reads it; `PATCH`/`PUT` change what can
/// be changed here, `properties.disableLocalAuth` (through the key-change seam: durable, on
/// every node, audited), and answer with the resource (`provisioningState: Succeeded`, so the
/// management SDK's long-running-operation poller is done at once).
async fn arm_resource(
    state: AppState,
    peer: SocketAddr,
    actor: Arc<str>,
    request: Request,
    name: String,
) -> Result<Response, ApiError> {
    use axum::http::Method;
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if method == Method::PATCH || method == Method::PUT {
        let headers = request.headers().clone();
        let body = read_body(request.into_body(), &headers, MAX_ADMIN_BODY_BYTES).await?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            ApiError::bad_request("InvalidRequestContent", "the body must be a JSON resource")
        })?;
        match value.pointer("/properties/disableLocalAuth") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Bool(disabled)) => {
                changes::apply(
                    &state.keys,
                    &state.backplane,
                    Change::SetLocalAuth {
                        disabled: *disabled,
                    },
                    Origin::admin(actor, peer),
                )
                .await
                .map_err(|e| e.into_api("changing local auth"))?;
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "InvalidRequestContent",
                    "properties.disableLocalAuth must be true or false",
                ))
            }
        }
    } else if method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the instance resource is read with GET and changed with PATCH or PUT",
        ));
    }
    let endpoint = state.primary_endpoint();
    let url = url::Url::parse(&endpoint).ok();
    let id = path.trim_end_matches('/');
    let resource = serde_json::json!({
        "id": id,
        "name": name,
        "type": "Microsoft.SignalRService/WebPubSub",
        "location": "local",
        "sku": {"name": "Standard_S1", "tier": "Standard", "capacity": 1},
        "kind": "WebPubSub",
        "properties": {
            "provisioningState": "Succeeded",
            "hostName": url.as_ref().and_then(|u| u.host_str()).unwrap_or("localhost"),
            "publicPort": url.as_ref().and_then(url::Url::port_or_known_default),
            "serverPort": url.as_ref().and_then(url::Url::port_or_known_default),
            "version": "1.0",
            "publicNetworkAccess": "Enabled",
            "disableLocalAuth": state.keys.current().local_auth_disabled,
            "disableAadAuth": state.oidc.is_none(),
        },
    });
    Ok(Json(resource).into_response())
}

/// The live trace as Server-Sent Events, one JSON event per `data:` line, filtered by the query
/// (`hub`, `connectionId`, `userId`, `category`; `cluster=true`: every node's events, not only
/// this node's; `payloads=true` with `hub`: that hub's messages with their payloads, audited).
/// A listener more than
/// [`crate::trace::BUFFER`] events behind gets a last `dropped` event and the stream ends; at most
/// [`crate::trace::MAX_LISTENERS`] listen at once (429 beyond).
async fn trace(
    State(state): State<AppState>,
    axum::Extension(actor): axum::Extension<Actor>,
    axum::extract::Query(filter): axum::extract::Query<crate::trace::TraceFilter>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    use tokio::sync::broadcast::error::RecvError;
    let hub = filter.hub.as_deref().map(crate::admin::hubs::hub_name);
    let captures = match (filter.payloads, hub) {
        (false, _) => None,
        (true, Some(Ok(hub))) => Some(hub),
        (true, _) => {
            return ApiError::bad_request(
                "InvalidRequest",
                "payload capture is for one hub at a time: give hub=<name> with payloads=true",
            )
            .into_response();
        }
    };
    let Some(receiver) = state
        .trace
        .listen_capturing(filter.cluster, captures.as_deref())
    else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyListeners",
            format!(
                "{} trace listeners are connected, the most there may be",
                crate::trace::MAX_LISTENERS
            ),
        )
        .into_response();
    };
    if let Some(hub) = &captures {
        // Payloads are the app's data: who looked, and at which hub, goes in the audit log.
        tracing::info!(hub = %hub, actor = %actor.0, "live trace with payload capture");
        let store = state.keys.store().clone();
        let entry_hub = hub.clone();
        let at = state.keys.clock().now_millis();
        let _ = tokio::task::spawn_blocking(move || {
            store.append_audit(&crate::store::AuditEntry {
                at,
                event: "trace_payload_capture",
                actor: &actor.0,
                detail: Some(&format!("hub {entry_hub}")),
                ..Default::default()
            })
        })
        .await;
    }
    let events = futures_util::stream::unfold(Some(receiver), move |receiver| {
        let filter = filter.clone();
        async move {
            let mut receiver = receiver?;
            loop {
                match receiver.recv().await {
                    Ok(entry) if filter.matches(&entry.fields) => {
                        let data = receiver.json(&entry).to_string();
                        return Some((
                            Ok::<_, std::convert::Infallible>(Event::default().data(data)),
                            Some(receiver),
                        ));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        let data = serde_json::json!({
                            "event": "dropped",
                            "reason": format!("this listener fell {missed} events behind"),
                        });
                        return Some((Ok(Event::default().data(data.to_string())), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
    .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Readiness for probes: the store answers a query, and in a cluster NATS is connected. 200 when
/// every check passes, 503 with the failing check's detail otherwise.
async fn health(State(state): State<AppState>) -> Response {
    let store = std::sync::Arc::clone(state.keys.store());
    let database = tokio::task::spawn_blocking(move || store.ping())
        .await
        .map_err(|_| "the check did not finish".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let mut ready = database.is_ok();
    let mut checks = serde_json::Map::new();
    checks.insert(
        "database".into(),
        match database {
            Ok(()) => serde_json::json!({ "ok": true }),
            Err(detail) => serde_json::json!({ "ok": false, "detail": detail }),
        },
    );
    if let Some(connected) = state.backplane.link_up() {
        ready &= connected;
        checks.insert(
            "cluster".into(),
            if connected {
                serde_json::json!({ "ok": true })
            } else {
                serde_json::json!({ "ok": false, "detail": "NATS is not connected" })
            },
        );
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_paths_match_case_insensitively() {
        let p = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.SignalRService/webPubSub/n/listKeys";
        assert_eq!(arm_action(p), Some(ArmAction::ListKeys));
        let p = "/SUBSCRIPTIONS/s1/resourcegroups/rg/providers/microsoft.signalrservice/WEBPUBSUB/n/regeneratekey";
        assert_eq!(arm_action(p), Some(ArmAction::RegenerateKey));
        let p = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.SignalRService/signalR/n/listKeys";
        assert_eq!(arm_action(p), None);
        assert_eq!(arm_action("/subscriptions/s1"), None);
    }

    #[test]
    fn regenerate_bodies() {
        assert_eq!(
            parse_regenerate(br#"{"keyType":"primary"}"#),
            Ok(KeySlot::Primary)
        );
        assert_eq!(
            parse_regenerate(br#"{"keyType":"Salt"}"#),
            Ok(KeySlot::Salt)
        );
        let err = parse_regenerate(br#"{"keyType":"Tertiary"}"#).unwrap_err();
        assert_eq!(err.code, "InvalidKeyType");
        assert!(err.message.contains("Tertiary"));
        assert_eq!(
            parse_regenerate(br#"{"keyType":1}"#).unwrap_err().code,
            "InvalidKeyType"
        );
        assert_eq!(
            parse_regenerate(b"keyType=primary").unwrap_err().code,
            "InvalidRequestBody"
        );
        assert_eq!(
            parse_regenerate(b"{}").unwrap_err().code,
            "InvalidRequestBody"
        );
    }
}
