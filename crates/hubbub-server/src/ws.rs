//! The client endpoint: `/client/hubs/{hub}` and `/client?hub=`. Authenticates the upgrade
//! (401, never a 101, for a bad token), negotiates the subprotocol, resumes reliable sessions,
//! and runs one task per socket that reads client frames and drains the connection's outbox.

use crate::auth::{bearer_token, verify_client_token};
use crate::connection::{
    CloseRequest, Connection, Protocol, SimpleMode, CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY,
    CLOSE_TOO_BIG,
};
use crate::error::ApiError;
use crate::hub::Hub;
use crate::message::Outgoing;
use crate::state::AppState;
use crate::{api, reliable};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hubbub_proto::client_protocol::{self as cp, ClientMessage, DataType};
use hubbub_proto::keys::KeySlot;
use hubbub_proto::roles::{Permission, Permissions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// Largest frame or message a client may send.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 1024 * 1024;
/// Socket read buffer: small, since most connections are idle most of the time.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Bytes the writer collects before it writes to the socket.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// How long the service waits for the client's close frame after sending its own.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// A client whose socket accepts nothing for this long is dropped.
const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/client/hubs/{hub}", get(upgrade_path))
        .route("/client", get(upgrade_query))
        .route("/client/", get(upgrade_query))
        .with_state(state)
}

type Params = HashMap<String, String>;

async fn upgrade_path(
    State(state): State<AppState>,
    Path(hub): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    handle(state, hub, params, headers, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn upgrade_query(
    State(state): State<AppState>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some(hub) = params.get("hub").cloned() else {
        return ApiError::bad_request("InvalidHubName", "the 'hub' query parameter is required")
            .into_response();
    };
    handle(state, hub, params, headers, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The subprotocol to answer with: the first JSON one the client offers; refuses clients that
/// offer only protobuf; anything else is a simple client.
fn choose_protocol(headers: &HeaderMap, params: &Params) -> Result<Protocol, ApiError> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    for name in &offered {
        if name == cp::JSON_RELIABLE_PROTOCOL {
            return Ok(Protocol::JsonReliable);
        }
        if name == cp::JSON_PROTOCOL {
            return Ok(Protocol::Json);
        }
    }
    if offered
        .iter()
        .any(|p| p == cp::PROTOBUF_PROTOCOL || p == cp::PROTOBUF_RELIABLE_PROTOCOL)
    {
        return Err(ApiError::bad_request(
            "UnsupportedSubprotocol",
            "the protobuf subprotocols are not supported; use json.webpubsub.azure.v1 or json.reliable.webpubsub.azure.v1",
        ));
    }
    let mode = match params.get("webpubsub_mode").map(String::as_str) {
        None | Some("sendEvent") => SimpleMode::SendEvent,
        Some("sendToGroup") => {
            let group = params.get("group").ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidGroupName",
                    "webpubsub_mode=sendToGroup needs a 'group' parameter",
                )
            })?;
            api::validate_group(group)?;
            SimpleMode::SendToGroup(group.as_str().into())
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "InvalidMode",
                format!(
                    "webpubsub_mode must be sendEvent or sendToGroup, not '{}'",
                    other.chars().take(32).collect::<String>()
                ),
            ))
        }
    };
    Ok(Protocol::Simple(mode))
}

fn configure(upgrade: WebSocketUpgrade, protocol: &Protocol) -> WebSocketUpgrade {
    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES);
    if let Some(name) = protocol.name() {
        upgrade.set_selected_protocol(HeaderValue::from_static(name));
    }
    upgrade
}

