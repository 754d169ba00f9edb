//! Hub settings in the cluster: one entry per hub in the `hubbub_hubs` bucket (key `h_` plus the
//! base64url of the hub name, since hub names may hold characters bucket keys cannot). A change
//! on any node is written to the bucket; every node watches the bucket and applies each entry to
//! its own settings (SQLite first, then memory), so event handlers and policies are the same on
//! every node. A hub's settings are replaced whole, so the last write wins, as with ARM's PUT.
//! Entries are sealed with the cluster secret, bound to their key; a removal is a sealed `null`
//! (a bucket delete, which cannot be sealed, is ignored). An entry that does not open is refused,
//! and at join this node writes its own settings for that hub over it.

use super::{Cluster, ClusterError};
use crate::upstream::hub_settings::{HubProperties, HubSettings};
use async_nats::jetstream::{self, kv};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::TryStreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const BUCKET: &str = "hubbub_hubs";

fn key(hub: &str) -> String {
    format!("h_{}", URL_SAFE_NO_PAD.encode(hub.as_bytes()))
}

/// What a hub's sealed entry is bound to.
fn context(key: &str) -> String {
    format!("{BUCKET}/{key}")
}

/// A hub's settings (`None`: removed) as a sealed entry.
fn seal(wire: &super::wire::Wire, key: &str, properties: Option<&HubProperties>) -> bytes::Bytes {
    let json = serde_json::to_vec(&properties).unwrap_or_default();
    wire.secret.seal(&context(key), &json)
}

/// The settings in a sealed entry: `Err` when it does not open (refused, counted) or does not
/// parse.
fn open(
    wire: &super::wire::Wire,
    key: &str,
    value: &[u8],
) -> Result<Option<HubProperties>, String> {
    let plain = wire
        .open(&context(key), value)
        .ok_or("not sealed with this cluster's secret")?;
    serde_json::from_slice(&plain).map_err(|e| e.to_string())
}

fn hub_of(key: &str) -> Option<String> {
    let encoded = key.strip_prefix("h_")?;
    String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()
}

pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, String> {
    super::open_kv_bucket(
        js,
        BUCKET,
        "Hubbub hub settings (event handlers, policies)",
        1,
        replicas,
    )
    .await
}

/// Applies one hub's settings (or their removal) here. Blocking work on a blocking thread.
async fn apply(
    settings: &Arc<HubSettings>,
    hub: String,
    properties: Option<HubProperties>,
    now: i64,
) -> Result<(), ClusterError> {
    let settings = Arc::clone(settings);
    tokio::task::spawn_blocking(move || match properties {
        Some(properties) => settings.put(&hub, properties, now),
        None => settings.delete(&hub).map(|_| ()),
    })
    .await
    .map_err(|_| ClusterError::Failed("the hub settings change was interrupted".into()))??;
    Ok(())
}

/// At join: a new bucket is seeded with this node's settings; otherwise this node takes the
/// cluster's (dropping hubs the cluster does not have).
pub(crate) async fn adopt(
    kv: &kv::Store,
    wire: &super::wire::Wire,
    settings: &Arc<HubSettings>,
    now: i64,
) -> Result<(), ClusterError> {
    let failed = |e: String| ClusterError::Failed(format!("hub settings: {e}"));
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| failed(e.to_string()))?
        .try_collect()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if keys.is_empty() {
        for (hub, properties) in settings.all() {
            let key = key(&hub);
            kv.put(&key, seal(wire, &key, Some(&properties)))
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        return Ok(());
    }
    let mut cluster_hubs = BTreeSet::new();
    for key in keys {
        let Some(hub) = hub_of(&key) else { continue };
        let Some(value) = kv.get(&key).await.map_err(|e| failed(e.to_string()))? else {
            continue;
        };
        match open(wire, &key, &value) {
            Ok(Some(properties)) => {
                apply(settings, hub.clone(), Some(properties), now).await?;
                cluster_hubs.insert(hub);
            }
            Ok(None) => {}
            Err(e) => {
                // Kept here, and written back sealed: no node wrote what is there.
                tracing::warn!(%hub, error = %e, "refused the cluster's settings of a hub; writing this node's back");
                cluster_hubs.insert(hub.clone());
                let ours = settings.find(&hub);
                kv.put(&key, seal(wire, &key, ours.as_deref()))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
    }
    for hub in settings.all().into_keys() {
        if !cluster_hubs.contains(&hub) {
            apply(settings, hub, None, now).await?;
        }
    }
    Ok(())
}

impl Cluster {
    /// Writes a hub's settings (or, with `None`, removes them) to the cluster, then applies them
    /// here. Refused while NATS is unreachable.
    pub async fn put_hub_settings(
        &self,
        settings: &Arc<HubSettings>,
        hub: &str,
        properties: Option<HubProperties>,
        now: i64,
    ) -> Result<(), ClusterError> {
        if !self.connected() {
            return Err(ClusterError::Unavailable);
        }
        let key = key(hub);
        let written = self
            .hubs
            .put(&key, seal(&self.wire, &key, properties.as_ref()))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Err(reason) = written {
            tracing::warn!(%reason, "a hub settings change did not reach NATS");
            return Err(ClusterError::Unavailable);
        }
        apply(settings, hub.to_string(), properties, now).await
    }
}

/// Applies every change of the bucket here until shutdown.
pub(crate) async fn watch(
    cluster: Arc<Cluster>,
    settings: Arc<HubSettings>,
    shutdown: CancellationToken,
) {
    let clock = cluster.ring.clock();
    let mut follower = super::BucketFollower::new(&cluster, &cluster.hubs, shutdown);
    while let Some(entry) = follower.next().await {
        let Some(hub) = hub_of(&entry.key) else {
            continue;
        };
        let properties = match entry.operation {
            kv::Operation::Put => match open(&cluster.wire, &entry.key, &entry.value) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(%hub, error = %e, "ignored hub settings");
                    continue;
                }
            },
            // Removals are sealed `null` entries; a bare delete is no node's.
            kv::Operation::Delete | kv::Operation::Purge => continue,
        };
        if settings.find(&hub).as_deref() == properties.as_ref() {
            continue;
        }
        if let Err(e) = apply(&settings, hub.clone(), properties, clock.now_millis()).await {
            tracing::error!(%hub, error = %e, "could not apply the cluster's hub settings");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keys_carry_any_hub_name() {
        for hub in ["chat", "a`,.[]_b", "x.y"] {
            let k = key(hub);
            assert!(k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            assert_eq!(hub_of(&k).as_deref(), Some(hub));
        }
        assert_eq!(hub_of("other"), None);
    }
}
