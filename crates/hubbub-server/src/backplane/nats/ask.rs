//! Management operations across the cluster: existence checks, membership changes, closing,
//! permissions and group listings. Each operation is a [`Question`] that this node answers for
//! its own connections ([`answer`]); in cluster mode it also goes, as a NATS request, to the
//! nodes the target reaches (the node of a connection id, or the nodes subscribed to a user's,
//! a group's or the hub's subject), and their answers are gathered with bounded time. The REST
//! handlers combine the answers; they never wait more than [`ASK_TIMEOUT`].

use super::bus::{self, Kind};
use super::Cluster;
use crate::dataplane::hub::{canonical_hub, CloseScope};
use crate::state::AppState;
use futures_util::StreamExt;
use hubbub_proto::roles::Permission;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

/// The longest a question waits for the other nodes.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// After an answer, how long to wait for more before settling with those received.
pub const ASK_IDLE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PermissionAction {
    Grant,
    Revoke,
    Check,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "scope", content = "name", rename_all = "camelCase")]
pub enum Scope {
    All,
    User(String),
    Group(String),
    Connection(String),
}

/// What is asked of each node, about its own connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Ask {
    ConnectionExists {
        id: String,
    },
    UserExists {
        user: String,
    },
    GroupExists {
        group: String,
    },
    Close {
        scope: Scope,
        excluded: Vec<String>,
        reason: String,
    },
    AddConnectionToGroup {
        id: String,
        group: String,
    },
    RemoveConnectionFromGroup {
        id: String,
        group: String,
    },
    RemoveConnectionFromAllGroups {
        id: String,
    },
    AddUserToGroup {
        user: String,
        group: String,
    },
    RemoveUserFromGroup {
        user: String,
        group: String,
    },
    RemoveUserFromAllGroups {
        user: String,
    },
    ChangeGroups {
        groups: Vec<String>,
        filter: Option<String>,
        add: bool,
    },
    /// Up to `limit` members after `after`, ordered by connection id.
    ListGroup {
        group: String,
        after: Option<String>,
        limit: usize,
    },
    Permission {
        id: String,
        action: PermissionAction,
        permission: String,
        target: Option<String>,
    },
    /// Hand a reliable session over to node `to`, where its client is recovering
    /// ([`super::handover`]).
    Handover {
        id: String,
        to: String,
    },
    /// A session this node handed over has ended elsewhere: drop the forward entry (no answer).
    Forget {
        id: String,
    },
}