async fn handle(
    state: AppState,
    hub_name: String,
    params: Params,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    api::validate_hub(&hub_name)?;
    let hub_name = crate::hub::canonical_hub(&hub_name);
    let protocol = choose_protocol(&headers, &params)?;
    let now = state.keys.clock().now_secs();

    // Recovery parameters take precedence over an access token (which may have expired).
    if protocol.is_reliable() {
        if let (Some(id), Some(token)) = (
            params.get("awps_connection_id"),
            params.get("awps_reconnection_token"),
        ) {
            let upgrade = upgrade.map_err(|_| not_an_upgrade())?;
            let ring = state.keys.current();
            let resumed = reliable::verify(token, ring.salt.value.expose(), &hub_name, id, now)
                .and_then(|()| {
                    state
                        .hubs
                        .get(&hub_name)
                        .and_then(|hub| hub.connection(id).map(|c| (hub, c)))
                        .filter(|(_, c)| c.protocol.is_reliable())
                        .ok_or(reliable::RecoveryError::SessionGone)
                });
            let upgrade = configure(upgrade, &protocol);
            return Ok(match resumed {
                Ok((hub, connection)) => {
                    tracing::debug!(connection_id = %connection.id, "reliable session resumed");
                    let connected =
                        cp::connected(connection.user_id.as_deref(), &connection.id, Some(token));
                    let state2 = state.clone();
                    let guard = state.sockets.token();
                    upgrade.on_upgrade(move |socket| async move {
                        let epoch = connection.resume(connected);
                        run_socket(state2, hub, connection, socket, epoch).await;
                        drop(guard);
                    })
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "reliable session not resumed");
                    upgrade.on_upgrade(move |mut socket| async move {
                        let close = CloseFrame {
                            code: CLOSE_POLICY,
                            reason: e.to_string().into(),
                        };
                        let _ = socket.send(Message::Close(Some(close))).await;
                    })
                }
            });
        }
    }

    let token = match params.get("access_token") {
        Some(token) => token.as_str(),
        None => bearer_token(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )?,
    };
    let ring = state.keys.current();
    let claims = verify_client_token(
        token,
        &ring,
        &state.endpoints,
        &hub_name,
        now,
        state.token_leeway_secs,
    )
    .map_err(|e| {
        tracing::debug!(hub = %hub_name, reason = %e, "client connection refused");
        ApiError::from(e)
    })?;
    if claims.slot != KeySlot::Salt {
        state.keys.record_use(claims.slot);
    }
    let upgrade = upgrade.map_err(|_| not_an_upgrade())?;
    let groups: Vec<String> = claims
        .groups
        .into_iter()
        .filter(|g| api::validate_group(g).is_ok())
        .collect();
    let permissions = Permissions::from_roles(claims.roles.iter().map(String::as_str));
    let connection = Arc::new(Connection::new(
        new_connection_id().into(),
        hub_name.as_str().into(),
        claims.user_id.map(Into::into),
        protocol.clone(),
        permissions,
    ));
    let upgrade = configure(upgrade, &protocol);
    let guard = state.sockets.token();
    Ok(upgrade.on_upgrade(move |socket| async move {
        let hub = state.hubs.get_or_create(&hub_name);
        hub.add(Arc::clone(&connection), &groups);
        if protocol.speaks_json() {
            let reconnection_token = protocol.is_reliable().then(|| {
                reliable::issue(
                    state.keys.current().salt.value.expose(),
                    &hub.name,
                    &connection.id,
                    state.keys.clock().now_secs(),
                )
            });
            connection.send_text(cp::connected(
                connection.user_id.as_deref(),
                &connection.id,
                reconnection_token.as_deref(),
            ));
        }
        tracing::debug!(hub = %hub.name, connection_id = %connection.id, "client connected");
        run_socket(state, hub, connection, socket, 1).await;
        drop(guard);
    }))
}

fn not_an_upgrade() -> ApiError {
    ApiError::bad_request(
        "NotAWebSocketUpgrade",
        "this endpoint accepts WebSocket upgrade requests only",
    )
}

