//! Hubs: their connections, users and groups, and the fan-out of one message to many
//! connections. Each hub has one lock, never held across an `.await`: fan-out takes it for
//! reading and only pushes into outboxes, which never blocks.

use super::connection::{CloseCause, CloseRequest, Connection, CLOSE_NORMAL, CLOSE_POLICY};
use super::filter::{Filter, FilterSubject};
use super::message::Outgoing;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use interest::{Interest, InterestSink, Membership, MembershipSink};
use names::NameSet;

pub use limits::{
    HubLimits, JoinError, LimitCounts, DEFAULT_EVENT_QUEUE, DEFAULT_MAX_CONNECTIONS_PER_USER,
    DEFAULT_MAX_GROUPS_PER_CONNECTION,
};
pub use registry::{canonical_hub, Hubs};

/// Whom a message, a close or a question is for within a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", content = "name", rename_all = "camelCase")]
pub enum Target {
    All,
    Group(String),
    User(String),
    Connection(String),
}

impl Target {
    /// The connection id of a target that is one connection.
    pub fn connection_id(&self) -> Option<&str> {
        match self {
            Target::Connection(id) => Some(id),
            _ => None,
        }
    }
}

struct Member {
    connection: Arc<Connection>,
    groups: NameSet,
}

impl FilterSubject for Member {
    fn connection_id(&self) -> &str {
        &self.connection.id
    }
    fn user_id(&self) -> Option<&str> {
        self.connection.user_id.as_deref()
    }
    fn has_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }
    fn group_count(&self) -> usize {
        self.groups.len()
    }
}

#[derive(Default)]
struct HubInner {
    connections: HashMap<Arc<str>, Member>,
    /// group -> its members here, by connection id. The connection is kept beside its id so a
    /// group's fan-out reaches it without a look-up per member.
    groups: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Connection>>>,
    /// user -> connection ids.
    users: HashMap<Arc<str>, NameSet>,
    limits: HubLimits,
    counts: Arc<LimitCounts>,
    /// The hub's name and where first-joins and last-leaves are reported (if anywhere).
    sink: Option<(Arc<str>, InterestSink)>,
    /// Where every join and leave is reported (if anywhere).
    membership: Option<MembershipSink>,
}

impl HubInner {
    fn notify(&self, change: impl FnOnce(Arc<str>) -> Interest) {
        if let Some((hub, sink)) = &self.sink {
            sink(change(Arc::clone(hub)));
        }
    }

    fn join(&mut self, connection_id: &str, group: &str) -> Result<(), JoinError> {
        self.join_reporting(connection_id, group, true)
    }

    /// Joins a group; `report`: tell the membership sink (not for a session that moved here,
    /// whose joins happened on its first node).
    fn join_reporting(
        &mut self,
        connection_id: &str,
        group: &str,
        report: bool,
    ) -> Result<(), JoinError> {
        let Some(member) = self.connections.get_mut(connection_id) else {
            return Err(JoinError::NoSuchConnection);
        };
        if member.groups.contains(group) {
            return Ok(());
        }
        if member.groups.len() >= self.limits.groups_per_connection {
            self.counts
                .groups_per_connection
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(JoinError::TooManyGroups(member.groups.len()));
        }
        let group: Arc<str> = match self.groups.get_key_value(group) {
            Some((existing, _)) => Arc::clone(existing),
            None => group.into(),
        };
        member.groups.insert(Arc::clone(&group));
        let members = self.groups.entry(Arc::clone(&group)).or_default();
        let first = members.is_empty();
        members.insert(
            Arc::clone(&member.connection.id),
            Arc::clone(&member.connection),
        );
        if let (true, Some(sink)) = (report, &self.membership) {
            sink(Membership {
                connection: Arc::clone(&member.connection),
                group: Arc::clone(&group),
                joined: true,
            });
        }
        if first {
            self.notify(|hub| Interest::Group(hub, group, true));
        }
        Ok(())
    }

