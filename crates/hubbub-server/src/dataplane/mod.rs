//! The data plane of one node: its hubs with their connections, users and groups; outgoing
//! messages encoded once per wire format; the OData filter; and the operations the REST API, the
//! client protocols and other nodes ask of this node's connections.
//!
//! | submodule | its one job |
//! |---|---|
//! | [`hub`] | each hub's connections, users and groups; fan-out of one message to many connections |
//! | [`connection`] | one connection: permissions, remembered ack ids, bounded outbox, reliable buffer |
//! | [`message`] | one outgoing message, encoded at most once per wire format |
//! | [`filter`] | the OData `filter` language selecting connections |
//! | [`names`] | hub, group, user and connection names: what is valid |
//! | [`reliable`] | reconnection tokens signed with the salt |
//! | [`delivery`] | one message for a target (hub, group, user, connection), fanned out here |
//! | [`ops`] | management questions (exists, join, leave, close, permissions, list) answered here |
//! | [`session`] | a reliable session taken out whole, and restored, when it moves between nodes |
//! | [`stream`] | the group streams a publishing connection has open |
//! | [`stream_end`] | how streams end: the last message, the idle-timeout watcher, a connection's end |
//! | [`traffic`] | each hub's messages and bytes in and out, counted per thread and summed when read |

pub mod connection;
pub mod delivery;
pub mod filter;
pub mod hub;
pub mod message;
pub mod names;
pub mod ops;
pub mod reliable;
pub mod session;
pub mod stream;
pub mod stream_end;
pub mod traffic;
