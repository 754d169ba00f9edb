//! `json.webpubsub.azure.v1`: requests and messages as JSON objects. A message's frame is the
//! same for every connection of this protocol, so it is made once per message.

use super::{ClientProtocol, Inbound, Reply, SHARED};
use crate::dataplane::message::Outgoing;
use axum::extract::ws::Message;
use bytes::Bytes;
use hubbub_proto::client_protocol::{self as cp, write_message_open, Extras, Source};
use std::sync::Arc;

#[derive(Debug)]
pub struct Json;

/// The message's JSON frame without its closing brace, made once per message (shared with the
/// reliable protocol, which closes it with a sequence id).
pub(super) fn open(message: &Outgoing) -> Message {
    message.shared(SHARED::JSON_OPEN, |m| {
        let data = m.data();
        let mut out = String::with_capacity(data.len() * 4 / 3 + 96);
        let source = match m.source_group() {
            Some(group) => Source::Group {
                group,
                from_user_id: m.from_user_id().map(|u| &**u),
            },
            None => Source::Server,
        };
        let extras = Extras {
            metadata: m.metadata(),
            stream: m.stream(),
        };
        write_message_open(&mut out, source, m.data_type(), data, extras);
        Message::Text(out.into())
    })
}

/// The text of a text frame.
pub(super) fn text(frame: &Message) -> &str {
    match frame {
        Message::Text(text) => text.as_str(),
        _ => "",
    }
}

/// The service's own JSON messages (shared with the reliable protocol).
pub(super) fn reply(reply: &Reply<'_>) -> Message {
    let text = match *reply {
        Reply::Connected {
            user_id,
            connection_id,
            reconnection_token,
        } => cp::connected(user_id, connection_id, reconnection_token),
        Reply::Disconnected { reason } => cp::disconnected(reason),
        Reply::Ack {
            ack_id,
            error: None,
        } => cp::ack_success(ack_id),
        Reply::Ack {
            ack_id,
            error: Some((name, message)),
        } => cp::ack_error(ack_id, name, message),
        Reply::Invoked {
            invocation_id,
            result: Ok((reply, metadata)),
        } => cp::invoke_success(invocation_id, reply, metadata),
        Reply::StreamAck {
            stream_id,
            expected,
        } => cp::stream_ack(stream_id, expected),
        Reply::StreamNack {
            stream_id,
            expected,
            name,
            message,
        } => cp::stream_nack(stream_id, expected, name, message),
        Reply::StreamClosed { stream_id, error } => cp::stream_closed(stream_id, error),
        Reply::GroupState {
            snapshot,
            group,
            items,
        } => cp::group_state(snapshot, group, items),
        Reply::Invoked {
            invocation_id,
            result: Err((name, message)),
        } => cp::invoke_error(invocation_id, name, message),
        Reply::Pong => cp::PONG.to_string(),
    };
    Message::Text(text.into())
}

/// A request frame (text, or UTF-8 in a binary frame).
pub(super) fn decode(frame: &[u8]) -> Inbound {
    match cp::parse_client_message(frame) {
        Ok(request) => Inbound::Request(request),
        Err(e) => Inbound::Invalid(e),
    }
}

impl ClientProtocol for Json {
    fn name(&self) -> Option<&'static str> {
        Some(cp::JSON_PROTOCOL)
    }

    fn encode(&self, message: &Outgoing, _sequence_id: Option<u64>) -> Option<Message> {
        Some(message.shared(SHARED::JSON, |m| {
            let open = open(m);
            let open = text(&open);
            let mut frame = String::with_capacity(open.len() + 1);
            frame.push_str(open);
            frame.push('}');
            Message::Text(frame.into())
        }))
    }

    fn reply(&self, reply: &Reply<'_>) -> Option<Message> {
        Some(self::reply(reply))
    }

    fn decode(&self, frame: Bytes, _binary: bool, _group: Option<&Arc<str>>) -> Inbound {
        decode(&frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubbub_proto::client_protocol::{ClientMessage, DataType};

    #[test]
    fn a_group_message_is_framed_once_and_requests_are_decoded() {
        let m = Outgoing::group(
            "g".into(),
            Some("u".into()),
            DataType::Text,
            Bytes::from_static(b"hi"),
        );
        let frame = Json.encode(&m, None).unwrap();
        assert_eq!(
            text(&frame),
            r#"{"type":"message","from":"group","group":"g","fromUserId":"u","dataType":"text","data":"hi"}"#
        );
        let (Message::Text(a), Some(Message::Text(b))) = (frame, Json.encode(&m, None)) else {
            panic!("text frames")
        };
        assert_eq!(
            a.as_str().as_ptr(),
            b.as_str().as_ptr(),
            "shared, not re-encoded"
        );
        let join = Bytes::from_static(br#"{"type":"joinGroup","group":"g","ackId":1}"#);
        assert!(matches!(
            Json.decode(join, false, None),
            Inbound::Request(ClientMessage::JoinGroup {
                ack_id: Some(1),
                ..
            })
        ));
        assert!(matches!(
            Json.decode(Bytes::from_static(b"nope"), false, None),
            Inbound::Invalid(_)
        ));
        let pong = Json.reply(&Reply::Pong).unwrap();
        assert_eq!(text(&pong), r#"{"type":"pong"}"#);
    }
}
