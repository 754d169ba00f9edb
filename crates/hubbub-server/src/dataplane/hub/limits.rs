//! What one client may grow in a hub: groups per connection, connections per user, events
//! waiting for the handler, a reliable connection's recovery buffer; and how often those limits
//! were hit.

use std::sync::atomic::AtomicU64;

/// Groups a connection may be in, by default.
pub const DEFAULT_MAX_GROUPS_PER_CONNECTION: usize = 1000;
/// Connections one user id may have open in one hub on this node, by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 1000;
/// User events one connection may have waiting for the event handler, by default.
pub const DEFAULT_EVENT_QUEUE: usize = 64;

/// What one client may grow in a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    pub groups_per_connection: usize,
    pub connections_per_user: usize,
    /// User events one connection may have waiting for the event handler.
    pub event_queue: usize,
    /// Un-acknowledged messages and bytes a reliable connection may have.
    pub reliable_buffer_messages: usize,
    pub reliable_buffer_bytes: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            groups_per_connection: DEFAULT_MAX_GROUPS_PER_CONNECTION,
            connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            event_queue: DEFAULT_EVENT_QUEUE,
            reliable_buffer_messages: crate::dataplane::connection::MAX_UNACKED_MESSAGES,
            reliable_buffer_bytes: crate::dataplane::connection::MAX_UNACKED_BYTES,
        }
    }
}

/// How often the hub limits were hit, for `/metrics`.
#[derive(Debug, Default)]
pub struct LimitCounts {
    /// Joins refused because the connection was in the most groups it may be in.
    pub groups_per_connection: AtomicU64,
    /// Connections refused because their user had the most it may have.
    pub connections_per_user: AtomicU64,
    /// User events refused because the connection had the most waiting for the handler.
    pub event_queue: AtomicU64,
    /// Group streams refused because the connection had the most open it may have.
    pub streams: AtomicU64,
    /// Group state refused because it was larger than a connection may set in a group.
    pub group_state: AtomicU64,
    /// Group presence events not sent because too many were waiting.
    pub presence_events: AtomicU64,
    /// MQTT connections closed for a packet larger than the service takes.
    pub mqtt_packet_size: AtomicU64,
    /// MQTT sockets closed because no CONNECT came in time.
    pub mqtt_connect_timeout: AtomicU64,
}

/// Why a connection did not join a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    NoSuchConnection,
    /// The connection is in this many groups, the most it may be in.
    TooManyGroups(usize),
}
