//! MQTT 3.1.1 and 5.0 as Web PubSub serves them over WebSocket: framing packets out of a byte
//! stream (a WebSocket message may hold part of a packet or several), the rules a CONNECT must
//! meet, topics as groups, MQTT 5 content types as data types, and the packets the service
//! sends. The packets themselves are encoded and decoded by the `mqtt5-protocol` codec.

use crate::client_protocol::DataType;
use bytes::{BufMut, Bytes, BytesMut};
use mqtt5_protocol::packet::connack::ConnAckPacket;
use mqtt5_protocol::packet::disconnect::DisconnectPacket;
use mqtt5_protocol::packet::puback::PubAckPacket;
use mqtt5_protocol::packet::suback::{SubAckPacket, SubAckReasonCode};
use mqtt5_protocol::packet::unsuback::{UnsubAckPacket, UnsubAckReasonCode};
use mqtt5_protocol::packet::MqttPacket;
use mqtt5_protocol::FixedHeader;

pub use mqtt5_protocol::packet::connect::ConnectPacket;
pub use mqtt5_protocol::packet::publish::PublishPacket;
pub use mqtt5_protocol::packet::subscribe::SubscribePacket;
pub use mqtt5_protocol::packet::unsubscribe::UnsubscribePacket;
pub use mqtt5_protocol::{
    Packet, PacketType, Properties, PropertyId, PropertyValue, QoS, ReasonCode,
};

/// MQTT 3.1.1's protocol level.
pub const V311: u8 = 4;
/// MQTT 5.0's protocol level.
pub const V5: u8 = 5;
/// The WebSocket subprotocols MQTT clients offer.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// The longest client id (characters, all ASCII letters and digits).
pub const MAX_CLIENT_ID: usize = 128;
/// The longest keep-alive an MQTT 3.1.1 client may ask for (seconds); an MQTT 5 client asking
/// for more is told this one in its CONNACK.
pub const MAX_KEEP_ALIVE_SECS: u16 = 180;
/// The longest will topic (characters) and will payload (bytes).
pub const MAX_WILL_TOPIC: usize = 1024;
pub const MAX_WILL_PAYLOAD: usize = 2000;
/// Where messages sent to a whole hub, a user or one connection arrive.
pub const SERVER_MESSAGES_TOPIC: &str = "$webpubsub/server/messages";
/// Publishing to `{EVENTS_TOPIC_PREFIX}{event}` raises a user event at the app server; its
/// answer comes back on `…/{event}/succeeded` or `…/{event}/failed`.
pub const EVENTS_TOPIC_PREFIX: &str = "$webpubsub/server/events/";

/// Why a packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a packet of {0} bytes is larger than the {1} bytes allowed")]
    TooLarge(usize, usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A CONNECT of a protocol level other than 3.1.1 and 5.0 (the level, when it was read).
    #[error("MQTT protocol level {0} is not supported (3.1.1 and 5.0 are)")]
    UnsupportedVersion(u8),
}

/// Cuts packets out of the bytes a client sends, however its WebSocket messages split them.
/// Holds at most one packet's worth of bytes: a packet announcing more than `max_packet` is
/// refused before its body arrives.
#[derive(Debug)]
pub struct Framer {
    buffer: BytesMut,
    max_packet: usize,
}

impl Framer {
    pub fn new(max_packet: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_packet,
        }
    }

    /// Bytes waiting for the rest of their packet.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn clear(&mut self) {
        self.buffer = BytesMut::new();
    }

    /// Adds bytes and takes out every whole packet, read as `version` (the connection's, or
    /// [`V5`] before its CONNECT: a CONNECT names its own). Stops at the first error.
    pub fn push(&mut self, data: &[u8], version: u8) -> Result<Vec<Packet>, FrameError> {
        self.buffer.extend_from_slice(data);
        let mut packets = Vec::new();
        while let Some((header_len, body_len)) = self.whole_packet()? {
            let mut packet = self.buffer.split_to(header_len + body_len).freeze();
            let first = packet[0];
            let _ = packet.split_to(header_len);
            packets.push(decode(first, packet, version)?);
        }
        if self.buffer.is_empty() {
            // Give back what a large packet made the buffer grow to.
            self.buffer = BytesMut::new();
        }
        Ok(packets)
    }

    /// The fixed header's length and the body's when a whole packet is buffered.
    fn whole_packet(&self) -> Result<Option<(usize, usize)>, FrameError> {
        let mut length: usize = 0;
        for i in 0..4 {
            let Some(byte) = self.buffer.get(1 + i) else {
                return Ok(None);
            };
            length |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                let header_len = 2 + i;
                if header_len + length > self.max_packet {
                    return Err(FrameError::TooLarge(header_len + length, self.max_packet));
                }
                return Ok(
                    (self.buffer.len() >= header_len + length).then_some((header_len, length))
                );
            }
        }
        Err(FrameError::Malformed(
            "the remaining length takes more than 4 bytes".into(),
        ))
    }
}

