//! Every hub of the instance, by lower-case name: created on first use with the instance's
//! limits, reporting interest where a backplane follows it.

use super::{Hub, HubLimits, Interest, InterestSink, LimitCounts, MembershipSink};
use crate::dataplane::connection::ConnectionLimits;
use crate::dataplane::traffic::{Traffic, TrafficTable};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Every hub of the instance, by lower-case name.
#[derive(Default)]
pub struct Hubs {
    hubs: RwLock<HashMap<Arc<str>, Arc<Hub>>>,
    /// Where hubs report the groups and users their connections need (none on a single node).
    interest: std::sync::OnceLock<InterestSink>,
    /// Where hubs report every join and leave (for group presence events).
    membership: std::sync::OnceLock<MembershipSink>,
    limits: HubLimits,
    counts: Arc<LimitCounts>,
    /// The buffer limits every connection of this node shares (made on first use).
    connection_limits: std::sync::OnceLock<Arc<ConnectionLimits>>,
    /// Each hub's traffic, kept when a hub is quiet (and for hubs with no connection here).
    traffic: Arc<TrafficTable>,
}

impl std::fmt::Debug for Hubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hubs").finish_non_exhaustive()
    }
}

/// Hub names are case-insensitive; this is the canonical form.
pub fn canonical_hub(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Hubs {
    pub fn with_limits(limits: HubLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> HubLimits {
        self.limits
    }

    /// How often the limits were hit.
    pub fn limit_counts(&self) -> &LimitCounts {
        &self.counts
    }

    /// The same counts, shared.
    pub fn counts(&self) -> Arc<LimitCounts> {
        Arc::clone(&self.counts)
    }

    /// The buffer limits of this node's connections, and how often they were outgrown.
    pub fn connection_limits(&self) -> &Arc<ConnectionLimits> {
        self.connection_limits.get_or_init(|| {
            Arc::new(ConnectionLimits::new(
                self.limits.reliable_buffer_messages,
                self.limits.reliable_buffer_bytes,
            ))
        })
    }

    /// Every hub's traffic on this node.
    pub fn traffic(&self) -> &TrafficTable {
        &self.traffic
    }

    /// The traffic of hub `name` (which need not have connections here).
    pub fn traffic_of(&self, name: &str) -> Arc<Traffic> {
        self.traffic.hub(&canonical_hub(name))
    }

    /// Whether `user` may open one more connection in hub `hub` (counted when not).
    pub fn admits_user(&self, hub: &str, user: &str) -> bool {
        let open = self
            .get(hub)
            .map_or(0, |hub| hub.user_connection_count(user));
        let admitted = open < self.limits.connections_per_user;
        if !admitted {
            self.counts
                .connections_per_user
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        admitted
    }

    /// Hubs created from now on report interest changes to `sink`.
    pub fn set_interest(&self, sink: InterestSink) {
        let _ = self.interest.set(sink);
    }

    /// Hubs created from now on report joins and leaves to `sink`.
    pub fn set_membership(&self, sink: MembershipSink) {
        let _ = self.membership.set(sink);
    }

    pub fn get(&self, name: &str) -> Option<Arc<Hub>> {
        let key = canonical_hub(name);
        self.hubs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key.as_str())
            .cloned()
    }

    pub fn get_or_create(&self, name: &str) -> Arc<Hub> {
        if let Some(hub) = self.get(name) {
            return hub;
        }
        let key: Arc<str> = canonical_hub(name).into();
        let mut hubs = self.hubs.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(hubs.entry(Arc::clone(&key)).or_insert_with(|| {
            let sink = self.interest.get().cloned();
            if let Some(sink) = &sink {
                sink(Interest::Hub(Arc::clone(&key)));
            }
            let traffic = self.traffic.hub(&key);
            Arc::new(Hub::with_limits(
                key,
                sink,
                self.membership.get().cloned(),
                self.limits,
                Arc::clone(&self.counts),
                traffic,
            ))
        }))
    }

    pub fn all(&self) -> Vec<Arc<Hub>> {
        self.hubs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
