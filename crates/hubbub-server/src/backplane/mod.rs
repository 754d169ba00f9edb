//! What the nodes of one instance share.

pub mod nats;
