//! The JSON client subprotocols `json.webpubsub.azure.v1` and `json.reliable.webpubsub.azure.v1`:
//! parsing what clients send, and writing what the service sends.

use base64::Engine;
use serde_json::Value;
use std::fmt::Write;

pub const JSON_PROTOCOL: &str = "json.webpubsub.azure.v1";
pub const JSON_RELIABLE_PROTOCOL: &str = "json.reliable.webpubsub.azure.v1";
pub const PROTOBUF_PROTOCOL: &str = "protobuf.webpubsub.azure.v1";
pub const PROTOBUF_RELIABLE_PROTOCOL: &str = "protobuf.reliable.webpubsub.azure.v1";

/// How a message body is to be read: from `dataType` or from a REST Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Text,
    Json,
    Binary,
    /// An encoded `google.protobuf.Any` (protobuf clients' `protobuf_data`); base64 in JSON, a
    /// binary frame for simple clients, `application/x-protobuf` to event handlers.
    Protobuf,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Text => "text",
            DataType::Json => "json",
            DataType::Binary => "binary",
            DataType::Protobuf => "protobuf",
        }
    }
}

/// A message body: text (UTF-8), JSON text, or raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub data_type: DataType,
    pub bytes: Vec<u8>,
}

/// Message metadata: string pairs carried beside a message's data, in the order given.
pub type Metadata = Vec<(String, String)>;

/// The most bytes of metadata (keys and values) one message carries.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// The longest metadata key, and the longest value.
pub const MAX_METADATA_KEY: usize = 256;
pub const MAX_METADATA_VALUE: usize = 1024;
/// The longest time to live a message may ask for (`ttlSeconds`, `messageTtlSeconds`).
pub const MAX_TTL_SECONDS: u32 = 300;
/// The longest stream id.
pub const MAX_STREAM_ID: usize = 128;
/// A stream's idle timeout when its start does not name one, and the longest it may name.
pub const DEFAULT_STREAM_IDLE_MS: u32 = 300_000;
pub const MAX_STREAM_IDLE_MS: u32 = 3_600_000;

/// Checks one metadata pair and adds its size to `total`: keys are HTTP header tokens (they
/// travel as `X-WebPubSub-Metadata-<key>` headers), values printable ASCII.
pub fn check_metadata_pair(key: &str, value: &str, total: &mut usize) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if key.is_empty() || !key.chars().all(token) {
        return Err(format!(
            "metadata key '{}' must be a non-empty HTTP token (letters, digits, !#$%&'*+-.^_`|~)",
            truncate(key, 64)
        ));
    }
    if key.len() > MAX_METADATA_KEY {
        return Err(format!(
            "metadata key '{}...' is longer than {MAX_METADATA_KEY} bytes",
            truncate(key, 64)
        ));
    }
    if !value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return Err(format!(
            "metadata value for key '{}' must be printable ASCII",
            truncate(key, 64)
        ));
    }
    if value.len() > MAX_METADATA_VALUE {
        return Err(format!(
            "metadata value for key '{}' is longer than {MAX_METADATA_VALUE} bytes",
            truncate(key, 64)
        ));
    }
    *total += key.len() + value.len();
    if *total > MAX_METADATA_BYTES {
        return Err(format!(
            "metadata is larger than {MAX_METADATA_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Checks a whole metadata list (sizes, characters, no key twice, case-insensitively).
pub fn check_metadata(metadata: &Metadata) -> Result<(), String> {
    let mut total = 0;
    for (i, (key, value)) in metadata.iter().enumerate() {
        check_metadata_pair(key, value, &mut total)?;
        if metadata[..i]
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            return Err(format!(
                "metadata key '{}' is given twice",
                truncate(key, 64)
            ));
        }
    }
    Ok(())
}

/// The descriptor on a `sendToGroup` that opens a group stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    pub stream_id: String,
    /// Milliseconds without data, keep-alive or end after which the stream is closed.
    pub idle_timeout_ms: u32,
}

/// The error a publisher ends its stream with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamEndError {
    pub message: Option<String>,
    pub user_error_code: Option<String>,
}

/// A request from a client of a Web PubSub subprotocol (JSON or protobuf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    JoinGroup {
        group: String,
        ack_id: Option<u64>,
    },
    LeaveGroup {
        group: String,
        ack_id: Option<u64>,
    },
    SendToGroup {
        group: String,
        ack_id: Option<u64>,
        no_echo: bool,
        data: Data,
        metadata: Metadata,
        /// `ttlSeconds`: not delivered to a member that has not taken it within this time.
        ttl_seconds: Option<u32>,
    },
    /// A `sendToGroup` with a stream descriptor and no data: opens a group stream.
    OpenStream {
        group: String,
        ack_id: Option<u64>,
        no_echo: bool,
        stream: StreamStart,
    },
    /// A fragment (`sequence_id` and `data`), or a keep-alive (neither).
    StreamData {
        stream_id: String,
        fragment: Option<(u64, Data)>,
    },
    StreamEnd {
        stream_id: String,
        error: Option<StreamEndError>,
    },
    Event {
        event: String,
        ack_id: Option<u64>,
        data: Data,
        metadata: Metadata,
    },
    Invoke {
        invocation_id: String,
        event: String,
        data: Data,
        metadata: Metadata,
    },
    CancelInvocation {
        invocation_id: String,
    },
    /// Sets (or, with `None`, clears) this connection's state in a group.
    SetGroupState {
        group: String,
        ack_id: Option<u64>,
        state: Option<Metadata>,
    },
    SubscribeGroupState {
        group: String,
        ack_id: Option<u64>,
    },
    UnsubscribeGroupState {
        group: String,
        ack_id: Option<u64>,
    },
    SequenceAck {
        sequence_id: u64,
    },
    Ping,
}

