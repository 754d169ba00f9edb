//! The client endpoint: `/client/hubs/{hub}` and `/client?hub=`. Authenticates the upgrade
//! (401, never a 101, for a bad token), negotiates the subprotocol, resumes reliable sessions,
//! and runs one task per socket that reads client frames and drains the connection's outbox.

use crate::api;
use crate::dataplane::connection::{
    close_frame_reason, CloseCause, CloseRequest, Connection, CLOSE_GOING_AWAY, CLOSE_INTERNAL,
    CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG,
};
use crate::dataplane::delivery::{Delivery, Target};
use crate::dataplane::hub::Hub;
use crate::dataplane::message::Outgoing;
use crate::dataplane::reliable;
use crate::dataplane::session;
use crate::error::ApiError;
use crate::keys::auth::{bearer_token, verify_client_token, ClientClaims};
use crate::protocols::{self, Inbound, Protocol, Reply};
use crate::state::AppState;
use crate::upstream::hub_settings::AnonymousConnectPolicy;
use crate::upstream::{ConnectBody, ConnectOutcome, EventContext, EventOutcome};
use axum::extract::ws::Message;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::FutureExt;
use hubbub_proto::client_protocol::{ClientMessage, DataType, Metadata};
use hubbub_proto::keys::KeySlot;
use hubbub_proto::roles::{Permission, Permissions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod events;
mod group_state;
mod messages;
pub(crate) mod mqtt;
pub(crate) mod presence;
mod socket;
mod streams;
mod upgrade;

use events::*;
use messages::*;
use socket::*;
use upgrade::{NotAnUpgrade, Socket, Upgrade, WsCloseFrame, WsError, WsMessage};

/// Largest frame or message a client may send.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 1024 * 1024;
/// Frames between the two limits are read whole and then refused with 1009, so the close frame
/// reaches the client; beyond this one the socket is dropped mid-frame.
const HARD_MESSAGE_LIMIT_BYTES: usize = 4 * MAX_CLIENT_MESSAGE_BYTES;
/// Socket read buffer: small, since most connections are idle most of the time and clients send
/// little (a frame whose header announces more is read into a buffer of its size).
const READ_BUFFER_BYTES: usize = 512;
/// What the WebSocket layer collects before it writes. It writes only control frames (data
/// frames are written by the socket task, see `upgrade`), each sent and flushed at once.
const WRITE_BUFFER_BYTES: usize = 0;
/// How long the service waits for the client's close frame after sending its own.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// A client whose socket accepts nothing for this long is dropped.
const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/client/hubs/{hub}", get(upgrade_path))
        .route("/client", get(upgrade_query))
        .route("/client/", get(upgrade_query))
        .route("/clients/mqtt/hubs/{hub}", get(mqtt::upgrade))
        .with_state(state)
}

type Params = HashMap<String, String>;

