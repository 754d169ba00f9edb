//! The protobuf client subprotocols `protobuf.webpubsub.azure.v1` and
//! `protobuf.reliable.webpubsub.azure.v1` ([`client_protocol::PROTOBUF_PROTOCOL`],
//! [`client_protocol::PROTOBUF_RELIABLE_PROTOCOL`]):
//! parsing what clients send (`UpstreamMessage`) and writing what the service sends
//! (`DownstreamMessage`), one message per binary WebSocket frame.
//!
//! The message types are generated at build time from `proto/webpubsub.v1.proto`, Azure's
//! published schema, and stay private: this module speaks the same [`ClientMessage`] model as the
//! JSON subprotocols in [`client_protocol`], and its encoders mirror that module's.
//!
//! # `protobuf_data` payloads
//!
//! `MessageData.protobuf_data` (a `google.protobuf.Any`) is kept as [`DataType::Protobuf`] whose
//! bytes are the *encoded* `Any` message (type URL and value), as Azure documents: protobuf
//! clients get it as `protobuf_data`, JSON clients as `dataType` `"protobuf"` (those bytes in
//! base64), simple clients as a binary frame, event handlers as `application/x-protobuf`.
//!
//! # Other differences from the JSON model
//!
//! * `DataMessage` has no `fromUserId`: [`data_message`] takes the sender's user id for symmetry
//!   with the JSON writer and drops it.
//! * `ConnectedMessage.user_id` is a plain string: an anonymous connection gets `""`.
//! * Protobuf maps are unordered: metadata and group state are parsed in key order and written
//!   sorted by key (a key given twice on the wire keeps its last value).
//! * `EventMessage.stream` and `InvokeEventMessage.stream` (streams to the event handler) are
//!   rejected: [`ClientMessage`] has no such stream.

#[cfg(doc)]
use crate::client_protocol;
use prost::Message as _;
use std::collections::BTreeMap;

use crate::client_protocol::{
    check_idle_timeout, check_metadata, check_stream_id, ClientMessage, Data, DataType,
    GroupStateItem, Metadata, ParseError, StreamEndError, StreamInfo, StreamStart, MAX_TTL_SECONDS,
};

/// The types prost-build generates from `proto/webpubsub.v1.proto` (package `azure.webpubsub`).
#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
mod wire {
    include!(concat!(env!("OUT_DIR"), "/azure.webpubsub.rs"));
}

use wire::downstream_message as down;
use wire::message_data::Data as WireData;
use wire::upstream_message as up;

fn error(ack_id: Option<u64>, message: impl Into<String>) -> ParseError {
    ParseError::new(ack_id, message)
}

