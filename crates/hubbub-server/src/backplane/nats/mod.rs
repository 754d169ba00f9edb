//! Cluster mode: several Hubbub nodes behind one endpoint behave as one instance through NATS
//! JetStream. The key ring lives in a key-value bucket (every change a compare-and-set on its
//! revision, every node watching it), key events in an audit stream, and messages cross nodes on
//! NATS subjects that each node subscribes to only while its connections need them.
//!
//! | submodule | its one job |
//! |---|---|
//! | [`config`] | cluster settings (NATS URLs, credentials, replicas) and the node's id |
//! | [`ring`] | the key ring in the `hubbub_keys` bucket: CAS changes, the watcher, the local mirror |
//! | [`audit`] | key events on the `hubbub_audit` stream, mirrored into each node's audit log |
//! | [`bus`] | messages between nodes: subjects, the envelope, interest-based subscriptions |
//! | [`hubs`] | hub settings in the `hubbub_hubs` bucket, applied on every node |
//! | [`usage`] | key usage counters per node in the `hubbub_usage` bucket, added up on every node |
//! | [`ask`] | management operations across nodes: existence, membership, close, list, permissions |
//! | [`notices`] | rotation notices claimed in the `hubbub_notices` bucket, so one node sends each |
//! | [`handover`] | reliable sessions moving to the node their client recovered on |
//! | [`routing`] | subjects of hubs, groups, users and nodes; forward entries of moved sessions |
//! | [`seal`] | the cluster secret: signatures on messages, sealed values in the buckets |
//! | [`wire`] | the NATS connection that signs what it sends and checks what it receives |

pub mod ask;
pub mod audit;
pub mod bus;
pub mod config;
pub mod handover;
pub mod hubs;
pub mod notices;
pub mod ring;
pub mod routing;
pub mod seal;
pub mod trace;
pub mod usage;
pub mod wire;

pub use config::{node_id, redact_url, valid_node_id, ClusterConfig, MAX_REPLICAS, NODE_ID_FILE};

use crate::backplane::SharedError;
use crate::dataplane::hub::Hubs;
use crate::keys::Planned;
use crate::keys::{KeyRing, Keys};
use crate::store::StoreError;
use async_nats::jetstream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Opens the key-value bucket `bucket`, creating it when no node has yet. The bucket's stream is
/// created directly with the standard key-value settings (async-nats's own bucket creation cannot
/// read nats-server 2.9's replies); `history` revisions are kept per key, and an existing bucket
/// that keeps more is cut down to that.
pub(crate) async fn open_kv_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    history: i64,
    replicas: usize,
) -> Result<jetstream::kv::Store, String> {
    if let Ok(store) = js.get_key_value(bucket).await {
        keep_at_most(js, bucket, history).await;
        return Ok(store);
    }
    let created = js
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: history,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    let created_error = created.err().map(|e| e.to_string());
    // Another node may have created it meanwhile.
    js.get_key_value(bucket)
        .await
        .map_err(|e| created_error.unwrap_or_else(|| e.to_string()))
}

/// Lowers an existing bucket's kept revisions per key to `history` (JetStream then drops the older
/// ones). A failure is logged: the bucket still works.
async fn keep_at_most(js: &jetstream::Context, bucket: &str, history: i64) {
    let name = format!("KV_{bucket}");
    let Ok(stream) = js.get_stream(&name).await else {
        return;
    };
    let mut config = stream.cached_info().config.clone();
    if config.max_messages_per_subject <= history {
        return;
    }
    config.max_messages_per_subject = history;
    match js.update_stream(config).await {
        Ok(_) => tracing::info!(
            bucket,
            history,
            "the bucket now keeps fewer revisions per key"
        ),
        Err(e) => tracing::warn!(bucket, error = %e, "could not lower the bucket's kept revisions"),
    }
}

/// Follows every entry of a key-value bucket until shutdown. The watch starts with the current
/// value of every key, and is opened anew (after a short pause) when NATS reconnects or the watch
/// breaks, since changes may have been missed meanwhile.
pub(crate) struct BucketFollower<'a> {
    bucket: &'a jetstream::kv::Store,
    reconnects: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
    watch: Option<jetstream::kv::Watch>,
}

