//! Client protocols: what a client's frames mean and how messages are framed for it. Each wire
//! protocol is one module implementing [`ClientProtocol`]; the rest of the service sees only the
//! seam: [`negotiate`] picks one when a client connects, [`Protocol::decode`] turns an inbound
//! frame into a request, [`Protocol::encode`] frames an outgoing message (an encoding every
//! connection of a format shares is made once per message, see [`SHARED`]), and
//! [`Protocol::reply`] frames the service's own messages (connected, acks, pong...).
//!
//! | module | protocol |
//! |---|---|
//! | [`json`] | `json.webpubsub.azure.v1` |
//! | [`json_reliable`] | `json.reliable.webpubsub.azure.v1`: JSON with sequence ids, acks and recovery |
//! | [`protobuf`] | `protobuf.webpubsub.azure.v1` and `protobuf.reliable.webpubsub.azure.v1` |
//! | [`simple`] | no subprotocol: raw frames, as `message` events or to one group |
//! | [`mqtt`] | MQTT 3.1.1 and 5.0 (`mqtt`, on `/clients/mqtt/hubs/{hub}`): one instance per connection |
//!
//! Adding a protocol: a module here, its line in [`NAMED`], and its slot in [`SHARED`] if every
//! connection speaking it gets the same bytes for a message.

pub mod json;
pub mod json_reliable;
pub mod mqtt;
pub mod protobuf;
pub mod simple;

use crate::dataplane::message::{Outgoing, SHARED_FRAMES};
use crate::error::ApiError;
use axum::extract::ws::Message;
use bytes::Bytes;
use hubbub_proto::client_protocol::{self as cp, ClientMessage, DataType, ParseError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The protocols a client asks for by subprotocol name. A client offering several gets the
/// first of its own list that is here.
pub static NAMED: &[&dyn ClientProtocol] = &[
    &json::Json,
    &json_reliable::JsonReliable,
    &protobuf::Protobuf,
    &protobuf::ProtobufReliable,
];

/// Slots of the encodings shared by every connection of one format ([`Outgoing::shared`]).
pub struct SHARED;

impl SHARED {
    pub const SIMPLE: usize = 0;
    pub const JSON: usize = 1;
    /// The JSON frame without its closing brace, which reliable connections complete with their
    /// sequence id.
    pub const JSON_OPEN: usize = 2;
    /// The protobuf frame without a sequence id (reliable connections append theirs).
    pub const PROTOBUF: usize = 3;
    /// MQTT PUBLISH packets, by version and QoS (QoS 1 with packet id 0, which each connection
    /// replaces with its own).
    pub const MQTT_V311: usize = 4;
    pub const MQTT_V311_QOS1: usize = 5;
    pub const MQTT_V5: usize = 6;
    pub const MQTT_V5_QOS1: usize = 7;
}

const _: () = assert!(SHARED::MQTT_V5_QOS1 < SHARED_FRAMES);

/// What a client's data frame asks for.
#[derive(Debug)]
pub enum Inbound {
    /// A request of the Web PubSub client model: join, leave, send to a group, an event, an
    /// invocation, a sequence ack, a ping.
    Request(ClientMessage),
    /// A frame for the app server's `message` event (simple clients sending events).
    Event { data_type: DataType, data: Bytes },
    /// A frame for a group (simple clients in `sendToGroup` mode).
    ToGroup {
        group: Arc<str>,
        data_type: DataType,
        data: Bytes,
    },
    /// Not understood (answered with an ack when it carried an ack id, else the connection is
    /// closed; a well-formed request of an unknown type is ignored).
    Invalid(ParseError),
    /// MQTT packets completed by the frame (none while a packet is still arriving), or why the
    /// bytes are not MQTT.
    Mqtt(Result<Vec<hubbub_proto::mqtt::Packet>, hubbub_proto::mqtt::FrameError>),
}

/// A payload and its type.
pub type Payload<'a> = (DataType, &'a [u8]);

/// What an invocation's event handler answered: its payload, if any, and its metadata.
pub type Invoked<'a> = (Option<Payload<'a>>, &'a [(String, String)]);

