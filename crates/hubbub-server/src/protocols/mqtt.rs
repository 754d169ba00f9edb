//! MQTT 3.1.1 and 5.0 clients (`/clients/mqtt/hubs/{hub}`, subprotocol `mqtt`): one instance per
//! connection, since an MQTT session has state of its own: its protocol version, the QoS each
//! subscription was granted, its will, and the bytes of a packet still arriving.
//!
//! Messages go out as PUBLISH packets: a group's on the topic of the group's name, everything
//! else (to the hub, a user, the connection) on `$webpubsub/server/messages`. A message for a
//! subscription granted QoS 1, or not sent to a group, goes at QoS 1: it takes a sequence id like
//! a reliable client's message, its packet id is made from it, and it stays in the session's
//! buffer until the client's PUBACK. The PUBLISH bytes are made once per message, version and
//! QoS; a connection copies them with its packet id.

use super::{ClientProtocol, Inbound, Reply, SHARED};
use crate::dataplane::message::Outgoing;
use axum::extract::ws::Message;
use bytes::Bytes;
use hubbub_proto::mqtt::{self as wire, Framer, QoS, ReasonCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The subprotocol answered with.
pub const NAME: &str = "mqtt";
/// The close reason of a client that sent DISCONNECT (its session may outlive the socket).
pub const CLIENT_DISCONNECTED: &str = "ClientDisconnected";

/// A will: published to its topic when the connection ends without a DISCONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub expiry_secs: Option<u32>,
    pub user_properties: Vec<(String, String)>,
    /// Published at QoS 0.
    pub at_most_once: bool,
}

/// How the client's last socket ended, for the `disconnected` event.
#[derive(Debug, Clone, Default)]
pub struct LastDisconnect {
    /// The client's DISCONNECT: its reason code and user properties.
    pub by_client: Option<(u8, Vec<(String, String)>)>,
    /// The reason code of the service's DISCONNECT.
    pub by_service: Option<u8>,
}

#[derive(Debug, Default)]
struct SessionState {
    /// Granted QoS by group (topic).
    subscriptions: HashMap<String, QoS>,
    will: Option<Will>,
    /// Seconds the session outlives its socket (0: not at all).
    session_expiry: u32,
    last_disconnect: LastDisconnect,
    /// This socket's id (`ce-physicalConnectionId`).
    physical_id: String,
    /// The keep-alive agreed in the CONNECT (seconds; 0: none).
    keep_alive: u16,
}

/// One MQTT connection's protocol.
#[derive(Debug)]
pub struct Mqtt {
    pub version: u8,
    /// `ce-sessionId`: made when the session is.
    pub session_id: String,
    framer: Mutex<Framer>,
    state: Mutex<SessionState>,
    /// Subscriptions granted QoS 1: while there are none, a group message's QoS is known
    /// without taking the lock (the fan-out asks for every message and connection).
    qos1_subscriptions: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The packet id of a message of sequence id `sequence_id`: 1 to 65535, round and round.
pub fn packet_id(sequence_id: u64) -> u16 {
    // Never 0: the remainder is below 65535.
    (sequence_id.saturating_sub(1) % 65535 + 1) as u16
}

impl Mqtt {
    pub fn new(
        version: u8,
        session_id: String,
        physical_id: String,
        max_packet: usize,
        session_expiry: u32,
    ) -> Self {
        Self {
            version,
            session_id,
            framer: Mutex::new(Framer::new(max_packet)),
            state: Mutex::new(SessionState {
                session_expiry,
                physical_id,
                ..Default::default()
            }),
            qos1_subscriptions: AtomicUsize::new(0),
        }
    }

    pub fn is_v5(&self) -> bool {
        self.version == wire::V5
    }

    /// A new socket for the session: its id, and no bytes of the old one's.
    pub fn attach(&self, physical_id: String, session_expiry: u32) {
        lock(&self.framer).clear();
        let mut state = lock(&self.state);
        state.physical_id = physical_id;
        state.session_expiry = session_expiry;
        state.last_disconnect = LastDisconnect::default();
    }

    pub fn set_keep_alive(&self, secs: u16) {
        lock(&self.state).keep_alive = secs;
    }

