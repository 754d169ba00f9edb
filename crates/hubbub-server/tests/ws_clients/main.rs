//! WebSocket clients against a real server: upgrade authentication, subprotocols, group
//! messaging with acks, REST delivery, reliable recovery, key rotation, limits and bad input.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod connecting;
mod connection_ends;
mod messaging;
mod mqtt;
mod rest_management;
mod rotation_and_recovery;
