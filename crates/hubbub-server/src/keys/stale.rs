//! Stale callers: who still signs tokens with a key value that was regenerated. The ring keeps
//! the earlier values of each access slot for a recognition window (never accepted); a token one
//! of them signed is refused with a message naming the key, and its caller is recorded here: key
//! version, kind, hub, source address and user agent, with a count and first and last seen.
//! Bounded: at most [`MAX_STALE_CALLERS`] callers (the one seen longest ago makes room), each
//! text field cut; saved to the store by the housekeeper when something changed.

use crate::clock::UnixMillis;
use crate::store::StaleCaller;
use hubbub_proto::keys::KeySlot;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Callers kept, at most.
pub const MAX_STALE_CALLERS: usize = 1000;
/// Callers a node shares with the others (its most recent ones), at most.
pub const MAX_SHARED_CALLERS: usize = 200;
/// Characters kept of a user agent, a hub name and a source address.
const MAX_FIELD_CHARS: usize = 256;

/// What kind of call carried the stale token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Rest,
    Connection,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Rest => "rest",
            CallKind::Connection => "connection",
        }
    }
}

/// Where a call came from, as the server saw it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub kind: CallKind,
    pub hub: &'a str,
    pub source_address: &'a str,
    pub user_agent: Option<&'a str>,
}