/// Parses one binary frame: an encoded `UpstreamMessage`.
pub fn parse_client_message(frame: &[u8]) -> Result<ClientMessage, ParseError> {
    let message = wire::UpstreamMessage::decode(frame).map_err(|e| {
        error(
            None,
            format!("the frame is not a valid protobuf UpstreamMessage: {e}"),
        )
    })?;
    let Some(message) = message.message else {
        let mut unknown = error(
            None,
            "the UpstreamMessage carries no message this server knows",
        );
        unknown.unknown_type = true;
        return Err(unknown);
    };
    Ok(match message {
        up::Message::SendToGroupMessage(m) => {
            let ack_id = m.ack_id;
            let no_echo = m.no_echo.unwrap_or(false);
            match m.stream {
                Some(stream) => {
                    if m.data.is_some() {
                        return Err(error(
                            ack_id,
                            "a sendToGroup that opens a stream carries no 'data'; send it with streamData",
                        )
                        .on_stream(&stream.stream_id));
                    }
                    ClientMessage::OpenStream {
                        group: m.group,
                        ack_id,
                        no_echo,
                        stream: stream_start(stream, ack_id)?,
                    }
                }
                None => ClientMessage::SendToGroup {
                    ttl_seconds: match m.ttl_seconds {
                        None | Some(0) => None,
                        Some(n) if n <= MAX_TTL_SECONDS => Some(n),
                        Some(_) => {
                            return Err(error(
                                ack_id,
                                format!("'ttlSeconds' must be from 0 to {MAX_TTL_SECONDS}"),
                            ))
                        }
                    },
                    data: data(m.data, "sendToGroup", ack_id)?,
                    metadata: metadata(m.metadata, ack_id)?,
                    group: m.group,
                    ack_id,
                    no_echo,
                },
            }
        }
        up::Message::EventMessage(m) => {
            let ack_id = m.ack_id;
            if m.stream.is_some() {
                return Err(error(ack_id, "an event cannot open a stream"));
            }
            ClientMessage::Event {
                data: data(m.data, "event", ack_id)?,
                metadata: metadata(m.metadata, ack_id)?,
                event: m.event,
                ack_id,
            }
        }
        up::Message::JoinGroupMessage(m) => ClientMessage::JoinGroup {
            group: m.group,
            ack_id: m.ack_id,
        },
        up::Message::LeaveGroupMessage(m) => ClientMessage::LeaveGroup {
            group: m.group,
            ack_id: m.ack_id,
        },
        up::Message::SequenceAckMessage(m) => ClientMessage::SequenceAck {
            sequence_id: m.sequence_id,
        },
        up::Message::PingMessage(_) => ClientMessage::Ping,
        up::Message::InvokeEventMessage(m) => {
            let about = |e: ParseError| e.on_invocation(&m.invocation_id);
            if m.stream.is_some() {
                return Err(about(error(None, "an invoke cannot open a stream")));
            }
            ClientMessage::Invoke {
                data: data(m.data, "invoke", None).map_err(about)?,
                metadata: metadata(m.metadata, None).map_err(about)?,
                invocation_id: m.invocation_id,
                event: m.event,
            }
        }
        up::Message::CancelInvocationMessage(m) => ClientMessage::CancelInvocation {
            invocation_id: m.invocation_id,
        },
        up::Message::StreamDataMessage(m) => {
            check_stream_id(&m.stream_id).map_err(|e| error(None, e))?;
            let id = m.stream_id.clone();
            let fragment = match (m.stream_sequence_id, m.data) {
                (None, None) => None,
                (Some(0), _) => {
                    return Err(
                        error(None, "'streamSequenceId' must be a positive integer").on_stream(&id)
                    )
                }
                (Some(seq), Some(d)) => {
                    Some((seq, message_data(d, None).map_err(|e| e.on_stream(&id))?))
                }
                (Some(_), None) => {
                    return Err(
                        error(None, "a streamData with a 'streamSequenceId' needs 'data'")
                            .on_stream(&id),
                    )
                }
                (None, Some(_)) => {
                    return Err(
                        error(None, "a streamData with 'data' needs a 'streamSequenceId'")
                            .on_stream(&id),
                    )
                }
            };
            ClientMessage::StreamData {
                stream_id: m.stream_id,
                fragment,
            }
        }
        up::Message::StreamEndMessage(m) => {
            check_stream_id(&m.stream_id).map_err(|e| error(None, e))?;
            ClientMessage::StreamEnd {
                stream_id: m.stream_id,
                error: m.error.map(|e| StreamEndError {
                    message: e.message,
                    user_error_code: e.user_error_code,
                }),
            }
        }
        up::Message::SetGroupStateMessage(m) => ClientMessage::SetGroupState {
            group: m.group,
            ack_id: m.ack_id,
            state: m.state.map(|s| s.entries.into_iter().collect()),
        },
        up::Message::SubscribeGroupStateMessage(m) => ClientMessage::SubscribeGroupState {
            group: m.group,
            ack_id: m.ack_id,
        },
        up::Message::UnsubscribeGroupStateMessage(m) => ClientMessage::UnsubscribeGroupState {
            group: m.group,
            ack_id: m.ack_id,
        },
    })
}

fn stream_start(
    stream: up::StreamStartInfo,
    ack_id: Option<u64>,
) -> Result<StreamStart, ParseError> {
    check_stream_id(&stream.stream_id).map_err(|e| error(ack_id, e))?;
    Ok(StreamStart {
        idle_timeout_ms: check_idle_timeout(stream.idle_timeout_ms.map(u64::from))
            .map_err(|e| error(ack_id, e).on_stream(&stream.stream_id))?,
        stream_id: stream.stream_id,
    })
}

fn metadata(map: BTreeMap<String, String>, ack_id: Option<u64>) -> Result<Metadata, ParseError> {
    let metadata: Metadata = map.into_iter().collect();
    check_metadata(&metadata).map_err(|e| error(ack_id, e))?;
    Ok(metadata)
}

fn data(
    data: Option<wire::MessageData>,
    kind: &str,
    ack_id: Option<u64>,
) -> Result<Data, ParseError> {
    match data {
        Some(d) => message_data(d, ack_id),
        None => Err(error(ack_id, format!("'{kind}' needs 'data'"))),
    }
}

fn message_data(data: wire::MessageData, ack_id: Option<u64>) -> Result<Data, ParseError> {
    let (data_type, bytes) = match data.data {
        Some(WireData::TextData(s)) => (DataType::Text, s.into_bytes()),
        Some(WireData::BinaryData(b)) => (DataType::Binary, b),
        Some(WireData::JsonData(s)) => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&s) {
                return Err(error(ack_id, format!("'jsonData' is not valid JSON: {e}")));
            }
            (DataType::Json, s.into_bytes())
        }
        // Carried on as the encoded Any.
        Some(WireData::ProtobufData(any)) => (DataType::Protobuf, any.encode_to_vec()),
        None => {
            return Err(error(
                ack_id,
                "'data' carries none of textData, binaryData, protobufData, jsonData",
            ))
        }
    };
    Ok(Data { data_type, bytes })
}

fn wire_data(data_type: DataType, data: &[u8]) -> wire::MessageData {
    let data = match data_type {
        DataType::Text => WireData::TextData(String::from_utf8_lossy(data).into_owned()),
        DataType::Json => WireData::JsonData(String::from_utf8_lossy(data).into_owned()),
        DataType::Binary => WireData::BinaryData(data.to_vec()),
        // Checked to be an encoded Any where it was made; anything else travels as binary.
        DataType::Protobuf => match prost_types::Any::decode(data) {
            Ok(any) => WireData::ProtobufData(any),
            Err(_) => WireData::BinaryData(data.to_vec()),
        },
    };
    wire::MessageData { data: Some(data) }
}