    pub fn physical_id(&self) -> String {
        lock(&self.state).physical_id.clone()
    }

    pub fn session_expiry(&self) -> u32 {
        lock(&self.state).session_expiry
    }

    pub fn set_session_expiry(&self, secs: u32) {
        lock(&self.state).session_expiry = secs;
    }

    pub fn subscribe(&self, group: &str, qos: QoS) {
        let mut state = lock(&self.state);
        let before = state.subscriptions.insert(group.to_string(), qos);
        self.count_qos1(before, Some(qos));
    }

    /// False when there was no such subscription.
    pub fn unsubscribe(&self, group: &str) -> bool {
        let mut state = lock(&self.state);
        let before = state.subscriptions.remove(group);
        self.count_qos1(before, None);
        before.is_some()
    }

    /// Keeps the count of QoS 1 subscriptions (called under the state lock).
    fn count_qos1(&self, before: Option<QoS>, after: Option<QoS>) {
        let qos1 = |q: Option<QoS>| usize::from(q == Some(QoS::AtLeastOnce));
        self.qos1_subscriptions
            .fetch_add(qos1(after), Ordering::Relaxed);
        self.qos1_subscriptions
            .fetch_sub(qos1(before), Ordering::Relaxed);
    }

    /// The subscriptions, for a session moving to another node.
    pub fn subscriptions(&self) -> Vec<(String, u8)> {
        lock(&self.state)
            .subscriptions
            .iter()
            .map(|(group, qos)| (group.clone(), *qos as u8))
            .collect()
    }

    pub fn set_will(&self, will: Option<Will>) {
        lock(&self.state).will = will;
    }

    /// The will, once: the connection ended without a DISCONNECT.
    pub fn take_will(&self) -> Option<Will> {
        lock(&self.state).will.take()
    }

    pub fn record_disconnect(&self, record: impl FnOnce(&mut LastDisconnect)) {
        record(&mut lock(&self.state).last_disconnect);
    }

    pub fn last_disconnect(&self) -> LastDisconnect {
        lock(&self.state).last_disconnect.clone()
    }

    /// The QoS `message` goes out at: QoS 1 for the service's own topics, else what the
    /// subscription to its group was granted (0 for groups joined otherwise than by SUBSCRIBE),
    /// and never more than it was published at.
    fn qos_for(&self, message: &Outgoing) -> QoS {
        if message.at_most_once {
            return QoS::AtMostOnce;
        }
        match message.source_group() {
            Some(group) if !group.starts_with('$') => {
                if self.qos1_subscriptions.load(Ordering::Relaxed) == 0 {
                    return QoS::AtMostOnce;
                }
                lock(&self.state)
                    .subscriptions
                    .get(&**group)
                    .copied()
                    .unwrap_or(QoS::AtMostOnce)
            }
            _ => QoS::AtLeastOnce,
        }
    }

    /// What closing for `reason` tells an MQTT 5 client.
    fn disconnect_code(reason: &str) -> ReasonCode {
        match reason {
            "SlowClient" => ReasonCode::QuotaExceeded,
            "ServiceReload" => ReasonCode::ServerShuttingDown,
            "PingTimeout" => ReasonCode::KeepAliveTimeout,
            "SessionTakenOver" => ReasonCode::SessionTakenOver,
            _ => ReasonCode::AdministrativeAction,
        }
    }
}

impl ClientProtocol for Mqtt {
    fn name(&self) -> Option<&'static str> {
        Some(NAME)
    }

    fn reliable(&self) -> bool {
        true
    }

    fn tracked(&self, message: &Outgoing) -> bool {
        self.qos_for(message) == QoS::AtLeastOnce
    }

