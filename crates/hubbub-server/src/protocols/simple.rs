//! Clients without a subprotocol: every frame they send is a `message` event for the app server,
//! or, with `webpubsub_mode=sendToGroup&group=<g>`, a message to that group; they receive the
//! payloads of their messages as they are (text frames for text and JSON, binary for binary),
//! the same for every such connection, so made once per message. The service has no messages of
//! its own for them.

use super::{ClientProtocol, Inbound, Protocol, Reply, SHARED};
use crate::dataplane::message::Outgoing;
use crate::dataplane::names::validate_group;
use crate::error::ApiError;
use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use hubbub_proto::client_protocol::DataType;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Simple;

/// The mode from the query: `sendEvent` (the default) or `sendToGroup` with its group.
pub(super) fn negotiate(params: &HashMap<String, String>) -> Result<Protocol, ApiError> {
    match params.get("webpubsub_mode").map(String::as_str) {
        None | Some("sendEvent") => Ok(Protocol::simple(None)),
        Some("sendToGroup") => {
            let group = params.get("group").ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidGroupName",
                    "webpubsub_mode=sendToGroup needs a 'group' parameter",
                )
            })?;
            validate_group(group)?;
            Ok(Protocol::simple(Some(group.as_str().into())))
        }
        Some(other) => Err(ApiError::bad_request(
            "InvalidMode",
            format!(
                "webpubsub_mode must be sendEvent or sendToGroup, not '{}'",
                other.chars().take(32).collect::<String>()
            ),
        )),
    }
}

impl ClientProtocol for Simple {
    fn name(&self) -> Option<&'static str> {
        None
    }

    fn encode(&self, message: &Outgoing, _sequence_id: Option<u64>) -> Option<Message> {
        if message.is_bare_stream_end() {
            return None;
        }
        Some(message.shared(SHARED::SIMPLE, |m| {
            let data = m.data().clone();
            match m.data_type() {
                DataType::Binary | DataType::Protobuf => Message::Binary(data),
                DataType::Text | DataType::Json => match Utf8Bytes::try_from(data.clone()) {
                    Ok(text) => Message::Text(text),
                    // Not reachable: text and JSON data are checked to be UTF-8 when made.
                    Err(_) => Message::Binary(data),
                },
            }
        }))
    }

    fn reply(&self, _reply: &Reply<'_>) -> Option<Message> {
        None
    }

    fn decode(&self, data: Bytes, binary: bool, group: Option<&Arc<str>>) -> Inbound {
        let data_type = if binary {
            DataType::Binary
        } else {
            DataType::Text
        };
        match group {
            Some(group) => Inbound::ToGroup {
                group: Arc::clone(group),
                data_type,
                data,
            },
            None => Inbound::Event { data_type, data },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_go_out_as_they_are() {
        let text = Outgoing::server(DataType::Text, Bytes::from_static(b"hi"));
        assert!(matches!(Simple.encode(&text, None), Some(Message::Text(t)) if t.as_str() == "hi"));
        let binary = Outgoing::server(DataType::Binary, Bytes::from_static(&[1, 2]));
        assert!(
            matches!(Simple.encode(&binary, None), Some(Message::Binary(d)) if d.as_ref() == [1, 2])
        );
        let json = Outgoing::server(DataType::Json, Bytes::from_static(br#""Hello""#));
        assert!(
            matches!(Simple.encode(&json, None), Some(Message::Text(t)) if t.as_str() == r#""Hello""#),
            "JSON strings keep their quotes for simple clients"
        );
        assert!(Simple.reply(&super::super::Reply::Pong).is_none());
    }

    #[test]
    fn frames_are_events_or_go_to_the_connections_group() {
        let event = Simple.decode(Bytes::from_static(b"x"), true, None);
        assert!(matches!(
            event,
            Inbound::Event {
                data_type: DataType::Binary,
                ..
            }
        ));
        let group: Arc<str> = "g".into();
        let to_group = Simple.decode(Bytes::from_static(b"x"), false, Some(&group));
        assert!(matches!(to_group, Inbound::ToGroup { group, .. } if &*group == "g"));
        let mut params = HashMap::new();
        params.insert("webpubsub_mode".to_string(), "sendToGroup".to_string());
        assert!(negotiate(&params).is_err(), "needs a group");
        params.insert("group".to_string(), "g".to_string());
        assert_eq!(negotiate(&params).unwrap().name(), None);
        params.insert("webpubsub_mode".to_string(), "other".to_string());
        assert!(negotiate(&params).is_err());
    }
}
