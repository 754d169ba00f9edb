//! One outgoing message, encoded at most once per wire format (simple frame, JSON frame, and the
//! JSON frame's open prefix that reliable connections complete with their sequence id).

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use hubbub_proto::client_protocol::{write_message_open, DataType, Source};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// A message on its way to many connections. Shared by reference during fan-out.
#[derive(Debug)]
pub struct Outgoing {
    group: Option<Arc<str>>,
    from_user_id: Option<Arc<str>>,
    /// The sending connection when a client published it (for `noEcho`).
    pub sender: Option<Arc<str>>,
    pub no_echo: bool,
    data_type: DataType,
    /// Valid UTF-8 for text and JSON, checked when the message was made.
    data: Bytes,
    /// `messageTtlSeconds`: not delivered after this instant.
    pub expires_at: Option<Instant>,
    simple: OnceLock<Message>,
    json: OnceLock<Message>,
    json_open: OnceLock<Arc<str>>,
}

impl Outgoing {
    /// A message from the app server (`"from":"server"`). `data` must be UTF-8 unless binary.
    pub fn server(data_type: DataType, data: Bytes) -> Self {
        Self::new(None, None, data_type, data)
    }

    /// A group message (`"from":"group"`), from a client when `from_user_id`/`sender` are set.
    pub fn group(
        group: Arc<str>,
        from_user_id: Option<Arc<str>>,
        data_type: DataType,
        data: Bytes,
    ) -> Self {
        Self::new(Some(group), from_user_id, data_type, data)
    }

    fn new(
        group: Option<Arc<str>>,
        from_user_id: Option<Arc<str>>,
        data_type: DataType,
        data: Bytes,
    ) -> Self {
        Self {
            group,
            from_user_id,
            sender: None,
            no_echo: false,
            data_type,
            data,
            expires_at: None,
            simple: OnceLock::new(),
            json: OnceLock::new(),
            json_open: OnceLock::new(),
        }
    }

    pub fn with_sender(mut self, sender: Arc<str>, no_echo: bool) -> Self {
        self.sender = Some(sender);
        self.no_echo = no_echo;
        self
    }

    /// Drops the message for any connection that has not taken it within `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.expires_at = Some(Instant::now() + ttl);
        self
    }

    /// A server message sent to a group arrives as a group message (`"from":"group"`).
    pub fn into_group(mut self, group: Arc<str>) -> Self {
        self.group = Some(group);
        self
    }

    /// The group a group message comes from.
    pub fn source_group(&self) -> Option<&Arc<str>> {
        self.group.as_ref()
    }

    /// The user who sent a client's group message.
    pub fn from_user_id(&self) -> Option<&Arc<str>> {
        self.from_user_id.as_ref()
    }

    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// The payload as received (not yet encoded for any wire format).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// How long the message may still be delivered, when it has a TTL.
    pub fn ttl_remaining(&self) -> Option<Duration> {
        self.expires_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The frame a simple (no subprotocol) client gets: text for text and JSON, binary for binary.
    pub fn simple_frame(&self) -> Message {
        self.simple
            .get_or_init(|| match self.data_type {
                DataType::Binary => Message::Binary(self.data.clone()),
                DataType::Text | DataType::Json => match Utf8Bytes::try_from(self.data.clone()) {
                    Ok(text) => Message::Text(text),
                    // Not reachable: text and JSON data are checked to be UTF-8 when made.
                    Err(_) => Message::Binary(self.data.clone()),
                },
            })
            .clone()
    }

    fn open(&self) -> &Arc<str> {
        self.json_open.get_or_init(|| {
            let mut out = String::with_capacity(self.data.len() * 4 / 3 + 96);
            let source = match &self.group {
                Some(group) => Source::Group {
                    group,
                    from_user_id: self.from_user_id.as_deref(),
                },
                None => Source::Server,
            };
            write_message_open(&mut out, source, self.data_type, &self.data);
            out.into()
        })
    }

    /// The `json.webpubsub.azure.v1` frame, shared by every such connection.
    pub fn json_frame(&self) -> Message {
        self.json
            .get_or_init(|| {
                let open = self.open();
                let mut text = String::with_capacity(open.len() + 1);
                text.push_str(open);
                text.push('}');
                Message::Text(text.into())
            })
            .clone()
    }

    /// The `json.reliable.webpubsub.azure.v1` frame: the shared prefix plus this sequence id.
    pub fn reliable_frame(&self, sequence_id: u64) -> Message {
        let open = self.open();
        let mut text = String::with_capacity(open.len() + 24);
        text.push_str(open);
        hubbub_proto::client_protocol::write_sequence_close(&mut text, sequence_id);
        Message::Text(text.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_per_format() {
        let m = Outgoing::group(
            "g".into(),
            Some("u".into()),
            DataType::Text,
            Bytes::from_static(b"hi"),
        );
        let Message::Text(json) = m.json_frame() else {
            panic!()
        };
        assert_eq!(
            json.as_str(),
            r#"{"type":"message","from":"group","group":"g","fromUserId":"u","dataType":"text","data":"hi"}"#
        );
        let Message::Text(reliable) = m.reliable_frame(9) else {
            panic!()
        };
        assert!(reliable
            .as_str()
            .ends_with(r#""data":"hi","sequenceId":9}"#));
        let Message::Text(simple) = m.simple_frame() else {
            panic!()
        };
        assert_eq!(simple.as_str(), "hi");
        let b = Outgoing::server(DataType::Binary, Bytes::from_static(&[1, 2]));
        assert!(matches!(b.simple_frame(), Message::Binary(d) if d.as_ref() == [1, 2]));
        let j = Outgoing::server(DataType::Json, Bytes::from_static(br#""Hello""#));
        let Message::Text(simple) = j.simple_frame() else {
            panic!()
        };
        assert_eq!(
            simple.as_str(),
            r#""Hello""#,
            "JSON strings keep their quotes for simple clients"
        );
    }
}