fn wire_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

fn encode(message: down::Message) -> Vec<u8> {
    wire::DownstreamMessage {
        message: Some(message),
    }
    .encode_to_vec()
}

/// A data message: `from` is `"group"` (with the group's name) when `from_group` is set, else
/// `"server"`. The sender's user id in `from_group` is dropped: the protobuf `DataMessage` has no
/// field for it. `data` must be valid for its type (UTF-8 for text and JSON).
pub fn data_message(
    from_group: Option<(&str, Option<&str>)>,
    data_type: DataType,
    data: &[u8],
    metadata: &[(String, String)],
    stream: Option<&StreamInfo>,
    sequence_id: Option<u64>,
) -> Vec<u8> {
    let (from, group) = match from_group {
        Some((group, _from_user_id)) => ("group", Some(group.to_string())),
        None => ("server", None),
    };
    encode(down::Message::DataMessage(down::DataMessage {
        from: from.into(),
        group,
        data: Some(wire_data(data_type, data)),
        sequence_id,
        metadata: wire_map(metadata),
        stream: stream.map(|s| wire::StreamInfo {
            stream_id: s.stream_id.clone(),
            stream_sequence_id: s.stream_sequence_id,
            end_of_stream: s.end_of_stream.then_some(true),
            error: s.error.as_ref().map(|e| wire::stream_info::StreamError {
                name: e.name.clone(),
                message: e.message.clone(),
                user_error_code: e.user_error_code.clone().unwrap_or_default(),
            }),
        }),
    }))
}

/// [`data_message`] without a sequence id: made once for many receivers, each reliable one then
/// gets its own copy through [`append_sequence_id`].
pub fn data_message_without_sequence(
    from_group: Option<(&str, Option<&str>)>,
    data_type: DataType,
    data: &[u8],
    metadata: &[(String, String)],
    stream: Option<&StreamInfo>,
) -> Vec<u8> {
    data_message(from_group, data_type, data, metadata, stream, None)
}

/// `DownstreamMessage.data_message` is field 2, length-delimited.
const DATA_MESSAGE_KEY: u8 = (2 << 3) | 2;
/// `DataMessage.sequence_id` is field 4, a varint.
const SEQUENCE_ID_KEY: u8 = 4 << 3;

/// Copies a frame of [`data_message_without_sequence`] with `sequence_id` set, without encoding
/// the message again: field 4 is appended to the nested `DataMessage` and the outer length prefix
/// rewritten. (Protobuf fields may come in any order, and the last of a repeated scalar wins, so
/// this also replaces a sequence id the frame already had.) A frame of another shape is decoded
/// and encoded again; one that is not a data message is returned unchanged.
pub fn append_sequence_id(frame: &[u8], sequence_id: u64) -> Vec<u8> {
    if let Some((&DATA_MESSAGE_KEY, rest)) = frame.split_first() {
        let mut body = rest;
        if let Ok(len) = prost::encoding::decode_varint(&mut body) {
            if usize::try_from(len).is_ok_and(|len| len == body.len()) {
                let added = 1 + prost::encoding::encoded_len_varint(sequence_id);
                let new_len = (body.len() + added) as u64;
                let mut out = Vec::with_capacity(
                    1 + prost::encoding::encoded_len_varint(new_len) + body.len() + added,
                );
                out.push(DATA_MESSAGE_KEY);
                prost::encoding::encode_varint(new_len, &mut out);
                out.extend_from_slice(body);
                out.push(SEQUENCE_ID_KEY);
                prost::encoding::encode_varint(sequence_id, &mut out);
                return out;
            }
        }
    }
    match wire::DownstreamMessage::decode(frame) {
        Ok(wire::DownstreamMessage {
            message: Some(down::Message::DataMessage(mut m)),
        }) => {
            m.sequence_id = Some(sequence_id);
            encode(down::Message::DataMessage(m))
        }
        _ => frame.to_vec(),
    }
}

/// An ack: success, or an error (`name`, `message`).
pub fn ack(ack_id: u64, error: Option<(&str, &str)>) -> Vec<u8> {
    encode(down::Message::AckMessage(down::AckMessage {
        ack_id,
        success: error.is_none(),
        error: error.map(|(name, message)| down::ack_message::ErrorMessage {
            name: name.into(),
            message: message.into(),
        }),
    }))
}

/// The `connected` system message. An anonymous connection's user id is written as `""`.
pub fn connected(
    user_id: Option<&str>,
    connection_id: &str,
    reconnection_token: Option<&str>,
) -> Vec<u8> {
    use down::system_message::{ConnectedMessage, Message};
    encode(down::Message::SystemMessage(down::SystemMessage {
        message: Some(Message::ConnectedMessage(ConnectedMessage {
            connection_id: connection_id.into(),
            user_id: user_id.unwrap_or_default().into(),
            reconnection_token: reconnection_token.map(Into::into),
        })),
    }))
}

/// The `disconnected` system message.
pub fn disconnected(reason: &str) -> Vec<u8> {
    use down::system_message::{DisconnectedMessage, Message};
    encode(down::Message::SystemMessage(down::SystemMessage {
        message: Some(Message::DisconnectedMessage(DisconnectedMessage {
            reason: reason.into(),
        })),
    }))
}