async fn upgrade_path(
    State(state): State<AppState>,
    origin: crate::peer::Origin,
    Path(hub): Path<String>,
    Query(params): Query<Params>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    handle(state, origin, hub, params, raw_query, headers, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn upgrade_query(
    State(state): State<AppState>,
    origin: crate::peer::Origin,
    Query(params): Query<Params>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    let Some(hub) = params.get("hub").cloned() else {
        return ApiError::bad_request("InvalidHubName", "the 'hub' query parameter is required")
            .into_response();
    };
    handle(state, origin, hub, params, raw_query, headers, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The subprotocols the client offers, in its order.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The upgrade, answering with `protocol`'s subprotocol (if it has a name).
fn with_protocol(mut upgrade: Upgrade, protocol: &Protocol) -> Upgrade {
    if let Some(name) = protocol.name() {
        upgrade.set_selected_protocol(HeaderValue::from_static(name));
    }
    upgrade
}

async fn handle(
    state: AppState,
    origin: crate::peer::Origin,
    hub_name: String,
    params: Params,
    raw_query: Option<String>,
    headers: HeaderMap,
    upgrade: Result<Upgrade, NotAnUpgrade>,
) -> Result<Response, ApiError> {
    api::validate_hub(&hub_name)?;
    let hub_name = crate::dataplane::hub::canonical_hub(&hub_name);
    let protocol = protocols::negotiate(&offered_protocols(&headers), &params)?;
    let now = state.keys.clock().now_secs();

    // Recovery parameters take precedence over an access token (which may have expired).
    if protocol.is_reliable() {
        if let (Some(id), Some(token)) = (
            params.get("awps_connection_id"),
            params.get("awps_reconnection_token"),
        ) {
            let upgrade = upgrade.map_err(|_| not_an_upgrade())?;
            let ring = state.keys.current();
            let verified = reliable::verify(token, ring.salt.value.expose(), &hub_name, id, now);
            let mut resumed = verified.and_then(|()| {
                state
                    .hubs
                    .get(&hub_name)
                    .and_then(|hub| hub.connection(id).map(|c| (hub, c)))
                    .filter(|(_, c)| c.protocol.is_reliable())
                    .ok_or(reliable::RecoveryError::SessionGone)
            });
            let mut handed_over = false;
            if let Err(reliable::RecoveryError::SessionGone) = &resumed {
                // The session may be on another node: ask it to hand it over.
                if let Some(session) = state.backplane.take_session(&hub_name, id).await {
                    tracing::debug!(connection_id = %id, "reliable session handed over from another node");
                    let (hub, connection) = session::restore(&state.hubs, &hub_name, id, &session);
                    state.backplane.session_arrived(id);
                    state.watch_streams(&connection);
                    state.expire_unless_resumed(&hub, &connection, 1, state.client.reconnect_grace);
                    resumed = Ok((hub, connection));
                    handed_over = true;
                }
            }
            let upgrade = with_protocol(upgrade, &protocol);
            return Ok(match resumed {
                Ok((hub, connection)) => {
                    tracing::debug!(connection_id = %connection.id, "reliable session resumed");
                    let state = state.clone();
                    let token = token.clone();
                    let guard = state.sockets.token();
                    upgrade.on_upgrade(move |socket| async move {
                        if handed_over {
                            // Sends to its groups and user reach this node from now.
                            state.backplane.settle().await;
                        }
                        let epoch =
                            connection.resume(connection.protocol.reply(&Reply::Connected {
                                user_id: connection.user_id.as_deref(),
                                connection_id: &connection.id,
                                reconnection_token: Some(&token),
                            }));
                        spawn_socket(state, hub, connection, socket, epoch);
                        drop(guard);
                    })
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "reliable session not resumed");
                    upgrade.on_upgrade(move |mut socket| async move {
                        let reason = e.to_string();
                        let close = WsCloseFrame {
                            code: CLOSE_POLICY.into(),
                            reason: close_frame_reason(&reason).into(),
                        };
                        let _ = socket.send(WsMessage::Close(Some(close))).await;
                    })
                }
            });
        }
    }

    let settings = state.hub_settings.get(&hub_name);
    let (claims, signer) = authenticate(
        &state,
        &origin,
        &hub_name,
        &format!("/client/hubs/{hub_name}"),
        &params,
        &headers,
        &settings,
    )?;
    let upgrade = upgrade.map_err(|_| not_an_upgrade())?;
    let connection_id: Arc<str> = new_connection_id(state.backplane.node_id()).into();
    let mut user_id = claims.user_id.clone();
    let mut roles = claims.roles.clone();
    let mut groups = claims.groups.clone();
    let mut protocol = protocol;
    let mut custom_protocol = None;
    let mut upstream_state = None;

    // The blocking `connect` event, before the 101.
    let ctx = EventContext {
        hub: hub_name.as_str().into(),
        connection_id: Arc::clone(&connection_id),
        user_id: user_id.as_deref().map(Into::into),
        subprotocol: None,
        state: None,
        headers: Vec::new(),
        metadata_header: crate::upstream::METADATA_HEADER,
    };
    let body = connect_body(&claims, raw_query.as_deref(), &headers);
    if let Some(outcome) = state.upstream.connect(&settings, &ctx, &body).await {
        match outcome {
            ConnectOutcome::Accept {
                response,
                state: new_state,
            } => {
                if let Some(user) = response.user_id.filter(|u| !u.is_empty()) {
                    user_id = Some(user);
                }
                roles.extend(response.roles);
                groups.extend(response.groups);
                if let Some(chosen) = response.subprotocol.filter(|p| !p.is_empty()) {
                    if !body.subprotocols.contains(&chosen) {
                        return Err(handler_failed(format!(
                            "the event handler chose subprotocol '{chosen}', which the client did not offer"
                        )));
                    }
                    protocol = match protocols::by_name(&chosen) {
                        Some(wire) => Protocol::new(wire),
                        None => {
                            // A subprotocol of the app's own: the client is a simple one.
                            custom_protocol = HeaderValue::from_str(&chosen).ok();
                            match protocol.name() {
                                None => protocol,
                                Some(_) => Protocol::simple(None),
                            }
                        }
                    };
                }
                upstream_state = new_state;
            }
            ConnectOutcome::Reject { status, message } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                let message = if message.is_empty() {
                    "the app server refused the connection".to_string()
                } else {
                    message
                };
                return Err(ApiError::new(status, "ConnectionRefused", message));
            }
            ConnectOutcome::Fail(reason) => return Err(handler_failed(reason)),
        }
    }

    if let Some(user) = user_id.as_deref() {
        if !state.hubs.admits_user(&hub_name, user) {
            let most = state.hubs.limits().connections_per_user;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyConnections",
                format!("this user has {most} connections to the hub, the most it may have"),
            ));
        }
    }
    let groups: Vec<String> = groups
        .into_iter()
        .filter(|g| api::validate_group(g).is_ok())
        .collect();
    let permissions = Permissions::from_roles(roles.iter().map(String::as_str));
    let connection = Arc::new(
        Connection::new(
            connection_id,
            hub_name.as_str().into(),
            user_id.map(Into::into),
            protocol.clone(),
            permissions,
        )
        .with_limits(state.hubs.connection_limits())
        .signed_by(signer),
    );
    connection.state().upstream_state = upstream_state;
    let mut upgrade = with_protocol(upgrade, &protocol);
    if let Some(custom) = custom_protocol {
        upgrade.set_selected_protocol(custom);
    }
    let guard = state.sockets.token();
    Ok(upgrade.on_upgrade(move |socket| async move {
        let hub = state.hubs.get_or_create(&hub_name);
        hub.add(Arc::clone(&connection), &groups);
        // Sends to the hub, the user and the groups reach this node from now.
        state.backplane.settle().await;
        let reconnection_token = protocol.is_reliable().then(|| {
            reliable::issue(
                state.keys.current().salt.value.expose(),
                &hub.name,
                &connection.id,
                state.keys.clock().now_secs(),
            )
        });
        connection.reply(&Reply::Connected {
            user_id: connection.user_id.as_deref(),
            connection_id: &connection.id,
            reconnection_token: reconnection_token.as_deref(),
        });
        tracing::debug!(hub = %hub.name, connection_id = %connection.id, "client connected");
        state.opened(&connection);
        let settings = state.hub_settings.get(&hub.name);
        state.upstream.notify(
            &settings,
            EventContext::of(&connection),
            "connected",
            serde_json::json!({}),
        );
        spawn_socket(state, hub, connection, socket, 1);
        drop(guard);
    }))
}

