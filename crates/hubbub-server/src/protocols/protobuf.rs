//! `protobuf.webpubsub.azure.v1` and `protobuf.reliable.webpubsub.azure.v1`: requests and
//! messages as protobuf (`UpstreamMessage`, `DownstreamMessage` of Azure's published schema), one
//! per binary frame. A message's frame is made once per message and shared by every connection
//! of either protocol; reliable connections get it with their sequence id appended.

use super::{ClientProtocol, Inbound, Reply, SHARED};
use crate::dataplane::message::Outgoing;
use axum::extract::ws::Message;
use bytes::Bytes;
use hubbub_proto::client_protocol as cp;
use hubbub_proto::protobuf as pb;
use std::sync::Arc;

#[derive(Debug)]
pub struct Protobuf;

#[derive(Debug)]
pub struct ProtobufReliable;

/// The message's `DownstreamMessage` without a sequence id, made once per message.
fn shared(message: &Outgoing) -> Message {
    message.shared(SHARED::PROTOBUF, |m| {
        let from_group = m
            .source_group()
            .map(|group| (&**group, m.from_user_id().map(|u| &**u)));
        Message::Binary(Bytes::from(pb::data_message_without_sequence(
            from_group,
            m.data_type(),
            m.data(),
            m.metadata(),
            m.stream(),
        )))
    })
}

fn reply(reply: &Reply<'_>) -> Message {
    let bytes = match *reply {
        Reply::Connected {
            user_id,
            connection_id,
            reconnection_token,
        } => pb::connected(user_id, connection_id, reconnection_token),
        Reply::Disconnected { reason } => pb::disconnected(reason),
        Reply::Ack { ack_id, error } => pb::ack(ack_id, error),
        Reply::Invoked {
            invocation_id,
            result,
        } => pb::invoke_response(invocation_id, result),
        Reply::StreamAck {
            stream_id,
            expected,
        } => pb::stream_ack(stream_id, expected),
        Reply::StreamNack {
            stream_id,
            expected,
            name,
            message,
        } => pb::stream_nack(stream_id, expected, name, message),
        Reply::StreamClosed { stream_id, error } => pb::stream_closed(stream_id, error),
        Reply::GroupState {
            snapshot,
            group,
            items,
        } => pb::group_state(snapshot, group, items, None),
        Reply::Pong => pb::pong(),
    };
    Message::Binary(Bytes::from(bytes))
}

/// A request frame: binary, one `UpstreamMessage`.
fn decode(frame: &[u8], binary: bool) -> Inbound {
    if !binary {
        return Inbound::Invalid(cp::ParseError::new(
            None,
            "the protobuf subprotocols take binary frames only",
        ));
    }
    match pb::parse_client_message(frame) {
        Ok(request) => Inbound::Request(request),
        Err(e) => Inbound::Invalid(e),
    }
}

impl ClientProtocol for Protobuf {
    fn name(&self) -> Option<&'static str> {
        Some(cp::PROTOBUF_PROTOCOL)
    }

    fn encode(&self, message: &Outgoing, _sequence_id: Option<u64>) -> Option<Message> {
        Some(shared(message))
    }

    fn reply(&self, reply: &Reply<'_>) -> Option<Message> {
        Some(self::reply(reply))
    }

    fn decode(&self, frame: Bytes, binary: bool, _group: Option<&Arc<str>>) -> Inbound {
        decode(&frame, binary)
    }
}

impl ClientProtocol for ProtobufReliable {
    fn name(&self) -> Option<&'static str> {
        Some(cp::PROTOBUF_RELIABLE_PROTOCOL)
    }

    fn reliable(&self) -> bool {
        true
    }

    fn encode(&self, message: &Outgoing, sequence_id: Option<u64>) -> Option<Message> {
        let Message::Binary(frame) = shared(message) else {
            return None;
        };
        Some(Message::Binary(Bytes::from(pb::append_sequence_id(
            &frame,
            sequence_id.unwrap_or_default(),
        ))))
    }

    fn reply(&self, reply: &Reply<'_>) -> Option<Message> {
        Some(self::reply(reply))
    }

    fn decode(&self, frame: Bytes, binary: bool, _group: Option<&Arc<str>>) -> Inbound {
        decode(&frame, binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubbub_proto::client_protocol::{ClientMessage, DataType};

    #[test]
    fn one_frame_per_message_for_both_and_sequence_ids_for_the_reliable_one() {
        let m = Outgoing::group(
            "g".into(),
            Some("u".into()),
            DataType::Text,
            Bytes::from_static(b"hi"),
        );
        let (Some(Message::Binary(a)), Some(Message::Binary(b))) =
            (Protobuf.encode(&m, None), Protobuf.encode(&m, None))
        else {
            panic!("binary frames")
        };
        assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not re-encoded");
        let Some(Message::Binary(reliable)) = ProtobufReliable.encode(&m, Some(7)) else {
            panic!("a binary frame")
        };
        assert_eq!(
            &reliable[..],
            &pb::data_message(
                Some(("g", Some("u"))),
                DataType::Text,
                b"hi",
                &[],
                None,
                Some(7)
            )[..]
        );
        let join = Bytes::from(pb_join());
        assert!(matches!(
            Protobuf.decode(join.clone(), true, None),
            Inbound::Request(ClientMessage::JoinGroup {
                ack_id: Some(1),
                ..
            })
        ));
        assert!(
            matches!(Protobuf.decode(join, false, None), Inbound::Invalid(_)),
            "text frames are refused"
        );
        assert!(matches!(
            ProtobufReliable.decode(Bytes::from_static(&[0xff, 0xff]), true, None),
            Inbound::Invalid(_)
        ));
        assert!(matches!(
            Protobuf.reply(&Reply::Pong),
            Some(Message::Binary(_))
        ));
    }

    /// `UpstreamMessage { join_group_message: { group: "g", ack_id: 1 } }`, encoded by hand.
    fn pb_join() -> Vec<u8> {
        // field 6 (join_group_message), length-delimited: { field 1 "g", field 2 varint 1 }
        vec![0x32, 0x05, 0x0a, 0x01, b'g', 0x10, 0x01]
    }
}
