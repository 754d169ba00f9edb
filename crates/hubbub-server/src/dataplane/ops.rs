//! Management operations on this node's connections: existence checks, membership changes,
//! closing, permissions and group listings. Each is a [`Question`]; [`answer`] answers it for the
//! connections of this node. The REST handlers ask it here and, through the backplane, of the
//! other nodes the target reaches, which answer with this same function.

use super::connection::Connection;
use super::delivery::Target;
use super::hub::{canonical_hub, Hubs, JoinError};
use super::session::Session;
use hubbub_proto::roles::Permission;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PermissionAction {
    Grant,
    Revoke,
    Check,
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
        #[serde(with = "scope")]
        scope: Target,
        excluded: Vec<String>,
        reason: String,
        /// Why, as counted (a REST close unless said otherwise).
        #[serde(default)]
        cause: crate::dataplane::connection::CloseCause,
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
    /// Hand a reliable session over to node `to`, where its client is recovering (answered by
    /// the backplane that moves sessions between nodes; on one node there is nobody to ask).
    Handover {
        id: String,
        to: String,
    },
    /// A session this node handed over has ended elsewhere: drop the forward entry (no answer).
    Forget {
        id: String,
    },
    /// The state the members of a group on each node have set in it.
    GroupState {
        group: String,
    },
}