pub fn pong() -> Vec<u8> {
    encode(down::Message::PongMessage(down::PongMessage {}))
}

/// A successful invoke's reply from the app server (if any), and its metadata.
pub type InvokeReply<'a> = (Option<(DataType, &'a [u8])>, &'a [(String, String)]);

/// An invoke response: the app server's reply, or an error (`name`, `message`).
pub fn invoke_response(
    invocation_id: &str,
    result: Result<InvokeReply<'_>, (&str, &str)>,
) -> Vec<u8> {
    let mut message = down::InvokeResponseMessage {
        invocation_id: invocation_id.into(),
        ..Default::default()
    };
    match result {
        Ok((reply, metadata)) => {
            message.success = true;
            message.data = reply.map(|(data_type, data)| wire_data(data_type, data));
            message.metadata = wire_map(metadata);
        }
        Err((name, text)) => {
            message.error = Some(down::invoke_response_message::ErrorMessage {
                name: name.into(),
                message: text.into(),
            });
        }
    }
    encode(down::Message::InvokeResponseMessage(message))
}

/// `streamAck`: the stream's data up to `expected - 1` is taken.
pub fn stream_ack(stream_id: &str, expected: u64) -> Vec<u8> {
    encode(down::Message::StreamAckMessage(down::StreamAckMessage {
        stream_id: stream_id.into(),
        expected_sequence_id: expected,
    }))
}

/// `streamNack`: a fragment was not taken (`InvalidSequenceId`, `TransientError`).
pub fn stream_nack(stream_id: &str, expected: u64, name: &str, message: &str) -> Vec<u8> {
    encode(down::Message::StreamNackMessage(down::StreamNackMessage {
        stream_id: stream_id.into(),
        name: name.into(),
        message: message.into(),
        expected_sequence_id: expected,
    }))
}

/// `streamClosed`: the publisher's stream is over, normally or with an error (`name`, `message`).
pub fn stream_closed(stream_id: &str, error: Option<(&str, &str)>) -> Vec<u8> {
    encode(down::Message::StreamClosedMessage(
        down::StreamClosedMessage {
            stream_id: stream_id.into(),
            error: error.map(
                |(name, message)| down::stream_closed_message::StreamClosedError {
                    name: name.into(),
                    message: message.into(),
                },
            ),
        },
    ))
}