/// A message of the service's own, framed by each protocol that has one.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    Connected {
        user_id: Option<&'a str>,
        connection_id: &'a str,
        reconnection_token: Option<&'a str>,
    },
    Disconnected {
        reason: &'a str,
    },
    /// An ack, with the error's name and message when it failed.
    Ack {
        ack_id: u64,
        error: Option<(&'a str, &'a str)>,
    },
    /// The answer to an invocation: the app server's reply (with its metadata), or the error's
    /// name and message.
    Invoked {
        invocation_id: &'a str,
        result: Result<Invoked<'a>, (&'a str, &'a str)>,
    },
    /// Group streams, to their publisher: data up to `expected - 1` is taken.
    StreamAck {
        stream_id: &'a str,
        expected: u64,
    },
    /// A fragment was not taken: `InvalidSequenceId` or `TransientError`.
    StreamNack {
        stream_id: &'a str,
        expected: u64,
        name: &'a str,
        message: &'a str,
    },
    /// The publisher's stream is over, with the error's name and message when it failed.
    StreamClosed {
        stream_id: &'a str,
        error: Option<(&'a str, &'a str)>,
    },
    /// A group's state: all of it (`snapshot`) or what changed.
    GroupState {
        snapshot: bool,
        group: &'a str,
        items: &'a [cp::GroupStateItem],
    },
    Pong,
}

/// A frame on its way to one connection's socket.
#[derive(Debug, Clone)]
pub enum OutFrame {
    /// A whole WebSocket message: a format's shared frame, or one of this connection's own.
    Whole(Message),
    /// A reliable JSON frame: the JSON format's shared text without its closing brace, which the
    /// writer completes with `,"sequenceId":N}`. Nothing is allocated or copied per connection
    /// until the bytes go out.
    JsonSequenced {
        open: axum::extract::ws::Utf8Bytes,
        sequence_id: u64,
    },
}

/// What a reliable JSON frame's own end starts with; the sequence id's digits and `}` follow.
const SEQUENCE_CLOSE_PREFIX: &[u8] = br#","sequenceId":"#;

/// The few bytes a frame ends with that are this connection's own (`,"sequenceId":N}`).
#[derive(Debug)]
pub struct Tail {
    bytes: [u8; 36],
    len: usize,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            bytes: [0; 36],
            len: 0,
        }
    }
}