/// One packet's body, after its first byte.
fn decode(first: u8, mut body: Bytes, version: u8) -> Result<Packet, FrameError> {
    let packet_type = PacketType::from_u8(first >> 4)
        .ok_or_else(|| FrameError::Malformed(format!("unknown packet type {}", first >> 4)))?;
    if packet_type == PacketType::Connect {
        if let Some(level) = connect_level(&body).filter(|l| *l != V311 && *l != V5) {
            return Err(FrameError::UnsupportedVersion(level));
        }
    }
    let header = FixedHeader::new(packet_type, first & 0x0f, body.len() as u32);
    let packet = Packet::decode_from_body_with_version(packet_type, &header, &mut body, version)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !body.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the end of a {}",
            body.len(),
            packet.packet_type_name()
        )));
    }
    Ok(packet)
}

/// The protocol level of a CONNECT body (after its protocol name), if it has one.
fn connect_level(body: &[u8]) -> Option<u8> {
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// A refused CONNECT: the MQTT 5 reason code (3.1.1 clients get its return code) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ReasonCode,
    pub reason: String,
}

impl Refusal {
    fn new(code: ReasonCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// What the service makes of a CONNECT that meets its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The client id, or one the service assigned to a client that sent none.
    pub client_id: String,
    pub assigned: bool,
    /// The keep-alive to enforce (seconds, 0: none); an MQTT 5 client asking for more than
    /// [`MAX_KEEP_ALIVE_SECS`] is told this one.
    pub keep_alive: u16,
    /// How long the session outlives its connection (seconds; 0: it ends with it).
    pub session_expiry: u32,
}

/// Checks a CONNECT against the service's rules (client id, keep-alive, will, features the
/// service does not have). `new_id` makes an id for a client that sent none.
pub fn check_connect(
    connect: &ConnectPacket,
    new_id: impl FnOnce() -> String,
) -> Result<Accepted, Refusal> {
    let v5 = connect.protocol_version == V5;
    let id = &connect.client_id;
    let (client_id, assigned) = if id.is_empty() {
        if !connect.clean_start && !v5 {
            return Err(Refusal::new(
                ReasonCode::ClientIdentifierNotValid,
                "a client without a client id must ask for a clean session",
            ));
        }
        (new_id(), true)
    } else if id.len() > MAX_CLIENT_ID || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Refusal::new(
            ReasonCode::ClientIdentifierNotValid,
            format!("a client id is 1 to {MAX_CLIENT_ID} ASCII letters and digits"),
        ));
    } else {
        (id.clone(), false)
    };
    let keep_alive = match connect.keep_alive {
        k if v5 => k.min(MAX_KEEP_ALIVE_SECS),
        k if (1..=MAX_KEEP_ALIVE_SECS).contains(&k) => k,
        _ => {
            return Err(Refusal::new(
                ReasonCode::ProtocolError,
                format!("the keep-alive must be 1 to {MAX_KEEP_ALIVE_SECS} seconds"),
            ))
        }
    };
    if let Some(will) = &connect.will {
        if will.topic.trim().is_empty() || will.topic.chars().count() > MAX_WILL_TOPIC {
            return Err(Refusal::new(
                ReasonCode::TopicNameInvalid,
                format!("a will topic is 1 to {MAX_WILL_TOPIC} characters, not all spaces"),
            ));
        }
        check_topic_name(&will.topic).map_err(|e| Refusal::new(ReasonCode::TopicNameInvalid, e))?;
        if will.payload.len() > MAX_WILL_PAYLOAD {
            return Err(Refusal::new(
                ReasonCode::PacketTooLarge,
                format!("a will message is at most {MAX_WILL_PAYLOAD} bytes"),
            ));
        }
        if will.qos == QoS::ExactlyOnce {
            return Err(Refusal::new(
                ReasonCode::QoSNotSupported,
                "QoS 2 is not supported",
            ));
        }
        if will.retain {
            return Err(Refusal::new(
                ReasonCode::RetainNotSupported,
                "retained messages are not supported",
            ));
        }
    }
    if connect
        .properties
        .contains(PropertyId::AuthenticationMethod)
    {
        return Err(Refusal::new(
            ReasonCode::BadAuthenticationMethod,
            "enhanced authentication is not supported; send an access token",
        ));
    }
    let session_expiry = if v5 {
        match connect.properties.get(PropertyId::SessionExpiryInterval) {
            Some(PropertyValue::FourByteInteger(s)) => *s,
            _ => 0,
        }
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    Ok(Accepted {
        client_id,
        assigned,
        keep_alive,
        session_expiry,
    })
}