/// Who a client is: the claims of its access token (query `access_token` or a bearer header,
/// with its audience on `client_path`), or an anonymous client where the hub allows them; and
/// which key value signed the token. A refusal is a 401.
pub(crate) fn authenticate(
    state: &AppState,
    origin: &crate::peer::Origin,
    hub_name: &str,
    client_path: &str,
    params: &Params,
    headers: &HeaderMap,
    settings: &crate::upstream::hub_settings::HubProperties,
) -> Result<(ClientClaims, Option<(KeySlot, u64)>), ApiError> {
    let token = match params.get("access_token") {
        Some(token) => Some(token.as_str()),
        None => match headers.get(header::AUTHORIZATION) {
            Some(value) => Some(bearer_token(value.to_str().ok())?),
            None => None,
        },
    };
    let claims = match token {
        Some(token) => {
            let ring = state.keys.current();
            let claims = verify_client_token(
                token,
                &ring,
                &state.endpoints,
                client_path,
                state.keys.clock().now_millis(),
                state.token_leeway_secs,
            )
            .map_err(|e| {
                if let crate::keys::auth::AuthError::StaleKey { slot, version, .. } = &e {
                    state.keys.record_stale(
                        *slot,
                        *version,
                        &crate::keys::stale::Caller {
                            kind: crate::keys::stale::CallKind::Connection,
                            hub: hub_name,
                            source_address: &origin.address,
                            user_agent: origin.user_agent.as_deref(),
                        },
                    );
                }
                tracing::debug!(hub = %hub_name, reason = %e, "client connection refused");
                state.auth_failed("connection", Some(hub_name), &e);
                ApiError::from(e)
            })?;
            if claims.slot != KeySlot::Salt {
                state.keys.record_use(
                    claims.slot,
                    crate::keys::usage::UseKind::Connection,
                    claims.retiring,
                );
            }
            claims
        }
        None if settings.anonymous_connect_policy == AnonymousConnectPolicy::Allow => {
            ClientClaims::anonymous()
        }
        None => return Err(crate::keys::auth::AuthError::MissingToken.into()),
    };
    let signer = token.map(|_| (claims.slot, claims.version));
    Ok((claims, signer))
}