    /// Leaves `group`. A member's group state and its subscription to it end with its
    /// membership: the state cleared is added to `cleared`, for its followers to hear.
    fn leave(&mut self, connection_id: &str, group: &str, cleared: &mut Cleared) {
        let was_member = self.leave_keeping_state(connection_id, group);
        if let Some(member) = self.connections.get(connection_id) {
            if let (true, Some(sink)) = (was_member, &self.membership) {
                sink(Membership {
                    connection: Arc::clone(&member.connection),
                    group: group.into(),
                    joined: false,
                });
            }
            let mut state = member.connection.state();
            if let Some(extras) = state.extras_mut() {
                extras.state_subscriptions.remove(group);
                if extras.group_state.remove(group).is_some() {
                    cleared.push((Arc::clone(&member.connection), group.into()));
                }
            }
        }
    }

    /// Leaves `group`, keeping the connection's state there (for a connection that ends, whose
    /// state is cleared with the followers told, or moves to another node).
    /// Returns whether the connection was a member.
    /// Removes the connection under `connection`'s id from its groups, its user and the hub.
    fn unregister(&mut self, connection: &Arc<Connection>) {
        let groups: Vec<Arc<str>> = self
            .connections
            .get(&*connection.id)
            .map(|m| m.groups.iter().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            self.leave_keeping_state(&connection.id, &group);
        }
        self.connections.remove(&*connection.id);
        if let Some(user) = &connection.user_id {
            if let Some(ids) = self.users.get_mut(&**user) {
                ids.remove(&connection.id);
                if ids.is_empty() {
                    self.users.remove(&**user);
                    self.notify(|hub| Interest::User(hub, Arc::clone(user), false));
                }
            }
        }
    }

    fn leave_keeping_state(&mut self, connection_id: &str, group: &str) -> bool {
        let was_member = self
            .connections
            .get_mut(connection_id)
            .is_some_and(|member| member.groups.remove(group));
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(connection_id);
            if members.is_empty() {
                if let Some((group, _)) = self.groups.remove_entry(group) {
                    self.notify(|hub| Interest::Group(hub, group, false));
                }
            }
        }
        was_member
    }

    fn leave_all(&mut self, connection_id: &str, cleared: &mut Cleared) {
        let groups: Vec<Arc<str>> = self
            .connections
            .get(connection_id)
            .map(|m| m.groups.iter().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            self.leave(connection_id, &group, cleared);
        }
    }

    fn user_connections(&self, user: &str) -> Vec<Arc<str>> {
        self.users
            .get(user)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Group state a removal from groups cleared: whose, and in which group (its followers are to
/// hear it).
pub type Cleared = Vec<(Arc<Connection>, Arc<str>)>;

/// Who a send goes to, beyond the target: connection ids to skip and an optional filter.
#[derive(Default)]
pub struct Selection<'a> {
    pub excluded: HashSet<&'a str>,
    pub filter: Option<&'a Filter>,
}

impl Selection<'_> {
    /// Nobody excluded, no filter.
    fn is_everyone(&self) -> bool {
        self.excluded.is_empty() && self.filter.is_none()
    }

    fn accepts(&self, member: &Member) -> bool {
        !self.excluded.contains(&*member.connection.id)
            && self.filter.is_none_or(|f| f.matches(member))
    }
}

/// One connection in a group listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedConnection {
    pub connection_id: Arc<str>,
    pub user_id: Option<Arc<str>>,
}