    fn encode(&self, message: &Outgoing, sequence_id: Option<u64>) -> Option<Message> {
        if message.is_bare_stream_end() {
            return None;
        }
        let qos = if sequence_id.is_some() {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let slot = match (self.is_v5(), qos) {
            (false, QoS::AtMostOnce) => SHARED::MQTT_V311,
            (false, _) => SHARED::MQTT_V311_QOS1,
            (true, QoS::AtMostOnce) => SHARED::MQTT_V5,
            (true, _) => SHARED::MQTT_V5_QOS1,
        };
        let version = self.version;
        let frame = message.shared(slot, |m| {
            let topic = m
                .source_group()
                .map_or(wire::SERVER_MESSAGES_TOPIC, |g| &**g);
            let expiry_secs = m.ttl_remaining().map(|ttl| {
                u32::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(u32::MAX)
            });
            Message::Binary(wire::publish(
                version,
                &wire::Outbound {
                    topic,
                    qos,
                    payload: m.data(),
                    data_type: m.data_type(),
                    expiry_secs,
                    user_properties: m.metadata(),
                    correlation_data: None,
                },
            ))
        });
        match (sequence_id, frame) {
            (Some(sequence_id), Message::Binary(bytes)) => Some(Message::Binary(
                wire::with_packet_id(&bytes, packet_id(sequence_id)),
            )),
            (_, frame) => Some(frame),
        }
    }

    fn reply(&self, reply: &Reply<'_>) -> Option<Message> {
        match reply {
            Reply::Pong => Some(Message::Binary(wire::pingresp())),
            Reply::Disconnected { reason } if self.is_v5() && *reason != CLIENT_DISCONNECTED => {
                let code = Self::disconnect_code(reason);
                self.record_disconnect(|d| d.by_service = Some(u8::from(code)));
                Some(Message::Binary(wire::disconnect(code, Some(reason))))
            }
            _ => None,
        }
    }

    fn decode(&self, frame: Bytes, _binary: bool, _group: Option<&Arc<str>>) -> Inbound {
        Inbound::Mqtt(lock(&self.framer).push(&frame, self.version))
    }

    fn redeliver(&self, frame: &Message) -> Message {
        match frame {
            Message::Binary(bytes) => Message::Binary(wire::as_duplicate(bytes)),
            other => other.clone(),
        }
    }

    /// However the socket ended (dropped, closed, or after a DISCONNECT), unless the service
    /// ended the session.
    fn keep_session(
        &self,
        _dropped: bool,
        close_reason: Option<&str>,
        grace: Duration,
    ) -> Option<Duration> {
        let expiry = self.session_expiry();
        let ended_by_service = close_reason.is_some_and(|r| r != CLIENT_DISCONNECTED);
        (expiry > 0 && !ended_by_service).then(|| grace.min(Duration::from_secs(u64::from(expiry))))
    }

    /// How the last socket ended: `{initiatedByClient, disconnectPacket}`.
    fn disconnected_fields(&self) -> Option<(&'static str, serde_json::Value)> {
        let last = self.last_disconnect();
        let packet = match (&last.by_client, last.by_service) {
            (Some((code, properties)), _) => serde_json::json!({
                "code": code,
                "userProperties": properties
                    .iter()
                    .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
                    .collect::<Vec<_>>(),
            }),
            (None, Some(code)) => serde_json::json!({ "code": code, "userProperties": null }),
            (None, None) => serde_json::Value::Null,
        };
        Some((
            "mqtt",
            serde_json::json!({
                "initiatedByClient": last.by_client.is_some(),
                "disconnectPacket": packet,
            }),
        ))
    }

    fn closed_for_client(&self, close: &crate::dataplane::connection::CloseRequest) -> bool {
        close.reason == CLIENT_DISCONNECTED
    }

    /// MQTT user properties travel to and from the app server as `mqtt-<name>` headers.
    fn metadata_header(&self) -> &'static str {
        "mqtt-"
    }

    fn silence_limit(&self, limit: Duration) -> Duration {
        // MQTT: a client silent for one and a half keep-alives is gone; never sooner than the
        // WebSocket rule (the client answers pings in between).
        let keep_alive = Duration::from_millis(u64::from(lock(&self.state).keep_alive) * 1500);
        limit.max(keep_alive)
    }

