//! Reliable sessions moving between nodes. A client of `json.reliable.webpubsub.azure.v1` whose
//! recovery reconnect lands on a node that does not hold its session asks, over NATS, the node
//! that does (the node named in the connection id, or where that node says the session went).
//! That node gives the session up only if it still holds it: it removes it from its hub without
//! a `disconnected` event (a socket still attached to it is superseded, as when a recovering
//! socket takes over on the same node), and answers with the user, groups, permissions, upstream
//! state, next sequence id and the messages not yet acknowledged. The recovering node recreates
//! the connection under the same id, joins its groups, waits for their subscriptions, and
//! resumes it.
//!
//! Sends to one connection and questions about it go to the node named in its id. A node that
//! gave a session away keeps a forward entry (id → node it went to) and passes such messages
//! and questions on; the entry goes when the session ends (the node that ends it tells the node
//! named in the id) or when that node restarts.

use super::ask::{Answer, Ask, Question, ASK_TIMEOUT};
use super::bus::{self, Kind};
use super::Cluster;
use crate::dataplane::connection::{Connection, Protocol, SessionBuffer};
use crate::dataplane::hub::Hub;
use crate::state::AppState;
use hubbub_proto::roles::Permissions;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
}

/// One message the client has not acknowledged, as it was framed for the client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Unacked {
    pub sequence_id: u64,
    pub frame: String,
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
                .map(|u| {
                    (
                        u.sequence_id,
                        u.frame.clone(),
                        u.ttl_ms.map(Duration::from_millis),
                    )
                })
                .collect(),
        }
    }
}

/// Where sessions that left this node went: connection id → node id.
#[derive(Debug, Default)]
pub struct Moved(Mutex<HashMap<String, String>>);

impl Moved {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<String> {
        self.map().get(id).cloned()
    }

    pub fn set(&self, id: &str, node: &str) {
        self.map().insert(id.to_string(), node.to_string());
    }

