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
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Text => "text",
            DataType::Json => "json",
            DataType::Binary => "binary",
        }
    }
}

/// A message body: text (UTF-8), JSON text, or raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub data_type: DataType,
    pub bytes: Vec<u8>,
}

/// A request from a JSON-subprotocol client.
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
    },
    Event {
        event: String,
        ack_id: Option<u64>,
        data: Data,
    },
    Invoke {
        invocation_id: String,
        event: String,
        data: Data,
    },
    CancelInvocation {
        invocation_id: String,
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
}

impl ParseError {
    fn new(ack_id: Option<u64>, message: impl Into<String>) -> Self {
        Self {
            ack_id,
            message: message.into(),
            unknown_type: false,
        }
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
            ClientMessage::SendToGroup {
                group: string("group")?,
                ack_id,
                no_echo,
                data: data()?,
            }
        }
        "event" => ClientMessage::Event {
            event: string("event")?,
            ack_id,
            data: data()?,
        },
        "invoke" => {
            let target = object
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or("event");
            if target != "event" {
                return Err(ParseError::new(
                    ack_id,
                    format!("invoke target '{target}' is not supported"),
                ));
            }
            ClientMessage::Invoke {
                invocation_id: string("invocationId")?,
                event: string("event")?,
                data: data()?,
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
            "protobuf" => {
                return Err(ParseError::new(
                    ack_id,
                    "dataType 'protobuf' needs a protobuf subprotocol",
                ))
            }
            other => {
                return Err(ParseError::new(
                    ack_id,
                    format!(
                        "dataType must be json, text or binary, not '{}'",
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
    };
    Ok(Data { data_type, bytes })
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

/// Writes a `message` frame without its closing `}`, so the reliable protocol can append
/// `,"sequenceId":N}` to shared bytes. `data` must be valid for its type (UTF-8 for text,
/// JSON text for json).
pub fn write_message_open(out: &mut String, source: Source<'_>, data_type: DataType, data: &[u8]) {
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
    out.push_str(r#","dataType":""#);
    out.push_str(data_type.as_str());
    out.push_str(r#"","data":"#);
    match data_type {
        DataType::Json => out.push_str(&String::from_utf8_lossy(data)),
        DataType::Text => push_json_string(out, &String::from_utf8_lossy(data)),
        DataType::Binary => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(data, out);
            out.push('"');
        }
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

/// A successful `invokeResponse`, with the app server's reply when there is one.
pub fn invoke_success(invocation_id: &str, reply: Option<(DataType, &[u8])>) -> String {
    let mut out = String::from(r#"{"type":"invokeResponse","invocationId":"#);
    push_json_string(&mut out, invocation_id);
    out.push_str(r#","success":true"#);
    if let Some((data_type, data)) = reply {
        out.push_str(r#","dataType":""#);
        out.push_str(data_type.as_str());
        out.push_str(r#"","data":"#);
        match data_type {
            DataType::Json => out.push_str(&String::from_utf8_lossy(data)),
            DataType::Text => push_json_string(&mut out, &String::from_utf8_lossy(data)),
            DataType::Binary => {
                out.push('"');
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut out);
                out.push('"');
            }
        }
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
        write_message_open(&mut out, Source::Server, DataType::Binary, &[0, 255]);
        out.push('}');
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["from"].as_str(), v["data"].as_str()),
            (Some("server"), Some("AP8="))
        );
        assert!(v.get("fromUserId").is_none());
        let mut out = String::new();
        write_message_open(&mut out, Source::Server, DataType::Json, br#"{"a":1}"#);
        out.push('}');
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["a"], 1);
    }

    #[test]
    fn invoke_responses() {
        let v: Value =
            serde_json::from_str(&invoke_success("7", Some((DataType::Json, br#"{"a":1}"#))))
                .unwrap();
        assert_eq!(
            (
                v["invocationId"].as_str(),
                v["success"].as_bool(),
                v["data"]["a"].as_i64()
            ),
            (Some("7"), Some(true), Some(1))
        );
        let v: Value = serde_json::from_str(&invoke_success("8", None)).unwrap();
        assert!(v.get("data").is_none());
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
