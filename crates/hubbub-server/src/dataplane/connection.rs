//! One client connection as the hub sees it: identity, protocol, permissions, and the bounded
//! outbox its socket writer drains. No socket here: the `ws` module owns that.

use crate::dataplane::message::Outgoing;
use crate::dataplane::stream::OpenStream;
use crate::protocols::Reply;
pub use crate::protocols::{OutFrame, Protocol};
use axum::extract::ws::{Message, Utf8Bytes};
use hubbub_proto::client_protocol::Metadata;
use hubbub_proto::keys::KeySlot;
use hubbub_proto::roles::Permissions;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Frames waiting for a writer before the client counts as too slow.
pub const MAX_PENDING_FRAMES: usize = 10_000;
/// Bytes waiting for a writer before the client counts as too slow.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;
/// Un-acknowledged messages a reliable connection may have, by default (the service's
/// documented limit).
pub const MAX_UNACKED_MESSAGES: usize = 1000;
/// Un-acknowledged bytes a reliable connection may have, by default.
pub const MAX_UNACKED_BYTES: usize = 16 * 1024 * 1024;

/// What one connection's buffers may hold (configurable), and how often a connection outgrew
/// them. One per node, shared by its connections.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Un-acknowledged messages and bytes of a reliable connection (its recovery buffer).
    pub unacked_messages: usize,
    pub unacked_bytes: usize,
    /// Reliable connections closed because their recovery buffer overflowed.
    pub reliable_buffer_overflows: std::sync::atomic::AtomicU64,
    /// Connections closed because frames waiting for their socket overflowed (`SlowClient`).
    pub outbox_overflows: std::sync::atomic::AtomicU64,
}

impl ConnectionLimits {
    pub fn new(unacked_messages: usize, unacked_bytes: usize) -> Self {
        Self {
            unacked_messages,
            unacked_bytes,
            reliable_buffer_overflows: Default::default(),
            outbox_overflows: Default::default(),
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::new(MAX_UNACKED_MESSAGES, MAX_UNACKED_BYTES)
    }
}

/// The limits of connections made without a node's (tests, tools).
static DEFAULT_LIMITS: std::sync::LazyLock<Arc<ConnectionLimits>> =
    std::sync::LazyLock::new(Arc::default);
/// Client `ackId`s remembered for `Duplicate` answers.
pub const ACK_ID_WINDOW: usize = 1024;

/// Close codes.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL: u16 = 1011;

/// The most a WebSocket close frame's reason may hold: 125 payload bytes less the 2-byte code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// `reason` cut to fit a close frame, on a character boundary (the full reason still goes out in
/// the `disconnected` message and to the app server).
pub fn close_frame_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Why the service closes a connection; the reason travels in `disconnected` messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
    /// Tell JSON clients why before closing.
    pub notify: bool,
    /// Why, as counted (`hubbub_connections_closed_total{reason}`).
    pub cause: CloseCause,
}

/// Why the service ends a connection: a small fixed set, so it can label a metric (the reason
/// text is the caller's and unbounded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseCause {
    /// The REST API closed it.
    #[default]
    RestClose,
    /// The key value that signed its token was revoked.
    KeyRevoked,
    /// It did not read what it was sent fast enough.
    SlowClient,
    /// It went silent.
    PingTimeout,
    /// It went over a limit (message size, events waiting).
    Limit,
    /// It did what it has no permission for.
    Forbidden,
    /// It sent something malformed.
    Error,
    /// Its event handler failed, or there is none for its messages.
    EventHandler,
    /// Another connection took its session (MQTT).
    SessionTakenOver,
    /// Its session moved to another node.
    SessionMoved,
    /// The service shut down.
    Shutdown,
    /// The client asked for it (an MQTT DISCONNECT).
    Client,
}

