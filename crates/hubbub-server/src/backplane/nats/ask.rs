//! Management questions across the cluster: a [`Question`] that this node has answered for its
//! own connections goes, as a NATS request, to the nodes its target reaches (the node of a
//! connection id, or the nodes subscribed to a user's, a group's or the hub's subject), and
//! their answers are gathered with bounded time: never more than [`ASK_TIMEOUT`].

use super::routing::{group_subject, hub_subject, node_subject, user_subject, Kind};
use super::wire::Wire;
use super::Cluster;
use crate::dataplane::delivery::Target;
use crate::dataplane::ops::{Answer, Question};
use futures_util::StreamExt;
use std::time::Duration;

/// The longest a question waits for the other nodes.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// After an answer, how long to wait for more before settling with those received.
pub const ASK_IDLE: Duration = Duration::from_millis(100);

/// The subject of the nodes a question goes to besides this one: the node named in a connection
/// id (the hub's nodes for an id naming none), or those subscribed to the user's, the group's or
/// the hub's subject.
fn subject(question: &Question, own_node: &str) -> Option<String> {
    let hub = &question.hub;
    match question.ask.target() {
        // An id naming no node (an MQTT client id): any node of the hub may hold it.
        Target::Connection(id) => match Cluster::node_of(&id) {
            Some(node) => (node != own_node).then(|| node_subject(node, Kind::Ask)),
            None => Some(hub_subject(hub, Kind::Ask)),
        },
        Target::User(user) => Some(user_subject(hub, &user, Kind::Ask)),
        Target::Group(group) => Some(group_subject(hub, &group, Kind::Ask)),
        Target::All => Some(hub_subject(hub, Kind::Ask)),
    }
}

impl Cluster {
    /// Sends `question` to the other nodes its target reaches and gathers their answers: until
    /// one is `enough`, the server says no node is listening, no further answer came for
    /// [`ASK_IDLE`] after the last, or [`ASK_TIMEOUT`] passed. Empty while NATS is unreachable.
    pub async fn ask(&self, question: &Question, enough: fn(&Answer) -> bool) -> Vec<Answer> {
        let subject = subject(question, &self.node_id).or_else(|| {
            // About a connection of this node that is not here: its session may have moved on.
            let id = question.ask.connection_id()?;
            let node = self.moved.get(id)?;
            (*node != *self.node_id).then(|| node_subject(&node, Kind::Ask))
        });
        let Some(subject) = subject else {
            return Vec::new();
        };
        if !self.connected() {
            return Vec::new();
        }
        let payload: bytes::Bytes = serde_json::to_vec(question).unwrap_or_default().into();
        let inbox = self.wire.client.new_inbox();
        let Ok(mut replies) = self.wire.client.subscribe(inbox.clone()).await else {
            return Vec::new();
        };
        if self
            .wire
            .publish_request(subject, inbox, payload)
            .await
            .is_err()
        {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + ASK_TIMEOUT;
        let mut answers = Vec::new();
        loop {
            let until = if answers.is_empty() {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + ASK_IDLE)
            };
            let Ok(Some(reply)) = tokio::time::timeout_at(until, replies.next()).await else {
                break;
            };
            if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                break;
            }
            if !self.wire.check(&reply) {
                continue;
            }
            if let Ok(answer) = serde_json::from_slice::<Answer>(&reply.payload) {
                let done = enough(&answer);
                answers.push(answer);
                if done {
                    break;
                }
            }
        }
        answers
    }
}

/// One request to one node's subject, answered by one node (or by nobody within
/// [`ASK_TIMEOUT`]).
pub(crate) async fn request(wire: &Wire, node: &str, question: &Question) -> Option<Answer> {
    let payload: bytes::Bytes = serde_json::to_vec(question).ok()?.into();
    let reply = wire
        .request(node_subject(node, Kind::Ask), payload, ASK_TIMEOUT)
        .await?;
    serde_json::from_slice(&reply).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::ops::Ask;

    #[test]
    fn questions_go_to_the_node_of_a_connection_or_the_subject_of_the_target() {
        let q = |ask| Question::new("Chat", ask);
        let own = q(Ask::ConnectionExists { id: "a-12".into() });
        assert_eq!(subject(&own, "a"), None, "this node answered already");
        assert_eq!(
            subject(&own, "b").as_deref(),
            Some(node_subject("a", Kind::Ask).as_str())
        );
        let no_node = q(Ask::ConnectionExists { id: "1234".into() });
        assert_eq!(
            subject(&no_node, "b"),
            Some(hub_subject("chat", Kind::Ask)),
            "an id naming no node: every node of the hub"
        );
        assert_eq!(
            subject(&q(Ask::UserExists { user: "u".into() }), "a"),
            Some(user_subject("chat", "u", Kind::Ask))
        );
        let list = q(Ask::ListGroup {
            group: "g".into(),
            after: None,
            limit: 3,
        });
        assert_eq!(
            subject(&list, "a"),
            Some(group_subject("chat", "g", Kind::Ask))
        );
        let close_all = q(Ask::Close {
            scope: Target::All,
            excluded: vec![],
            reason: "r".into(),
            cause: Default::default(),
        });
        assert_eq!(
            subject(&close_all, "a"),
            Some(hub_subject("chat", Kind::Ask))
        );
        let forget = q(Ask::Forget { id: "a-1".into() });
        assert_eq!(subject(&forget, "b"), Some(node_subject("a", Kind::Ask)));
    }
}