impl Ask {
    /// The connection a question is about, for questions about one connection.
    pub fn connection_id(&self) -> Option<&str> {
        match self {
            Ask::ConnectionExists { id }
            | Ask::AddConnectionToGroup { id, .. }
            | Ask::RemoveConnectionFromGroup { id, .. }
            | Ask::RemoveConnectionFromAllGroups { id }
            | Ask::Permission { id, .. }
            | Ask::Handover { id, .. }
            | Ask::Close {
                scope: Scope::Connection(id),
                ..
            } => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Question {
    /// The canonical hub name.
    pub hub: String,
    pub ask: Ask,
}

impl Question {
    pub fn new(hub: &str, ask: Ask) -> Self {
        Self {
            hub: canonical_hub(hub),
            ask,
        }
    }

    /// Which nodes the question goes to besides this one.
    fn subject(&self, own_node: &str) -> Option<String> {
        let hub = &self.hub;
        match &self.ask {
            Ask::ConnectionExists { id }
            | Ask::AddConnectionToGroup { id, .. }
            | Ask::RemoveConnectionFromGroup { id, .. }
            | Ask::RemoveConnectionFromAllGroups { id }
            | Ask::Permission { id, .. }
            | Ask::Handover { id, .. }
            | Ask::Forget { id }
            | Ask::Close {
                scope: Scope::Connection(id),
                ..
            } => Cluster::node_of(id)
                .filter(|node| *node != own_node)
                .map(|node| bus::node_subject(node, Kind::Ask)),
            Ask::UserExists { user }
            | Ask::AddUserToGroup { user, .. }
            | Ask::RemoveUserFromGroup { user, .. }
            | Ask::RemoveUserFromAllGroups { user }
            | Ask::Close {
                scope: Scope::User(user),
                ..
            } => Some(bus::user_subject(hub, user, Kind::Ask)),
            Ask::GroupExists { group }
            | Ask::ListGroup { group, .. }
            | Ask::Close {
                scope: Scope::Group(group),
                ..
            } => Some(bus::group_subject(hub, group, Kind::Ask)),
            Ask::ChangeGroups { .. }
            | Ask::Close {
                scope: Scope::All, ..
            } => Some(bus::hub_subject(hub, Kind::Ask)),
        }
    }
}

/// One node's answer: whether the operation found (or did) something there, and for a listing
/// the connections (id, user id).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<(String, Option<String>)>,
    /// A reliable session handed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Box<super::handover::Session>>,
}

impl Answer {
    fn ok(ok: bool) -> Self {
        Self {
            ok,
            ..Default::default()
        }
    }
}

/// Waits until the subscriptions for this node's latest joins are in place (cluster mode), so a
/// send right after a membership change reaches the new members whichever node takes it.
pub async fn settle(state: &AppState) {
    if let Some(sink) = state.hubs.interest() {
        sink.settled(sink.latest(), bus::INTEREST_WAIT).await;
    }
}

/// Answers a question for this node's own connections.
pub async fn answer(state: &AppState, question: &Question) -> Answer {
    if let (Ask::Forget { id }, Some(cluster)) = (&question.ask, &state.cluster) {
        cluster.bus.moved().forget(id);
        return Answer::default();
    }
    let Some(hub) = state.hubs.get(&question.hub) else {
        return Answer::default();
    };
    match &question.ask {
        Ask::ConnectionExists { id } => Answer::ok(hub.connection(id).is_some()),
        Ask::UserExists { user } => Answer::ok(hub.has_user(user)),
        Ask::GroupExists { group } => Answer::ok(hub.has_group(group)),
        Ask::Close {
            scope,
            excluded,
            reason,
        } => {
            let excluded: HashSet<&str> = excluded.iter().map(String::as_str).collect();
            let scope = match scope {
                Scope::All => CloseScope::All,
                Scope::User(user) => CloseScope::User(user),
                Scope::Group(group) => CloseScope::Group(group),
                Scope::Connection(id) => CloseScope::Connection(id),
            };
            let closed = hub.close_where(scope, &excluded, reason);
            for connection in &closed {
                crate::ws::departed(state, connection, reason);
            }
            Answer::ok(!closed.is_empty())
        }
        Ask::AddConnectionToGroup { id, group } => {
            let joined = hub.join(id, group);
            if joined {
                settle(state).await;
            }
            Answer::ok(joined)
        }
        Ask::RemoveConnectionFromGroup { id, group } => {
            hub.leave(id, group);
            Answer::ok(hub.connection(id).is_some())
        }
        Ask::RemoveConnectionFromAllGroups { id } => {
            hub.leave_all(id);
            Answer::ok(hub.connection(id).is_some())
        }
        Ask::AddUserToGroup { user, group } => {
            hub.add_user_to_group(user, group);
            settle(state).await;
            Answer::ok(hub.has_user(user))
        }
        Ask::RemoveUserFromGroup { user, group } => {
            hub.remove_user_from_group(user, group);
            Answer::ok(hub.has_user(user))
        }
        Ask::RemoveUserFromAllGroups { user } => {
            hub.remove_user_from_all_groups(user);
            Answer::ok(hub.has_user(user))
        }
        Ask::ChangeGroups {
            groups,
            filter,
            add,
        } => {
            let filter = match filter.as_deref().map(crate::dataplane::filter::Filter::parse) {
                Some(Ok(filter)) => Some(filter),
                Some(Err(_)) => return Answer::default(),
                None => None,
            };
            hub.change_groups_by_filter(groups, filter.as_ref(), *add);
            if *add {
                settle(state).await;
            }
            Answer::ok(true)
        }
        Ask::ListGroup {
            group,
            after,
            limit,
        } => {
            let (page, _) = hub.list_group(group, after.as_deref(), *limit);
            Answer {
                session: None,
                ok: !page.is_empty(),
                connections: page
                    .into_iter()
                    .map(|c| {
                        (
                            c.connection_id.to_string(),
                            c.user_id.map(|u| u.to_string()),
                        )
                    })
                    .collect(),
            }
        }
        Ask::Permission {
            id,
            action,
            permission,
            target,
        } => {
            let (Some(connection), Some(permission)) =
                (hub.connection(id), Permission::from_rest_name(permission))
            else {
                return Answer::default();
            };
            let mut connection_state = connection.state();
            let permissions = &mut connection_state.permissions;
            let target = target.as_deref();
            Answer::ok(match action {
                PermissionAction::Grant => {
                    permissions.grant_permission(permission, target);
                    true
                }
                PermissionAction::Revoke => {
                    permissions.revoke_permission(permission, target);
                    true
                }
                PermissionAction::Check => permissions.has(permission, target),
            })
        }
        Ask::Handover { id, to } => super::handover::give(state, &hub, id, to),
        Ask::Forget { .. } => Answer::default(),
    }
}

/// Answers the question here and, in cluster mode, on the nodes its target reaches (unless this
/// node's answer is already `enough`). Returns every answer received, this node's first.
pub async fn everywhere(
    state: &AppState,
    question: &Question,
    enough: fn(&Answer) -> bool,
) -> Vec<Answer> {
    let local = answer(state, question).await;
    if enough(&local) {
        return vec![local];
    }
    let mut answers = vec![local];
    if let Some(cluster) = &state.cluster {
        answers.extend(cluster.ask(question, enough).await);
    }
    answers
}

/// Stop at the first node that found (or did) it.
pub fn found(answer: &Answer) -> bool {
    answer.ok
}

/// Every node the target reaches must act: never stop early.
pub fn all(_: &Answer) -> bool {
    false
}

impl Cluster {
    /// Sends `question` to the other nodes its target reaches and gathers their answers: until
    /// one is `enough`, the server says no node is listening, no further answer came for
    /// [`ASK_IDLE`] after the last, or [`ASK_TIMEOUT`] passed. Empty while NATS is unreachable.
    pub async fn ask(&self, question: &Question, enough: fn(&Answer) -> bool) -> Vec<Answer> {
        let subject = question.subject(&self.node_id).or_else(|| {
            // About a connection of this node that is not here: its session may have moved on.
            let id = question.ask.connection_id()?;
            let node = self.bus.moved().get(id)?;
            (*node != *self.node_id).then(|| bus::node_subject(&node, Kind::Ask))
        });
        let Some(subject) = subject else {
            return Vec::new();
        };
        if !self.connected() {
            return Vec::new();
        }
        let payload: bytes::Bytes = serde_json::to_vec(question).unwrap_or_default().into();
        let inbox = self.client.new_inbox();
        let Ok(mut replies) = self.client.subscribe(inbox.clone()).await else {
            return Vec::new();
        };
        if self
            .client
            .publish_with_reply(subject, inbox, payload)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_go_to_the_node_of_a_connection_or_the_subject_of_the_target() {
        let q = |ask| Question::new("Chat", ask);
        let own = q(Ask::ConnectionExists { id: "a-12".into() });
        assert_eq!(own.hub, "chat");
        assert_eq!(own.subject("a"), None, "this node answered already");
        assert_eq!(
            own.subject("b").as_deref(),
            Some(bus::node_subject("a", Kind::Ask).as_str())
        );
        assert_eq!(
            q(Ask::ConnectionExists { id: "1234".into() }).subject("b"),
            None
        );
        assert_eq!(
            q(Ask::UserExists { user: "u".into() }).subject("a"),
            Some(bus::user_subject("chat", "u", Kind::Ask))
        );
        assert_eq!(
            q(Ask::ListGroup {
                group: "g".into(),
                after: None,
                limit: 3
            })
            .subject("a"),
            Some(bus::group_subject("chat", "g", Kind::Ask))
        );
        let close_all = q(Ask::Close {
            scope: Scope::All,
            excluded: vec![],
            reason: "r".into(),
        });
        assert_eq!(
            close_all.subject("a"),
            Some(bus::hub_subject("chat", Kind::Ask))
        );
        let json = serde_json::to_string(&close_all).unwrap();
        assert_eq!(serde_json::from_str::<Question>(&json).unwrap(), close_all);
    }
}
