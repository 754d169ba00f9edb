//! Hubbub as a library: a self-hosted, Azure Web PubSub-compatible service.
//!
//! | module | its one job |
//! |---|---|
//! | [`config`] | settings from file < environment < flags, validated before any port is bound |
//! | [`server`] | binds the listeners, serves HTTP(S) on them, shuts down gracefully |
//! | [`state`] | `AppState`: the cheap-to-clone handles handlers need |
//! | [`keys`] | the key ring: lock-free reads, one slot regenerated at a time, usage counters |
//! | [`secret`] | a key or token that never prints and compares in constant time |
//! | [`auth`] | verifies REST bearer tokens against the key ring |
//! | [`cluster`] | cluster mode on NATS JetStream: shared key ring, hub settings, usage, notices, audit stream, message bus, session handover |
//! | [`key_changes`] | key changes: in the local store, or through the cluster in cluster mode |
//! | [`store`] | durable state in SQLite: keys, admin token, key events |
//! | [`api`] | the data-plane REST API under `/api` |
//! | [`ws`] | the client endpoint: upgrade, subprotocols, one task per socket |
//! | [`hub`] | connections, users and groups of each hub; fan-out |
//! | [`connection`] | one connection: permissions, ack ids, bounded outbox, reliable buffer |
//! | [`message`] | an outgoing message encoded once per wire format |
//! | [`reliable`] | reconnection tokens signed with the salt |
//! | [`filter`] | the OData `filter` language selecting connections |
//! | [`hub_settings`] | per-hub event handlers, anonymous policy, keep-alive; stored durably |
//! | [`upstream`] | CloudEvents to event handlers: signatures, abuse protection, state |
//! | [`admin`] | the admin listener: management API and ARM-shaped key endpoints |
//! | [`admin_hubs`] | hub settings on the admin listener, admin- and ARM-shaped |
//! | [`admin_lifecycle`] | required rotations, key usage and the audit log on the admin listener |
//! | [`error`] | one error type rendered as Azure `ErrorDetail` JSON |
//! | [`tls`] | rustls configuration for HTTPS |
//! | [`lifecycle`] | housekeeping: saves usage, ends grace periods, records disabled keys |
//! | [`metrics`] | `/metrics` (Prometheus text) on the admin listener |
//! | [`notices`] | notices about keys by email and webhook, queued once, retried until delivered |
//! | [`portal`] | the web portal: embedded pages, sign-in sessions, CSRF protection |
//! | [`usage`] | per-key usage counters: lock-free on the hot path, saved periodically |
//! | [`clock`] | time as a dependency, so tests control it |

pub mod admin;
pub mod admin_hubs;
pub mod admin_lifecycle;
pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod filter;
pub mod hub;
pub mod hub_settings;
pub mod key_changes;
pub mod keys;
pub mod lifecycle;
pub mod message;
pub mod metrics;
pub mod notices;
pub mod portal;
pub mod reliable;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod usage;
pub mod ws;

pub use config::{Config, Settings};
pub use server::{start, RunningServer, StartError};
