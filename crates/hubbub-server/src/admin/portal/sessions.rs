//! Portal sign-in sessions: in memory, bounded, each with its CSRF token.

use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
const MAX_SESSIONS: usize = 1000;

struct Session {
    csrf: Secret,
    expires: Instant,
}

/// Portal sign-in sessions, in memory (signing in again after a restart is expected).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    pub(super) fn create(&self) -> Option<(String, Secret)> {
        let id = Secret::generate()
            .ok()?
            .expose()
            .replace(['+', '/', '='], "");
        let csrf = Secret::generate().ok()?;
        let mut sessions = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires > Instant::now());
        if sessions.len() >= MAX_SESSIONS {
            return None;
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: Instant::now() + SESSION_LIFETIME,
            },
        );
        Some((id, csrf))
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<Secret> {
        let sessions = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    pub(super) fn end(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
