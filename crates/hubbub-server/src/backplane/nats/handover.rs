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

use super::ask::request;
use super::routing::{node_subject, Kind, Moved};
use super::Cluster;
use crate::backplane::Node;
use crate::dataplane::ops::{Answer, Ask, Question};
use crate::dataplane::session::{self, Session, Taken};

/// On the node holding a session: gives it up to node `to` (answering a handover question).
/// Not `ok` when this node has no such reliable session, or it would not fit in one NATS message
/// of at most `max_payload` bytes (then it stays here, detached).
pub(super) fn give(
    node: &dyn Node,
    moved: &Moved,
    max_payload: usize,
    hub_name: &str,
    id: &str,
    to: &str,
) -> Answer {
    let Some(hub) = node.hubs().get(hub_name) else {
        return Answer::default();
    };
    let session = match session::take(&hub, id) {
        Taken::Nothing => return Answer::default(),
        Taken::Closed(connection) => {
            node.departed(&connection, "SessionMoved");
            return Answer::default();
        }
        Taken::Session(session) => session,
    };
    let size = serde_json::to_vec(&session).map_or(usize::MAX, |v| v.len());
    if size + 4096 > max_payload {
        tracing::warn!(
            connection_id = %id,
            bytes = size,
            "a reliable session is too large for one NATS message; it stays on this node"
        );
        let (hub, connection) = session::restore(node.hubs(), &hub.name, id, &session);
        node.keep_detached(&hub, &connection);
        return Answer::default();
    }
    if super::Cluster::node_of(id).is_some() {
        // Sends and questions for an id naming no node reach every node of the hub: the new
        // holder gets them without a forward entry here (which would deliver them twice).
        moved.set(id, to);
    }
    tracing::debug!(connection_id = %id, to, "reliable session handed over");
    Answer {
        ok: true,
        session: Some(session),
        ..Default::default()
    }
}

impl Cluster {
    /// The node that had a session last, as far as this node knows: where it sent it, or the
    /// node named in its id. `None` when that is this node (or the id names no node).
    fn holder_of(&self, id: &str) -> Option<String> {
        self.moved
            .get(id)
            .or_else(|| Self::node_of(id).map(str::to_owned))
            .filter(|node| *node != *self.node_id)
    }

    /// Asks the node holding a reliable session to hand it over to this node; `None` when that
    /// node does not answer within [`ASK_TIMEOUT`] (it is gone, or NATS is) or has no such
    /// session.
    pub async fn take_session(&self, hub: &str, id: &str) -> Option<Session> {
        let question = Question::new(
            hub,
            Ask::Handover {
                id: id.to_string(),
                to: self.node_id.to_string(),
            },
        );
        let Some(node) = self.holder_of(id) else {
            // An id naming no node (an MQTT client id): whichever node of the hub holds it.
            if Self::node_of(id).is_some() || self.moved.get(id).is_some() {
                return None;
            }
            let answers = self.ask(&question, |a| a.session.is_some()).await;
            return answers.into_iter().find_map(|a| a.session).map(|s| *s);
        };
        if !self.connected() {
            return None;
        }
        let answer = request(&self.wire, &node, &question).await?;
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
        let wire = self.wire.clone();
        let subject = node_subject(node, Kind::Ask);
        tokio::spawn(async move {
            let _ = wire.publish(subject, payload.into()).await;
        });
    }
}