pub struct Hub {
    pub name: Arc<str>,
    inner: RwLock<HubInner>,
    /// What this hub's connections sent and were sent (one add per send, not per frame).
    pub traffic: Arc<crate::dataplane::traffic::Traffic>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Hub {
    #[cfg(test)]
    fn new(name: Arc<str>, sink: Option<InterestSink>) -> Self {
        Self::with_limits(
            name,
            sink,
            None,
            HubLimits::default(),
            Arc::default(),
            Arc::default(),
        )
    }

    fn with_limits(
        name: Arc<str>,
        sink: Option<InterestSink>,
        membership: Option<MembershipSink>,
        limits: HubLimits,
        counts: Arc<LimitCounts>,
        traffic: Arc<crate::dataplane::traffic::Traffic>,
    ) -> Self {
        Self {
            inner: RwLock::new(HubInner {
                sink: sink.map(|s| (Arc::clone(&name), s)),
                membership,
                limits,
                counts,
                connections: HashMap::new(),
                groups: HashMap::new(),
                users: HashMap::new(),
            }),
            name,
            traffic,
        }
    }

    fn count(&self, delivered: usize) -> usize {
        self.traffic.delivered(delivered);
        delivered
    }

    fn read(&self) -> RwLockReadGuard<'_, HubInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HubInner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection and joins it to `groups`. Returns another connection that held
    /// its id until now (an MQTT client id connecting twice at once), which it displaced: the
    /// caller ends it.
    pub fn add(&self, connection: Arc<Connection>, groups: &[String]) -> Option<Arc<Connection>> {
        self.register(connection, groups, true)
    }

    /// Registers a reliable session that moved here from another node, in its groups again: not
    /// a join (no presence events).
    pub fn add_moved(
        &self,
        connection: Arc<Connection>,
        groups: &[String],
    ) -> Option<Arc<Connection>> {
        self.register(connection, groups, false)
    }

    fn register(
        &self,
        connection: Arc<Connection>,
        groups: &[String],
        report: bool,
    ) -> Option<Arc<Connection>> {
        let mut inner = self.write();
        let id = Arc::clone(&connection.id);
        let displaced = inner
            .connections
            .get(&*id)
            .map(|m| Arc::clone(&m.connection))
            .filter(|old| !Arc::ptr_eq(old, &connection));
        if let Some(old) = &displaced {
            inner.unregister(old);
        }
        if let Some(user) = &connection.user_id {
            let ids = inner.users.entry(Arc::clone(user)).or_default();
            let first = ids.is_empty();
            ids.insert(Arc::clone(&id));
            if first {
                inner.notify(|hub| Interest::User(hub, Arc::clone(user), true));
            }
        }
        inner.connections.insert(
            Arc::clone(&id),
            Member {
                connection,
                groups: NameSet::default(),
            },
        );
        for group in groups {
            // Beyond the connection's group limit a join is refused (and counted).
            let _ = inner.join_reporting(&id, group, report);
        }
        displaced
    }

    /// Unregisters a connection (only this very connection object), leaving all its groups.
    pub fn remove(&self, connection: &Arc<Connection>) -> bool {
        self.unregister(connection, |_| ()).is_some()
    }

    /// Unregisters a connection like [`remove`](Self::remove), returning the groups it was in
    /// (a reliable session handed over to another node joins them there).
    pub fn take(&self, connection: &Arc<Connection>) -> Option<Vec<String>> {
        self.unregister(connection, |member| {
            member.groups.iter().map(|g| g.to_string()).collect()
        })
    }

    /// Unregisters this very connection object, first taking what `keep` reads of its membership;
    /// `None` when the hub holds no such connection.
    fn unregister<T>(
        &self,
        connection: &Arc<Connection>,
        keep: impl FnOnce(&Member) -> T,
    ) -> Option<T> {
        let mut inner = self.write();
        let kept = inner
            .connections
            .get(&*connection.id)
            .filter(|m| Arc::ptr_eq(&m.connection, connection))
            .map(keep)?;
        inner.unregister(connection);
        Some(kept)
    }

    pub fn connection(&self, id: &str) -> Option<Arc<Connection>> {
        self.read()
            .connections
            .get(id)
            .map(|m| Arc::clone(&m.connection))
    }

    /// The users with a connection here, and the `top` largest groups with their connection
    /// counts (largest first, then by name).
    pub fn census(&self, top: usize) -> (usize, Vec<(String, usize)>) {
        let inner = self.read();
        let mut groups: Vec<(&Arc<str>, usize)> = inner
            .groups
            .iter()
            .map(|(name, members)| (name, members.len()))
            .collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let groups = groups
            .into_iter()
            .take(top)
            .map(|(name, count)| (name.to_string(), count))
            .collect();
        (inner.users.len(), groups)
    }

    pub fn connection_count(&self) -> usize {
        self.read().connections.len()
    }

    /// Joins a connection to a group; false when the connection is unknown.
    /// Joins a connection to a group (at once if it is in it already).
    pub fn join(&self, connection_id: &str, group: &str) -> Result<(), JoinError> {
        self.write().join(connection_id, group)
    }

    /// How many connections `user` has open here.
    pub fn user_connection_count(&self, user: &str) -> usize {
        self.read().users.get(user).map_or(0, NameSet::len)
    }

    /// Takes a connection out of a group; returns the group state this cleared.
    pub fn leave(&self, connection_id: &str, group: &str) -> Cleared {
        let mut cleared = Cleared::new();
        self.write().leave(connection_id, group, &mut cleared);
        cleared
    }

    pub fn leave_all(&self, connection_id: &str) -> Cleared {
        let mut cleared = Cleared::new();
        self.write().leave_all(connection_id, &mut cleared);
        cleared
    }

    pub fn add_user_to_group(&self, user: &str, group: &str) {
        let mut inner = self.write();
        for id in inner.user_connections(user) {
            // Beyond the connection's group limit a join is refused (and counted).
            let _ = inner.join(&id, group);
        }
    }

    pub fn remove_user_from_group(&self, user: &str, group: &str) -> Cleared {
        let mut cleared = Cleared::new();
        let mut inner = self.write();
        for id in inner.user_connections(user) {
            inner.leave(&id, group, &mut cleared);
        }
        cleared
    }

    pub fn remove_user_from_all_groups(&self, user: &str) -> Cleared {
        let mut cleared = Cleared::new();
        let mut inner = self.write();
        for id in inner.user_connections(user) {
            inner.leave_all(&id, &mut cleared);
        }
        cleared
    }

    /// Adds (or removes) every connection the filter selects to (from) each group.
    pub fn change_groups_by_filter(
        &self,
        groups: &[String],
        filter: Option<&Filter>,
        add: bool,
    ) -> Cleared {
        let mut cleared = Cleared::new();
        let mut inner = self.write();
        let selected: Vec<Arc<str>> = inner
            .connections
            .values()
            .filter(|m| filter.is_none_or(|f| f.matches(*m)))
            .map(|m| Arc::clone(&m.connection.id))
            .collect();
        for id in selected {
            for group in groups {
                if add {
                    let _ = inner.join(&id, group);
                } else {
                    inner.leave(&id, group, &mut cleared);
                }
            }
        }
        cleared
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.read().users.contains_key(user)
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.read().groups.contains_key(group)
    }

    /// The state the members of `group` on this node have set in it.
    pub fn group_state(&self, group: &str) -> Vec<hubbub_proto::client_protocol::GroupStateItem> {
        let inner = self.read();
        let Some(ids) = inner.groups.get(group) else {
            return Vec::new();
        };
        ids.keys()
            .filter_map(|id| inner.connections.get(id))
            .filter_map(|m| {
                let state = m.connection.state();
                let (pairs, at) = state.extras_ref()?.group_state.get(group)?;
                Some(hubbub_proto::client_protocol::GroupStateItem {
                    connection_id: m.connection.id.to_string(),
                    user_id: m.connection.user_id.as_deref().map(str::to_owned),
                    state: Some(pairs.clone()),
                    updated_at: *at,
                })
            })
            .collect()
    }

    pub fn is_member(&self, connection_id: &str, group: &str) -> bool {
        self.read()
            .connections
            .get(connection_id)
            .is_some_and(|m| m.groups.contains(group))
    }

    fn deliver_to(connection: &Connection, message: &Outgoing) -> bool {
        if message.no_echo && message.sender.as_deref() == Some(&*connection.id) {
            return false;
        }
        connection.deliver(message);
        true
    }

    /// Delivers to each member that the selection accepts; counts the deliveries.
    fn fan_out<'a>(
        &self,
        members: impl Iterator<Item = &'a Member>,
        message: &Outgoing,
        selection: &Selection<'_>,
    ) -> usize {
        let delivered = members
            .filter(|m| selection.accepts(m) && Self::deliver_to(&m.connection, message))
            .count();
        self.count(delivered)
    }