/// `Close`'s target keeps the shape nodes have always exchanged: `{"scope": "group", "name": …}`.
mod scope {
    use super::Target;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "scope", content = "name", rename_all = "camelCase")]
    enum Scope {
        All,
        User(String),
        Group(String),
        Connection(String),
    }

    pub fn serialize<S: Serializer>(target: &Target, s: S) -> Result<S::Ok, S::Error> {
        match target.clone() {
            Target::All => Scope::All,
            Target::User(user) => Scope::User(user),
            Target::Group(group) => Scope::Group(group),
            Target::Connection(id) => Scope::Connection(id),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        Ok(match Scope::deserialize(d)? {
            Scope::All => Target::All,
            Scope::User(user) => Target::User(user),
            Scope::Group(group) => Target::Group(group),
            Scope::Connection(id) => Target::Connection(id),
        })
    }
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
            | Ask::Forget { id } => Some(id),
            Ask::Close { scope, .. } => scope.connection_id(),
            _ => None,
        }
    }

    /// Whom the question concerns: the nodes to ask are those with connections of this target.
    pub fn target(&self) -> Target {
        if let Some(id) = self.connection_id() {
            return Target::Connection(id.to_string());
        }
        match self {
            Ask::UserExists { user }
            | Ask::AddUserToGroup { user, .. }
            | Ask::RemoveUserFromGroup { user, .. }
            | Ask::RemoveUserFromAllGroups { user } => Target::User(user.clone()),
            Ask::GroupExists { group } | Ask::ListGroup { group, .. } => {
                Target::Group(group.clone())
            }
            Ask::Close { scope, .. } => scope.clone(),
            _ => Target::All,
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
    pub session: Option<Box<Session>>,
    /// Why a limit refused the operation there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// A group's state on that node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_state: Vec<hubbub_proto::client_protocol::GroupStateItem>,
}

impl Answer {
    /// Answered, with the group state this cleared.
    fn clearing(self, cleared: super::hub::Cleared) -> Answered {
        Answered {
            answer: self,
            cleared,
            ..Default::default()
        }
    }

    pub fn ok(ok: bool) -> Self {
        Self {
            ok,
            ..Default::default()
        }
    }
}

/// The refusal of a join beyond the connection's group limit.
pub fn too_many_groups(groups: usize) -> String {
    format!("the connection is in {groups} groups, the most it may be in")
}

/// Stop at the first node that found (or did) it.
pub fn found(answer: &Answer) -> bool {
    answer.ok
}

/// Every node the target reaches must act: never stop early.
pub fn all(_: &Answer) -> bool {
    false
}

/// An answer and what it leaves for the caller to do: tell the app server about the connections
/// it closed, tell followers of group state the state it cleared, and wait for the subscriptions
/// of groups it joined (cluster mode).
#[derive(Debug, Default)]
pub struct Answered {
    pub answer: Answer,
    /// Connections the question closed (each removed from its hub by this call).
    pub closed: Vec<Arc<Connection>>,
    /// Connections joined groups.
    pub joined: bool,
    /// Group state the question's removals cleared (the followers are to hear it).
    pub cleared: super::hub::Cleared,
}

impl From<Answer> for Answered {
    fn from(answer: Answer) -> Self {
        Self {
            answer,
            ..Default::default()
        }
    }
}

/// Answers a question for this node's own connections. Handovers and forward entries are the
/// backplane's business: here they find nothing.
pub fn answer(hubs: &Hubs, question: &Question) -> Answered {
    let Some(hub) = hubs.get(&question.hub) else {
        return Answered::default();
    };
    let joined = |joined: bool, ok: bool| Answered {
        answer: Answer::ok(ok),
        joined,
        ..Default::default()
    };
    match &question.ask {
        Ask::ConnectionExists { id } => Answer::ok(hub.connection(id).is_some()).into(),
        Ask::UserExists { user } => Answer::ok(hub.has_user(user)).into(),
        Ask::GroupExists { group } => Answer::ok(hub.has_group(group)).into(),
        Ask::Close {
            scope,
            excluded,
            reason,
            cause,
        } => {
            let excluded: HashSet<&str> = excluded.iter().map(String::as_str).collect();
            let closed = hub.close_where(scope, &excluded, reason, *cause);
            Answered {
                answer: Answer::ok(!closed.is_empty()),
                closed,
                ..Default::default()
            }
        }
        Ask::AddConnectionToGroup { id, group } => match hub.join(id, group) {
            Ok(()) => joined(true, true),
            Err(JoinError::NoSuchConnection) => Answered::default(),
            Err(JoinError::TooManyGroups(groups)) => Answer {
                refused: Some(too_many_groups(groups)),
                ..Answer::default()
            }
            .into(),
        },
        Ask::GroupState { group } => Answer {
            ok: true,
            group_state: hub.group_state(group),
            ..Answer::default()
        }
        .into(),
        Ask::RemoveConnectionFromGroup { id, group } => {
            let cleared = hub.leave(id, group);
            Answer::ok(hub.connection(id).is_some()).clearing(cleared)
        }
        Ask::RemoveConnectionFromAllGroups { id } => {
            let cleared = hub.leave_all(id);
            Answer::ok(hub.connection(id).is_some()).clearing(cleared)
        }
        Ask::AddUserToGroup { user, group } => {
            hub.add_user_to_group(user, group);
            joined(true, hub.has_user(user))
        }
        Ask::RemoveUserFromGroup { user, group } => {
            let cleared = hub.remove_user_from_group(user, group);
            Answer::ok(hub.has_user(user)).clearing(cleared)
        }
        Ask::RemoveUserFromAllGroups { user } => {
            let cleared = hub.remove_user_from_all_groups(user);
            Answer::ok(hub.has_user(user)).clearing(cleared)
        }
        Ask::ChangeGroups {
            groups,
            filter,
            add,
        } => {
            let filter = match filter.as_deref().map(super::filter::Filter::parse) {
                Some(Ok(filter)) => Some(filter),
                Some(Err(_)) => return Answered::default(),
                None => None,
            };
            let cleared = hub.change_groups_by_filter(groups, filter.as_ref(), *add);
            Answered {
                cleared,
                ..joined(*add, true)
            }
        }
        Ask::ListGroup {
            group,
            after,
            limit,
        } => {
            let (page, _) = hub.list_group(group, after.as_deref(), *limit);
            Answer {
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
                ..Answer::default()
            }
            .into()
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
                return Answered::default();
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
            .into()
        }
        Ask::Handover { .. } | Ask::Forget { .. } => Answered::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_round_trip_and_close_keeps_its_scope_shape() {
        let close = Question::new(
            "Chat",
            Ask::Close {
                scope: Target::Group("g".into()),
                excluded: vec!["a".into()],
                reason: "r".into(),
                cause: crate::dataplane::connection::CloseCause::KeyRevoked,
            },
        );
        assert_eq!(close.hub, "chat");
        let json = serde_json::to_string(&close).unwrap();
        assert!(
            json.contains(r#""scope":{"scope":"group","name":"g"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Question>(&json).unwrap(), close);
        // A node without close causes asks for a REST close.
        let older = json.replace(r#","cause":"key_revoked""#, "");
        assert_ne!(older, json);
        assert!(matches!(
            serde_json::from_str::<Question>(&older).unwrap().ask,
            Ask::Close {
                cause: crate::dataplane::connection::CloseCause::RestClose,
                ..
            }
        ));
        assert_eq!(close.ask.target(), Target::Group("g".into()));
        let exists = Ask::ConnectionExists { id: "n-1".into() };
        assert_eq!(exists.target(), Target::Connection("n-1".into()));
        let user = Ask::AddUserToGroup {
            user: "u".into(),
            group: "g".into(),
        };
        assert_eq!(user.target(), Target::User("u".into()));
        let change = Ask::ChangeGroups {
            groups: vec!["g".into()],
            filter: None,
            add: true,
        };
        assert_eq!(change.target(), Target::All);
    }
}
