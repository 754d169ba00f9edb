//! One task per socket: reads client frames, drains the connection's outbox into batched
//! writes, pings, and on the way out decides whether a reliable session waits to be resumed.

use super::*;
use std::future::Future;
use std::pin::Pin;

/// How a socket's life ended.
pub(super) enum End {
    /// The client sent a close frame (with this reason): the connection is over.
    ClientClosed(String),
    /// The socket broke without a close: a reliable session may be resumed.
    Dropped,
    /// The service closed it (REST close, slow client, bad input, shutdown).
    ServerClosed,
    /// A recovering socket took this connection over.
    Superseded,
}

/// Starts the socket's own task. It runs apart from the upgrade task, whose future carries the
/// handshake's state for as long as it lives: an idle connection costs only what it needs.
pub(super) fn spawn_socket(
    state: AppState,
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    socket: Socket,
    epoch: u64,
) {
    let tracker = state.sockets.clone();
    tracker.spawn(run_socket(state, hub, connection, socket, epoch));
}

/// The socket's loop. An `async move` block rather than an `async fn`: an `async fn` keeps its
/// arguments twice in its future (as arguments and as moved locals), this holds each once, and
/// the socket is used in place rather than split.
#[allow(clippy::manual_async_fn)] // deliberate, see above
fn run_socket(
    state: AppState,
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    mut socket: Socket,
    epoch: u64,
) -> impl std::future::Future<Output = ()> {
    async move {
        let keep_alive = state
            .hub_settings
            .get(&hub.name)
            .web_socket_keep_alive_interval_in_seconds
            .map_or(state.client.keep_alive, Duration::from_secs);
        let mut ping = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut events = EventQueue::default();
        let end = loop {
            tokio::select! {
                biased;
                () = connection.wake.notified() => {
                    // Let the fan-out that woke us run on first: every frame it queues meanwhile
                    // joins this batch (one write, one wake-up) instead of waking us again. At
                    // high rates this turns one `sendto` per delivery into one per many.
                    tokio::task::yield_now().await;
                    let Some(batch) = connection.take_batch(epoch) else {
                        // Pass the wake-up on to the socket that took over.
                        connection.wake.notify_one();
                        break End::Superseded;
                    };
                    hub.traffic.bytes_sent(batch.bytes());
                    // Boxed, as is every rarer await below: the task is as large as its largest
                    // await, and an idle connection would otherwise carry room for each (a few
                    // hundred bytes per connection).
                    let mut write = Box::pin(write_batch(&mut socket, batch, &connection));
                    // Most writes fit in the socket buffer at once: only a write that has to wait
                    // arms the stall timer and the close watcher.
                    let outcome = match write.as_mut().now_or_never() {
                        Some(outcome) => outcome,
                        None => Box::pin(finish_stalled(write, &connection)).await,
                    };
                    match outcome {
                        Written::Ok => {}
                        Written::Closed => break End::ServerClosed,
                        Written::Failed => break End::Dropped,
                        Written::Abandoned => {
                            tracing::debug!(connection_id = %connection.id, "client is not reading; dropping it");
                            connection.request_close(CloseRequest { code: CLOSE_POLICY, reason: "SlowClient".into(), notify: false, cause: CloseCause::SlowClient });
                            break End::ServerClosed;
                        }
                    }
                }
                frame = socket.next() => {
                    last_heard = Instant::now();
                    hub.traffic.bytes_received(frame_bytes(frame.as_ref()));
                    match frame {
                        Some(Ok(WsMessage::Close(frame))) => {
                            let reason = frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty());
                            break End::ClientClosed(reason.unwrap_or_else(|| "ClientClosed".into()));
                        }
                        Some(Ok(WsMessage::Text(text))) if text.len() > MAX_CLIENT_MESSAGE_BYTES => too_big(&connection),
                        Some(Ok(WsMessage::Binary(data))) if data.len() > MAX_CLIENT_MESSAGE_BYTES => too_big(&connection),
                        Some(Ok(WsMessage::Text(text))) => on_frame(&state, &hub, &connection, &mut events, Bytes::from(text), false),
                        Some(Ok(WsMessage::Binary(data))) => on_frame(&state, &hub, &connection, &mut events, data, true),
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                        Some(Err(e)) => {
                            if is_too_big(&e) {
                                too_big(&connection);
                                continue;
                            }
                            break End::Dropped;
                        }
                        None => break End::Dropped,
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > connection.protocol.silence_limit(keep_alive * 3) {
                        connection.request_close(CloseRequest { code: CLOSE_NORMAL, reason: "PingTimeout".into(), notify: true, cause: CloseCause::PingTimeout });
                    } else {
                        let sent = Box::pin(tokio::time::timeout(WRITE_STALL_TIMEOUT, socket.send(WsMessage::Ping(Bytes::new())))).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            break End::Dropped;
                        }
                    }
                }
            }
        };
        let server_closed = matches!(end, End::ServerClosed);
        if matches!(end, End::ClientClosed(_)) {
            // The reply to the client's close frame is queued by the WebSocket layer; send it.
            let _ = Box::pin(tokio::time::timeout(
                CLOSE_HANDSHAKE_TIMEOUT,
                socket.flush(),
            ))
            .await;
        }
        finish(&state, &hub, &connection, epoch, end);
        if server_closed {
            // Complete the closing handshake: reading until the client's close frame means the
            // socket is not torn down with unread data (a reset would lose our last frames).
            let _ = Box::pin(tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(frame)) = socket.next().await {
                    if matches!(frame, WsMessage::Close(_)) {
                        break;
                    }
                }
            }))
            .await;
        }
    }
}

