//! Rotation policies: rotation with no human step, on alternating slots. One access slot is
//! **active**: its connection string is what the sinks hold and apps read. A step regenerates
//! the **standby** slot and makes it active (then writes the sinks); the previously active value
//! stays valid until the next step, so apps have a full period to pick up the new string, and a
//! value is gone two steps after it was active. The policy lives in the key ring, so a step is a
//! key change like any other: durable before it is acknowledged, and in a cluster a
//! compare-and-set that exactly one node wins per due time.

use crate::clock::UnixMillis;
use hubbub_proto::keys::KeySlot;
use serde::{Deserialize, Serialize};

/// The shortest period between steps.
pub const MIN_EVERY_MS: i64 = 10_000;
/// The longest period between steps (10 years).
pub const MAX_EVERY_MS: i64 = 3650 * 24 * 3600 * 1000;
/// The longest idle window (usage is kept by minute for an hour).
pub const MAX_IDLE_MS: i64 = 3600 * 1000;
/// Sinks one policy may have.
pub const MAX_SINKS: usize = 16;

/// Where the active connection string goes at every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Sink {
    /// A file, replaced atomically (mode 0600): the connection string and a newline.
    File { path: String },
    /// A shell command run with `HUBBUB_CONNECTION_STRING` and `HUBBUB_KEY_TYPE` in its
    /// environment (its output is never logged).
    Exec { command: String },
    /// A signed POST of `{"keyType", "version", "connectionString"}`.
    Webhook { url: String },
}

impl Sink {
    /// How the sink is shown (never with a secret: a URL's user and password are dropped).
    pub fn describe(&self) -> String {
        match self {
            Sink::File { path } => format!("file {path}"),
            Sink::Exec { command } => {
                format!("exec {}", command.chars().take(80).collect::<String>())
            }
            Sink::Webhook { url } => format!(
                "webhook {}",
                crate::backplane::nats::config::redact_url(url)
            ),
        }
    }
}

/// What the last step (or attempt) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub at: UnixMillis,
    /// `rotated`, `postponed` or `sinks_failed`.
    pub result: String,
    pub detail: String,
}

/// A rotation policy and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    pub every_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_if_idle_ms: Option<i64>,
    #[serde(default)]
    pub sinks: Vec<Sink>,
    /// The slot whose connection string apps use.
    pub active: KeySlot,
    pub next_step_at: UnixMillis,
    /// The active value (slot, version) the sinks last received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<(KeySlot, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
}

/// The other access slot.
pub fn other(slot: KeySlot) -> KeySlot {
    match slot {
        KeySlot::Primary => KeySlot::Secondary,
        _ => KeySlot::Primary,
    }
}

impl RotationPolicy {
    /// The slot the next step regenerates.
    pub fn standby(&self) -> KeySlot {
        other(self.active)
    }
}