/// Why a frame could not be understood. `ack_id` is set when the frame carried a usable one, so
/// the error can be answered with an ack instead of closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub ack_id: Option<u64>,
    pub message: String,
    /// True for a well-formed message of a type this server does not know.
    pub unknown_type: bool,
    /// The stream a malformed stream frame was for, so it can be answered on that stream.
    pub stream_id: Option<String>,
    /// The invocation a malformed `invoke` was, so it can be answered with an `invokeResponse`.
    pub invocation_id: Option<String>,
}

impl ParseError {
    pub fn new(ack_id: Option<u64>, message: impl Into<String>) -> Self {
        Self {
            ack_id,
            message: message.into(),
            unknown_type: false,
            stream_id: None,
            invocation_id: None,
        }
    }

    /// The error, about the invocation `invocation_id`.
    pub fn on_invocation(mut self, invocation_id: &str) -> Self {
        self.invocation_id = Some(invocation_id.to_string());
        self
    }

    /// The error, about the stream `stream_id`.
    pub fn on_stream(mut self, stream_id: &str) -> Self {
        self.stream_id = Some(stream_id.to_string());
        self
    }
}

/// Parses one text (or UTF-8 binary) frame.
pub fn parse_client_message(frame: &[u8]) -> Result<ClientMessage, ParseError> {
    let value: Value = serde_json::from_slice(frame)
        .map_err(|e| ParseError::new(None, format!("the frame is not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(ParseError::new(None, "the frame must be a JSON object"));
    };
    let ack_id =
        match object.get("ackId") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ParseError::new(None, "'ackId' must be an unsigned 64-bit integer")
            })?),
        };
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::new(ack_id, "the message has no string 'type'"))?;
    let string = |name: &str| -> Result<String, ParseError> {
        match object.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ParseError::new(
                ack_id,
                format!("'{name}' must be a string"),
            )),
            None => Err(ParseError::new(
                ack_id,
                format!("'{kind}' needs a '{name}'"),
            )),
        }
    };
    let data = || parse_data(&object, ack_id);
    let metadata = || parse_metadata(&object, ack_id);
    Ok(match kind {
        "joinGroup" => ClientMessage::JoinGroup {
            group: string("group")?,
            ack_id,
        },
        "leaveGroup" => ClientMessage::LeaveGroup {
            group: string("group")?,
            ack_id,
        },
        "sendToGroup" => {
            let no_echo = match object.get("noEcho") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ParseError::new(ack_id, "'noEcho' must be true or false")),
            };
            let group = string("group")?;
            match object.get("stream") {
                None | Some(Value::Null) => ClientMessage::SendToGroup {
                    group,
                    ack_id,
                    no_echo,
                    data: data()?,
                    metadata: metadata()?,
                    ttl_seconds: parse_ttl(&object, ack_id)?,
                },
                Some(stream) => {
                    if object.get("data").is_some_and(|d| !d.is_null()) {
                        let error = ParseError::new(
                            ack_id,
                            "a sendToGroup that opens a stream carries no 'data'; send it with streamData",
                        );
                        return Err(match stream.get("streamId").and_then(Value::as_str) {
                            Some(id) => error.on_stream(id),
                            None => error,
                        });
                    }
                    ClientMessage::OpenStream {
                        group,
                        ack_id,
                        no_echo,
                        stream: parse_stream_start(stream, ack_id)?,
                    }
                }
            }
        }
        "streamData" => {
            let stream_id = stream_id(&object, ack_id)?;
            let sequence_id = match object.get("streamSequenceId") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                    ParseError::new(ack_id, "'streamSequenceId' must be a positive integer")
                        .on_stream(&stream_id)
                })?),
            };
            let has_data = object.get("data").is_some_and(|d| !d.is_null());
            let fragment = match (sequence_id, has_data) {
                (None, false) => None,
                (Some(id), true) => Some((id, data().map_err(|e| e.on_stream(&stream_id))?)),
                (Some(_), false) => {
                    return Err(ParseError::new(
                        ack_id,
                        "a streamData with a 'streamSequenceId' needs 'data'",
                    )
                    .on_stream(&stream_id))
                }
                (None, true) => {
                    return Err(ParseError::new(
                        ack_id,
                        "a streamData with 'data' needs a 'streamSequenceId'",
                    )
                    .on_stream(&stream_id))
                }
            };
            ClientMessage::StreamData {
                stream_id,
                fragment,
            }
        }
        "streamEnd" => ClientMessage::StreamEnd {
            stream_id: stream_id(&object, ack_id)?,
            error: match object.get("error") {
                None | Some(Value::Null) => None,
                Some(Value::Object(error)) => {
                    let field = |name: &str| match error.get(name) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(ParseError::new(
                            ack_id,
                            format!("'error.{name}' must be a string"),
                        )),
                    };
                    Some(StreamEndError {
                        message: field("message")?,
                        user_error_code: field("userErrorCode")?,
                    })
                }
                Some(_) => return Err(ParseError::new(ack_id, "'error' must be an object")),
            },
        },
        "setGroupState" => ClientMessage::SetGroupState {
            group: string("group")?,
            ack_id,
            state: match object.get("state") {
                None | Some(Value::Null) => None,
                Some(value) => Some(parse_string_map(value, "state", ack_id)?),
            },
        },
        "subscribeGroupState" => ClientMessage::SubscribeGroupState {
            group: string("group")?,
            ack_id,
        },
        "unsubscribeGroupState" => ClientMessage::UnsubscribeGroupState {
            group: string("group")?,
            ack_id,
        },
        "event" => ClientMessage::Event {
            event: string("event")?,
            ack_id,
            data: data()?,
            metadata: metadata()?,
        },
        "invoke" => {
            let target = object
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or("event");
            if target != "event" {
                let error =
                    ParseError::new(ack_id, format!("invoke target '{target}' is not supported"));
                return Err(match object.get("invocationId").and_then(Value::as_str) {
                    Some(id) => error.on_invocation(id),
                    None => error,
                });
            }
            let invocation_id = string("invocationId")?;
            let about = |e: ParseError| e.on_invocation(&invocation_id);
            ClientMessage::Invoke {
                event: string("event").map_err(about)?,
                data: data().map_err(about)?,
                metadata: metadata().map_err(about)?,
                invocation_id,
            }
        }
        "cancelInvocation" => ClientMessage::CancelInvocation {
            invocation_id: string("invocationId")?,
        },
        "sequenceAck" => ClientMessage::SequenceAck {
            sequence_id: object
                .get("sequenceId")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    ParseError::new(ack_id, "'sequenceAck' needs an integer 'sequenceId'")
                })?,
        },
        "ping" => ClientMessage::Ping,
        other => {
            let mut error = ParseError::new(
                ack_id,
                format!("unknown message type '{}'", truncate(other, 64)),
            );
            error.unknown_type = true;
            return Err(error);
        }
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn stream_id(
    object: &serde_json::Map<String, Value>,
    ack_id: Option<u64>,
) -> Result<String, ParseError> {
    match object.get("streamId") {
        Some(Value::String(id)) => check_stream_id(id)
            .map(|()| id.clone())
            .map_err(|m| ParseError::new(ack_id, m)),
        _ => Err(ParseError::new(ack_id, "'streamId' must be a string")),
    }
}

