//! Cluster mode end to end, against a real NATS JetStream server (`nats-server -js` on a free
//! loopback port, store in a temporary directory) and real `hubbub serve --cluster` processes:
//! messages across nodes, key rotation enforced everywhere within a second, concurrent
//! regenerations converging, reliable sessions handed over to the node their client recovers
//! on, a killed node, NATS lost and back, NATS unreachable at start.
//!
//! Needs `nats-server` (Debian package `nats-server`; `scripts/test` installs it).

#[path = "../common/mod.rs"]
mod common;
mod support;

mod failures;
mod keys;
mod management;
mod messages;
mod sessions;
mod settings_usage_notices;
mod trace;
mod trust;