/// 16 random bytes, hex: URL-safe, opaque, unique.
fn new_connection_id() -> String {
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a socket's life ended.
enum End {
    /// The client sent a close frame: the connection is over.
    ClientClosed,
    /// The socket broke without a close: a reliable session may be resumed.
    Dropped,
    /// The service closed it (REST close, slow client, bad input, shutdown).
    ServerClosed,
    /// A recovering socket took this connection over.
    Superseded,
}

async fn run_socket(
    state: AppState,
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    socket: WebSocket,
    epoch: u64,
) {
    let (mut sink, mut stream) = socket.split();
    let keep_alive = state.client.keep_alive;
    let mut ping = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let end = loop {
        tokio::select! {
            biased;
            () = connection.wake.notified() => {
                let Some(batch) = connection.take_batch(epoch) else {
                    // Pass the wake-up on to the socket that took over.
                    connection.wake.notify_one();
                    break End::Superseded;
                };
                let woken = AtomicBool::new(false);
                let outcome = tokio::select! {
                    outcome = write_batch(&mut sink, batch, &connection) => outcome,
                    () = close_requested(&connection, &woken) => Written::Abandoned,
                    () = tokio::time::sleep(WRITE_STALL_TIMEOUT) => Written::Abandoned,
                };
                if woken.load(Ordering::Relaxed) {
                    // The close watcher consumed a wake-up meant for the next batch.
                    connection.wake.notify_one();
                }
                match outcome {
                    Written::Ok => {}
                    Written::Closed => break End::ServerClosed,
                    Written::Failed => break End::Dropped,
                    Written::Abandoned => {
                        tracing::debug!(connection_id = %connection.id, "client is not reading; dropping it");
                        connection.request_close(CloseRequest { code: CLOSE_POLICY, reason: "SlowClient".into(), notify: false });
                        break End::ServerClosed;
                    }
                }
            }
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Ok(Message::Text(text))) => on_frame(&hub, &connection, Bytes::from(text), false),
                    Some(Ok(Message::Binary(data))) => on_frame(&hub, &connection, data, true),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            connection.request_close(CloseRequest {
                                code: CLOSE_TOO_BIG,
                                reason: format!("a message is larger than {MAX_CLIENT_MESSAGE_BYTES} bytes"),
                                notify: true,
                            });
                            continue;
                        }
                        break End::Dropped;
                    }
                    None => break End::Dropped,
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > keep_alive * 3 {
                    connection.request_close(CloseRequest { code: CLOSE_NORMAL, reason: "PingTimeout".into(), notify: true });
                } else if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break End::Dropped;
                }
            }
        }
    };
    let server_closed = matches!(end, End::ServerClosed);
    finish(&state, &hub, &connection, epoch, end);
    if server_closed {
        // Complete the closing handshake: reading until the client's close frame means the
        // socket is not torn down with unread data (a reset would lose our last frames).
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

enum Written {
    Ok,
    /// The batch ended with a close frame.
    Closed,
    /// The socket failed.
    Failed,
    /// The client stopped reading (write stalled, or it was closed as slow meanwhile).
    Abandoned,
}

/// Writes a batch with one flush at the end (or a close frame, after the `disconnected` message).
async fn write_batch(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    batch: crate::connection::Batch,
    connection: &Connection,
) -> Written {
    for frame in batch.frames {
        if sink.feed(frame).await.is_err() {
            return Written::Failed;
        }
    }
    if let Some(close) = batch.close {
        if close.notify && connection.protocol.speaks_json() {
            let _ = sink
                .feed(Message::Text(cp::disconnected(&close.reason).into()))
                .await;
        }
        let frame = CloseFrame {
            code: close.code,
            reason: close.reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        return Written::Closed;
    }
    if sink.flush().await.is_err() {
        return Written::Failed;
    }
    Written::Ok
}

/// Resolves when the service asks to close this connection while a write is stuck.
async fn close_requested(connection: &Connection, woken: &AtomicBool) {
    loop {
        connection.wake.notified().await;
        woken.store(true, Ordering::Relaxed);
        if connection.close_requested().is_some() {
            return;
        }
    }
}

fn is_too_big(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn finish(state: &AppState, hub: &Arc<Hub>, connection: &Arc<Connection>, epoch: u64, end: End) {
    match end {
        End::Superseded => {}
        End::Dropped
            if connection.protocol.is_reliable() && connection.close_requested().is_none() =>
        {
            if !connection.detach(epoch) {
                return;
            }
            tracing::debug!(connection_id = %connection.id, "reliable connection dropped; session kept for recovery");
            let (hub, connection, grace) = (
                Arc::clone(hub),
                Arc::clone(connection),
                state.client.reconnect_grace,
            );
            let shutdown = state.shutdown.clone();
            state.sockets.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(grace) => {}
                    () = shutdown.cancelled() => {}
                }
                if connection.still_detached(epoch) {
                    hub.remove(&connection);
                    tracing::debug!(connection_id = %connection.id, "reliable session expired");
                }
            });
        }
        _ => {
            hub.remove(connection);
            tracing::debug!(connection_id = %connection.id, "client disconnected");
        }
    }
}

/// Handles one data frame from the client.
fn on_frame(hub: &Hub, connection: &Arc<Connection>, data: Bytes, binary: bool) {
    match &connection.protocol {
        Protocol::Simple(SimpleMode::SendEvent) => {
            // Until event handlers exist, no app server listens for `message` events.
            connection.request_close(CloseRequest {
                code: CLOSE_NORMAL,
                reason: format!(
                    "no event handler is configured for 'message' events in hub '{}'",
                    hub.name
                ),
                notify: false,
            });
        }
        Protocol::Simple(SimpleMode::SendToGroup(group)) => {
            if !connection
                .state()
                .permissions
                .allows(Permission::SendToGroup, group)
            {
                connection.request_close(CloseRequest {
                    code: CLOSE_POLICY,
                    reason: format!("the client has no permission to send to group '{group}'"),
                    notify: false,
                });
                return;
            }
            let data_type = if binary {
                DataType::Binary
            } else {
                DataType::Text
            };
            let message = Outgoing::group(
                Arc::clone(group),
                connection.user_id.clone(),
                data_type,
                data,
            )
            .with_sender(Arc::clone(&connection.id), false);
            hub.send_to_group(group, &message, &Default::default());
        }
        Protocol::Json | Protocol::JsonReliable => on_json(hub, connection, &data),
    }
}