impl Tail {
    fn sequence_close(sequence_id: u64) -> Self {
        let mut tail = Tail::default();
        let prefix = SEQUENCE_CLOSE_PREFIX;
        tail.bytes[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = sequence_id;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let end = prefix.len() + digits.len() - at;
        tail.bytes[prefix.len()..end].copy_from_slice(&digits[at..]);
        tail.bytes[end] = b'}';
        tail.len = end + 1;
        tail
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl OutFrame {
    /// The payload's length.
    pub fn payload_len(&self) -> usize {
        match self {
            OutFrame::Whole(Message::Text(text)) => text.len(),
            OutFrame::Whole(Message::Binary(data)) => data.len(),
            OutFrame::Whole(_) => 0,
            OutFrame::JsonSequenced { open, sequence_id } => {
                // The prefix, the digits, `}`: counted, not written (this runs per delivery).
                let digits = sequence_id.checked_ilog10().map_or(1, |d| d as usize + 1);
                open.len() + SEQUENCE_CLOSE_PREFIX.len() + digits + 1
            }
        }
    }

    /// For a data frame: whether it is binary, the part shared with other connections, and
    /// this connection's own end. `None` for a frame that is not text or binary.
    pub fn parts(&self) -> Option<(bool, &[u8], Tail)> {
        match self {
            OutFrame::Whole(Message::Text(text)) => Some((false, text.as_bytes(), Tail::default())),
            OutFrame::Whole(Message::Binary(data)) => Some((true, data, Tail::default())),
            OutFrame::Whole(_) => None,
            OutFrame::JsonSequenced { open, sequence_id } => {
                Some((false, open.as_bytes(), Tail::sequence_close(*sequence_id)))
            }
        }
    }

    /// The shared part as `Bytes`, to be written from where it is.
    pub fn shared_bytes(&self) -> Bytes {
        match self {
            OutFrame::Whole(Message::Text(text)) => Bytes::from(text.clone()),
            OutFrame::Whole(Message::Binary(data)) => data.clone(),
            OutFrame::Whole(_) => Bytes::new(),
            OutFrame::JsonSequenced { open, .. } => Bytes::from(open.clone()),
        }
    }

    /// The frame as one WebSocket message (made whole, for a session that moves to another
    /// node, and for tests).
    pub fn to_message(&self) -> Message {
        match self {
            OutFrame::Whole(message) => message.clone(),
            OutFrame::JsonSequenced { open, sequence_id } => {
                let mut text = String::with_capacity(open.len() + 36);
                text.push_str(open.as_str());
                cp::write_sequence_close(&mut text, *sequence_id);
                Message::Text(text.into())
            }
        }
    }
}

impl From<Message> for OutFrame {
    fn from(message: Message) -> Self {
        OutFrame::Whole(message)
    }
}

/// One wire protocol.
pub trait ClientProtocol: Send + Sync + 'static {
    /// The WebSocket subprotocol the service answers with; `None`: none (simple clients).
    fn name(&self) -> Option<&'static str>;
    /// Whether a connection keeps a session: sequence ids, the un-acknowledged buffer, recovery.
    fn reliable(&self) -> bool {
        false
    }
    /// Whether a reliable connection's client acknowledges this message (it takes a sequence id
    /// and waits in the session's buffer); every message but MQTT's QoS 0 ones.
    fn tracked(&self, _message: &Outgoing) -> bool {
        self.reliable()
    }
    /// A frame sent again when a session resumes.
    fn redeliver(&self, frame: &Message) -> Message {
        frame.clone()
    }
    /// How long the session outlives a socket that ended (`dropped`: without a close frame;
    /// `close_reason`: the service's reason, when it was closing it); `None`: it ends now.
    /// Reliable WebSocket sessions wait `grace` for a socket that dropped.
    fn keep_session(
        &self,
        dropped: bool,
        close_reason: Option<&str>,
        grace: Duration,
    ) -> Option<Duration> {
        (self.reliable() && dropped && close_reason.is_none()).then_some(grace)
    }
    /// CloudEvents headers of this protocol's own on events about the connection.
    fn event_headers(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Fields of this protocol's own in the `disconnected` event's body (MQTT: `mqtt`).
    fn disconnected_fields(&self) -> Option<(&'static str, serde_json::Value)> {
        None
    }
    /// Whether the service's `close` only carried out the client's own wish to leave (MQTT's
    /// DISCONNECT), so that the client, not the service, ended the connection.
    fn closed_for_client(&self, _close: &crate::dataplane::connection::CloseRequest) -> bool {
        false
    }
    /// The prefix of the CloudEvents headers carrying a user event's metadata, both ways.
    fn metadata_header(&self) -> &'static str {
        crate::upstream::METADATA_HEADER
    }
    /// How long a client may stay silent (no frame, no pong) before it is closed, given the
    /// WebSocket rule's `limit`.
    fn silence_limit(&self, limit: Duration) -> Duration {
        limit
    }
    /// Frames an outgoing message; `sequence_id` for reliable protocols. `None`: the protocol
    /// has nothing to show for it (the bare end of a stream, for simple clients).
    fn encode(&self, message: &Outgoing, sequence_id: Option<u64>) -> Option<Message>;
    /// A reliable connection's frame of a message under its sequence id: by default the whole
    /// frame [`encode`](Self::encode) makes. A protocol whose frame is a shared one with a few
    /// bytes of the connection's own says so here, and nothing is made per connection.
    fn encode_sequenced(&self, message: &Outgoing, sequence_id: u64) -> Option<OutFrame> {
        self.encode(message, Some(sequence_id)).map(OutFrame::Whole)
    }
    /// Frames a message of the service's own; `None` where the protocol has no such frame.
    fn reply(&self, reply: &Reply<'_>) -> Option<Message>;
    /// What an inbound data frame asks for; `group`: the connection's group in `sendToGroup`
    /// mode (simple clients).
    fn decode(&self, frame: Bytes, binary: bool, group: Option<&Arc<str>>) -> Inbound;
}

/// The protocol of one connection: its wire protocol and what was negotiated with it.
#[derive(Clone)]
pub struct Protocol {
    wire: &'static dyn ClientProtocol,
    reliable: bool,
    /// Simple clients in `sendToGroup` mode: the group every frame goes to.
    group: Option<Arc<str>>,
    /// MQTT clients: the connection's own protocol instance (then `wire` is unused).
    mqtt: Option<Arc<mqtt::Mqtt>>,
}

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protocol")
            .field("name", &self.wire.name())
            .field("group", &self.group)
            .finish()
    }
}

impl Protocol {
    pub fn new(wire: &'static dyn ClientProtocol) -> Self {
        Self {
            wire,
            reliable: wire.reliable(),
            group: None,
            mqtt: None,
        }
    }

    /// An MQTT connection, with its session's protocol state.
    pub fn mqtt(session: Arc<mqtt::Mqtt>) -> Self {
        Self {
            wire: &json::Json,
            reliable: true,
            group: None,
            mqtt: Some(session),
        }
    }

    /// The MQTT session of an MQTT connection.
    pub fn as_mqtt(&self) -> Option<&Arc<mqtt::Mqtt>> {
        self.mqtt.as_ref()
    }

    fn wire(&self) -> &dyn ClientProtocol {
        match &self.mqtt {
            Some(mqtt) => &**mqtt,
            None => self.wire,
        }
    }

