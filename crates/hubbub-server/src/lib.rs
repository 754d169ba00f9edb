//! Hubbub as a library: a self-hosted, Azure Web PubSub-compatible service.
//!
//! The folders follow the four concerns and the seam between one node and many:
//!
//! | module | its one job |
//! |---|---|
//! | [`keys`] | the key ring, every key change (one seam), usage, the housekeeper, rotation notices, token checks |
//! | [`dataplane`] | hubs, connections, groups and users; messages, filters, deliveries and management operations on this node's connections |
//! | [`backplane`] | what the nodes share: deliveries and questions to other nodes, key changes, hub settings, notices; local (one node) or NATS JetStream (a cluster) |
//! | [`protocols`] | client protocols (json, json.reliable, simple): negotiate, decode a frame, encode a message |
//! | [`ws`] | the client endpoint: upgrade, authentication, the `connect` event, one task per socket |
//! | [`api`] | the data-plane REST API under `/api` |
//! | [`upstream`] | events to app servers (CloudEvents) and the per-hub settings that route them |
//! | [`admin`] | the admin listener: keys, ARM twins, hub settings, lifecycle, portal, metrics |
//! | [`store`] | durable state in SQLite: keys, admin token, hub settings, audit log, usage, notices |
//! | [`listener`] | a listener's connections: the cap, the header and idle timeouts, their counters |
//! | [`server`] | the wiring: opens the store, joins the backplane, binds the listeners, shuts down |
//! | [`state`] | `AppState`: the cheap-to-clone handles handlers need |
//! | [`config`] | settings from file < environment < flags, validated before any port is bound |
//! | [`oidc`] | identity-provider (OpenID Connect) tokens: issuers, their keys, roles |
//! | [`secret`] | a key or token that never prints and compares in constant time |
//! | [`error`] | one error type rendered as Azure `ErrorDetail` JSON |
//! | [`tls`] | rustls configuration for HTTPS |
//! | [`clock`] | time as a dependency, so tests control it |
//! | [`trace`] | the live trace: connections, REST calls and refused tokens as they happen, for `/admin/trace` |
//! | [`telemetry`] | counters and histograms of connections, REST calls, refused tokens, event-handler calls |
//! | [`history`] | the last hour of traffic, sampled for the portal's charts |

pub mod admin;
pub mod api;
pub mod backplane;
pub mod clock;
pub mod config;
pub mod dataplane;
pub mod error;
pub mod history;
pub mod keys;
pub mod listener;
pub mod oidc;
pub mod peer;
pub mod protocols;
pub mod revocations;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod ws;

pub use config::{Config, Settings};
pub use server::{start, RunningServer, StartError};
