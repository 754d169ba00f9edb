//! Portal sign-in sessions: in memory, bounded, each with its CSRF token; and the sign-in rate
//! limit: an address with too many failed sign-ins in a minute is refused for the rest of it.

use crate::secret::Secret;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
const MAX_SESSIONS: usize = 1000;

struct Session {
    csrf: Secret,
    expires: Instant,
}

/// Failed sign-ins an address may make in [`SIGN_IN_WINDOW`] before it is refused.
pub const MAX_FAILED_SIGN_INS: u32 = 5;
/// The window of the sign-in rate limit.
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at most (the oldest window is forgotten first).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Portal sign-in sessions, in memory (signing in again after a restart is expected), and the
/// failed sign-ins per address.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Sign-ins refused by the rate limit.
    refused: AtomicU64,
}

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
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
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
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    /// Whether `address` may try to sign in now; `Err(seconds)` until its window ends when it
    /// failed too often.
    pub(super) fn may_sign_in(&self, address: IpAddr) -> Result<(), u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&address) {
            Some((since, count))
                if *count >= MAX_FAILED_SIGN_INS && since.elapsed() < SIGN_IN_WINDOW =>
            {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err((SIGN_IN_WINDOW - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed sign-in of `address`.
    pub(super) fn failed(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&address) {
            failures.retain(|_, (since, _)| since.elapsed() < SIGN_IN_WINDOW);
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= SIGN_IN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// Sign-ins refused by the rate limit so far.
    pub fn refused_sign_ins(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Signs every session out (the admin token they signed in with was rotated).
    pub fn end_all(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(super) fn end(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}
