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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_are_named_without_their_secrets() {
        let exec = Sink::Exec {
            command: "vault write secret/app cs=\"$HUBBUB_CONNECTION_STRING\" token=s3cr3t".into(),
        };
        assert_eq!(exec.describe(), "command vault");
        let hook = Sink::Webhook {
            url: "https://user:pw@hooks.example.com/T000/B000/XXXX?sig=abc".into(),
        };
        assert_eq!(hook.describe(), "webhook https://hooks.example.com/…");
        let rules = SinkRules {
            dirs: vec!["/srv/sinks".into()],
            allow_exec: false,
        };
        let file = |p: &str| Sink::File { path: p.into() };
        assert!(rules.check(&file("/srv/sinks/app/cs"), None).is_ok());
        for bad in [
            "/srv/sinks/../etc/passwd",
            "/etc/cs",
            "sinks/cs",
            "/srv/sinksx/cs",
        ] {
            assert!(rules.check(&file(bad), None).is_err(), "{bad}");
        }
        assert!(
            rules.check(&exec, None).is_err(),
            "commands are off by default"
        );
        assert!(
            rules.check(&hook, None).is_err(),
            "a webhook needs the secret"
        );
        assert!(rules.check(&hook, Some("a-secret-of-16-chars")).is_ok());
    }
}

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
    /// How the sink is named in errors, logs and the audit log: never with what may be secret
    /// (a command's arguments, a URL's credentials, path or query).
    pub fn describe(&self) -> String {
        match self {
            Sink::File { path } => format!("file {path}"),
            Sink::Exec { command } => format!(
                "command {}",
                command
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(80)
                    .collect::<String>()
            ),
            Sink::Webhook { url } => match url::Url::parse(url) {
                Ok(u) => format!(
                    "webhook {}://{}/…",
                    u.scheme(),
                    u.host_str().unwrap_or_default()
                ),
                Err(_) => "webhook".into(),
            },
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

/// What sinks a policy may have on this node: file sinks only under `dirs` (default: the data
/// directory's `sinks`), command sinks only when allowed (they run as this process's user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkRules {
    pub dirs: Vec<std::path::PathBuf>,
    pub allow_exec: bool,
}

impl SinkRules {
    /// Whether `sink` may be used; the reason when not.
    pub fn check(&self, sink: &Sink, webhook_secret: Option<&str>) -> Result<(), String> {
        match sink {
            Sink::File { path } => {
                let path = std::path::Path::new(path);
                let inside = path.is_absolute()
                    && !path
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                    && path
                        .parent()
                        .is_some_and(|parent| self.dirs.iter().any(|dir| parent.starts_with(dir)));
                if inside {
                    Ok(())
                } else {
                    Err(format!(
                        "a file sink must be an absolute path inside one of the sink_dirs ({})",
                        self.dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            Sink::Exec { command } => {
                if !self.allow_exec {
                    Err("command sinks are off; start hubbub with allow_exec_sinks = true to allow them".into())
                } else if command.trim().is_empty() || command.len() > 4096 {
                    Err("a command sink needs a command of at most 4096 characters".into())
                } else {
                    Ok(())
                }
            }
            Sink::Webhook { url } => {
                let parsed = url::Url::parse(url)
                    .map_err(|_| "a webhook sink needs an http(s) URL".to_string())?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err("a webhook sink needs an http(s) URL".into());
                }
                if webhook_secret.is_none_or(|s| s.len() < 16) {
                    return Err("a webhook sink is signed with the notifications webhook_secret: set one (at least 16 characters)".into());
                }
                Ok(())
            }
        }
    }
}

/// Sinks of the rotation policy that failed on this node, and when to try them again.
#[derive(Debug, Default)]
pub struct SinkRetries(pub(crate) std::sync::Mutex<Option<Retry>>);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) target: (KeySlot, u64),
    pub(crate) next_at: UnixMillis,
    pub(crate) delay: i64,
}

/// How far this node has read the audit log for key events (none before its start).
#[derive(Debug, Default)]
pub struct EventCursor(pub(crate) std::sync::Mutex<Option<i64>>);