    pub fn forget(&self, id: &str) {
        self.map().remove(id);
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// On the node holding a session: gives it up to node `to` (answering a handover question).
/// Not `ok` when this node has no such reliable session, or it would not fit in one NATS message
/// (then it stays here).
pub fn give(state: &AppState, hub: &Arc<Hub>, id: &str, to: &str) -> Answer {
    let Some(cluster) = &state.cluster else {
        return Answer::default();
    };
    let Some(connection) = hub.connection(id).filter(|c| c.protocol.is_reliable()) else {
        return Answer::default();
    };
    if connection.close_requested().is_some() {
        return Answer::default();
    }
    let Some(groups) = hub.take(&connection) else {
        return Answer::default();
    };
    let Some(buffer) = connection.hand_over() else {
        // Closing meanwhile: it is gone, as a close would have it.
        crate::ws::departed(state, &connection, "SessionMoved");
        return Answer::default();
    };
    let (permissions, upstream_state) = {
        let connection_state = connection.state();
        (
            connection_state.permissions.clone(),
            connection_state.upstream_state.clone(),
        )
    };
    let session = Session {
        user_id: connection.user_id.as_deref().map(str::to_owned),
        groups,
        permissions,
        upstream_state,
        next_sequence_id: buffer.next_sequence_id,
        unacked: buffer
            .unacked
            .into_iter()
            .map(|(sequence_id, frame, ttl)| Unacked {
                sequence_id,
                frame,
                ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect(),
    };
    let size = serde_json::to_vec(&session).map_or(usize::MAX, |v| v.len());
    if size + 4096 > cluster.bus.max_payload() {
        tracing::warn!(
            connection_id = %id,
            bytes = size,
            "a reliable session is too large for one NATS message; it stays on this node"
        );
        adopt(state, &hub.name, id, session);
        return Answer::default();
    }
    cluster.bus.moved().set(id, to);
    tracing::debug!(connection_id = %id, to, "reliable session handed over");
    Answer {
        ok: true,
        session: Some(Box::new(session)),
        ..Default::default()
    }
}

/// Recreates a session handed over from another node, detached until its socket resumes it
/// (and removed, with a `disconnected` event, if that does not happen within the grace period).
pub fn adopt(
    state: &AppState,
    hub_name: &str,
    id: &str,
    session: Session,
) -> (Arc<Hub>, Arc<Connection>) {
    let hub = state.hubs.get_or_create(hub_name);
    let connection = Arc::new(Connection::new(
        id.into(),
        Arc::clone(&hub.name),
        session.user_id.as_deref().map(Into::into),
        Protocol::JsonReliable,
        session.permissions.clone(),
    ));
    connection.state().upstream_state = session.upstream_state.clone();
    connection.restore(session.buffer());
    hub.add(Arc::clone(&connection), &session.groups);
    if let Some(cluster) = &state.cluster {
        cluster.bus.moved().forget(id);
    }
    crate::ws::expire_unless_resumed(state, &hub, &connection, 1);
    (hub, connection)
}

/// One request to one node's subject, answered by one node (or by nobody within
/// [`ASK_TIMEOUT`]).
pub(crate) async fn request(
    client: &async_nats::Client,
    node: &str,
    question: &Question,
) -> Option<Answer> {
    let payload: bytes::Bytes = serde_json::to_vec(question).ok()?.into();
    let subject = bus::node_subject(node, Kind::Ask);
    match tokio::time::timeout(ASK_TIMEOUT, client.request(subject, payload)).await {
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).ok(),
        _ => None,
    }
}

impl Cluster {
    /// The node that had a session last, as far as this node knows: where it sent it, or the
    /// node named in its id. `None` when that is this node (or the id names no node).
    fn holder_of(&self, id: &str) -> Option<String> {
        self.bus
            .moved()
            .get(id)
            .or_else(|| Self::node_of(id).map(str::to_owned))
            .filter(|node| *node != *self.node_id)
    }

    /// Asks the node holding a reliable session to hand it over to this node; `None` when that
    /// node does not answer within [`ASK_TIMEOUT`] (it is gone, or NATS is) or has no such
    /// session.
    pub async fn take_session(&self, hub: &str, id: &str) -> Option<Session> {
        let node = self.holder_of(id)?;
        if !self.connected() {
            return None;
        }
        let question = Question::new(
            hub,
            Ask::Handover {
                id: id.to_string(),
                to: self.node_id.to_string(),
            },
        );
        let answer = request(&self.client, &node, &question).await?;
        answer.session.map(|s| *s)
    }

    /// Tells the node named in a connection id that the session it handed over has ended here,
    /// so it drops its forward entry. Fire and forget.
    pub fn session_ended(&self, hub: &str, id: &str) {
        let Some(node) = Self::node_of(id).filter(|node| **node != *self.node_id) else {
            return;
        };
        let question = Question::new(hub, Ask::Forget { id: id.to_string() });
        let Ok(payload) = serde_json::to_vec(&question) else {
            return;
        };
        let client = self.client.clone();
        let subject = bus::node_subject(node, Kind::Ask);
        tokio::spawn(async move {
            let _ = client.publish(subject, payload.into()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_through_json() {
        let mut permissions = Permissions::from_roles(["webpubsub.joinLeaveGroups.room.*"]);
        permissions.revoke_permission(
            hubbub_proto::roles::Permission::JoinLeaveGroup,
            Some("room.secret"),
        );
        let session = Session {
            user_id: Some("u".into()),
            groups: vec!["g".into()],
            permissions,
            upstream_state: Some("{\"k\":1}".into()),
            next_sequence_id: 9,
            unacked: vec![Unacked {
                sequence_id: 8,
                frame: r#"{"type":"message","sequenceId":8}"#.into(),
                ttl_ms: Some(500),
            }],
        };
        let json = serde_json::to_string(&session).unwrap();
        let back: Session = serde_json::from_str(&json).unwrap();
        assert_eq!(back, session);
        assert!(back
            .permissions
            .allows(hubbub_proto::roles::Permission::JoinLeaveGroup, "room.a"));
        assert!(!back.permissions.allows(
            hubbub_proto::roles::Permission::JoinLeaveGroup,
            "room.secret"
        ));
        let buffer = back.buffer();
        assert_eq!(buffer.next_sequence_id, 9);
        assert_eq!(buffer.unacked[0].2, Some(Duration::from_millis(500)));
    }

    #[test]
    fn forward_entries() {
        let moved = Moved::default();
        assert!(moved.is_empty());
        moved.set("a-1", "b");
        assert_eq!(moved.get("a-1").as_deref(), Some("b"));
        moved.set("a-1", "c");
        assert_eq!(moved.get("a-1").as_deref(), Some("c"));
        moved.forget("a-1");
        assert!(moved.get("a-1").is_none());
    }
}