pub(super) enum Written {
    Ok,
    /// The batch ended with a close frame.
    Closed,
    /// The socket failed.
    Failed,
    /// The client stopped reading (write stalled, or it was closed as slow meanwhile).
    Abandoned,
}

/// Writes a batch's frames, most often in one system call (or ends with a close frame, after
/// the `disconnected` message).
pub(super) async fn write_batch(
    sink: &mut Socket,
    mut batch: crate::dataplane::connection::Batch,
    connection: &Connection,
) -> Written {
    if let Some(close) = &batch.close {
        let reason = &close.reason;
        if let Some(frame) = close
            .notify
            .then(|| connection.protocol.reply(&Reply::Disconnected { reason }))
            .flatten()
        {
            batch.frames.push(frame.into());
        }
    }
    let written = sink.write_frames(&batch.frames).await;
    let Some(close) = batch.close else {
        return match written {
            Ok(()) => Written::Ok,
            Err(_) => Written::Failed,
        };
    };
    // The service was closing it: that stays the reason even if the socket broke meanwhile.
    if written.is_ok() {
        let frame = WsCloseFrame {
            code: close.code.into(),
            reason: crate::dataplane::connection::close_frame_reason(&close.reason).into(),
        };
        let _ = sink.send(WsMessage::Close(Some(frame))).await;
    }
    Written::Closed
}

/// Finishes a write that did not fit in the socket buffer at once, unless the client stops
/// reading for [`WRITE_STALL_TIMEOUT`] or the service closes the connection meanwhile.
async fn finish_stalled(
    mut write: Pin<Box<impl Future<Output = Written>>>,
    connection: &Connection,
) -> Written {
    let woken = AtomicBool::new(false);
    let outcome = tokio::select! {
        outcome = &mut write => outcome,
        () = close_requested(connection, &woken) => Written::Abandoned,
        () = tokio::time::sleep(WRITE_STALL_TIMEOUT) => Written::Abandoned,
    };
    if woken.load(Ordering::Relaxed) {
        // The close watcher consumed a wake-up meant for the next batch.
        connection.wake.notify_one();
    }
    outcome
}

/// Resolves when the service asks to close this connection while a write is stuck.
pub(super) async fn close_requested(connection: &Connection, woken: &AtomicBool) {
    loop {
        connection.wake.notified().await;
        woken.store(true, Ordering::Relaxed);
        if connection.close_requested().is_some() {
            return;
        }
    }
}

/// A data frame's payload size.
fn frame_bytes(frame: Option<&Result<WsMessage, WsError>>) -> usize {
    match frame {
        Some(Ok(WsMessage::Text(text))) => text.len(),
        Some(Ok(WsMessage::Binary(data))) => data.len(),
        _ => 0,
    }
}

pub(super) fn too_big(connection: &Connection) {
    connection.request_close(CloseRequest {
        code: CLOSE_TOO_BIG,
        reason: format!("a message is larger than {MAX_CLIENT_MESSAGE_BYTES} bytes"),
        notify: true,
        cause: CloseCause::Limit,
    });
}

pub(super) fn is_too_big(error: &WsError) -> bool {
    matches!(error, WsError::Capacity(_))
}

pub(super) fn finish(
    state: &AppState,
    hub: &Arc<Hub>,
    connection: &Arc<Connection>,
    epoch: u64,
    end: End,
) {
    if matches!(end, End::Superseded) {
        return;
    }
    if let Some(mqtt) = connection.protocol.as_mqtt() {
        if let Some(will) = mqtt.take_will() {
            super::mqtt::publish_will(state, hub, connection, will);
        }
    }
    let closing = connection.close_requested();
    let kept = connection.protocol.keep_session(
        matches!(end, End::Dropped),
        closing.as_ref().map(|c| c.reason.as_str()),
        state.client.reconnect_grace,
    );
    if let Some(grace) = kept {
        if !connection.detach(epoch) {
            return;
        }
        tracing::debug!(connection_id = %connection.id, "connection gone; session kept for recovery");
        state.expire_unless_resumed(hub, connection, epoch, grace);
        return;
    }
    let reason = match end {
        End::Superseded => return,
        End::Dropped => crate::state::LOST.to_string(),
        End::ClientClosed(reason) => reason,
        End::ServerClosed => connection
            .close_requested()
            .map(|c| c.reason)
            .unwrap_or_default(),
    };
    if hub.remove(connection) {
        tracing::debug!(connection_id = %connection.id, %reason, "client disconnected");
        state.departed(connection, &reason);
    }
}
