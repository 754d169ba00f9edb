//! Interest: what this node's connections need from other nodes (a hub, a group, a user), as the
//! hubs report it; a backplane that subscribes by interest follows it. And membership: each
//! join and leave of a group, for the app server's group presence events.

use crate::dataplane::connection::Connection;
use std::sync::Arc;

/// What this node's connections need, reported as it changes: a backplane that subscribes to
/// other nodes' messages by interest follows it.
#[derive(Debug, Clone)]
pub enum Interest {
    /// A hub got its first local connection (hub-wide sends are wanted from now on).
    Hub(Arc<str>),
    /// A group got its first local member (`true`) or lost its last (`false`).
    Group(Arc<str>, Arc<str>, bool),
    /// A user got a first local connection (`true`) or lost the last (`false`).
    User(Arc<str>, Arc<str>, bool),
}

/// Where hubs report interest changes. Called under the hub's lock, in order: it must not block.
pub type InterestSink = Arc<dyn Fn(Interest) + Send + Sync>;

/// A connection joined (`joined`) or left a group (by a request, not because it ended).
#[derive(Debug, Clone)]
pub struct Membership {
    pub connection: Arc<Connection>,
    pub group: Arc<str>,
    pub joined: bool,
}

/// Where hubs report joins and leaves. Called under the hub's lock: it must not block.
pub type MembershipSink = Arc<dyn Fn(Membership) + Send + Sync>;