    /// Fan-out to every connection of the hub. Returns how many got it.
    pub fn send_to_all(&self, message: &Outgoing, selection: &Selection<'_>) -> usize {
        let inner = self.read();
        self.fan_out(inner.connections.values(), message, selection)
    }

    /// Fan-out to a group's members, without copying the membership.
    pub fn send_to_group(
        &self,
        group: &str,
        message: &Outgoing,
        selection: &Selection<'_>,
    ) -> usize {
        let inner = self.read();
        let Some(members) = inner.groups.get(group) else {
            return 0;
        };
        if selection.is_everyone() {
            let delivered = members
                .values()
                .filter(|connection| Self::deliver_to(connection, message))
                .count();
            return self.count(delivered);
        }
        self.fan_out(
            members.keys().filter_map(|id| inner.connections.get(id)),
            message,
            selection,
        )
    }

    /// Fan-out to a user's connections.
    pub fn send_to_user(&self, user: &str, message: &Outgoing, selection: &Selection<'_>) -> usize {
        let inner = self.read();
        let Some(ids) = inner.users.get(user) else {
            return 0;
        };
        self.fan_out(
            ids.iter().filter_map(|id| inner.connections.get(id)),
            message,
            selection,
        )
    }

    pub fn send_to_connection(&self, connection_id: &str, message: &Outgoing) -> bool {
        let inner = self.read();
        let delivered = inner
            .connections
            .get(connection_id)
            .is_some_and(|m| Self::deliver_to(&m.connection, message));
        self.count(usize::from(delivered));
        delivered
    }

