//! A reliable session taken out of this node whole (user, groups, permissions, upstream state,
//! sequence ids and un-acknowledged messages), so another node can restore it where its client
//! recovers; and restoring one here.

use super::connection::{Connection, Frame, Protocol, SessionBuffer};
use super::hub::{Hub, Hubs};
use super::stream::MovedStream;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hubbub_proto::client_protocol::Metadata;
use hubbub_proto::roles::Permissions;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A reliable session on its way to another node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user_id: Option<String>,
    pub groups: Vec<String>,
    pub permissions: Permissions,
    pub upstream_state: Option<String>,
    pub next_sequence_id: u64,
    pub unacked: Vec<Unacked>,
    /// Which key value signed the session's token (see [`Connection::signed_by`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<(hubbub_proto::keys::KeySlot, u64)>,
    /// The reliable subprotocol (JSON when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Group streams the client had open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<MovedStream>,
    /// The client's state in groups, and when it was set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_state: Vec<(String, Metadata, i64)>,
    /// Groups whose state the client follows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_subscriptions: Vec<String>,
    /// An MQTT session's own state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSession>,
}

/// What an MQTT session keeps besides what every session does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MqttSession {
    pub version: u8,
    pub session_id: String,
    /// Granted QoS by topic.
    pub subscriptions: Vec<(String, u8)>,
    pub session_expiry: u32,
}

/// One message the client has not acknowledged, as it was framed for the client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Unacked {
    pub sequence_id: u64,
    /// The frame's text, or for binary frames its bytes in base64.
    pub frame: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
    /// Time to live left, for messages sent with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl Session {
    fn buffer(&self) -> SessionBuffer {
        SessionBuffer {
            next_sequence_id: self.next_sequence_id,
            unacked: self
                .unacked
                .iter()
                .filter_map(|u| {
                    let frame = if u.binary {
                        Frame::Binary(BASE64.decode(&u.frame).ok()?)
                    } else {
                        Frame::Text(u.frame.clone())
                    };
                    Some((u.sequence_id, frame, u.ttl_ms.map(Duration::from_millis)))
                })
                .collect(),
        }
    }
}

/// What taking a session out of its hub found.
#[derive(Debug)]
pub enum Taken {
    /// No reliable session by that id here (or it is closing).
    Nothing,
    /// It was closing meanwhile: it left the hub, as a close would have it (the app server is to
    /// be told).
    Closed(Arc<Connection>),
    /// Taken out of the hub: no socket or timer of this node serves it any more.
    Session(Box<Session>),
}