impl CloseCause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseCause::RestClose => "rest_close",
            CloseCause::KeyRevoked => "key_revoked",
            CloseCause::SlowClient => "slow_client",
            CloseCause::PingTimeout => "ping_timeout",
            CloseCause::Limit => "limit",
            CloseCause::Forbidden => "forbidden",
            CloseCause::Error => "error",
            CloseCause::EventHandler => "event_handler",
            CloseCause::SessionTakenOver => "session_taken_over",
            CloseCause::SessionMoved => "session_moved",
            CloseCause::Shutdown => "shutdown",
            CloseCause::Client => "client",
        }
    }
}

/// A frame of a reliable session's buffer, as it moves between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// A reliable session's buffer as it moves to another cluster node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionBuffer {
    pub next_sequence_id: u64,
    /// The messages not yet acknowledged, in order: sequence id, frame, and the time to
    /// live left (expired ones are left out).
    pub unacked: Vec<(u64, Frame, Option<std::time::Duration>)>,
}

/// Frames waiting for a connection's socket. Most batches hold one frame (at 100 messages a
/// second each message is its own batch), which then sits inline in the outbox, on the cache
/// lines the lock already brought in, instead of in a buffer of its own: one cache miss less per
/// delivery.
pub type Frames = smallvec::SmallVec<[OutFrame; 1]>;

/// What the writer takes in one go.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Frames,
    pub close: Option<CloseRequest>,
}

impl Batch {
    /// The payload bytes of its frames.
    pub fn bytes(&self) -> usize {
        self.frames.iter().map(OutFrame::payload_len).sum()
    }
}

#[derive(Debug, Default)]
struct Outbox {
    /// Frames for the socket.
    pending: Frames,
    /// The frames of `pending` with a time to live: their index there and the instant after
    /// which they are dropped. Empty unless messages have a TTL.
    expiring: Vec<(usize, Instant)>,
    pending_bytes: usize,
    /// Reliable protocol: the next sequence id and the messages not yet acknowledged.
    next_sequence_id: u64,
    unacked: VecDeque<(u64, OutFrame, Option<Instant>)>,
    unacked_bytes: usize,
    /// A socket is serving this connection (reliable sessions can be detached for a while).
    attached: bool,
    /// Which socket serves it: bumped when a recovering socket takes over.
    epoch: u64,
    close: Option<CloseRequest>,
}

impl Outbox {
    /// Drops every frame waiting for the socket (and any buffer they had).
    fn clear_pending(&mut self) {
        self.pending = Frames::new();
        self.expiring = Vec::new();
        self.pending_bytes = 0;
    }

    fn queue(&mut self, frame: OutFrame, expires_at: Option<Instant>) {
        if let Some(at) = expires_at {
            self.expiring.push((self.pending.len(), at));
        }
        self.pending_bytes += frame.payload_len();
        self.pending.push(frame);
    }
}

/// Mutable per-connection state other than the outbox.
#[derive(Debug, Default)]
pub struct ConnectionState {
    pub permissions: Permissions,
    /// `ce-connectionState` as last set by the app server, sent back on every event.
    pub upstream_state: Option<String>,
    /// Successful `ackId`s, kept once the client sends its first one.
    acks: Option<Box<AckWindow>>,
    /// Group streams and group state: most connections never have any, so they are kept behind
    /// one box made with the first (8 bytes until then, against 192).
    extras: Option<Box<Extras>>,
}

/// What a connection that publishes group streams or follows group state keeps.
#[derive(Debug, Default)]
pub struct Extras {
    /// The group streams this connection publishes, by stream id.
    pub streams: HashMap<String, OpenStream>,
    /// This connection's state in groups it set one in: the pairs and when (Unix ms).
    pub group_state: HashMap<String, (Metadata, i64)>,
    /// Groups whose state changes this connection is sent.
    pub state_subscriptions: HashSet<String>,
    /// Groups whose snapshot is being gathered for this connection (one at a time per group).
    pub snapshots_pending: HashSet<String>,
}

#[derive(Debug, Default)]
struct AckWindow {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl ConnectionState {
    /// Streams and group state, made on first use.
    pub fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Streams and group state, if the connection ever had any.
    pub fn extras_mut(&mut self) -> Option<&mut Extras> {
        self.extras.as_deref_mut()
    }

