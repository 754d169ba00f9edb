//! Group streams, for their publisher: a `sendToGroup` with a stream descriptor opens one on a
//! group (with the permission a send to that group needs), `streamData` fragments follow in
//! sequence, each acknowledged with `streamAck` (out of order: `streamNack`), keep-alives hold
//! it open, `streamEnd` or the idle timeout closes it, and the publisher hears `streamClosed`.
//! Members of the group get every fragment as a group message carrying its place in the stream,
//! and a last message with `endOfStream` (and the error, when it ended badly), also when the
//! publisher's connection ends.

use super::*;
use crate::dataplane::stream::{OpenStream, MAX_OPEN_STREAMS};
use crate::dataplane::stream_end;
use hubbub_proto::client_protocol::{Data, StreamEndError, StreamError, StreamInfo, StreamStart};

/// Refuses a stream request: with an ack when it carried an ack id, else with `streamClosed`.
fn refuse(
    connection: &Connection,
    stream_id: &str,
    ack_id: Option<u64>,
    name: &str,
    message: &str,
) {
    match ack_id {
        Some(_) => ack(connection, ack_id, Err((name, message.to_string()))),
        None => connection.reply(&Reply::StreamClosed {
            stream_id,
            error: Some((name, message)),
        }),
    }
}

/// A `sendToGroup` with a stream descriptor.
pub(super) fn open(
    state: &AppState,
    connection: &Arc<Connection>,
    group: String,
    ack_id: Option<u64>,
    no_echo: bool,
    start: StreamStart,
) {
    let id = start.stream_id;
    if let Err((name, message)) = admit(connection, Permission::SendToGroup, &group, None) {
        return refuse(connection, &id, ack_id, name, &message);
    }
    let mut connection_state = connection.state();
    if connection_state.extras().streams.contains_key(&id) {
        drop(connection_state);
        let message = format!("stream '{id}' is already open on this connection");
        return refuse(connection, &id, ack_id, "BadRequest", &message);
    }
    if connection_state.extras().streams.len() >= MAX_OPEN_STREAMS {
        drop(connection_state);
        state
            .hubs
            .limit_counts()
            .streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let message = format!("a connection may have at most {MAX_OPEN_STREAMS} streams open");
        return refuse(connection, &id, ack_id, "BadRequest", &message);
    }
    let idle = Duration::from_millis(u64::from(start.idle_timeout_ms));
    let stream = OpenStream::new(group.as_str().into(), no_echo, idle);
    let serial = stream.serial;
    connection_state.extras().streams.insert(id.clone(), stream);
    drop(connection_state);
    state.watch_stream(connection, id.clone(), serial);
    ack(connection, ack_id, Ok(()));
    connection.reply(&Reply::StreamAck {
        stream_id: &id,
        expected: 1,
    });
}

/// A `streamData`: a fragment, or a keep-alive.
pub(super) fn data(
    state: &AppState,
    connection: &Arc<Connection>,
    stream_id: String,
    fragment: Option<(u64, Data)>,
) {
    let mut connection_state = connection.state();
    let Some(stream) = connection_state.extras().streams.get_mut(&stream_id) else {
        drop(connection_state);
        return connection.reply(&Reply::StreamClosed {
            stream_id: &stream_id,
            error: Some(("StreamNotFound", "no stream of this id is open")),
        });
    };
    stream.last_heard = Instant::now();
    let Some((sequence_id, data)) = fragment else {
        return;
    };
    let expected = stream.next;
    let group = Arc::clone(&stream.group);
    let no_echo = stream.no_echo;
    if sequence_id < expected {
        // Sent again after a reconnect: taken already.
        drop(connection_state);
        return connection.reply(&Reply::StreamAck {
            stream_id: &stream_id,
            expected,
        });
    }
    if sequence_id > expected {
        drop(connection_state);
        let message = format!("expected fragment {expected}, not {sequence_id}");
        return connection.reply(&Reply::StreamNack {
            stream_id: &stream_id,
            expected,
            name: "InvalidSequenceId",
            message: &message,
        });
    }
    if !connection_state
        .permissions
        .allows(Permission::SendToGroup, &group)
    {
        let stream = connection_state.extras().streams.remove(&stream_id);
        drop(connection_state);
        let message = format!("The client has no permission to send message to group '{group}'.");
        if let Some(stream) = stream {
            let forbidden = stream_end::error("Forbidden", &message);
            state.send(&stream_end::end_delivery(
                connection,
                &stream_id,
                &stream,
                Some(forbidden),
            ));
        }
        return connection.reply(&Reply::StreamClosed {
            stream_id: &stream_id,
            error: Some(("Forbidden", &message)),
        });
    }
    if let Some(stream) = connection_state.extras().streams.get_mut(&stream_id) {
        stream.next += 1;
    }
    drop(connection_state);
    let message = Outgoing::group(
        Arc::clone(&group),
        connection.user_id.clone(),
        data.data_type,
        Bytes::from(data.bytes),
    )
    .with_sender(Arc::clone(&connection.id), no_echo)
    .in_stream(StreamInfo {
        stream_id: stream_id.clone(),
        stream_sequence_id: sequence_id,
        end_of_stream: false,
        error: None,
    });
    state.send(&Delivery::new(
        &connection.hub,
        Target::Group(group.to_string()),
        message,
    ));
    connection.reply(&Reply::StreamAck {
        stream_id: &stream_id,
        expected: sequence_id + 1,
    });
}

/// A `streamEnd`, with the publisher's error when it aborts the stream.
pub(super) fn end(
    state: &AppState,
    connection: &Arc<Connection>,
    stream_id: String,
    error: Option<StreamEndError>,
) {
    let Some(stream) = connection.state().extras().streams.remove(&stream_id) else {
        return connection.reply(&Reply::StreamClosed {
            stream_id: &stream_id,
            error: Some(("StreamNotFound", "no stream of this id is open")),
        });
    };
    let error = error.map(|e| StreamError {
        name: "UserError".into(),
        message: e.message.unwrap_or_default(),
        user_error_code: e.user_error_code,
    });
    state.send(&stream_end::end_delivery(
        connection, &stream_id, &stream, error,
    ));
    connection.reply(&Reply::StreamClosed {
        stream_id: &stream_id,
        error: None,
    });
}

/// A malformed frame for a stream: the stream ends (members hear `Cancelled`), the publisher
/// hears `streamClosed` with `BadRequest` and why; the connection goes on.
pub(super) fn malformed(
    state: &AppState,
    connection: &Arc<Connection>,
    stream_id: &str,
    why: &str,
) {
    if let Some(stream) = connection.state().extras().streams.remove(stream_id) {
        let cancelled =
            stream_end::error("Cancelled", "the publisher sent a malformed stream frame");
        state.send(&stream_end::end_delivery(
            connection,
            stream_id,
            &stream,
            Some(cancelled),
        ));
    }
    connection.reply(&Reply::StreamClosed {
        stream_id,
        error: Some(("BadRequest", why)),
    });
}