fn handler_failed(reason: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "EventHandlerFailed",
        format!("the connect event handler failed: {reason}"),
    )
}

/// The `connect` event body, as the service sends it: claims, every query parameter and every
/// request header as string arrays (repeated names collected), and the offered subprotocols.
fn connect_body(
    claims: &ClientClaims,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> ConnectBody {
    let mut claim_map = serde_json::Map::new();
    for (name, value) in &claims.raw {
        let values: Vec<serde_json::Value> = match value {
            serde_json::Value::Array(items) => items.iter().map(claim_text).collect(),
            other => vec![claim_text(other)],
        };
        claim_map.insert(name.clone(), serde_json::Value::Array(values));
    }
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
        query
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    let mut header_map: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            header_map
                .entry(name.as_str().to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    ConnectBody {
        claims: claim_map,
        query,
        headers: header_map,
        subprotocols: offered_protocols(headers),
        client_certificates: Vec::new(),
        mqtt: None,
    }
}

fn claim_text(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => serde_json::Value::String(s.clone()),
        other => serde_json::Value::String(other.to_string()),
    }
}

fn not_an_upgrade() -> ApiError {
    ApiError::bad_request(
        "NotAWebSocketUpgrade",
        "this endpoint accepts WebSocket upgrade requests only",
    )
}

/// 16 random bytes, hex: URL-safe, opaque, unique. Prefixed with the node id and `-` where there
/// is one (a cluster), so a send to one connection goes straight to its node.
pub(crate) fn new_connection_id(node: Option<&str>) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // The OS random source failing is not expected; fall back to a time-based id so the
        // connection can still be served (ids need uniqueness, not secrecy).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match node {
        Some(node) => format!("{node}-{hex}"),
        None => hex,
    }
}

/// Closes every client with "going away" (service shutdown).
pub fn close_all(state: &AppState) {
    for hub in state.hubs.all() {
        for connection in hub.connections() {
            connection.request_close(CloseRequest {
                code: CLOSE_GOING_AWAY,
                reason: "ServiceReload".into(),
                notify: true,
                cause: CloseCause::Shutdown,
            });
        }
    }
}