    pub fn extras_ref(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    /// Whether an `ackId` already succeeded.
    pub fn seen(&self, ack_id: u64) -> bool {
        self.acks.as_ref().is_some_and(|w| w.ids.contains(&ack_id))
    }

    /// Records an `ackId`; false when it was seen before (a duplicate).
    pub fn first_time(&mut self, ack_id: u64) -> bool {
        let window = self.acks.get_or_insert_with(Box::default);
        if !window.ids.insert(ack_id) {
            return false;
        }
        window.order.push_back(ack_id);
        if window.order.len() > ACK_ID_WINDOW {
            if let Some(old) = window.order.pop_front() {
                window.ids.remove(&old);
            }
        }
        true
    }
}

pub struct Connection {
    pub id: Arc<str>,
    pub hub: Arc<str>,
    pub user_id: Option<Arc<str>>,
    pub protocol: Protocol,
    state: Mutex<ConnectionState>,
    outbox: Mutex<Outbox>,
    /// Wakes the writer when the outbox goes from empty to not empty, or a close is requested.
    pub wake: Notify,
    limits: Arc<ConnectionLimits>,
    /// The access slot and the version of its value that signed the connection's token (a small
    /// pair, never the key); `None` for anonymous connections.
    pub signed_by: Option<(KeySlot, u64)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("hub", &self.hub)
            .field("user_id", &self.user_id)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(
        id: Arc<str>,
        hub: Arc<str>,
        user_id: Option<Arc<str>>,
        protocol: Protocol,
        permissions: Permissions,
    ) -> Self {
        Self {
            id,
            hub,
            user_id,
            protocol,
            state: Mutex::new(ConnectionState {
                permissions,
                ..Default::default()
            }),
            outbox: Mutex::new(Outbox {
                next_sequence_id: 1,
                attached: true,
                epoch: 1,
                ..Default::default()
            }),
            wake: Notify::new(),
            limits: Arc::clone(&DEFAULT_LIMITS),
            signed_by: None,
        }
    }

    /// This connection, remembering which key value signed its token.
    pub fn signed_by(mut self, signer: Option<(KeySlot, u64)>) -> Self {
        self.signed_by = signer;
        self
    }