    fn event_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ce-physicalConnectionId", self.physical_id()),
            ("ce-sessionId", self.session_id.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubbub_proto::client_protocol::DataType;

    fn mqtt(version: u8) -> Mqtt {
        Mqtt::new(version, "s1".into(), "p1".into(), 1024, 0)
    }

    fn bytes(m: Option<Message>) -> Bytes {
        match m {
            Some(Message::Binary(b)) => b,
            other => panic!("a binary frame, not {other:?}"),
        }
    }

    #[test]
    fn packet_ids_cycle_through_1_to_65535() {
        assert_eq!(packet_id(1), 1);
        assert_eq!(packet_id(65535), 65535);
        assert_eq!(packet_id(65536), 1);
        assert_eq!(packet_id(0), 1);
    }

    #[test]
    fn group_messages_go_at_the_granted_qos_and_server_messages_at_qos_1() {
        let m = mqtt(wire::V311);
        let group = Outgoing::group("g".into(), None, DataType::Text, Bytes::from_static(b"hi"));
        assert!(!m.tracked(&group), "no subscription: QoS 0");
        m.subscribe("g", QoS::AtLeastOnce);
        assert!(m.tracked(&group));
        m.subscribe("g", QoS::AtMostOnce);
        assert!(!m.tracked(&group), "subscribed again at QoS 0");
        m.subscribe("other", QoS::AtLeastOnce);
        assert!(
            !m.tracked(&group),
            "another topic's QoS 1 changes nothing for this one"
        );
        m.subscribe("g", QoS::AtLeastOnce);
        assert!(m.unsubscribe("other") && m.tracked(&group));
        assert!(m.unsubscribe("g") && !m.tracked(&group));
        assert!(!m.unsubscribe("g"));
        m.subscribe("g", QoS::AtLeastOnce);
        let server = Outgoing::server(DataType::Text, Bytes::from_static(b"hi"));
        assert!(m.tracked(&server));
        let frame = bytes(m.encode(&server, Some(70_000)));
        assert_eq!(frame[0], 0x32, "PUBLISH, QoS 1");
        assert_eq!(wire::packet_id_of(&frame), Some(packet_id(70_000)));
        let topic_len = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
        assert_eq!(
            &frame[4..4 + topic_len],
            wire::SERVER_MESSAGES_TOPIC.as_bytes()
        );
        assert!(frame.ends_with(b"hi"));
        let at_most_once = bytes(m.encode(&group, None));
        assert_eq!(at_most_once[0], 0x30, "PUBLISH, QoS 0");
    }

    #[test]
    fn resent_messages_are_marked_dup_and_v5_clients_are_told_why_they_are_closed() {
        let m = mqtt(wire::V5);
        let server = Outgoing::server(DataType::Json, Bytes::from_static(b"{}"));
        let Message::Binary(again) =
            m.redeliver(&Message::Binary(bytes(m.encode(&server, Some(3)))))
        else {
            panic!("binary")
        };
        assert_eq!(again[0], 0x3a, "PUBLISH, DUP, QoS 1");
        let disconnect = bytes(m.reply(&Reply::Disconnected {
            reason: "SlowClient",
        }));
        assert_eq!(disconnect[0], 0xe0);
        assert_eq!(disconnect[2], u8::from(ReasonCode::QuotaExceeded));
        assert_eq!(m.last_disconnect().by_service, Some(0x97));
        assert!(mqtt(wire::V311)
            .reply(&Reply::Disconnected {
                reason: "SlowClient"
            })
            .is_none());
        assert!(m
            .reply(&Reply::Ack {
                ack_id: 1,
                error: None
            })
            .is_none());
    }

    #[test]
    fn sessions_outlive_their_socket_for_their_expiry_at_most_the_grace() {
        let m = mqtt(wire::V5);
        let grace = Duration::from_secs(60);
        assert_eq!(m.keep_session(true, None, grace), None, "expiry 0");
        m.set_session_expiry(10);
        assert_eq!(
            m.keep_session(true, None, grace),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            m.keep_session(false, Some(CLIENT_DISCONNECTED), grace),
            Some(Duration::from_secs(10))
        );
        assert_eq!(m.keep_session(true, Some("SlowClient"), grace), None);
        m.set_session_expiry(u32::MAX);
        assert_eq!(m.keep_session(true, None, grace), Some(grace));
    }
}