/// A topic a client publishes to: no wildcards, and no `$` topic but the events one.
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a topic name cannot be empty".into());
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(format!(
            "topic '{}' has a wildcard or NUL, which topic names cannot",
            shown(topic)
        ));
    }
    if topic.starts_with('$') && event_name(topic).is_none() {
        return Err(format!(
            "topic '{}' is reserved: '$' topics are the service's",
            shown(topic)
        ));
    }
    Ok(())
}

/// Why a topic filter is refused: the SUBACK code and the reason.
pub fn check_topic_filter(filter: &str) -> Result<(), (SubAckReasonCode, String)> {
    if filter.starts_with("$share/") {
        return Err((
            SubAckReasonCode::SharedSubscriptionsNotSupported,
            "shared subscriptions are not supported".into(),
        ));
    }
    if filter.contains(['+', '#']) {
        return Err((
            SubAckReasonCode::WildcardSubscriptionsNotSupported,
            "wildcard subscriptions are not supported: a topic is a group".into(),
        ));
    }
    if filter.is_empty() || filter.contains('\0') {
        return Err((
            SubAckReasonCode::TopicFilterInvalid,
            "a topic filter cannot be empty or hold NUL".into(),
        ));
    }
    if filter.starts_with('$') && filter != SERVER_MESSAGES_TOPIC && !is_event_answer(filter) {
        return Err((
            SubAckReasonCode::TopicFilterInvalid,
            format!("topic '{}' is reserved", shown(filter)),
        ));
    }
    Ok(())
}

/// The event of a `$webpubsub/server/events/{event}` topic.
pub fn event_name(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(EVENTS_TOPIC_PREFIX)
        .filter(|e| !e.is_empty() && !e.contains('/'))
}

/// The topic of an event's answer.
pub fn event_answer_topic(event: &str, succeeded: bool) -> String {
    let outcome = if succeeded { "succeeded" } else { "failed" };
    format!("{EVENTS_TOPIC_PREFIX}{event}/{outcome}")
}

fn is_event_answer(topic: &str) -> bool {
    topic
        .strip_prefix(EVENTS_TOPIC_PREFIX)
        .and_then(|rest| rest.rsplit_once('/'))
        .is_some_and(|(event, outcome)| {
            !event.is_empty() && !event.contains('/') && matches!(outcome, "succeeded" | "failed")
        })
}

fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The data type of a message published with this MQTT 5 content type (3.1.1 messages have
/// none: binary).
pub fn data_type_of(content_type: Option<&str>) -> DataType {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/json") => DataType::Json,
        Some("text/plain") => DataType::Text,
        Some("application/x-protobuf") => DataType::Protobuf,
        _ => DataType::Binary,
    }
}

/// The MQTT 5 content type of a message of this data type.
pub fn content_type_of(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Json => "application/json",
        DataType::Text => "text/plain",
        DataType::Protobuf => "application/x-protobuf",
        DataType::Binary => "application/octet-stream",
    }
}

/// A string or string-pair property's values.
pub fn string_property(properties: &Properties, id: PropertyId) -> Option<&str> {
    match properties.get(id)? {
        PropertyValue::Utf8String(s) => Some(s),
        _ => None,
    }
}

/// A four-byte integer property.
pub fn int_property(properties: &Properties, id: PropertyId) -> Option<u32> {
    match properties.get(id)? {
        PropertyValue::FourByteInteger(n) => Some(*n),
        _ => None,
    }
}

