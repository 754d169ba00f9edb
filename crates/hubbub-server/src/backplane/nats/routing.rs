//! Where messages and questions go between nodes: NATS subjects for hubs, groups, users and
//! nodes (names become hashes, since they may hold `.`, `*`, `>` or spaces, which subjects
//! cannot), and the forward entries of reliable sessions that moved to another node.
//!
//! | subjects (`<kind>`: `m` message, `q` question) | who subscribes (`<kind>` as `*`) |
//! |---|---|
//! | `hubbub.h.<hub>.<kind>` | nodes with a connection to the hub, ever |
//! | `hubbub.g.<hub>.<group>.<kind>` | nodes with a member of the group, while they have one |
//! | `hubbub.u.<hub>.<user>.<kind>` | nodes with a connection of the user, while they have one |
//! | `hubbub.n.<node id>.<kind>` | that node: sends to and questions about its connections (passed on for reliable sessions it handed over, see [`super::handover`]) |

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// A subject token for a name: 120 bits of its SHA-256, base64url (20 characters).
fn token(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..15])
}

/// What travels on a subject: a message for clients, or a question for the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Ask,
    /// `*`: both, for subscriptions.
    Any,
}

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Kind::Message => "m",
            Kind::Ask => "q",
            Kind::Any => "*",
        }
    }
}

pub fn hub_subject(hub: &str, kind: Kind) -> String {
    format!("hubbub.h.{}.{}", token(hub), kind.token())
}

pub fn group_subject(hub: &str, group: &str, kind: Kind) -> String {
    format!("hubbub.g.{}.{}.{}", token(hub), token(group), kind.token())
}

pub fn user_subject(hub: &str, user: &str, kind: Kind) -> String {
    format!("hubbub.u.{}.{}.{}", token(hub), token(user), kind.token())
}

pub fn node_subject(node: &str, kind: Kind) -> String {
    format!("hubbub.n.{node}.{}", kind.token())
}

/// Where sessions that left this node went: connection id → node id.
#[derive(Debug, Default)]
pub struct Moved(Mutex<HashMap<String, String>>);

impl Moved {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<String> {
        self.map().get(id).cloned()
    }

    pub fn set(&self, id: &str, node: &str) {
        self.map().insert(id.to_string(), node.to_string());
    }

    pub fn forget(&self, id: &str) {
        self.map().remove(id);
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_safe_whatever_the_names() {
        for name in ["a.b", "*", ">", "with space", "g\u{e9}", &"x".repeat(1024)] {
            let subject = group_subject("hub.x", name, Kind::Message);
            let tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), 5, "{subject}");
            assert!(tokens.iter().all(|t| !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')));
        }
        let m = Kind::Message;
        assert_ne!(group_subject("h", "a", m), group_subject("h", "b", m));
        assert_ne!(group_subject("h", "a", m), user_subject("h", "a", m));
        assert_eq!(hub_subject("chat", m), hub_subject("chat", m));
        assert!(group_subject("h", "a", Kind::Any).ends_with(".*"));
        assert!(group_subject("h", "a", Kind::Ask).ends_with(".q"));
    }

    #[test]
    fn forward_entries() {
        let moved = Moved::default();
        assert!(moved.is_empty());
        moved.set("a-1", "b");
        assert_eq!(moved.get("a-1").as_deref(), Some("b"));
        moved.set("a-1", "c");
        assert_eq!(moved.get("a-1").as_deref(), Some("c"));
        moved.forget("a-1");
        assert!(moved.get("a-1").is_none());
    }
}