/// A stream id: 1 to 128 bytes.
pub fn check_stream_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_STREAM_ID {
        return Err(format!(
            "a stream id must be 1 to {MAX_STREAM_ID} bytes long"
        ));
    }
    Ok(())
}

/// A stream's idle timeout: more than 0, at most [`MAX_STREAM_IDLE_MS`].
pub fn check_idle_timeout(ms: Option<u64>) -> Result<u32, String> {
    match ms {
        None => Ok(DEFAULT_STREAM_IDLE_MS),
        Some(ms) if ms > 0 && ms <= u64::from(MAX_STREAM_IDLE_MS) => Ok(ms as u32),
        Some(_) => Err(format!(
            "'idleTimeoutMs' must be more than 0 and at most {MAX_STREAM_IDLE_MS}"
        )),
    }
}

fn parse_stream_start(stream: &Value, ack_id: Option<u64>) -> Result<StreamStart, ParseError> {
    let Value::Object(stream) = stream else {
        return Err(ParseError::new(ack_id, "'stream' must be an object"));
    };
    let idle = match stream.get("idleTimeoutMs") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().unwrap_or(0)),
    };
    let stream_id = stream_id(stream, ack_id)?;
    // A bad start is answered on its stream (`streamClosed`), not by closing the connection.
    let idle_timeout_ms =
        check_idle_timeout(idle).map_err(|m| ParseError::new(ack_id, m).on_stream(&stream_id))?;
    Ok(StreamStart {
        stream_id,
        idle_timeout_ms,
    })
}

/// `ttlSeconds`: 0 (none) to [`MAX_TTL_SECONDS`].
fn parse_ttl(
    object: &serde_json::Map<String, Value>,
    ack_id: Option<u64>,
) -> Result<Option<u32>, ParseError> {
    match object.get("ttlSeconds") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(0) => Ok(None),
            Some(n) if n <= u64::from(MAX_TTL_SECONDS) => Ok(Some(n as u32)),
            _ => Err(ParseError::new(
                ack_id,
                format!("'ttlSeconds' must be an integer from 0 to {MAX_TTL_SECONDS}"),
            )),
        },
    }
}