/// The user properties, in order.
pub fn user_properties(properties: &Properties) -> Vec<(String, String)> {
    properties
        .get_all(PropertyId::UserProperty)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| match p {
            PropertyValue::Utf8StringPair(k, v) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

fn add_user_properties(properties: &mut Properties, pairs: &[(String, String)]) {
    for (key, value) in pairs {
        let _ = properties.add(
            PropertyId::UserProperty,
            PropertyValue::Utf8StringPair(key.clone(), value.clone()),
        );
    }
}

fn encoded(packet: &impl MqttPacket) -> Bytes {
    let mut buffer = BytesMut::new();
    // Encoding fails only for packets larger than MQTT can carry, which the service never makes
    // (messages are limited far below that).
    let _ = packet.encode(&mut buffer);
    buffer.freeze()
}

/// What a CONNACK tells an MQTT 5 client besides its reason code.
#[derive(Debug, Clone, Default)]
pub struct ConnAckInfo<'a> {
    pub assigned_client_id: Option<&'a str>,
    /// Set when the client asked for a longer keep-alive than the service allows.
    pub server_keep_alive: Option<u16>,
    /// Session expiry granted when the client asked for more than the service keeps.
    pub session_expiry: Option<u32>,
    pub reason: Option<&'a str>,
    pub user_properties: &'a [(String, String)],
    pub max_packet: u32,
}

/// CONNACK: accepted (`ReasonCode::Success`) or refused. MQTT 3.1.1 clients get the return code
/// nearest the reason code and nothing else.
pub fn connack(version: u8, session_present: bool, code: ReasonCode, info: &ConnAckInfo) -> Bytes {
    // A refusal never says a session is present.
    let session_present = session_present && code == ReasonCode::Success;
    if version != V5 {
        return Bytes::copy_from_slice(&[0x20, 0x02, u8::from(session_present), v311_code(code)]);
    }
    let mut packet = ConnAckPacket::new(session_present, code);
    let p = &mut packet.properties;
    if code == ReasonCode::Success {
        p.set_maximum_qos(1);
        p.set_retain_available(false);
        p.set_wildcard_subscription_available(false);
        p.set_shared_subscription_available(false);
        p.set_subscription_identifier_available(false);
        p.set_topic_alias_maximum(0);
        if info.max_packet > 0 {
            p.set_maximum_packet_size(info.max_packet);
        }
        if let Some(id) = info.assigned_client_id {
            p.set_assigned_client_identifier(id.to_string());
        }
        if let Some(keep_alive) = info.server_keep_alive {
            p.set_server_keep_alive(keep_alive);
        }
        if let Some(expiry) = info.session_expiry {
            p.set_session_expiry_interval(expiry);
        }
    }
    if let Some(reason) = info.reason {
        p.set_reason_string(reason.to_string());
    }
    add_user_properties(p, info.user_properties);
    encoded(&packet)
}

/// The MQTT 3.1.1 CONNACK return code for an MQTT 5 reason code.
pub fn v311_code(code: ReasonCode) -> u8 {
    match code {
        ReasonCode::Success => 0,
        ReasonCode::UnsupportedProtocolVersion => 1,
        ReasonCode::ClientIdentifierNotValid => 2,
        ReasonCode::BadUsernameOrPassword => 4,
        ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
        _ => 3,
    }
}

/// The reason code an app server's MQTT refusal code stands for: the code itself for MQTT 5, the
/// 3.1.1 return code's nearest for 3.1.1 (an unknown code is "unspecified error").
pub fn refusal_code(version: u8, code: u8) -> ReasonCode {
    if version == V5 {
        // Only the refusals a CONNACK may carry (MQTT 5.0 §3.2.2.2): DISCONNECT's, SUBACK's and
        // others' codes would make a CONNACK clients reject as malformed.
        return ReasonCode::from_u8(code)
            .filter(|c| {
                matches!(
                    u8::from(*c),
                    0x80..=0x8a | 0x8c | 0x90 | 0x95 | 0x97 | 0x99..=0x9d | 0x9f
                )
            })
            .unwrap_or(ReasonCode::UnspecifiedError);
    }
    match code {
        1 => ReasonCode::UnsupportedProtocolVersion,
        2 => ReasonCode::ClientIdentifierNotValid,
        4 => ReasonCode::BadUsernameOrPassword,
        5 => ReasonCode::NotAuthorized,
        _ => ReasonCode::ServerUnavailable,
    }
}

/// The CONNACK refusal for an HTTP status of an app server that gave no MQTT code (the reverse
/// of the service SDKs' mapping).
pub fn refusal_for_status(status: u16) -> ReasonCode {
    match status {
        400 => ReasonCode::BadUsernameOrPassword,
        401 => ReasonCode::NotAuthorized,
        403 => ReasonCode::Banned,
        429 => ReasonCode::QuotaExceeded,
        _ => ReasonCode::UnspecifiedError,
    }
}

/// A message for a client: PUBLISH at `qos` (QoS 1 needs a packet id), with its MQTT 5
/// properties (content type, expiry, user properties).
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub topic: &'a str,
    pub qos: QoS,
    pub payload: &'a Bytes,
    pub data_type: DataType,
    pub expiry_secs: Option<u32>,
    pub user_properties: &'a [(String, String)],
    pub correlation_data: Option<&'a Bytes>,
}