    /// Closes connections (all, a user's, a group's, or one) except `excluded`, telling clients
    /// `reason`. Returns the connections this call removed.
    pub fn close_where(
        &self,
        scope: &Target,
        excluded: &HashSet<&str>,
        reason: &str,
        cause: CloseCause,
    ) -> Vec<Arc<Connection>> {
        let victims: Vec<Arc<Connection>> = {
            let inner = self.read();
            let ids: Vec<Arc<str>> = match scope {
                Target::All => inner.connections.keys().cloned().collect(),
                Target::User(user) => inner.user_connections(user),
                Target::Group(group) => inner
                    .groups
                    .get(group.as_str())
                    .map(|ids| ids.keys().cloned().collect())
                    .unwrap_or_default(),
                Target::Connection(id) => vec![id.as_str().into()],
            };
            ids.iter()
                .filter(|id| !excluded.contains(&***id))
                .filter_map(|id| inner.connections.get(id).map(|m| Arc::clone(&m.connection)))
                .collect()
        };
        victims
            .into_iter()
            .filter(|c| self.close(c, reason, cause))
            .collect()
    }

    /// Closes every connection `matches` picks (reliable sessions too, attached or not), telling
    /// clients `reason`. Returns the connections this call removed.
    pub fn close_matching(
        &self,
        matches: impl Fn(&Connection) -> bool,
        reason: &str,
        cause: CloseCause,
    ) -> Vec<Arc<Connection>> {
        let victims: Vec<Arc<Connection>> = self
            .read()
            .connections
            .values()
            .filter(|m| matches(&m.connection))
            .map(|m| Arc::clone(&m.connection))
            .collect();
        victims
            .into_iter()
            .filter(|c| self.close(c, reason, cause))
            .collect()
    }

    /// Ends a connection for good: it leaves the hub now; its socket is closed by its writer.
    /// False when it had already left.
    pub fn close(&self, connection: &Arc<Connection>, reason: &str, cause: CloseCause) -> bool {
        let removed = self.remove(connection);
        let code = if connection.protocol.is_reliable() {
            CLOSE_POLICY
        } else {
            CLOSE_NORMAL
        };
        connection.request_close(CloseRequest {
            code,
            reason: reason.to_string(),
            notify: true,
            cause,
        });
        removed
    }

    /// A page of a group's connections, ordered by connection id, after `after`.
    pub fn list_group(
        &self,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<ListedConnection>, bool) {
        let inner = self.read();
        let Some(ids) = inner.groups.get(group) else {
            return (Vec::new(), false);
        };
        let mut ids: Vec<&Arc<str>> = ids
            .keys()
            .filter(|id| after.is_none_or(|a| &***id > a))
            .collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        let page = ids
            .into_iter()
            .take(limit)
            .filter_map(|id| inner.connections.get(id))
            .map(|m| ListedConnection {
                connection_id: Arc::clone(&m.connection.id),
                user_id: m.connection.user_id.clone(),
            })
            .collect();
        (page, more)
    }

    /// Every connection, for shutdown.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.read()
            .connections
            .values()
            .map(|m| Arc::clone(&m.connection))
            .collect()
    }
}

mod interest;
mod limits;
mod names;
mod registry;
#[cfg(test)]
mod tests;