/// `groupStateSnapshot` (`snapshot`) or `groupStateUpdate`, with the reliable protocol's
/// sequence id when there is one.
pub fn group_state(
    snapshot: bool,
    group: &str,
    items: &[GroupStateItem],
    sequence_id: Option<u64>,
) -> Vec<u8> {
    let group = group.to_string();
    let items = items
        .iter()
        .map(|item| wire::GroupStateItem {
            connection_id: item.connection_id.clone(),
            user_id: item.user_id.clone(),
            state: item
                .state
                .as_ref()
                .map(|state| wire::group_state_item::GroupState {
                    entries: wire_map(state),
                }),
            updated_at: item.updated_at,
        })
        .collect();
    encode(if snapshot {
        down::Message::GroupStateSnapshotMessage(down::GroupStateSnapshotMessage {
            group,
            items,
            sequence_id,
        })
    } else {
        down::Message::GroupStateUpdateMessage(down::GroupStateUpdateMessage {
            group,
            items,
            sequence_id,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_protocol::{StreamError, MAX_METADATA_BYTES};

    fn frame(message: up::Message) -> Vec<u8> {
        wire::UpstreamMessage {
            message: Some(message),
        }
        .encode_to_vec()
    }

    fn parse(message: up::Message) -> Result<ClientMessage, ParseError> {
        parse_client_message(&frame(message))
    }

    fn text(s: &str) -> Option<wire::MessageData> {
        Some(wire::MessageData {
            data: Some(WireData::TextData(s.into())),
        })
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pairs(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn decode(frame: &[u8]) -> down::Message {
        wire::DownstreamMessage::decode(frame)
            .unwrap()
            .message
            .unwrap()
    }

    #[test]
    fn protobuf_parses_every_upstream_kind() {
        assert_eq!(
            parse(up::Message::SendToGroupMessage(up::SendToGroupMessage {
                group: "g".into(),
                ack_id: Some(1),
                data: text("hi"),
                no_echo: Some(true),
                ttl_seconds: Some(30),
                metadata: map(&[("b", "2"), ("a", "1")]),
                stream: None,
            })),
            Ok(ClientMessage::SendToGroup {
                group: "g".into(),
                ack_id: Some(1),
                no_echo: true,
                data: Data {
                    data_type: DataType::Text,
                    bytes: b"hi".to_vec()
                },
                metadata: pairs(&[("a", "1"), ("b", "2")]),
                ttl_seconds: Some(30),
            })
        );
        assert_eq!(
            parse(up::Message::SendToGroupMessage(up::SendToGroupMessage {
                group: "g".into(),
                data: text(""),
                ttl_seconds: Some(0),
                ..Default::default()
            })),
            Ok(ClientMessage::SendToGroup {
                group: "g".into(),
                ack_id: None,
                no_echo: false,
                data: Data {
                    data_type: DataType::Text,
                    bytes: Vec::new()
                },
                metadata: Metadata::new(),
                ttl_seconds: None,
            })
        );
        assert_eq!(
            parse(up::Message::SendToGroupMessage(up::SendToGroupMessage {
                group: "g".into(),
                ack_id: Some(2),
                stream: Some(up::StreamStartInfo {
                    stream_id: "s1".into(),
                    idle_timeout_ms: Some(5000),
                }),
                ..Default::default()
            })),
            Ok(ClientMessage::OpenStream {
                group: "g".into(),
                ack_id: Some(2),
                no_echo: false,
                stream: StreamStart {
                    stream_id: "s1".into(),
                    idle_timeout_ms: 5000
                },
            })
        );
        let ClientMessage::OpenStream { stream, .. } =
            parse(up::Message::SendToGroupMessage(up::SendToGroupMessage {
                group: "g".into(),
                stream: Some(up::StreamStartInfo {
                    stream_id: "s1".into(),
                    idle_timeout_ms: None,
                }),
                ..Default::default()
            }))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            stream.idle_timeout_ms,
            crate::client_protocol::DEFAULT_STREAM_IDLE_MS
        );
        assert_eq!(
            parse(up::Message::EventMessage(up::EventMessage {
                event: "e".into(),
                ack_id: Some(3),
                data: Some(wire::MessageData {
                    data: Some(WireData::BinaryData(vec![1, 2, 255])),
                }),
                metadata: map(&[("k", "v")]),
                stream: None,
            })),
            Ok(ClientMessage::Event {
                event: "e".into(),
                ack_id: Some(3),
                data: Data {
                    data_type: DataType::Binary,
                    bytes: vec![1, 2, 255]
                },
                metadata: pairs(&[("k", "v")]),
            })
        );
        assert_eq!(
            parse(up::Message::JoinGroupMessage(up::JoinGroupMessage {
                group: "g1".into(),
                ack_id: Some(4),
            })),
            Ok(ClientMessage::JoinGroup {
                group: "g1".into(),
                ack_id: Some(4)
            })
        );
        assert_eq!(
            parse(up::Message::LeaveGroupMessage(up::LeaveGroupMessage {
                group: "g1".into(),
                ack_id: None,
            })),
            Ok(ClientMessage::LeaveGroup {
                group: "g1".into(),
                ack_id: None
            })
        );
        assert_eq!(
            parse(up::Message::SequenceAckMessage(up::SequenceAckMessage {
                sequence_id: 9
            })),
            Ok(ClientMessage::SequenceAck { sequence_id: 9 })
        );
        assert_eq!(
            parse(up::Message::PingMessage(up::PingMessage {})),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse(up::Message::InvokeEventMessage(up::InvokeEventMessage {
                event: "ask".into(),
                invocation_id: "i1".into(),
                data: Some(wire::MessageData {
                    data: Some(WireData::JsonData(r#"{"a": [1, null]}"#.into())),
                }),
                metadata: BTreeMap::new(),
                stream: None,
            })),
            Ok(ClientMessage::Invoke {
                invocation_id: "i1".into(),
                event: "ask".into(),
                data: Data {
                    data_type: DataType::Json,
                    bytes: br#"{"a": [1, null]}"#.to_vec()
                },
                metadata: Metadata::new(),
            })
        );
        assert_eq!(
            parse(up::Message::CancelInvocationMessage(
                up::CancelInvocationMessage {
                    invocation_id: "i1".into()
                }
            )),
            Ok(ClientMessage::CancelInvocation {
                invocation_id: "i1".into()
            })
        );
        assert_eq!(
            parse(up::Message::StreamDataMessage(up::StreamDataMessage {
                stream_id: "s1".into(),
                stream_sequence_id: Some(1),
                data: text("part"),
            })),
            Ok(ClientMessage::StreamData {
                stream_id: "s1".into(),
                fragment: Some((
                    1,
                    Data {
                        data_type: DataType::Text,
                        bytes: b"part".to_vec()
                    }
                )),
            })
        );
        assert_eq!(
            parse(up::Message::StreamDataMessage(up::StreamDataMessage {
                stream_id: "s1".into(),
                stream_sequence_id: None,
                data: None,
            })),
            Ok(ClientMessage::StreamData {
                stream_id: "s1".into(),
                fragment: None
            })
        );
        assert_eq!(
            parse(up::Message::StreamEndMessage(up::StreamEndMessage {
                stream_id: "s1".into(),
                error: None,
            })),
            Ok(ClientMessage::StreamEnd {
                stream_id: "s1".into(),
                error: None
            })
        );
        assert_eq!(
            parse(up::Message::StreamEndMessage(up::StreamEndMessage {
                stream_id: "s1".into(),
                error: Some(up::stream_end_message::StreamEndError {
                    message: Some("boom".into()),
                    user_error_code: None,
                }),
            })),
            Ok(ClientMessage::StreamEnd {
                stream_id: "s1".into(),
                error: Some(StreamEndError {
                    message: Some("boom".into()),
                    user_error_code: None
                }),
            })
        );
        assert_eq!(
            parse(up::Message::SetGroupStateMessage(
                up::SetGroupStateMessage {
                    group: "g".into(),
                    ack_id: Some(5),
                    state: Some(wire::group_state_item::GroupState {
                        entries: map(&[("status", "typing")]),
                    }),
                }
            )),
            Ok(ClientMessage::SetGroupState {
                group: "g".into(),
                ack_id: Some(5),
                state: Some(pairs(&[("status", "typing")])),
            })
        );
        assert_eq!(
            parse(up::Message::SetGroupStateMessage(
                up::SetGroupStateMessage {
                    group: "g".into(),
                    ack_id: None,
                    state: None,
                }
            )),
            Ok(ClientMessage::SetGroupState {
                group: "g".into(),
                ack_id: None,
                state: None
            })
        );
        assert_eq!(
            parse(up::Message::SubscribeGroupStateMessage(
                up::SubscribeGroupStateMessage {
                    group: "g".into(),
                    ack_id: Some(6)
                }
            )),
            Ok(ClientMessage::SubscribeGroupState {
                group: "g".into(),
                ack_id: Some(6)
            })
        );
        assert_eq!(
            parse(up::Message::UnsubscribeGroupStateMessage(
                up::UnsubscribeGroupStateMessage {
                    group: "g".into(),
                    ack_id: Some(7)
                }
            )),
            Ok(ClientMessage::UnsubscribeGroupState {
                group: "g".into(),
                ack_id: Some(7)
            })
        );
    }

    #[test]
    fn protobuf_data_is_kept_as_the_encoded_any() {
        let any = prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Int32Value".into(),
            value: vec![0x08, 0x2a],
        };
        let parsed = parse(up::Message::EventMessage(up::EventMessage {
            event: "e".into(),
            data: Some(wire::MessageData {
                data: Some(WireData::ProtobufData(any.clone())),
            }),
            ..Default::default()
        }))
        .unwrap();
        let ClientMessage::Event { data, .. } = parsed else {
            panic!()
        };
        assert_eq!(data.data_type, DataType::Protobuf);
        assert_eq!(prost_types::Any::decode(&data.bytes[..]).unwrap(), any);
        // ... and reaches protobuf clients as protobuf_data again.
        let down::Message::DataMessage(m) = decode(&data_message(
            Some(("g", None)),
            data.data_type,
            &data.bytes,
            &[],
            None,
            None,
        )) else {
            panic!()
        };
        assert_eq!(m.data.unwrap().data, Some(WireData::ProtobufData(any)));
        // Bytes that are not an Any (not made by a parser, which checks) go out as binary.
        let down::Message::DataMessage(m) = decode(&data_message(
            None,
            DataType::Protobuf,
            &[0xff, 0xff],
            &[],
            None,
            None,
        )) else {
            panic!()
        };
        assert_eq!(
            m.data.unwrap().data,
            Some(WireData::BinaryData(vec![0xff, 0xff]))
        );
    }

    #[test]
    fn protobuf_bad_frames_are_parse_errors() {
        // Not a protobuf message at all: a truncated length-delimited field.
        let e = parse_client_message(&[0x0a, 0x05, 0x01]).unwrap_err();
        assert_eq!((e.ack_id, e.unknown_type), (None, false));
        let e = parse_client_message(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!((e.ack_id, e.unknown_type), (None, false));
        // No oneof set: the empty message, or only a field this server does not know.
        let e = parse_client_message(&[]).unwrap_err();
        assert!(e.unknown_type);
        assert_eq!(e.ack_id, None);
        let e = parse_client_message(&[0x60, 0x01]).unwrap_err(); // field 12, varint 1
        assert!(e.unknown_type);

        let send = |ttl: Option<u32>, metadata: BTreeMap<String, String>| {
            parse(up::Message::SendToGroupMessage(up::SendToGroupMessage {
                group: "g".into(),
                ack_id: Some(11),
                data: text("x"),
                ttl_seconds: ttl,
                metadata,
                ..Default::default()
            }))
        };
        assert!(send(Some(MAX_TTL_SECONDS), BTreeMap::new()).is_ok());
        let e = send(Some(MAX_TTL_SECONDS + 1), BTreeMap::new()).unwrap_err();
        assert_eq!((e.ack_id, e.unknown_type), (Some(11), false));
        assert!(e.message.contains("ttlSeconds"));
        let big = "v".repeat(1000);
        let too_much: BTreeMap<String, String> = (0..=MAX_METADATA_BYTES / 1000)
            .map(|i| (format!("k{i}"), big.clone()))
            .collect();
        let e = send(None, too_much).unwrap_err();
        assert_eq!(e.ack_id, Some(11));
        assert!(e.message.contains("metadata"), "{}", e.message);
        let e = send(None, map(&[("bad key", "v")])).unwrap_err();
        assert_eq!(e.ack_id, Some(11));

        // Data: required, with one of its kinds set, and JSON that parses.
        let e = parse(up::Message::SendToGroupMessage(up::SendToGroupMessage {
            group: "g".into(),
            ack_id: Some(12),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.ack_id, Some(12));
        let e = parse(up::Message::EventMessage(up::EventMessage {
            event: "e".into(),
            ack_id: Some(13),
            data: Some(wire::MessageData { data: None }),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.ack_id, Some(13));
        let e = parse(up::Message::EventMessage(up::EventMessage {
            event: "e".into(),
            ack_id: Some(14),
            data: Some(wire::MessageData {
                data: Some(WireData::JsonData("{nope".into())),
            }),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.ack_id, Some(14));
        assert!(e.message.contains("JSON"));

        // Streams.
        let open = |stream_id: &str, idle: Option<u32>, data| {
            parse(up::Message::SendToGroupMessage(up::SendToGroupMessage {
                group: "g".into(),
                ack_id: Some(15),
                data,
                stream: Some(up::StreamStartInfo {
                    stream_id: stream_id.into(),
                    idle_timeout_ms: idle,
                }),
                ..Default::default()
            }))
        };
        assert_eq!(open("s", Some(0), None).unwrap_err().ack_id, Some(15));
        assert_eq!(open("", None, None).unwrap_err().ack_id, Some(15));
        assert_eq!(
            open(&"s".repeat(129), None, None).unwrap_err().ack_id,
            Some(15)
        );
        assert_eq!(open("s", None, text("x")).unwrap_err().ack_id, Some(15));
        let stream_data = |seq: Option<u64>, data| {
            parse(up::Message::StreamDataMessage(up::StreamDataMessage {
                stream_id: "s".into(),
                stream_sequence_id: seq,
                data,
            }))
        };
        let e = stream_data(Some(1), None).unwrap_err();
        assert_eq!((e.ack_id, e.unknown_type), (None, false));
        assert!(e.message.contains("needs 'data'"));
        assert!(stream_data(None, text("x")).is_err());
        assert!(stream_data(Some(0), text("x")).is_err());
        assert!(parse(up::Message::StreamEndMessage(
            up::StreamEndMessage::default()
        ))
        .is_err());
        let e = parse(up::Message::EventMessage(up::EventMessage {
            event: "e".into(),
            ack_id: Some(16),
            data: text("x"),
            stream: Some(up::StreamStartInfo {
                stream_id: "s".into(),
                idle_timeout_ms: None,
            }),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.ack_id, Some(16));
    }

    fn stream_info() -> StreamInfo {
        StreamInfo {
            stream_id: "s1".into(),
            stream_sequence_id: 3,
            end_of_stream: true,
            error: Some(StreamError {
                name: "UserError".into(),
                message: "boom".into(),
                user_error_code: Some("E1".into()),
            }),
        }
    }

    #[test]
    fn protobuf_sequence_id_patch_equals_encoding_from_scratch() {
        let metadata = pairs(&[("z", "1"), ("a", "2")]);
        let stream = stream_info();
        // Sizes around the outer length prefix's one/two and two/three byte boundaries.
        let mut prefix_grew = 0;
        for size in [
            0, 1, 100, 115, 116, 117, 118, 126, 127, 128, 16_350, 16_370, 16_384, 70_000,
        ] {
            let payload = vec![7u8; size];
            for (from_group, metadata, stream) in [
                (None, &[][..], None),
                (Some(("g", Some("u"))), &metadata[..], Some(&stream)),
            ] {
                let shared = data_message_without_sequence(
                    from_group,
                    DataType::Binary,
                    &payload,
                    metadata,
                    stream,
                );
                for seq in [0, 1, 127, 128, 300, u64::MAX] {
                    let patched = append_sequence_id(&shared, seq);
                    let appended = 1 + prost::encoding::encoded_len_varint(seq);
                    if patched.len() > shared.len() + appended {
                        prefix_grew += 1;
                    }
                    let scratch = data_message(
                        from_group,
                        DataType::Binary,
                        &payload,
                        metadata,
                        stream,
                        Some(seq),
                    );
                    assert_eq!(
                        wire::DownstreamMessage::decode(&patched[..]).unwrap(),
                        wire::DownstreamMessage::decode(&scratch[..]).unwrap(),
                        "size {size}, sequence id {seq}"
                    );
                    assert_eq!(patched.len(), scratch.len());
                    if metadata.is_empty() && stream.is_none() {
                        // Field 4 is the last field either way: the very same bytes.
                        assert_eq!(patched, scratch);
                    }
                    // Patching again replaces the sequence id.
                    let twice = append_sequence_id(&patched, 5);
                    let down::Message::DataMessage(m) = decode(&twice) else {
                        panic!()
                    };
                    assert_eq!(m.sequence_id, Some(5));
                }
            }
        }
        assert!(
            prefix_grew > 0,
            "no case made the outer length prefix longer"
        );
        // Not a data message: returned unchanged.
        assert_eq!(append_sequence_id(&pong(), 1), pong());
    }

    #[test]
    fn protobuf_data_messages() {
        let metadata = pairs(&[("k", "v")]);
        let stream = stream_info();
        let down::Message::DataMessage(m) = decode(&data_message(
            Some(("g1", Some("u1"))),
            DataType::Text,
            b"hi",
            &metadata,
            Some(&stream),
            Some(42),
        )) else {
            panic!()
        };
        assert_eq!(m.from, "group");
        assert_eq!(m.group.as_deref(), Some("g1"));
        assert_eq!(m.data.unwrap().data, Some(WireData::TextData("hi".into())));
        assert_eq!(m.sequence_id, Some(42));
        assert_eq!(m.metadata, map(&[("k", "v")]));
        let s = m.stream.unwrap();
        assert_eq!(
            (
                s.stream_id.as_str(),
                s.stream_sequence_id,
                s.end_of_stream,
                s.error.unwrap().user_error_code.as_str()
            ),
            ("s1", 3, Some(true), "E1")
        );
        let down::Message::DataMessage(m) = decode(&data_message(
            None,
            DataType::Json,
            br#"{"a":1}"#,
            &[],
            None,
            None,
        )) else {
            panic!()
        };
        assert_eq!(m.from, "server");
        assert_eq!(m.group, None);
        assert_eq!(m.sequence_id, None);
        assert_eq!(
            m.data.unwrap().data,
            Some(WireData::JsonData(r#"{"a":1}"#.into()))
        );
    }

    #[test]
    fn protobuf_other_downstream_messages() {
        assert_eq!(
            decode(&ack(1, None)),
            down::Message::AckMessage(down::AckMessage {
                ack_id: 1,
                success: true,
                error: None
            })
        );
        let down::Message::AckMessage(m) = decode(&ack(2, Some(("Forbidden", "no")))) else {
            panic!()
        };
        assert!(!m.success);
        assert_eq!(m.error.unwrap().name, "Forbidden");

        let down::Message::SystemMessage(down::SystemMessage {
            message: Some(down::system_message::Message::ConnectedMessage(c)),
        }) = decode(&connected(None, "c1", Some("rt")))
        else {
            panic!()
        };
        assert_eq!(
            (
                c.user_id.as_str(),
                c.connection_id.as_str(),
                c.reconnection_token.as_deref()
            ),
            ("", "c1", Some("rt"))
        );
        let down::Message::SystemMessage(down::SystemMessage {
            message: Some(down::system_message::Message::DisconnectedMessage(d)),
        }) = decode(&disconnected("bye"))
        else {
            panic!()
        };
        assert_eq!(d.reason, "bye");
        assert_eq!(
            decode(&pong()),
            down::Message::PongMessage(down::PongMessage {})
        );

        let metadata = pairs(&[("m", "1")]);
        let down::Message::InvokeResponseMessage(r) = decode(&invoke_response(
            "i1",
            Ok((Some((DataType::Json, b"[1]")), &metadata)),
        )) else {
            panic!()
        };
        assert!(r.success && r.error.is_none());
        assert_eq!(r.data.unwrap().data, Some(WireData::JsonData("[1]".into())));
        assert_eq!(r.metadata, map(&[("m", "1")]));
        let down::Message::InvokeResponseMessage(r) =
            decode(&invoke_response("i2", Ok((None, &[]))))
        else {
            panic!()
        };
        assert!(r.success && r.data.is_none());
        let down::Message::InvokeResponseMessage(r) =
            decode(&invoke_response("i3", Err(("InvocationFailed", "x"))))
        else {
            panic!()
        };
        assert!(!r.success);
        assert_eq!(r.invocation_id, "i3");
        assert_eq!(r.error.unwrap().name, "InvocationFailed");

        assert_eq!(
            decode(&stream_ack("s", 4)),
            down::Message::StreamAckMessage(down::StreamAckMessage {
                stream_id: "s".into(),
                expected_sequence_id: 4
            })
        );
        assert_eq!(
            decode(&stream_nack("s", 4, "InvalidSequenceId", "m")),
            down::Message::StreamNackMessage(down::StreamNackMessage {
                stream_id: "s".into(),
                name: "InvalidSequenceId".into(),
                message: "m".into(),
                expected_sequence_id: 4
            })
        );
        let down::Message::StreamClosedMessage(c) =
            decode(&stream_closed("s", Some(("IdleTimeout", "t"))))
        else {
            panic!()
        };
        assert_eq!(c.error.unwrap().name, "IdleTimeout");
        let down::Message::StreamClosedMessage(c) = decode(&stream_closed("s", None)) else {
            panic!()
        };
        assert!(c.error.is_none());

        let items = [
            GroupStateItem {
                connection_id: "c1".into(),
                user_id: Some("u1".into()),
                state: Some(pairs(&[("status", "typing")])),
                updated_at: 1_700_000_000_000,
            },
            GroupStateItem {
                connection_id: "c2".into(),
                user_id: None,
                state: None,
                updated_at: 5,
            },
        ];
        let down::Message::GroupStateSnapshotMessage(s) =
            decode(&group_state(true, "g", &items, Some(9)))
        else {
            panic!()
        };
        assert_eq!(
            (s.group.as_str(), s.sequence_id, s.items.len()),
            ("g", Some(9), 2)
        );
        assert_eq!(
            s.items[0].state.as_ref().unwrap().entries,
            map(&[("status", "typing")])
        );
        assert_eq!(s.items[0].updated_at, 1_700_000_000_000);
        assert!(s.items[1].state.is_none() && s.items[1].user_id.is_none());
        let down::Message::GroupStateUpdateMessage(u) =
            decode(&group_state(false, "g", &items[1..], None))
        else {
            panic!()
        };
        assert_eq!((u.items.len(), u.sequence_id), (1, None));
    }
}