/// A JSON object of strings, in order.
fn parse_string_map(
    value: &Value,
    what: &str,
    ack_id: Option<u64>,
) -> Result<Metadata, ParseError> {
    let Value::Object(map) = value else {
        return Err(ParseError::new(
            ack_id,
            format!("'{what}' must be an object of strings"),
        ));
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(v) => Ok((k.clone(), v.clone())),
            _ => Err(ParseError::new(
                ack_id,
                format!(
                    "'{what}' values must be strings ('{}' is not)",
                    truncate(k, 64)
                ),
            )),
        })
        .collect()
}

fn parse_metadata(
    object: &serde_json::Map<String, Value>,
    ack_id: Option<u64>,
) -> Result<Metadata, ParseError> {
    match object.get("metadata") {
        None | Some(Value::Null) => Ok(Metadata::new()),
        Some(value) => {
            let metadata = parse_string_map(value, "metadata", ack_id)?;
            check_metadata(&metadata).map_err(|m| ParseError::new(ack_id, m))?;
            Ok(metadata)
        }
    }
}

fn parse_data(
    object: &serde_json::Map<String, Value>,
    ack_id: Option<u64>,
) -> Result<Data, ParseError> {
    let data_type = match object.get("dataType") {
        None | Some(Value::Null) => DataType::Json,
        Some(Value::String(s)) => match s.as_str() {
            "json" => DataType::Json,
            "text" => DataType::Text,
            "binary" => DataType::Binary,
            "protobuf" => DataType::Protobuf,
            other => {
                return Err(ParseError::new(
                    ack_id,
                    format!(
                        "dataType must be json, text, binary or protobuf, not '{}'",
                        truncate(other, 32)
                    ),
                ))
            }
        },
        Some(_) => return Err(ParseError::new(ack_id, "'dataType' must be a string")),
    };
    let value = object.get("data");
    let bytes = match (data_type, value) {
        (DataType::Json, Some(v)) => serde_json::to_vec(v).unwrap_or_default(),
        (DataType::Json, None) => b"null".to_vec(),
        (DataType::Text, Some(Value::String(s))) => s.clone().into_bytes(),
        (DataType::Text, _) => {
            return Err(ParseError::new(
                ack_id,
                "dataType 'text' needs a string 'data'",
            ))
        }
        (DataType::Binary, Some(Value::String(s))) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| ParseError::new(ack_id, "dataType 'binary' needs base64 'data'"))?,
        (DataType::Binary, _) => {
            return Err(ParseError::new(
                ack_id,
                "dataType 'binary' needs a base64 string 'data'",
            ))
        }
        (DataType::Protobuf, Some(Value::String(s))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| ParseError::new(ack_id, "dataType 'protobuf' needs base64 'data'"))?;
            check_protobuf_any(&bytes).map_err(|m| ParseError::new(ack_id, m))?;
            bytes
        }
        (DataType::Protobuf, _) => {
            return Err(ParseError::new(
                ack_id,
                "dataType 'protobuf' needs a base64 string 'data'",
            ))
        }
    };
    Ok(Data { data_type, bytes })
}

/// Protobuf data is an encoded `google.protobuf.Any` (a type URL and its value), so protobuf
/// clients can be given it as `protobuf_data`.
pub fn check_protobuf_any(bytes: &[u8]) -> Result<(), String> {
    use prost::Message as _;
    prost_types::Any::decode(bytes)
        .map(|_| ())
        .map_err(|_| "protobuf data must be an encoded google.protobuf.Any".to_string())
}

/// Who a `message` frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// REST sends and app-server responses: `"from":"server"`.
    Server,
    /// Group messages: `"from":"group"`, with the sender's user id when a client sent it.
    Group {
        group: &'a str,
        from_user_id: Option<&'a str>,
    },
}

/// Where a fragment sits in its group stream, as receivers see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    pub stream_id: String,
    pub stream_sequence_id: u64,
    /// The stream's last message (it may carry no payload).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end_of_stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StreamError>,
}

/// Why a stream ended badly, as receivers see it: `IdleTimeout`, `Forbidden`, `Cancelled`,
/// `InternalServerError`, or `UserError` (the publisher's, with its code).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamError {
    pub name: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_error_code: Option<String>,
}

/// What a `message` frame carries beside its data.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    pub metadata: &'a [(String, String)],
    pub stream: Option<&'a StreamInfo>,
}

fn push_string_map(out: &mut String, map: &[(String, String)]) {
    out.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, key);
        out.push(':');
        push_json_string(out, value);
    }
    out.push('}');
}