/// The PUBLISH packet, with packet id 0 for QoS 1 (each connection puts its own in with
/// [`with_packet_id`]).
pub fn publish(version: u8, message: &Outbound) -> Bytes {
    let mut packet = if version == V5 {
        PublishPacket::new(message.topic, message.payload.clone(), message.qos)
    } else {
        PublishPacket::new_v311(message.topic, message.payload.clone(), message.qos)
    };
    if message.qos != QoS::AtMostOnce {
        packet.packet_id = Some(0);
    }
    if version == V5 {
        let p = &mut packet.properties;
        p.set_content_type(content_type_of(message.data_type).to_string());
        if matches!(message.data_type, DataType::Text | DataType::Json) {
            p.set_payload_format_indicator(true);
        }
        if let Some(expiry) = message.expiry_secs {
            p.set_message_expiry_interval(expiry);
        }
        if let Some(data) = message.correlation_data {
            p.set_correlation_data(data.clone());
        }
        add_user_properties(p, message.user_properties);
    }
    encoded(&packet)
}

/// A QoS 1 PUBLISH made by [`publish`] with `packet_id` in place of its 0.
pub fn with_packet_id(frame: &[u8], packet_id: u16) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len());
    out.extend_from_slice(frame);
    if let Some(at) = packet_id_offset(frame) {
        out[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
    }
    out.freeze()
}

/// Where a PUBLISH's packet id sits: after the fixed header and the topic.
fn packet_id_offset(frame: &[u8]) -> Option<usize> {
    if frame.first()? >> 4 != PacketType::Publish as u8 || frame[0] & 0x06 == 0 {
        return None;
    }
    let header_len = 1 + frame[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let topic_len = usize::from(u16::from_be_bytes([
        *frame.get(header_len)?,
        *frame.get(header_len + 1)?,
    ]));
    let at = header_len + 2 + topic_len;
    (frame.len() >= at + 2).then_some(at)
}

/// The packet id of a QoS 1 PUBLISH made here.
pub fn packet_id_of(frame: &[u8]) -> Option<u16> {
    let at = packet_id_offset(frame)?;
    Some(u16::from_be_bytes([frame[at], frame[at + 1]]))
}

/// The same PUBLISH marked as sent before (DUP), for a session resumed with it unacknowledged.
pub fn as_duplicate(frame: &[u8]) -> Bytes {
    let mut out = BytesMut::from(frame);
    if packet_id_offset(frame).is_some() {
        out[0] |= 0x08;
    }
    out.freeze()
}

pub fn puback(version: u8, packet_id: u16, code: ReasonCode, reason: Option<&str>) -> Bytes {
    if version != V5 {
        let mut out = BytesMut::with_capacity(4);
        out.put_slice(&[0x40, 0x02]);
        out.put_u16(packet_id);
        return out.freeze();
    }
    let mut packet = PubAckPacket::new(packet_id);
    packet.reason_code = code;
    if let Some(reason) = reason {
        packet.properties.set_reason_string(reason.to_string());
    }
    encoded(&packet)
}

pub fn suback(version: u8, packet_id: u16, codes: &[SubAckReasonCode]) -> Bytes {
    let mut packet = if version == V5 {
        SubAckPacket::new(packet_id)
    } else {
        SubAckPacket::new_v311(packet_id)
    };
    for code in codes {
        packet = packet.add_reason_code(*code);
    }
    encoded(&packet)
}

pub fn unsuback(version: u8, packet_id: u16, codes: &[UnsubAckReasonCode]) -> Bytes {
    if version != V5 {
        let mut out = BytesMut::with_capacity(4);
        out.put_slice(&[0xb0, 0x02]);
        out.put_u16(packet_id);
        return out.freeze();
    }
    let mut packet = UnsubAckPacket::new(packet_id);
    for code in codes {
        packet = packet.add_reason_code(*code);
    }
    encoded(&packet)
}

pub fn pingresp() -> Bytes {
    Bytes::from_static(&[0xd0, 0x00])
}

/// An MQTT 5 DISCONNECT from the service (3.1.1 has none: the service just closes).
pub fn disconnect(code: ReasonCode, reason: Option<&str>) -> Bytes {
    let mut packet = DisconnectPacket::new(code);
    if let Some(reason) = reason {
        packet = packet.with_reason_string(reason.to_string());
    }
    encoded(&packet)
}

pub use mqtt5_protocol::packet::suback::SubAckReasonCode as SubAckCode;
pub use mqtt5_protocol::packet::unsuback::UnsubAckReasonCode as UnsubAckCode;

#[cfg(test)]
mod tests;
