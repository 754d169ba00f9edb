//! One outgoing message, encoded at most once per wire format: the client protocols keep the
//! encodings every connection of a format shares in the message's slots ([`Outgoing::shared`]).

use axum::extract::ws::Message;
use bytes::Bytes;
use hubbub_proto::client_protocol::{DataType, GroupStateItem, Metadata, StreamInfo};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Encodings of one message that client protocols share across connections, at most this many.
pub const SHARED_FRAMES: usize = 8;

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
    /// Published at most once (MQTT QoS 0): MQTT subscribers get it at QoS 0 whatever their
    /// subscription was granted.
    pub at_most_once: bool,
    /// Metadata carried beside the data (`X-WebPubSub-Metadata-*`, a client's `metadata`).
    metadata: Option<Arc<Metadata>>,
    /// Where this message sits in a group stream.
    stream: Option<StreamInfo>,
    /// Not data: a change of the group's state, for the members that follow it.
    group_state: Option<Arc<Vec<GroupStateItem>>>,
    /// Frames made once and shared by every connection of a format, by the slot its protocol
    /// names.
    shared: [OnceLock<Message>; SHARED_FRAMES],
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
            at_most_once: false,
            metadata: None,
            stream: None,
            group_state: None,
            shared: Default::default(),
        }
    }

    /// A change of `group`'s state (`groupStateUpdate`), for its members that follow it.
    pub fn group_state_update(group: Arc<str>, items: Vec<GroupStateItem>) -> Self {
        let mut message = Self::new(Some(group), None, DataType::Json, Bytes::new());
        message.group_state = Some(Arc::new(items));
        message
    }

    pub fn group_state(&self) -> Option<&[GroupStateItem]> {
        self.group_state.as_deref().map(Vec::as_slice)
    }

    /// Carries `metadata` to the receivers (nothing when it is empty).
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = (!metadata.is_empty()).then(|| Arc::new(metadata));
        self
    }

    /// A fragment (or the end) of a group stream.
    pub fn in_stream(mut self, stream: StreamInfo) -> Self {
        self.stream = Some(stream);
        self
    }

    pub fn metadata(&self) -> &[(String, String)] {
        self.metadata.as_deref().map_or(&[], |m| m.as_slice())
    }

    pub fn stream(&self) -> Option<&StreamInfo> {
        self.stream.as_ref()
    }

    /// The end of a stream with nothing in it for receivers that see payloads only.
    pub fn is_bare_stream_end(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.end_of_stream) && self.data.is_empty()
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

    /// The frame in `slot`, made by `make` the first time any connection asks for it.
    pub fn shared(&self, slot: usize, make: impl FnOnce(&Self) -> Message) -> Message {
        self.shared[slot].get_or_init(|| make(self)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_frame_is_made_once() {
        let m = Outgoing::server(DataType::Text, Bytes::from_static(b"hi"));
        let made = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let frame = m.shared(1, |m| {
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Message::Binary(m.data().clone())
            });
            assert!(matches!(frame, Message::Binary(d) if d.as_ref() == b"hi"));
        }
        assert_eq!(made.into_inner(), 1);
    }
}
