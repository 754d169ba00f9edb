//! `json.reliable.webpubsub.azure.v1`: the JSON protocol with a session. Every message carries a
//! sequence id the client acknowledges; un-acknowledged messages are sent again when the client
//! recovers the session. A message's frame is the shared JSON frame completed with this
//! connection's sequence id.

use super::{json, ClientProtocol, Inbound, OutFrame, Reply};
use crate::dataplane::message::Outgoing;
use axum::extract::ws::Message;
use bytes::Bytes;
use hubbub_proto::client_protocol::{self as cp, write_sequence_close};
use std::sync::Arc;

#[derive(Debug)]
pub struct JsonReliable;

impl ClientProtocol for JsonReliable {
    fn name(&self) -> Option<&'static str> {
        Some(cp::JSON_RELIABLE_PROTOCOL)
    }

    fn reliable(&self) -> bool {
        true
    }

    fn encode(&self, message: &Outgoing, sequence_id: Option<u64>) -> Option<Message> {
        let open = json::open(message);
        let open = json::text(&open);
        let mut frame = String::with_capacity(open.len() + 24);
        frame.push_str(open);
        write_sequence_close(&mut frame, sequence_id.unwrap_or_default());
        Some(Message::Text(frame.into()))
    }

    fn encode_sequenced(&self, message: &Outgoing, sequence_id: u64) -> Option<OutFrame> {
        let Message::Text(open) = json::open(message) else {
            return None;
        };
        Some(OutFrame::JsonSequenced { open, sequence_id })
    }

    fn reply(&self, reply: &Reply<'_>) -> Option<Message> {
        Some(json::reply(reply))
    }

    fn decode(&self, frame: Bytes, _binary: bool, _group: Option<&Arc<str>>) -> Inbound {
        json::decode(&frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubbub_proto::client_protocol::{ClientMessage, DataType};

    #[test]
    fn each_frame_carries_its_sequence_id_and_acks_are_decoded() {
        let m = Outgoing::server(DataType::Text, Bytes::from_static(b"hi"));
        let Some(Message::Text(frame)) = JsonReliable.encode(&m, Some(9)) else {
            panic!("a text frame")
        };
        assert!(frame.as_str().ends_with(r#""data":"hi","sequenceId":9}"#));
        for sequence_id in [0, 9, 10, 12_345, u64::MAX] {
            let sequenced = JsonReliable.encode_sequenced(&m, sequence_id).unwrap();
            let (false, open, tail) = sequenced.parts().unwrap() else {
                panic!("a text frame")
            };
            let whole = [open, tail.as_bytes()].concat();
            let Some(Message::Text(expected)) = JsonReliable.encode(&m, Some(sequence_id)) else {
                panic!("a text frame")
            };
            assert_eq!(whole, expected.as_bytes(), "sequence id {sequence_id}");
            assert_eq!(sequenced.payload_len(), expected.len());
            assert!(
                matches!(sequenced.to_message(), Message::Text(t) if t.as_str() == expected.as_str())
            );
        }
        let ack = Bytes::from_static(br#"{"type":"sequenceAck","sequenceId":9}"#);
        assert!(matches!(
            JsonReliable.decode(ack, false, None),
            Inbound::Request(ClientMessage::SequenceAck { sequence_id: 9 })
        ));
    }
}
