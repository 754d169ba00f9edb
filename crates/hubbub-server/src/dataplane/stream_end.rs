//! How group streams end, whoever ends them: a stream's last message to its group, the watcher
//! that closes a stream quiet for its idle timeout, and the ends of every stream of a connection
//! that ended. What a stream is lives in [`super::stream`]; what its publisher's frames ask for,
//! in the client endpoint.

use super::connection::Connection;
use super::delivery::{Delivery, Target};
use super::message::Outgoing;
use super::stream::OpenStream;
use crate::protocols::Reply;
use bytes::Bytes;
use hubbub_proto::client_protocol::{DataType, StreamError, StreamInfo};
use std::sync::{Arc, Weak};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stream's last message to its group: no payload, `endOfStream`, and the error if any.
pub fn end_delivery(
    connection: &Connection,
    stream_id: &str,
    stream: &OpenStream,
    error: Option<StreamError>,
) -> Delivery {
    let message = Outgoing::group(
        Arc::clone(&stream.group),
        connection.user_id.clone(),
        DataType::Text,
        Bytes::new(),
    )
    .with_sender(Arc::clone(&connection.id), stream.no_echo)
    .in_stream(StreamInfo {
        stream_id: stream_id.to_string(),
        stream_sequence_id: stream.next,
        end_of_stream: true,
        error,
    });
    Delivery::new(
        &connection.hub,
        Target::Group(stream.group.to_string()),
        message,
    )
}

/// A stream error of the service's own (not the publisher's).
pub fn error(name: &str, message: &str) -> StreamError {
    StreamError {
        name: name.into(),
        message: message.into(),
        user_error_code: None,
    }
}

/// Ends every stream of a connection that has ended for good: the last messages to their
/// groups, each `Cancelled`.
pub fn end_all(connection: &Connection) -> Vec<Delivery> {
    let streams: Vec<(String, OpenStream)> = match connection.state().extras_mut() {
        Some(extras) => extras.streams.drain().collect(),
        None => Vec::new(),
    };
    streams
        .iter()
        .map(|(id, stream)| {
            let cancelled = error("Cancelled", "the publisher's connection ended");
            end_delivery(connection, id, stream, Some(cancelled))
        })
        .collect()
}

/// Closes the stream `serial` of `connection` when it goes quiet for its idle timeout: its
/// group gets the end with `IdleTimeout` (through `send`), the publisher `streamClosed`.
pub fn watch(
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    connection: Weak<Connection>,
    stream_id: String,
    serial: u64,
    send: impl Fn(Delivery) + Send + 'static,
) {
    tasks.spawn(async move {
        loop {
            let deadline = {
                let Some(connection) = connection.upgrade() else {
                    return;
                };
                let mut connection_state = connection.state();
                match connection_state.extras().streams.get(&stream_id) {
                    Some(stream) if stream.serial == serial => stream.deadline(),
                    _ => return,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shutdown.cancelled() => return,
            }
            let Some(connection) = connection.upgrade() else {
                return;
            };
            let mut connection_state = connection.state();
            let expired = match connection_state.extras().streams.get(&stream_id) {
                Some(stream) if stream.serial == serial => stream.deadline() <= Instant::now(),
                _ => return,
            };
            if !expired {
                continue;
            }
            let Some(stream) = connection_state.extras().streams.remove(&stream_id) else {
                return;
            };
            drop(connection_state);
            let message = format!("no data or keep-alive for {} ms", stream.idle.as_millis());
            send(end_delivery(
                &connection,
                &stream_id,
                &stream,
                Some(error("IdleTimeout", &message)),
            ));
            connection.reply(&Reply::StreamClosed {
                stream_id: &stream_id,
                error: Some(("IdleTimeout", &message)),
            });
            return;
        }
    });
}

/// The open streams of a connection, as (id, serial), to watch them (a session restored here).
pub fn open_streams(connection: &Connection) -> Vec<(String, u64)> {
    connection
        .state()
        .extras()
        .streams
        .iter()
        .map(|(id, stream)| (id.clone(), stream.serial))
        .collect()
}