    pub fn json() -> Self {
        Self::new(&json::Json)
    }

    pub fn json_reliable() -> Self {
        Self::new(&json_reliable::JsonReliable)
    }

    /// No subprotocol: frames become `message` events, or go to `group` when one is given.
    pub fn simple(group: Option<Arc<str>>) -> Self {
        Self {
            group,
            ..Self::new(&simple::Simple)
        }
    }

    /// The subprotocol answered with; `None` for simple clients.
    pub fn name(&self) -> Option<&'static str> {
        self.wire().name()
    }

    pub fn is_reliable(&self) -> bool {
        self.reliable
    }

    pub fn encode(&self, message: &Outgoing, sequence_id: Option<u64>) -> Option<Message> {
        self.wire().encode(message, sequence_id)
    }

    pub fn encode_sequenced(&self, message: &Outgoing, sequence_id: u64) -> Option<OutFrame> {
        self.wire().encode_sequenced(message, sequence_id)
    }

    pub fn reply(&self, reply: &Reply<'_>) -> Option<Message> {
        self.wire().reply(reply)
    }

    pub fn decode(&self, frame: Bytes, binary: bool) -> Inbound {
        self.wire().decode(frame, binary, self.group.as_ref())
    }

    pub fn tracked(&self, message: &Outgoing) -> bool {
        self.wire().tracked(message)
    }

    /// A frame of the session's buffer, to be sent again when the session resumes.
    pub fn redeliver(&self, frame: &OutFrame) -> OutFrame {
        match frame {
            OutFrame::Whole(message) => OutFrame::Whole(self.wire().redeliver(message)),
            sequenced => sequenced.clone(),
        }
    }

    pub fn keep_session(
        &self,
        dropped: bool,
        close_reason: Option<&str>,
        grace: Duration,
    ) -> Option<Duration> {
        self.wire().keep_session(dropped, close_reason, grace)
    }

    pub fn event_headers(&self) -> Vec<(&'static str, String)> {
        self.wire().event_headers()
    }

    pub fn disconnected_fields(&self) -> Option<(&'static str, serde_json::Value)> {
        self.wire().disconnected_fields()
    }

    pub fn closed_for_client(&self, close: &crate::dataplane::connection::CloseRequest) -> bool {
        self.wire().closed_for_client(close)
    }

    pub fn metadata_header(&self) -> &'static str {
        self.wire().metadata_header()
    }

    pub fn silence_limit(&self, limit: Duration) -> Duration {
        self.wire().silence_limit(limit)
    }
}

/// A protocol by its subprotocol name.
pub fn by_name(name: &str) -> Option<&'static dyn ClientProtocol> {
    NAMED.iter().copied().find(|p| p.name() == Some(name))
}

/// The protocol for a client offering `offered` (in its order of preference) with these query
/// parameters: the first offered one served here; a simple client when it offers none of ours
/// (an error when its `webpubsub_mode` is not valid).
pub fn negotiate(
    offered: &[String],
    params: &HashMap<String, String>,
) -> Result<Protocol, ApiError> {
    if let Some(wire) = offered.iter().find_map(|name| by_name(name)) {
        return Ok(Protocol::new(wire));
    }
    simple::negotiate(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_first_offered_protocol_served_here_wins() {
        let none = HashMap::new();
        let chosen = |names: &[&str]| negotiate(&offered(names), &none).unwrap().name();
        assert_eq!(
            chosen(&["x", cp::JSON_RELIABLE_PROTOCOL, cp::JSON_PROTOCOL]),
            Some(cp::JSON_RELIABLE_PROTOCOL)
        );
        assert_eq!(
            chosen(&[cp::JSON_PROTOCOL, cp::JSON_RELIABLE_PROTOCOL]),
            Some(cp::JSON_PROTOCOL)
        );
        assert_eq!(chosen(&["mine"]), None, "a simple client");
        assert!(negotiate(&offered(&[cp::JSON_RELIABLE_PROTOCOL]), &none)
            .unwrap()
            .is_reliable());
        assert_eq!(
            chosen(&[cp::PROTOBUF_RELIABLE_PROTOCOL, cp::JSON_PROTOCOL]),
            Some(cp::PROTOBUF_RELIABLE_PROTOCOL)
        );
        assert!(
            negotiate(&offered(&[cp::PROTOBUF_RELIABLE_PROTOCOL]), &none)
                .unwrap()
                .is_reliable()
        );
        assert!(!negotiate(&offered(&[cp::PROTOBUF_PROTOCOL]), &none)
            .unwrap()
            .is_reliable());
    }
}