/// Takes the reliable session `id` out of `hub`, whether detached or still attached (a socket
/// still attached is superseded: its task stops and drops the socket, with no `disconnected`).
pub fn take(hub: &Hub, id: &str) -> Taken {
    let Some(connection) = hub.connection(id).filter(|c| c.protocol.is_reliable()) else {
        return Taken::Nothing;
    };
    if connection.close_requested().is_some() {
        return Taken::Nothing;
    }
    let Some(groups) = hub.take(&connection) else {
        return Taken::Nothing;
    };
    let Some(buffer) = connection.hand_over() else {
        return Taken::Closed(connection);
    };
    let (permissions, upstream_state, streams, group_state, state_subscriptions) = {
        let mut connection_state = connection.state();
        (
            connection_state.permissions.clone(),
            connection_state.upstream_state.clone(),
            connection_state
                .extras()
                .streams
                .drain()
                .map(|(id, stream)| MovedStream::of(&id, &stream))
                .collect(),
            connection_state
                .extras()
                .group_state
                .drain()
                .map(|(group, (pairs, at))| (group, pairs, at))
                .collect(),
            connection_state
                .extras()
                .state_subscriptions
                .drain()
                .collect(),
        )
    };
    Taken::Session(Box::new(Session {
        signed_by: connection.signed_by,
        user_id: connection.user_id.as_deref().map(str::to_owned),
        groups,
        permissions,
        upstream_state,
        next_sequence_id: buffer.next_sequence_id,
        unacked: buffer
            .unacked
            .into_iter()
            .map(|(sequence_id, frame, ttl)| {
                let (frame, binary) = match frame {
                    Frame::Text(text) => (text, false),
                    Frame::Binary(bytes) => (BASE64.encode(bytes), true),
                };
                Unacked {
                    sequence_id,
                    frame,
                    binary,
                    ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect(),
        protocol: connection.protocol.name().map(str::to_owned),
        streams,
        group_state,
        state_subscriptions,
        mqtt: connection.protocol.as_mqtt().map(|m| MqttSession {
            version: m.version,
            session_id: m.session_id.clone(),
            subscriptions: m.subscriptions(),
            session_expiry: m.session_expiry(),
        }),
    }))
}

/// Recreates a session under its id in hub `hub_name`, detached at epoch 1 until a socket
/// resumes it.
pub fn restore(
    hubs: &Hubs,
    hub_name: &str,
    id: &str,
    session: &Session,
) -> (Arc<Hub>, Arc<Connection>) {
    let hub = hubs.get_or_create(hub_name);
    let protocol = match &session.mqtt {
        Some(moved) => {
            let mqtt = crate::protocols::mqtt::Mqtt::new(
                moved.version,
                moved.session_id.clone(),
                String::new(),
                crate::ws::MAX_CLIENT_MESSAGE_BYTES,
                moved.session_expiry,
            );
            for (group, qos) in &moved.subscriptions {
                mqtt.subscribe(group, hubbub_proto::mqtt::QoS::from(*qos));
            }
            Protocol::mqtt(Arc::new(mqtt))
        }
        None => session
            .protocol
            .as_deref()
            .and_then(crate::protocols::by_name)
            .filter(|p| p.reliable())
            .map_or_else(Protocol::json_reliable, Protocol::new),
    };
    let connection = Arc::new(
        Connection::new(
            id.into(),
            Arc::clone(&hub.name),
            session.user_id.as_deref().map(Into::into),
            protocol,
            session.permissions.clone(),
        )
        .with_limits(hubs.connection_limits())
        .signed_by(session.signed_by),
    );
    {
        let mut connection_state = connection.state();
        connection_state.upstream_state = session.upstream_state.clone();
        connection_state.extras().streams = session
            .streams
            .iter()
            .map(|s| (s.stream_id.clone(), s.open()))
            .collect();
        connection_state.extras().group_state = session
            .group_state
            .iter()
            .map(|(group, pairs, at)| (group.clone(), (pairs.clone(), *at)))
            .collect();
        connection_state.extras().state_subscriptions =
            session.state_subscriptions.iter().cloned().collect();
    }
    connection.restore(session.buffer());
    hub.add_moved(Arc::clone(&connection), &session.groups);
    (hub, connection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubbub_proto::roles::Permission;

    #[test]
    fn a_session_round_trips_through_json() {
        let mut permissions = Permissions::from_roles(["webpubsub.joinLeaveGroups.room.*"]);
        permissions.revoke_permission(Permission::JoinLeaveGroup, Some("room.secret"));
        let session = Session {
            user_id: Some("u".into()),
            groups: vec!["g".into()],
            permissions,
            upstream_state: Some("{\"k\":1}".into()),
            next_sequence_id: 9,
            unacked: vec![
                Unacked {
                    sequence_id: 7,
                    frame: r#"{"type":"message","sequenceId":7}"#.into(),
                    binary: false,
                    ttl_ms: Some(500),
                },
                Unacked {
                    sequence_id: 8,
                    frame: BASE64.encode([8, 0, 255]),
                    binary: true,
                    ttl_ms: None,
                },
            ],
            signed_by: Some((hubbub_proto::keys::KeySlot::Secondary, 3)),
            protocol: Some(hubbub_proto::client_protocol::JSON_RELIABLE_PROTOCOL.into()),
            streams: vec![MovedStream {
                stream_id: "s".into(),
                group: "g".into(),
                next: 4,
                no_echo: false,
                idle_ms: 1000,
            }],
            group_state: vec![("g".into(), vec![("k".into(), "v".into())], 5)],
            state_subscriptions: vec!["g".into()],
            mqtt: Some(MqttSession {
                version: 5,
                session_id: "s1".into(),
                subscriptions: vec![("g".into(), 1)],
                session_expiry: 60,
            }),
        };
        let json = serde_json::to_string(&session).unwrap();
        let back: Session = serde_json::from_str(&json).unwrap();
        assert_eq!(back, session);
        assert!(back
            .permissions
            .allows(Permission::JoinLeaveGroup, "room.a"));
        assert!(!back
            .permissions
            .allows(Permission::JoinLeaveGroup, "room.secret"));
        let buffer = back.buffer();
        assert_eq!(buffer.next_sequence_id, 9);
        assert_eq!(buffer.unacked[0].2, Some(Duration::from_millis(500)));
        assert_eq!(buffer.unacked[1].1, Frame::Binary(vec![8, 0, 255]));
    }

    #[test]
    fn a_taken_session_is_restored_with_its_groups() {
        let hubs = Hubs::default();
        let hub = hubs.get_or_create("chat");
        let connection = Arc::new(Connection::new(
            "n1-1".into(),
            "chat".into(),
            Some("u".into()),
            Protocol::json_reliable(),
            Permissions::default(),
        ));
        hub.add(Arc::clone(&connection), &["g".into()]);
        {
            let mut state = connection.state();
            state
                .extras()
                .group_state
                .insert("g".into(), (vec![("k".into(), "v".into())], 7));
            state.extras().state_subscriptions.insert("g".into());
            state.extras().streams.insert(
                "s".into(),
                crate::dataplane::stream::OpenStream::new("g".into(), true, Duration::from_secs(9)),
            );
        }
        let Taken::Session(session) = take(&hub, "n1-1") else {
            panic!("the session was not taken");
        };
        assert!(hub.connection("n1-1").is_none() && !hub.has_group("g"));
        assert!(matches!(take(&hub, "n1-1"), Taken::Nothing));
        let other = Hubs::default();
        let (hub, restored) = restore(&other, "chat", "n1-1", &session);
        assert!(hub.is_member("n1-1", "g"));
        assert_eq!(restored.user_id.as_deref(), Some("u"));
        let mut state = restored.state();
        assert_eq!(
            state.extras().group_state["g"],
            (vec![("k".into(), "v".into())], 7),
            "state moves"
        );
        assert!(state.extras().state_subscriptions.contains("g"));
        let stream = &state.extras().streams["s"];
        assert_eq!(
            (&*stream.group, stream.next, stream.no_echo),
            ("g", 1, true)
        );
        assert_eq!(stream.idle, Duration::from_secs(9));
        drop(state);
        assert_eq!(hub.group_state("g").len(), 1, "the snapshot sees it there");
    }
}