impl<'a> BucketFollower<'a> {
    pub(crate) fn new(
        cluster: &Cluster,
        bucket: &'a jetstream::kv::Store,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            bucket,
            reconnects: cluster.reconnects(),
            shutdown,
            watch: None,
        }
    }

    /// The next entry; `None` at shutdown.
    pub(crate) async fn next(&mut self) -> Option<jetstream::kv::Entry> {
        use futures_util::StreamExt;
        loop {
            let pause = match &mut self.watch {
                None => match self.bucket.watch_all().await {
                    Ok(watch) => {
                        self.watch = Some(watch);
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot watch a cluster bucket yet");
                        Duration::from_secs(1)
                    }
                },
                Some(watch) => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => return None,
                        changed = self.reconnects.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        next = watch.next() => {
                            if let Some(Ok(entry)) = next {
                                return Some(entry);
                            }
                        }
                    }
                    self.watch = None;
                    Duration::from_millis(200)
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// How long a node waits for NATS at start before it gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one JetStream request (a read or a compare-and-set) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {urls} within {} s: {reason}", CONNECT_TIMEOUT.as_secs())]
    Unreachable { urls: String, reason: String },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Creds {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("JetStream is not usable on the NATS servers at {urls} (is nats-server running with -js?): {reason}")]
    JetStream { urls: String, reason: String },
    #[error("cannot keep the node id in {path}: {source}")]
    NodeIdFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster's key ring cannot be read: {0}")]
    BadRing(String),
    #[error("NATS is unreachable, so the cluster cannot take the change; nothing was changed, try again when NATS is back")]
    Unavailable,
    #[error("the cluster did not take the change: {0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ClusterError> for SharedError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Unavailable | ClusterError::Failed(_) => {
                SharedError::Refused(e.to_string())
            }
            ClusterError::Store(e) => SharedError::Store(e),
            other => SharedError::Failed(other.to_string()),
        }
    }
}