fn ack(connection: &Connection, ack_id: Option<u64>, result: Result<(), (&str, String)>) {
    let Some(ack_id) = ack_id else { return };
    connection.send_text(match result {
        Ok(()) => cp::ack_success(ack_id),
        Err((name, message)) => cp::ack_error(ack_id, name, &message),
    });
}

/// Permission and dedup checks shared by joinGroup, leaveGroup and sendToGroup.
fn admit(
    connection: &Connection,
    permission: Permission,
    group: &str,
    ack_id: Option<u64>,
) -> Result<bool, (&'static str, String)> {
    api::validate_group(group).map_err(|e| ("BadRequest", e.message))?;
    let mut state = connection.state();
    if !state.permissions.allows(permission, group) {
        let what = match permission {
            Permission::JoinLeaveGroup => "join or leave",
            Permission::SendToGroup => "send message to",
        };
        return Err((
            "Forbidden",
            format!("The client has no permission to {what} group '{group}'."),
        ));
    }
    Ok(ack_id.is_none_or(|id| state.first_time(id)))
}

fn duplicate(ack_id: Option<u64>) -> (&'static str, String) {
    (
        "Duplicate",
        format!(
            "Message with ack-id: {} has been processed",
            ack_id.unwrap_or_default()
        ),
    )
}

fn on_json(hub: &Hub, connection: &Arc<Connection>, frame: &[u8]) {
    let message = match cp::parse_client_message(frame) {
        Ok(message) => message,
        Err(e) if e.ack_id.is_some() => {
            return ack(connection, e.ack_id, Err(("BadRequest", e.message)))
        }
        Err(e) if e.unknown_type => {
            tracing::debug!(connection_id = %connection.id, "ignored a message of unknown type");
            return;
        }
        Err(e) => {
            connection.request_close(CloseRequest {
                code: CLOSE_POLICY,
                reason: format!("Invalid message: {e}"),
                notify: true,
            });
            return;
        }
    };
    match message {
        ClientMessage::JoinGroup { group, ack_id } => {
            let result =
                admit(connection, Permission::JoinLeaveGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    hub.join(&connection.id, &group);
                    Ok(())
                });
            ack(connection, ack_id, result);
        }
        ClientMessage::LeaveGroup { group, ack_id } => {
            let result =
                admit(connection, Permission::JoinLeaveGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    hub.leave(&connection.id, &group);
                    Ok(())
                });
            ack(connection, ack_id, result);
        }
        ClientMessage::SendToGroup {
            group,
            ack_id,
            no_echo,
            data,
        } => {
            let result =
                admit(connection, Permission::SendToGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    let message = Outgoing::group(
                        group.as_str().into(),
                        connection.user_id.clone(),
                        data.data_type,
                        Bytes::from(data.bytes),
                    )
                    .with_sender(Arc::clone(&connection.id), no_echo);
                    hub.send_to_group(&group, &message, &Default::default());
                    Ok(())
                });
            ack(connection, ack_id, result);
        }
        ClientMessage::Event { event, ack_id, .. } => {
            ack(
                connection,
                ack_id,
                Err(("InvocationFailed", no_handler(hub, &event))),
            );
        }
        ClientMessage::Invoke {
            invocation_id,
            event,
            ..
        } => {
            connection.send_text(cp::invoke_error(
                &invocation_id,
                "InvocationFailed",
                &no_handler(hub, &event),
            ));
        }
        ClientMessage::CancelInvocation { .. } => {}
        ClientMessage::SequenceAck { sequence_id } => connection.acknowledge(sequence_id),
        ClientMessage::Ping => connection.send_text(cp::PONG.to_string()),
    }
}

fn no_handler(hub: &Hub, event: &str) -> String {
    format!(
        "no event handler is configured for event '{}' in hub '{}'",
        event.chars().take(128).collect::<String>(),
        hub.name
    )
}

/// Closes every client with "going away" (service shutdown).
pub fn close_all(state: &AppState) {
    for hub in state.hubs.all() {
        for connection in hub.connections() {
            connection.request_close(CloseRequest {
                code: CLOSE_GOING_AWAY,
                reason: "ServiceReload".into(),
                notify: true,
            });
        }
    }
}