type Identity = (KeySlot, u64, &'static str, String, String, String);

fn cut(text: &str) -> String {
    text.chars().take(MAX_FIELD_CHARS).collect()
}

/// The callers seen with a stale token, and how many such tokens each access slot saw.
#[derive(Default)]
pub struct StaleCallers {
    callers: Mutex<HashMap<Identity, StaleCaller>>,
    /// Changed since the store last saved them.
    dirty: AtomicBool,
    /// Stale tokens refused since start, per access slot (primary, secondary).
    refused: [AtomicU64; 2],
    /// Cluster mode: the callers the other nodes saw.
    remote: Mutex<Vec<StaleCaller>>,
}

impl StaleCallers {
    /// The callers the store kept.
    pub fn load(rows: Vec<StaleCaller>) -> Self {
        let callers = rows
            .into_iter()
            .take(MAX_STALE_CALLERS)
            .filter_map(|c| {
                let kind = match c.kind.as_str() {
                    "rest" => CallKind::Rest,
                    "connection" => CallKind::Connection,
                    _ => return None,
                };
                Some((identity(&c, kind), c))
            })
            .collect();
        Self {
            callers: Mutex::new(callers),
            ..Self::default()
        }
    }

    fn callers(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, StaleCaller>> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one refused call whose token `slot` version `version` signed.
    pub fn record(&self, slot: KeySlot, version: u64, caller: &Caller<'_>, now: UnixMillis) {
        if let Some(index) = slot_index(slot) {
            self.refused[index].fetch_add(1, Ordering::Relaxed);
        }
        let row = StaleCaller {
            slot,
            version,
            kind: caller.kind.as_str().into(),
            hub: cut(caller.hub),
            source_address: cut(caller.source_address),
            user_agent: cut(caller.user_agent.unwrap_or("")),
            count: 0,
            first_seen_at: now,
            last_seen_at: now,
        };
        let key = identity(&row, caller.kind);
        let mut callers = self.callers();
        if !callers.contains_key(&key) && callers.len() >= MAX_STALE_CALLERS {
            let oldest = callers
                .iter()
                .min_by_key(|(_, c)| c.last_seen_at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                callers.remove(&oldest);
            }
        }
        let entry = callers.entry(key).or_insert(row);
        entry.count += 1;
        entry.last_seen_at = entry.last_seen_at.max(now);
        drop(callers);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The callers this node saw, most recently seen first.
    pub fn local(&self) -> Vec<StaleCaller> {
        let mut list: Vec<StaleCaller> = self.callers().values().cloned().collect();
        sort(&mut list);
        list
    }

    /// Cluster mode: the callers the other nodes saw (replacing what they said before).
    pub fn set_remote(&self, callers: Vec<StaleCaller>) {
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = callers;
    }

    /// Every caller, this node's and (in a cluster) the others', most recently seen first; a
    /// caller seen by several nodes is one row with their counts added.
    pub fn list(&self) -> Vec<StaleCaller> {
        let mut merged: HashMap<Identity, StaleCaller> = self.callers().clone();
        let remote = self
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for caller in remote {
            let kind = match caller.kind.as_str() {
                "rest" => CallKind::Rest,
                "connection" => CallKind::Connection,
                _ => continue,
            };
            match merged.entry(identity(&caller, kind)) {
                std::collections::hash_map::Entry::Occupied(mut seen) => {
                    let seen = seen.get_mut();
                    seen.count += caller.count;
                    seen.first_seen_at = seen.first_seen_at.min(caller.first_seen_at);
                    seen.last_seen_at = seen.last_seen_at.max(caller.last_seen_at);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(caller);
                }
            }
        }
        let mut list: Vec<StaleCaller> = merged.into_values().collect();
        sort(&mut list);
        list
    }

    /// This node's callers to save, if anything changed since the last call.
    pub fn take_changed(&self) -> Option<Vec<StaleCaller>> {
        self.dirty
            .swap(false, Ordering::Relaxed)
            .then(|| self.local())
    }

    /// Marks the callers as not saved (a save failed).
    pub fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Stale tokens of `slot` refused since start.
    pub fn refused(&self, slot: KeySlot) -> u64 {
        slot_index(slot).map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Forgets the callers of versions no longer recognised (`keep` says which are).
    pub fn retain_versions(&self, keep: impl Fn(KeySlot, u64) -> bool) {
        let mut callers = self.callers();
        let before = callers.len();
        callers.retain(|(slot, version, ..), _| keep(*slot, *version));
        if callers.len() != before {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
}

fn sort(list: &mut [StaleCaller]) {
    list.sort_by(|a, b| {
        b.last_seen_at
            .cmp(&a.last_seen_at)
            .then_with(|| a.hub.cmp(&b.hub))
            .then_with(|| a.source_address.cmp(&b.source_address))
    });
}

fn identity(c: &StaleCaller, kind: CallKind) -> Identity {
    (
        c.slot,
        c.version,
        kind.as_str(),
        c.hub.clone(),
        c.source_address.clone(),
        c.user_agent.clone(),
    )
}

fn slot_index(slot: KeySlot) -> Option<usize> {
    match slot {
        KeySlot::Primary => Some(0),
        KeySlot::Secondary => Some(1),
        KeySlot::Salt => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller<'a>(kind: CallKind, source: &'a str, ua: Option<&'a str>) -> Caller<'a> {
        Caller {
            kind,
            hub: "chat",
            source_address: source,
            user_agent: ua,
        }
    }

    #[test]
    fn callers_are_counted_once_per_identity_and_bounded() {
        let stale = StaleCallers::default();
        let app = caller(CallKind::Rest, "10.0.0.1", Some("azsdk-js"));
        stale.record(KeySlot::Primary, 1, &app, 1_000);
        stale.record(KeySlot::Primary, 1, &app, 2_000);
        stale.record(
            KeySlot::Primary,
            1,
            &caller(CallKind::Connection, "10.0.0.1", None),
            3_000,
        );
        let list = stale.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].kind, "connection", "most recent first");
        assert_eq!(
            (list[1].count, list[1].first_seen_at, list[1].last_seen_at),
            (2, 1_000, 2_000)
        );
        assert_eq!(stale.refused(KeySlot::Primary), 3);
        assert!(stale.take_changed().is_some());
        assert!(stale.take_changed().is_none(), "saved");

        // A flood of distinct callers keeps the most recent ones, each field cut.
        let long = "x".repeat(10_000);
        for n in 0..(MAX_STALE_CALLERS as i64 + 50) {
            let source = format!("10.1.{}.{}", n / 256, n % 256);
            stale.record(
                KeySlot::Secondary,
                3,
                &caller(CallKind::Rest, &source, Some(&long)),
                10_000 + n,
            );
        }
        let list = stale.list();
        assert_eq!(list.len(), MAX_STALE_CALLERS);
        assert!(list
            .iter()
            .all(|c| c.user_agent.chars().count() == MAX_FIELD_CHARS));
        assert_eq!(
            list.last().unwrap().last_seen_at,
            10_050,
            "the oldest made room"
        );

        stale.retain_versions(|slot, _| slot == KeySlot::Primary);
        assert!(stale.list().is_empty());
    }

    #[test]
    fn a_caller_seen_by_several_nodes_is_one_row() {
        let stale = StaleCallers::default();
        let app = caller(CallKind::Rest, "10.0.0.1", Some("app"));
        stale.record(KeySlot::Primary, 1, &app, 5_000);
        let mut theirs = stale.local()[0].clone();
        theirs.count = 4;
        theirs.first_seen_at = 1_000;
        theirs.last_seen_at = 4_000;
        let mut other = theirs.clone();
        other.source_address = "10.0.0.2".into();
        stale.set_remote(vec![theirs, other]);
        let list = stale.list();
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].count, list[0].first_seen_at, list[0].last_seen_at),
            (5, 1_000, 5_000)
        );
        assert_eq!(
            stale.local().len(),
            1,
            "only this node's are saved and shared"
        );
    }
}