fn push_data(out: &mut String, data_type: DataType, data: &[u8]) {
    out.push_str(r#","dataType":""#);
    out.push_str(data_type.as_str());
    out.push_str(r#"","data":"#);
    match data_type {
        DataType::Json => out.push_str(&String::from_utf8_lossy(data)),
        DataType::Text => push_json_string(out, &String::from_utf8_lossy(data)),
        DataType::Binary | DataType::Protobuf => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(data, out);
            out.push('"');
        }
    }
}

/// `streamAck`: the stream's data up to `expected - 1` is taken.
pub fn stream_ack(stream_id: &str, expected: u64) -> String {
    let mut out = String::from(r#"{"type":"streamAck","streamId":"#);
    push_json_string(&mut out, stream_id);
    let _ = write!(out, r#","expectedSequenceId":{expected}}}"#);
    out
}

/// `streamNack`: a fragment was not taken (`InvalidSequenceId`, `TransientError`).
pub fn stream_nack(stream_id: &str, expected: u64, name: &str, message: &str) -> String {
    serde_json::json!({
        "type": "streamNack", "streamId": stream_id, "expectedSequenceId": expected,
        "name": name, "message": message,
    })
    .to_string()
}

/// `streamClosed`: the publisher's stream is over, normally or with an error.
pub fn stream_closed(stream_id: &str, error: Option<(&str, &str)>) -> String {
    let mut value = serde_json::json!({"type": "streamClosed", "streamId": stream_id});
    if let Some((name, message)) = error {
        value["error"] = serde_json::json!({"name": name, "message": message});
    }
    value.to_string()
}

/// One connection's state in a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStateItem {
    pub connection_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `None`: cleared (or the connection left the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Metadata>,
    /// Unix milliseconds of the change.
    pub updated_at: i64,
}

/// `groupStateSnapshot` (`snapshot`) or `groupStateUpdate`.
pub fn group_state(snapshot: bool, group: &str, items: &[GroupStateItem]) -> String {
    let mut out = String::from(if snapshot {
        r#"{"type":"groupStateSnapshot","group":"#
    } else {
        r#"{"type":"groupStateUpdate","group":"#
    });
    push_json_string(&mut out, group);
    out.push_str(r#","items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"connectionId":"#);
        push_json_string(&mut out, &item.connection_id);
        if let Some(user) = &item.user_id {
            out.push_str(r#","userId":"#);
            push_json_string(&mut out, user);
        }
        if let Some(state) = &item.state {
            out.push_str(r#","state":"#);
            push_string_map(&mut out, state);
        }
        let _ = write!(out, r#","updatedAt":{}}}"#, item.updated_at);
    }
    out.push_str("]}");
    out
}

/// Writes a `message` frame without its closing `}`, so the reliable protocol can append
/// `,"sequenceId":N}` to shared bytes. `data` must be valid for its type (UTF-8 for text,
/// JSON text for json).
pub fn write_message_open(
    out: &mut String,
    source: Source<'_>,
    data_type: DataType,
    data: &[u8],
    extras: Extras<'_>,
) {
    out.push_str(r#"{"type":"message","from":"#);
    match source {
        Source::Server => out.push_str(r#""server""#),
        Source::Group {
            group,
            from_user_id,
        } => {
            out.push_str(r#""group","group":"#);
            push_json_string(out, group);
            if let Some(user) = from_user_id {
                out.push_str(r#","fromUserId":"#);
                push_json_string(out, user);
            }
        }
    }
    push_data(out, data_type, data);
    if !extras.metadata.is_empty() {
        out.push_str(r#","metadata":"#);
        push_string_map(out, extras.metadata);
    }
    if let Some(stream) = extras.stream {
        out.push_str(r#","stream":"#);
        out.push_str(&serde_json::to_string(stream).unwrap_or_else(|_| "null".into()));
    }
}

/// Appends the reliable protocol's sequence id and closes the object.
pub fn write_sequence_close(out: &mut String, sequence_id: u64) {
    let _ = write!(out, r#","sequenceId":{sequence_id}}}"#);
}

/// Escapes `value` as a JSON string.
pub fn push_json_string(out: &mut String, value: &str) {
    // serde_json's string escaping cannot fail for a &str.
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into()));
}

pub fn ack_success(ack_id: u64) -> String {
    format!(r#"{{"type":"ack","ackId":{ack_id},"success":true}}"#)
}

/// Ack error names: `Forbidden`, `Duplicate`, `InvocationFailed`, `BadRequest`, `InternalServerError`.
pub fn ack_error(ack_id: u64, name: &str, message: &str) -> String {
    serde_json::json!({
        "type": "ack", "ackId": ack_id, "success": false,
        "error": {"name": name, "message": message}
    })
    .to_string()
}

/// A successful `invokeResponse`, with the app server's reply and its metadata when there is one.
pub fn invoke_success(
    invocation_id: &str,
    reply: Option<(DataType, &[u8])>,
    metadata: &[(String, String)],
) -> String {
    let mut out = String::from(r#"{"type":"invokeResponse","invocationId":"#);
    push_json_string(&mut out, invocation_id);
    out.push_str(r#","success":true"#);
    if let Some((data_type, data)) = reply {
        push_data(&mut out, data_type, data);
    }
    if !metadata.is_empty() {
        out.push_str(r#","metadata":"#);
        push_string_map(&mut out, metadata);
    }
    out.push('}');
    out
}

pub fn invoke_error(invocation_id: &str, name: &str, message: &str) -> String {
    serde_json::json!({
        "type": "invokeResponse", "invocationId": invocation_id, "success": false,
        "error": {"name": name, "message": message}
    })
    .to_string()
}

pub fn connected(
    user_id: Option<&str>,
    connection_id: &str,
    reconnection_token: Option<&str>,
) -> String {
    let mut value = serde_json::json!({
        "type": "system", "event": "connected", "userId": user_id, "connectionId": connection_id,
    });
    if let Some(token) = reconnection_token {
        value["reconnectionToken"] = Value::String(token.to_string());
    }
    value.to_string()
}

pub fn disconnected(message: &str) -> String {
    serde_json::json!({"type": "system", "event": "disconnected", "message": message}).to_string()
}

pub const PONG: &str = r#"{"type":"pong"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_js_and_python_clients_send() {
        assert_eq!(
            parse_client_message(br#"{"type":"joinGroup","group":"g1","ackId":1}"#),
            Ok(ClientMessage::JoinGroup {
                group: "g1".into(),
                ack_id: Some(1)
            })
        );
        assert_eq!(
            parse_client_message(br#"{"type": "sendToGroup", "group": "g1", "ackId": 2, "dataType": "text", "data": "hi", "noEcho": true}"#),
            Ok(ClientMessage::SendToGroup {
                group: "g1".into(),
                ack_id: Some(2),
                no_echo: true,
                data: Data { data_type: DataType::Text, bytes: b"hi".to_vec() },
                metadata: vec![],
                ttl_seconds: None,
            })
        );
        let json = parse_client_message(
            br#"{"type":"sendToGroup","group":"g","data":{"a":[1,true,null]}}"#,
        )
        .unwrap();
        let ClientMessage::SendToGroup { data, no_echo, .. } = json else {
            panic!()
        };
        assert!(!no_echo);
        assert_eq!(
            data,
            Data {
                data_type: DataType::Json,
                bytes: br#"{"a":[1,true,null]}"#.to_vec()
            }
        );
        let binary = parse_client_message(
            br#"{"type":"event","event":"e","dataType":"binary","data":"AQID/w=="}"#,
        )
        .unwrap();
        assert_eq!(
            binary,
            ClientMessage::Event {
                event: "e".into(),
                ack_id: None,
                data: Data {
                    data_type: DataType::Binary,
                    bytes: vec![1, 2, 3, 255]
                },
                metadata: vec![],
            }
        );
        assert_eq!(
            parse_client_message(br#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse_client_message(br#"{"type":"sequenceAck","sequenceId":7}"#),
            Ok(ClientMessage::SequenceAck { sequence_id: 7 })
        );
        assert!(matches!(
            parse_client_message(br#"{"type":"invoke","invocationId":"1","target":"event","event":"x","dataType":"text","data":"p"}"#),
            Ok(ClientMessage::Invoke { .. })
        ));
    }

    #[test]
    fn streams_metadata_ttl_and_group_state_as_the_1_1_client_sends_them() {
        let open = parse_client_message(
            br#"{"type":"sendToGroup","group":"g","noEcho":false,"stream":{"streamId":"s-1","idleTimeoutMs":5000}}"#,
        );
        assert_eq!(
            open,
            Ok(ClientMessage::OpenStream {
                group: "g".into(),
                ack_id: None,
                no_echo: false,
                stream: StreamStart {
                    stream_id: "s-1".into(),
                    idle_timeout_ms: 5000
                },
            })
        );
        let default_idle = parse_client_message(
            br#"{"type":"sendToGroup","group":"g","stream":{"streamId":"s"}}"#,
        );
        assert!(
            matches!(default_idle, Ok(ClientMessage::OpenStream { stream, .. }) if stream.idle_timeout_ms == DEFAULT_STREAM_IDLE_MS)
        );
        let fragment = parse_client_message(
            br#"{"type":"streamData","streamId":"s-1","streamSequenceId":2,"dataType":"binary","data":"AQI="}"#,
        );
        assert_eq!(
            fragment,
            Ok(ClientMessage::StreamData {
                stream_id: "s-1".into(),
                fragment: Some((
                    2,
                    Data {
                        data_type: DataType::Binary,
                        bytes: vec![1, 2]
                    }
                )),
            })
        );
        assert_eq!(
            parse_client_message(br#"{"type":"streamData","streamId":"s-1"}"#),
            Ok(ClientMessage::StreamData {
                stream_id: "s-1".into(),
                fragment: None
            }),
            "a keep-alive"
        );
        let end = parse_client_message(
            br#"{"type":"streamEnd","streamId":"s-1","error":{"message":"m","userErrorCode":"E1"}}"#,
        );
        assert!(
            matches!(end, Ok(ClientMessage::StreamEnd { error: Some(e), .. }) if e.user_error_code.as_deref() == Some("E1"))
        );
        let send = parse_client_message(
            br#"{"type":"sendToGroup","group":"g","dataType":"text","data":"x","ttlSeconds":30,"metadata":{"trace":"t1","Kind":"a"}}"#,
        )
        .unwrap();
        let ClientMessage::SendToGroup {
            metadata,
            ttl_seconds,
            ..
        } = send
        else {
            panic!("{send:?}")
        };
        assert_eq!(ttl_seconds, Some(30));
        assert_eq!(
            metadata,
            vec![("trace".into(), "t1".into()), ("Kind".into(), "a".into())]
        );
        let state = parse_client_message(
            br#"{"type":"setGroupState","group":"g","ackId":3,"state":{"status":"away"}}"#,
        );
        assert_eq!(
            state,
            Ok(ClientMessage::SetGroupState {
                group: "g".into(),
                ack_id: Some(3),
                state: Some(vec![("status".into(), "away".into())])
            })
        );
        assert!(matches!(
            parse_client_message(br#"{"type":"setGroupState","group":"g"}"#),
            Ok(ClientMessage::SetGroupState { state: None, .. })
        ));
        assert!(matches!(
            parse_client_message(br#"{"type":"subscribeGroupState","group":"g","ackId":4}"#),
            Ok(ClientMessage::SubscribeGroupState {
                ack_id: Some(4),
                ..
            })
        ));
    }

    #[test]
    fn bad_streams_metadata_and_ttl_are_refused_with_the_stream_or_ack_id() {
        let refused = |frame: &[u8]| parse_client_message(frame).unwrap_err();
        let e = refused(br#"{"type":"streamData","streamId":"s","streamSequenceId":2}"#);
        assert_eq!(e.stream_id.as_deref(), Some("s"), "{e}");
        let e = refused(br#"{"type":"streamData","streamId":"s","dataType":"text","data":"x"}"#);
        assert_eq!(e.stream_id.as_deref(), Some("s"));
        let e = refused(br#"{"type":"streamData","streamId":"s","streamSequenceId":0,"data":"x"}"#);
        assert!(e.message.contains("positive"), "{e}");
        let e = refused(br#"{"type":"streamData","streamId":""}"#);
        assert!(e.message.contains("stream id"), "{e}");
        let long = format!(r#"{{"type":"streamEnd","streamId":"{}"}}"#, "x".repeat(129));
        assert!(parse_client_message(long.as_bytes()).is_err());
        let e = refused(br#"{"type":"sendToGroup","group":"g","ackId":1,"stream":{"streamId":"s","idleTimeoutMs":0}}"#);
        assert_eq!(e.ack_id, Some(1));
        let e =
            refused(br#"{"type":"sendToGroup","group":"g","stream":{"streamId":"s"},"data":"x"}"#);
        assert!(e.message.contains("carries no 'data'"), "{e}");
        assert_eq!(e.stream_id.as_deref(), Some("s"), "answered on its stream");
        let e = refused(
            br#"{"type":"sendToGroup","group":"g","stream":{"streamId":"s","idleTimeoutMs":-5}}"#,
        );
        assert_eq!(e.stream_id.as_deref(), Some("s"));
        let e =
            refused(br#"{"type":"sendToGroup","group":"g","ackId":2,"data":1,"ttlSeconds":301}"#);
        assert_eq!(e.ack_id, Some(2));
        assert!(e.message.contains("ttlSeconds"));
        let e = refused(
            br#"{"type":"sendToGroup","group":"g","ackId":3,"data":1,"metadata":{"bad key":"v"}}"#,
        );
        assert!(e.message.contains("HTTP token"), "{e}");
        let e = refused(br#"{"type":"event","event":"e","ackId":4,"data":1,"metadata":{"k":1}}"#);
        assert!(e.message.contains("strings"), "{e}");
        let big = format!(
            r#"{{"type":"event","event":"e","ackId":5,"data":1,"metadata":{{"k":"{}"}}}}"#,
            "v".repeat(MAX_METADATA_VALUE + 1)
        );
        assert!(parse_client_message(big.as_bytes()).is_err());
        let e = refused(br#"{"type":"event","event":"e","data":1,"metadata":{"k":"caf\u00e9"}}"#);
        assert!(e.message.contains("ASCII"), "{e}");
        // dataType protobuf: base64 of an encoded google.protobuf.Any.
        let any = br#"{"type":"sendToGroup","group":"g","ackId":7,"dataType":"protobuf","data":"CgN0L3gSAggB"}"#;
        assert!(matches!(
            parse_client_message(any),
            Ok(ClientMessage::SendToGroup { data, .. }) if data.data_type == DataType::Protobuf
        ));
        let e = refused(
            br#"{"type":"sendToGroup","group":"g","ackId":8,"dataType":"protobuf","data":"//8="}"#,
        );
        assert!(e.message.contains("google.protobuf.Any"), "{e}");
        let e = refused(br#"{"type":"setGroupState","group":"g","ackId":6,"state":["a"]}"#);
        assert_eq!(e.ack_id, Some(6));
        assert!(check_metadata(&vec![("a".into(), "1".into()), ("A".into(), "2".into())]).is_err());
    }

    #[test]
    fn stream_and_group_state_frames() {
        let mut out = String::new();
        let info = StreamInfo {
            stream_id: "s".into(),
            stream_sequence_id: 4,
            end_of_stream: true,
            error: Some(StreamError {
                name: "UserError".into(),
                message: "m".into(),
                user_error_code: Some("E".into()),
            }),
        };
        let metadata = vec![("k".to_string(), "v\"".to_string())];
        write_message_open(
            &mut out,
            Source::Group {
                group: "g",
                from_user_id: None,
            },
            DataType::Text,
            b"",
            Extras {
                metadata: &metadata,
                stream: Some(&info),
            },
        );
        out.push('}');
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["metadata"]["k"], "v\"");
        assert_eq!(v["stream"]["streamSequenceId"], 4);
        assert_eq!(v["stream"]["endOfStream"], true);
        assert_eq!(v["stream"]["error"]["userErrorCode"], "E");
        let v: Value = serde_json::from_str(&stream_ack("s", 3)).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["expectedSequenceId"].as_u64()),
            (Some("streamAck"), Some(3))
        );
        let v: Value = serde_json::from_str(&stream_closed("s", None)).unwrap();
        assert!(v.get("error").is_none());
        let items = [GroupStateItem {
            connection_id: "c".into(),
            user_id: None,
            state: None,
            updated_at: 9,
        }];
        let v: Value = serde_json::from_str(&group_state(false, "g", &items)).unwrap();
        assert_eq!(v["type"], "groupStateUpdate");
        assert!(v["items"][0].get("state").is_none() && v["items"][0].get("userId").is_none());
        assert_eq!(v["items"][0]["updatedAt"], 9);
    }

    #[test]
    fn errors_keep_the_ack_id_when_there_is_one() {
        let e = parse_client_message(br#"{"type":"joinGroup","ackId":5}"#).unwrap_err();
        assert_eq!(e.ack_id, Some(5));
        assert!(e.message.contains("group"));
        let e = parse_client_message(
            br#"{"type":"sendToGroup","group":"g","ackId":6,"dataType":"binary","data":"!!"}"#,
        )
        .unwrap_err();
        assert_eq!(e.ack_id, Some(6));
        let e = parse_client_message(br#"{"type":"whatever","ackId":7}"#).unwrap_err();
        assert!(e.unknown_type);
        assert_eq!(e.ack_id, Some(7));
        let e = parse_client_message(b"not json").unwrap_err();
        assert_eq!(e.ack_id, None);
        let e =
            parse_client_message(br#"{"type":"joinGroup","group":"g","ackId":-1}"#).unwrap_err();
        assert!(e.message.contains("ackId"));
        let e = parse_client_message(
            br#"{"type":"sendToGroup","group":"g","ackId":1,"dataType":"text","data":5}"#,
        )
        .unwrap_err();
        assert_eq!(e.ack_id, Some(1));
        assert!(parse_client_message(b"[1]").is_err());
    }

    #[test]
    fn writes_message_frames_once_with_an_open_end_for_sequence_ids() {
        let mut out = String::new();
        write_message_open(
            &mut out,
            Source::Group {
                group: "g\"1",
                from_user_id: Some("u1"),
            },
            DataType::Text,
            b"hi",
            Extras::default(),
        );
        let plain = format!("{out}}}");
        let v: Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(v["from"], "group");
        assert_eq!(v["group"], "g\"1");
        assert_eq!(v["fromUserId"], "u1");
        assert_eq!(v["data"], "hi");
        write_sequence_close(&mut out, 42);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["sequenceId"], 42);
        let mut out = String::new();
        write_message_open(
            &mut out,
            Source::Server,
            DataType::Binary,
            &[0, 255],
            Extras::default(),
        );
        out.push('}');
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["from"].as_str(), v["data"].as_str()),
            (Some("server"), Some("AP8="))
        );
        assert!(v.get("fromUserId").is_none());
        let mut out = String::new();
        write_message_open(
            &mut out,
            Source::Server,
            DataType::Json,
            br#"{"a":1}"#,
            Extras::default(),
        );
        out.push('}');
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["a"], 1);
    }

    #[test]
    fn invoke_responses() {
        let v: Value = serde_json::from_str(&invoke_success(
            "7",
            Some((DataType::Json, br#"{"a":1}"#)),
            &[],
        ))
        .unwrap();
        assert_eq!(
            (
                v["invocationId"].as_str(),
                v["success"].as_bool(),
                v["data"]["a"].as_i64()
            ),
            (Some("7"), Some(true), Some(1))
        );
        let v: Value =
            serde_json::from_str(&invoke_success("8", None, &[("k".into(), "v".into())])).unwrap();
        assert!(v.get("data").is_none());
        assert_eq!(v["metadata"]["k"], "v");
    }

    #[test]
    fn system_frames() {
        let v: Value = serde_json::from_str(&connected(None, "c1", Some("rt"))).unwrap();
        assert_eq!(v["userId"], Value::Null);
        assert_eq!(v["reconnectionToken"], "rt");
        let v: Value = serde_json::from_str(&connected(Some("u"), "c1", None)).unwrap();
        assert!(v.get("reconnectionToken").is_none());
        let v: Value = serde_json::from_str(&ack_error(3, "Forbidden", "no")).unwrap();
        assert_eq!(v["error"]["name"], "Forbidden");
        assert_eq!(v["success"], false);
    }
}