/// This node's membership of the cluster. Cheap to share (`Arc`).
pub struct Cluster {
    pub node_id: Arc<str>,
    /// The NATS connection, signing and checking with the cluster secret.
    pub(crate) wire: wire::Wire,
    pub(crate) ring: ring::RingSync,
    /// The `hubbub_hubs` bucket.
    pub(crate) hubs: async_nats::jetstream::kv::Store,
    /// The `hubbub_usage` bucket.
    pub(crate) usage: async_nats::jetstream::kv::Store,
    /// The `hubbub_notices` bucket, and the notices this node has settled (claimed or not).
    pub(crate) notices: async_nats::jetstream::kv::Store,
    pub(crate) audit: audit::AuditLog,
    pub bus: bus::Bus,
    /// Reliable sessions this node handed over, and where they went.
    pub(crate) moved: Arc<routing::Moved>,
    /// Counts (re)connections to NATS, so the node resyncs at once when it comes back.
    reconnects: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS (bounded by [`CONNECT_TIMEOUT`]), opens or creates the key bucket and the
    /// audit stream, adopts the cluster's key ring (seeding it from this node's keys when the
    /// cluster has none), and starts the watcher, the audit mirror and the message bus.
    pub async fn join(
        config: &ClusterConfig,
        keys: &Keys,
        hubs: &Arc<Hubs>,
        hub_settings: &Arc<crate::upstream::hub_settings::HubSettings>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let urls = config.redacted_urls();
        let node_id = node_id(config.node_id.as_deref(), keys.store().data_dir())?;
        let (reconnected, reconnects) = tokio::sync::watch::channel(0u64);
        let reconnected = Arc::new(reconnected);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("hubbub-{node_id}"))
            // A node delivers its own messages locally; NATS must not hand them back.
            .no_echo()
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .event_callback({
                let reconnected = Arc::clone(&reconnected);
                move |event| {
                    let reconnected = Arc::clone(&reconnected);
                    async move {
                        match event {
                            async_nats::Event::Connected => {
                                tracing::info!("NATS connection (re)established");
                                reconnected.send_modify(|n| *n += 1);
                            }
                            async_nats::Event::Disconnected => tracing::warn!(
                                "NATS connection lost; serving local clients with the last known keys; key changes are refused until it is back"
                            ),
                            other => tracing::debug!(event = %other, "NATS event"),
                        }
                    }
                }
            });
        if let Some(path) = &config.creds {
            options =
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| ClusterError::Creds {
                        path: path.clone(),
                        source,
                    })?;
        }
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let addrs = config
            .urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::Unreachable {
                urls: urls.clone(),
                reason: e.to_string(),
            })?;
        let client = match tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_millis(500),
            options.connect(addrs),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(ClusterError::Unreachable {
                    urls,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(ClusterError::Unreachable {
                    urls,
                    reason: "timed out".into(),
                })
            }
        };
        if config.tls_ca.is_none() && config.urls.iter().any(|u| u.starts_with("nats://")) {
            tracing::warn!(
                nats = %urls,
                "the connection to NATS is not encrypted (nats:// with no cluster_tls_ca) unless the NATS server requires TLS; keys cross it: use tls:// URLs and cluster_tls_ca"
            );
        }
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let jetstream_error = |reason: String| ClusterError::JetStream {
            urls: urls.clone(),
            reason,
        };
        let kv = ring::open_bucket(&js, config.replicas)
            .await
            .map_err(jetstream_error)?;
        audit::open_stream(&js, config.replicas)
            .await
            .map_err(jetstream_error)?;
        let hubs_kv = hubs::open_bucket(&js, config.replicas)
            .await
            .map_err(jetstream_error)?;
        let usage_kv = usage::open_bucket(&js, config.replicas)
            .await
            .map_err(jetstream_error)?;
        let notices_kv = notices::open_bucket(&js, config.replicas)
            .await
            .map_err(jetstream_error)?;
        let wire = wire::Wire {
            client: client.clone(),
            secret: Arc::clone(&config.secret),
            refused: Arc::default(),
        };
        let ring =
            ring::RingSync::new(kv, js.clone(), config.replicas, keys.clone(), wire.clone())?;
        ring.adopt(true).await?;
        hubs::adopt(&hubs_kv, &wire, hub_settings, keys.clock().now_millis()).await?;
        let audit = audit::AuditLog::new(js.clone(), node_id.clone(), wire.clone());
        let node_id: Arc<str> = node_id.into();
        let moved = Arc::<routing::Moved>::default();
        let bus = bus::Bus::start(
            wire.clone(),
            Arc::clone(&node_id),
            Arc::clone(hubs),
            Arc::clone(&moved),
            shutdown.clone(),
        )
        .await
        .map_err(|e| ClusterError::Unreachable {
            urls: urls.clone(),
            reason: e,
        })?;
        let cluster = Arc::new(Self {
            node_id,
            wire,
            ring,
            hubs: hubs_kv,
            usage: usage_kv,
            notices: notices_kv,
            audit,
            bus,
            moved,
            reconnects,
        });
        tokio::spawn(ring::watch(Arc::clone(&cluster), shutdown.clone()));
        tokio::spawn(usage::watch(
            Arc::clone(&cluster),
            keys.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(hubs::watch(
            Arc::clone(&cluster),
            Arc::clone(hub_settings),
            shutdown.clone(),
        ));
        tokio::spawn(audit::mirror(
            js,
            config.replicas,
            cluster.wire.clone(),
            keys.store().clone(),
            cluster.reconnects(),
            shutdown,
        ));
        tracing::info!(node_id = %cluster.node_id, nats = %urls, "joined the cluster");
        Ok(cluster)
    }

    /// Lets this node answer questions from the others (from now until shutdown).
    pub fn serve(&self, node: Arc<dyn crate::backplane::Node>) {
        self.bus.serve(node);
    }

    /// A key change through the shared ring (compare-and-set; `plan` runs again after a lost
    /// race), then its events on the audit stream.
    pub async fn change_keys<F>(
        &self,
        mut plan: F,
    ) -> Result<(Arc<KeyRing>, Option<Planned>), ClusterError>
    where
        F: FnMut(&KeyRing) -> Option<Planned> + Send,
    {
        let (ring, planned) = self
            .ring
            .change(self, |ring| plan(ring).map(|p| (p.ring.clone(), p)))
            .await?;
        for event in planned.iter().flat_map(|p| &p.events) {
            if let Err(e) = self.audit.record(&event.entry(), event.dedup.clone()).await {
                tracing::error!(error = %e, "the key changed but its audit event was not stored");
            }
        }
        Ok((ring, planned))
    }

    /// The NATS connection and the messages crossing it, for `/metrics`.
    pub fn stats(&self) -> crate::backplane::Stats {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.bus.stats;
        crate::backplane::Stats {
            node: Arc::clone(&self.node_id),
            connected: self.connected(),
            published: stats.published.load(Relaxed),
            received: stats.received.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            published_bytes: stats.published_bytes.load(Relaxed),
            received_bytes: stats.received_bytes.load(Relaxed),
            refused_messages: self.wire.refused.messages.load(Relaxed),
            refused_values: self.wire.refused.values.load(Relaxed),
        }
    }

    /// Whether the NATS connection is up right now.
    pub fn connected(&self) -> bool {
        self.wire.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A receiver that changes whenever NATS (re)connects.
    pub(crate) fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut reconnects = self.reconnects.clone();
        reconnects.mark_unchanged();
        reconnects
    }

    /// The node a connection id belongs to (`<node>-<hex>`), if it names one.
    pub fn node_of(connection_id: &str) -> Option<&str> {
        let (node, rest) = connection_id.split_once('-')?;
        (valid_node_id(node) && !rest.is_empty()).then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_name_their_node() {
        assert_eq!(Cluster::node_of("n1-0123abcd"), Some("n1"));
        assert_eq!(Cluster::node_of("0123abcd"), None);
        assert_eq!(Cluster::node_of("a.b-12"), None);
        assert_eq!(Cluster::node_of("n1-"), None);
    }
}