    /// This connection with the node's buffer limits (instead of the defaults).
    pub fn with_limits(mut self, limits: &Arc<ConnectionLimits>) -> Self {
        self.limits = Arc::clone(limits);
        self
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // Poisoning needs a panic while holding the lock; the outbox stays consistent anyway.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> MutexGuard<'_, ConnectionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a data message in this connection's format. Never blocks; a client too far behind
    /// is asked to close (`SlowClient`).
    pub fn deliver(&self, message: &Outgoing) {
        if let (Some(items), Some(group)) = (message.group_state(), message.source_group()) {
            let subscribed = self
                .state()
                .extras_ref()
                .is_some_and(|extras| extras.state_subscriptions.contains(&**group));
            if subscribed {
                self.reply(&Reply::GroupState {
                    snapshot: false,
                    group,
                    items,
                });
            }
            return;
        }
        let mut outbox = self.outbox();
        if outbox.close.is_some() {
            return;
        }
        let frame = if !self.protocol.is_reliable() || !self.protocol.tracked(message) {
            let Some(frame) = self.protocol.encode(message, None) else {
                return;
            };
            if !outbox.attached {
                // Not kept for a session's next socket (MQTT QoS 0).
                return;
            }
            OutFrame::Whole(frame)
        } else {
            let sequence_id = outbox.next_sequence_id;
            let Some(frame) = self.protocol.encode_sequenced(message, sequence_id) else {
                return;
            };
            outbox.next_sequence_id += 1;
            outbox.unacked_bytes += frame.payload_len();
            outbox
                .unacked
                .push_back((sequence_id, frame.clone(), message.expires_at));
            if outbox.unacked.len() > self.limits.unacked_messages
                || outbox.unacked_bytes > self.limits.unacked_bytes
            {
                self.limits
                    .reliable_buffer_overflows
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The session cannot be recovered once its buffer overflowed.
                outbox.close = Some(CloseRequest {
                    code: CLOSE_POLICY,
                    reason: "SlowClient".into(),
                    notify: true,
                    cause: CloseCause::SlowClient,
                });
                drop(outbox);
                self.wake.notify_one();
                return;
            }
            if !outbox.attached {
                return;
            }
            frame
        };
        self.push_locked(outbox, frame, message.expires_at);
    }

    /// Queues a message of the service's own (ack, pong, connected...) in this connection's
    /// protocol, for the current socket only; nothing for protocols without such a message.
    pub fn reply(&self, reply: &Reply<'_>) {
        let Some(frame) = self.protocol.reply(reply) else {
            return;
        };
        let outbox = self.outbox();
        if outbox.close.is_some() || !outbox.attached {
            return;
        }
        self.push_locked(outbox, OutFrame::Whole(frame), None);
    }

    /// Queues a frame the protocol made itself (MQTT's CONNACK, SUBACK...) for the current
    /// socket only.
    pub fn push(&self, frame: Message) {
        let outbox = self.outbox();
        if outbox.close.is_some() || !outbox.attached {
            return;
        }
        self.push_locked(outbox, OutFrame::Whole(frame), None);
    }

    fn push_locked(
        &self,
        mut outbox: MutexGuard<'_, Outbox>,
        frame: OutFrame,
        expires_at: Option<Instant>,
    ) {
        let was_empty = outbox.pending.is_empty();
        outbox.queue(frame, expires_at);
        if outbox.pending.len() > MAX_PENDING_FRAMES || outbox.pending_bytes > MAX_PENDING_BYTES {
            self.limits
                .outbox_overflows
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let code = if self.protocol.is_reliable() {
                CLOSE_POLICY
            } else {
                CLOSE_NORMAL
            };
            outbox.close = Some(CloseRequest {
                code,
                reason: "SlowClient".into(),
                notify: true,
                cause: CloseCause::SlowClient,
            });
            outbox.clear_pending();
            drop(outbox);
            self.wake.notify_one();
            return;
        }
        drop(outbox);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Asks the writer to close the socket (after telling JSON clients why, if `notify`).
    pub fn request_close(&self, request: CloseRequest) {
        let mut outbox = self.outbox();
        if outbox.close.is_none() {
            outbox.close = Some(request);
        }
        drop(outbox);
        self.wake.notify_one();
    }

    pub fn close_requested(&self) -> Option<CloseRequest> {
        self.outbox().close.clone()
    }

    /// Everything queued since the last call, for the socket of `epoch`; `None` when another
    /// socket has taken over.
    pub fn take_batch(&self, epoch: u64) -> Option<Batch> {
        let mut outbox = self.outbox();
        if outbox.epoch != epoch {
            return None;
        }
        outbox.pending_bytes = 0;
        let mut frames = std::mem::take(&mut outbox.pending);
        let expiring = std::mem::take(&mut outbox.expiring);
        if !expiring.is_empty() {
            // `expiring` is in queue order: walk it beside the frames.
            let now = Instant::now();
            let mut expiring = expiring.into_iter().peekable();
            let mut index = 0;
            frames.retain(|_| {
                let at = index;
                index += 1;
                expiring
                    .next_if(|(queued, _)| *queued == at)
                    .is_none_or(|(_, deadline)| deadline > now)
            });
        }
        Some(Batch {
            frames,
            close: outbox.close.clone(),
        })
    }

    /// Reliable protocol: the client has everything up to `sequence_id`.
    pub fn acknowledge(&self, sequence_id: u64) {
        let mut outbox = self.outbox();
        while outbox
            .unacked
            .front()
            .is_some_and(|(id, _, _)| *id <= sequence_id)
        {
            if let Some((_, frame, _)) = outbox.unacked.pop_front() {
                outbox.unacked_bytes -= frame.payload_len();
            }
        }
    }

    /// Reliable protocol: the client has the first message still waiting whose sequence id
    /// `matches` (MQTT acknowledges each message by its packet id). False when none did.
    pub fn acknowledge_one(&self, matches: impl Fn(u64) -> bool) -> bool {
        let mut outbox = self.outbox();
        let Some(at) = outbox.unacked.iter().position(|(id, _, _)| matches(*id)) else {
            return false;
        };
        if let Some((_, frame, _)) = outbox.unacked.remove(at) {
            outbox.unacked_bytes -= frame.payload_len();
        }
        true
    }

    /// The socket of `epoch` went away; a reliable session keeps buffering until it is resumed
    /// or expires. False when another socket had already taken over.
    pub fn detach(&self, epoch: u64) -> bool {
        let mut outbox = self.outbox();
        if outbox.epoch != epoch {
            return false;
        }
        outbox.attached = false;
        outbox.clear_pending();
        true
    }

    /// True when the session detached at `epoch` was never resumed.
    pub fn still_detached(&self, epoch: u64) -> bool {
        let outbox = self.outbox();
        outbox.epoch == epoch && !outbox.attached
    }

    /// Bytes of messages not yet acknowledged.
    pub fn unacked_bytes(&self) -> usize {
        self.outbox().unacked_bytes
    }

    /// The session leaves for another node: a socket still attached is superseded (its task
    /// stops without a `disconnected` event, as when a recovering socket takes over here),
    /// nothing more is queued, and the buffer is returned. `None` when the connection is
    /// closing already.
    pub fn hand_over(&self) -> Option<SessionBuffer> {
        let mut outbox = self.outbox();
        if outbox.close.is_some() {
            return None;
        }
        outbox.epoch += 1;
        outbox.attached = false;
        outbox.close = Some(CloseRequest {
            code: CLOSE_POLICY,
            reason: "SessionMoved".into(),
            notify: false,
            cause: CloseCause::SessionMoved,
        });
        outbox.clear_pending();
        outbox.unacked_bytes = 0;
        let now = Instant::now();
        let unacked = std::mem::take(&mut outbox.unacked)
            .into_iter()
            .filter(|(_, _, expires)| expires.is_none_or(|e| e > now))
            .filter_map(|(id, frame, expires)| {
                let frame = match frame.to_message() {
                    Message::Text(text) => Frame::Text(text.to_string()),
                    Message::Binary(bytes) => Frame::Binary(bytes.to_vec()),
                    _ => return None,
                };
                Some((id, frame, expires.map(|e| e.saturating_duration_since(now))))
            })
            .collect();
        let buffer = SessionBuffer {
            next_sequence_id: outbox.next_sequence_id,
            unacked,
        };
        drop(outbox);
        self.wake.notify_waiters();
        self.wake.notify_one();
        Some(buffer)
    }

    /// A session handed over from another node: detached (at epoch 1) until its socket resumes
    /// it, with that node's sequence ids and un-acknowledged messages.
    pub fn restore(&self, buffer: SessionBuffer) {
        let mut outbox = self.outbox();
        let now = Instant::now();
        outbox.attached = false;
        outbox.next_sequence_id = buffer.next_sequence_id.max(1);
        outbox.unacked = buffer
            .unacked
            .into_iter()
            .map(|(id, frame, ttl)| {
                let frame = OutFrame::Whole(match frame {
                    Frame::Text(text) => Message::Text(Utf8Bytes::from(text)),
                    Frame::Binary(bytes) => Message::Binary(bytes.into()),
                });
                (id, frame, ttl.map(|t| now + t))
            })
            .collect();
        outbox.unacked_bytes = outbox.unacked.iter().map(|(_, f, _)| f.payload_len()).sum();
    }

    /// A new socket resumes the session: it first gets `first` (the new `connected` message, or
    /// MQTT's CONNACK), then every message not yet acknowledged, in order. Returns the new
    /// socket's epoch.
    pub fn resume(&self, first: Option<Message>) -> u64 {
        let mut outbox = self.outbox();
        outbox.epoch += 1;
        let epoch = outbox.epoch;
        outbox.attached = true;
        outbox.clear_pending();
        if let Some(frame) = first {
            outbox.queue(OutFrame::Whole(frame), None);
        }
        let resend: Vec<(OutFrame, Option<Instant>)> = outbox
            .unacked
            .iter()
            .map(|(_, frame, expires)| (self.protocol.redeliver(frame), *expires))
            .collect();
        for (frame, expires_at) in resend {
            outbox.queue(frame, expires_at);
        }
        drop(outbox);
        // Wake every waiter: a superseded socket must notice and stop.
        self.wake.notify_waiters();
        self.wake.notify_one();
        epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hubbub_proto::client_protocol::DataType;

    fn connection(protocol: Protocol) -> Connection {
        Connection::new(
            "c1".into(),
            "hub".into(),
            None,
            protocol,
            Permissions::default(),
        )
    }

    #[test]
    fn close_reasons_are_cut_to_fit_a_close_frame_on_a_character_boundary() {
        assert_eq!(close_frame_reason("bye"), "bye");
        let exact = "a".repeat(MAX_CLOSE_REASON_BYTES);
        assert_eq!(close_frame_reason(&exact), exact);
        let long = "é".repeat(200);
        let cut = close_frame_reason(&long);
        assert_eq!(cut.len(), 122, "61 two-byte characters");
        assert!(long.starts_with(cut));
        let mixed = format!("{}é", "a".repeat(122));
        assert_eq!(close_frame_reason(&mixed), "a".repeat(122));
    }

    fn text(frame: &OutFrame) -> String {
        match frame.to_message() {
            Message::Text(t) => t.as_str().to_owned(),
            _ => panic!("not text"),
        }
    }

    #[test]
    fn reliable_sequence_ids_acks_and_resume() {
        let c = connection(Protocol::json_reliable());
        for i in 0..3 {
            c.deliver(&Outgoing::server(
                DataType::Text,
                Bytes::from(format!("m{i}")),
            ));
        }
        let batch = c.take_batch(1).unwrap();
        assert_eq!(batch.frames.len(), 3);
        assert!(text(&batch.frames[2]).ends_with(r#""sequenceId":3}"#));
        c.acknowledge(1);
        assert!(c.detach(1));
        c.deliver(&Outgoing::server(
            DataType::Text,
            Bytes::from_static(b"while away"),
        ));
        assert!(
            c.take_batch(1).unwrap().frames.is_empty(),
            "nothing is written while detached"
        );
        assert!(c.still_detached(1));
        let epoch = c.resume(c.protocol.reply(&Reply::Pong));
        assert_eq!(epoch, 2);
        assert!(c.take_batch(1).is_none(), "the old socket gets nothing");
        assert!(!c.detach(1), "the old socket cannot detach the new one");
        let frames = c.take_batch(2).unwrap().frames;
        let texts: Vec<_> = frames.iter().map(text).collect();
        assert_eq!(texts[0], r#"{"type":"pong"}"#, "the first frame given");
        assert_eq!(texts.len(), 4, "seq 2, 3 and 4 are re-sent: {texts:?}");
        assert!(texts[1].contains(r#""sequenceId":2"#));
        assert!(texts[3].contains("while away"));
    }

    #[test]
    fn a_handed_over_session_resumes_elsewhere_with_its_buffer() {
        let a = connection(Protocol::json_reliable());
        for i in 0..3 {
            a.deliver(&Outgoing::server(
                DataType::Text,
                Bytes::from(format!("m{i}")),
            ));
        }
        let _ = a.take_batch(1);
        a.acknowledge(1);
        let buffer = a.hand_over().expect("handed over");
        assert!(a.take_batch(1).is_none(), "the old socket stops");
        assert!(a.hand_over().is_none(), "only once");
        a.deliver(&Outgoing::server(
            DataType::Text,
            Bytes::from_static(b"late"),
        ));
        assert_eq!(buffer.next_sequence_id, 4);
        assert_eq!(
            buffer.unacked.iter().map(|u| u.0).collect::<Vec<_>>(),
            [2, 3]
        );
        let b = connection(Protocol::json_reliable());
        b.restore(buffer);
        assert!(b.still_detached(1));
        b.deliver(&Outgoing::server(DataType::Text, Bytes::from_static(b"m3")));
        let epoch = b.resume(b.protocol.reply(&Reply::Pong));
        let frames = b.take_batch(epoch).unwrap().frames;
        let texts: Vec<_> = frames.iter().map(text).collect();
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert!(texts[1].contains(r#""sequenceId":2"#) && texts[1].contains("m1"));
        assert!(texts[3].contains(r#""sequenceId":4"#) && texts[3].contains("m3"));
    }

    #[test]
    fn a_reliable_buffer_overflow_closes_with_1008() {
        let c = connection(Protocol::json_reliable());
        for _ in 0..=MAX_UNACKED_MESSAGES {
            c.deliver(&Outgoing::server(DataType::Text, Bytes::from_static(b"x")));
            let _ = c.take_batch(1);
        }
        let close = c.close_requested().expect("closing");
        assert_eq!(
            (close.code, close.reason.as_str()),
            (CLOSE_POLICY, "SlowClient")
        );
    }

    #[test]
    fn a_client_that_does_not_drain_is_closed_as_slow() {
        let c = connection(Protocol::json());
        for _ in 0..=MAX_PENDING_FRAMES {
            c.deliver(&Outgoing::server(DataType::Text, Bytes::from_static(b"x")));
        }
        assert_eq!(c.close_requested().unwrap().reason, "SlowClient");
        assert!(
            c.take_batch(1).unwrap().frames.is_empty(),
            "the backlog is dropped"
        );
    }

    #[test]
    fn expired_messages_are_not_written() {
        let c = connection(Protocol::json());
        let short = Outgoing::server(DataType::Text, Bytes::from_static(b"short"))
            .with_ttl(std::time::Duration::ZERO);
        let long = Outgoing::server(DataType::Text, Bytes::from_static(b"long"))
            .with_ttl(std::time::Duration::from_secs(60));
        c.deliver(&short);
        c.deliver(&long);
        let frames = c.take_batch(1).unwrap().frames;
        assert_eq!(frames.len(), 1);
        assert!(text(&frames[0]).contains("long"));
    }

    #[test]
    fn expired_frames_leave_the_others_in_order() {
        let c = connection(Protocol::json());
        let message = |text: &'static str, ttl: Option<u64>| {
            let m = Outgoing::server(DataType::Text, Bytes::from_static(text.as_bytes()));
            match ttl {
                Some(secs) => m.with_ttl(std::time::Duration::from_secs(secs)),
                None => m,
            }
        };
        c.deliver(&message("a", None));
        c.deliver(&message("b", Some(0)));
        c.deliver(&message("c", Some(60)));
        c.deliver(&message("d", Some(0)));
        c.deliver(&message("e", None));
        let frames = c.take_batch(1).unwrap().frames;
        let data: Vec<_> = frames
            .iter()
            .map(|f| {
                text(f)
                    .split(r#""data":""#)
                    .nth(1)
                    .unwrap()
                    .chars()
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(data, ['a', 'c', 'e']);
        c.deliver(&message("f", None));
        let frames = c.take_batch(1).unwrap().frames;
        assert_eq!(
            frames.len(),
            1,
            "nothing of the last batch's deadlines is left over"
        );
        assert!(text(&frames[0]).contains(r#""data":"f""#));
    }

    #[test]
    fn duplicate_ack_ids_within_the_window() {
        let c = connection(Protocol::json());
        let mut state = c.state();
        assert!(state.first_time(1));
        assert!(!state.first_time(1));
        for id in 2..(ACK_ID_WINDOW as u64 + 2) {
            assert!(state.first_time(id));
        }
        assert!(state.first_time(1), "forgotten after the window");
    }
}
