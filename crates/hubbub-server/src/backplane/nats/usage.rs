//! Key usage across the cluster: every node puts its own counters (primary and secondary) under
//! its node id in the `hubbub_usage` bucket at each housekeeping tick, and watches the bucket to
//! add up the other nodes' counters, so the portal, the CLI and `/metrics` show the cluster's
//! usage on any node. A node that is gone keeps its last counters in the sums. Each node also
//! shares its most recent stale callers, so `key stale-callers` lists the cluster's on any node. Entries are
//! sealed with the cluster secret, bound to their node: counters no node wrote are refused.

use super::Cluster;
use crate::keys::stale::MAX_SHARED_CALLERS;
use crate::keys::usage::Usage;
use crate::keys::Keys;
use crate::store::{StaleCaller, UsageRecord};
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const BUCKET: &str = "hubbub_usage";

/// What a node's sealed counters are bound to.
fn context(node: &str) -> String {
    format!("{BUCKET}/{node}")
}

pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, String> {
    super::open_kv_bucket(js, BUCKET, "Hubbub key usage per node", 1, replicas).await
}

/// What a node shares: its usage counters per access slot, and its most recent stale callers.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shared {
    usage: [UsageRecord; 2],
    #[serde(default)]
    stale_callers: Vec<StaleCaller>,
}

impl Cluster {
    /// Shares this node's usage counters and stale callers with the cluster (skipped while NATS
    /// is unreachable).
    pub async fn publish_usage(&self, keys: &Keys) {
        if !self.connected() {
            return;
        }
        let mut stale_callers = keys.stale_callers().local();
        stale_callers.truncate(MAX_SHARED_CALLERS);
        let shared = Shared {
            usage: keys.local_usage(),
            stale_callers,
        };
        let payload = self.wire.secret.seal(
            &context(&self.node_id),
            &serde_json::to_vec(&shared).unwrap_or_default(),
        );
        if let Err(e) = self.usage.put(&*self.node_id, payload).await {
            tracing::debug!(error = %e, "usage counters not shared this time");
        }
    }
}

/// Adds up the other nodes' counters into `keys` until shutdown.
pub(crate) async fn watch(cluster: Arc<Cluster>, keys: Keys, shutdown: CancellationToken) {
    let mut others: HashMap<String, Shared> = HashMap::new();
    let mut follower = super::BucketFollower::new(&cluster, &cluster.usage, shutdown);
    while let Some(entry) = follower.next().await {
        if entry.key == *cluster.node_id {
            continue;
        }
        match entry.operation {
            kv::Operation::Put => {
                let plain = cluster.wire.open(&context(&entry.key), &entry.value);
                if let Some(Ok(shared)) = plain.map(|p| serde_json::from_slice::<Shared>(&p)) {
                    others.insert(entry.key, shared);
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                others.remove(&entry.key);
            }
        }
        keys.set_remote_usage([0, 1].map(|i| Usage::sum(others.values().map(|s| &s.usage[i]))));
        keys.stale_callers().set_remote(
            others
                .values()
                .flat_map(|s| s.stale_callers.iter().cloned())
                .collect(),
        );
    }
}
