//! What the nodes of one instance share, behind one seam. Every delivery, every management
//! question, every key change, every hub-settings change, every audit event of the housekeeper
//! and every rotation notice goes through [`Backplane`]:
//!
//! - [`Backplane::Local`]: one node. Its own connections are all there is, its SQLite store is
//!   the source of truth; sending to other nodes and asking them are no-ops.
//! - [`Backplane::Nats`]: a cluster on NATS JetStream ([`nats`]): messages and questions cross
//!   nodes on subjects each node subscribes to by interest, the key ring is one compare-and-set
//!   document, audit events go to a stream, notices are claimed once.
//!
//! Nothing outside this module and the server's wiring asks which one it is.

pub mod nats;

use crate::dataplane::connection::Connection;
use crate::dataplane::delivery::Delivery;
use crate::dataplane::hub::{Hub, Hubs};
use crate::dataplane::ops::{Answer, Question};
use crate::dataplane::session::Session;
use crate::keys::{KeyRing, Keys};
use crate::store::{AuditEvent, StoreError};
use crate::upstream::hub_settings::{HubProperties, HubSettings};
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// What the backplane needs of this node to serve the other nodes: its hubs, answers to their
/// questions, and the end of a connection (the app server is told).
pub trait Node: Send + Sync + 'static {
    fn hubs(&self) -> &Hubs;
    /// Answers a question for this node's connections (closing, joining and telling the app
    /// server as the question asks).
    fn answer<'a>(&'a self, question: &'a Question) -> BoxFuture<'a, Answer>;
    /// A connection of this node has ended for good: tell the app server.
    fn departed(&self, connection: &Connection, reason: &str);
    /// A reliable session kept here without a socket: it waits for its client for the grace
    /// period, then ends.
    fn keep_detached(&self, hub: &Arc<Hub>, connection: &Arc<Connection>);
}

/// A shared change that did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The nodes cannot agree on a change now; nothing was changed (503, with this reason).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether this node claimed a notice (it queues and sends it) or another did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Mine,
    Theirs,
    /// The nodes could not be asked; try again later.
    Unknown,
}

/// The connection to the other nodes, for `/metrics`.
#[derive(Debug, Clone)]
pub struct Stats {
    pub node: Arc<str>,
    pub connected: bool,
    /// Messages forwarded to other nodes, taken from them, and not forwarded.
    pub published: u64,
    pub received: u64,
    pub dropped: u64,
    /// The bytes of the messages published and received.
    pub published_bytes: u64,
    pub received_bytes: u64,
    /// Messages and stored values refused: not written by a node with the cluster secret.
    pub refused_messages: u64,
    pub refused_values: u64,
}

/// One node, or this node's membership of a cluster. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Backplane {
    Local,
    Nats(Arc<nats::Cluster>),
}

impl Backplane {
    /// This node's id, carried in its connection ids (none on a single node).
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Backplane::Local => None,
            Backplane::Nats(cluster) => Some(&cluster.node_id),
        }
    }

    /// This node's link to the other nodes, for readiness: `None` alone (nothing to check),
    /// else whether NATS is connected.
    pub fn link_up(&self) -> Option<bool> {
        match self {
            Backplane::Local => None,
            Backplane::Nats(cluster) => Some(cluster.connected()),
        }
    }

    /// Whether changes to shared state can be made now.
    pub fn reachable(&self) -> bool {
        match self {
            Backplane::Local => true,
            Backplane::Nats(cluster) => cluster.connected(),
        }
    }

    /// Lets this node answer the other nodes (from now until shutdown).
    pub fn serve(&self, node: Arc<dyn Node>) {
        if let Backplane::Nats(cluster) = self {
            cluster.serve(node);
        }
    }

    /// Hands a delivery (already delivered to this node's connections) to the other nodes whose
    /// connections it may reach. Never waits.
    pub fn publish(&self, delivery: &Delivery) {
        if let Backplane::Nats(cluster) = self {
            cluster.bus.publish(delivery);
        }
    }

    /// A wait until the other nodes send this node what its connections need as of now (the
    /// subscriptions of its latest joins); `None` when there is nothing to wait for.
    pub fn settling(&self) -> Option<BoxFuture<'static, ()>> {
        match self {
            Backplane::Local => None,
            Backplane::Nats(cluster) => Some(cluster.bus.settling()),
        }
    }

    /// Waits (bounded) until the other nodes send this node what its connections need as of now.
    pub async fn settle(&self) {
        if let Some(settling) = self.settling() {
            settling.await;
        }
    }

    /// Asks `question` of the other nodes its target reaches, until one answer is `enough`.
    pub async fn ask(&self, question: &Question, enough: fn(&Answer) -> bool) -> Vec<Answer> {
        match self {
            Backplane::Local => Vec::new(),
            Backplane::Nats(cluster) => cluster.ask(question, enough).await,
        }
    }

    /// A reliable session that is not on this node: taken from the node that holds it.
    pub async fn take_session(&self, hub: &str, id: &str) -> Option<Session> {
        match self {
            Backplane::Local => None,
            Backplane::Nats(cluster) => cluster.take_session(hub, id).await,
        }
    }

    /// A connection of this node has ended (a node that handed its session over may keep a
    /// forward entry for it).
    pub fn session_ended(&self, hub: &str, id: &str) {
        if let Backplane::Nats(cluster) = self {
            cluster.session_ended(hub, id);
        }
    }

    /// A session restored here from another node (sends by its id reach it here now).
    pub fn session_arrived(&self, id: &str) {
        if let Backplane::Nats(cluster) = self {
            cluster.moved.forget(id);
        }
    }

    /// Applies a key change: `plan` makes the next ring from the current one (`None`: nothing
    /// to do). On one node, one SQLite transaction with its events; in a cluster, a
    /// compare-and-set on the shared ring (`plan` runs again after a lost race), then its events
    /// on the audit stream. Returns the ring now in force here and what `plan` made.
    pub async fn change_keys<F>(
        &self,
        keys: &Keys,
        plan: F,
    ) -> Result<(Arc<KeyRing>, Option<crate::keys::Planned>), SharedError>
    where
        F: FnMut(&KeyRing) -> Option<crate::keys::Planned> + Send + 'static,
    {
        match self {
            Backplane::Local => {
                let keys = keys.clone();
                let mut plan = plan;
                tokio::task::spawn_blocking(move || keys.commit(|ring| plan(ring)))
                    .await
                    .map_err(|_| SharedError::Failed("the key change was interrupted".into()))?
                    .map_err(SharedError::from)
            }
            Backplane::Nats(cluster) => Ok(cluster.change_keys(plan).await?),
        }
    }

    /// Records an event the housekeeper saw (once, however many nodes see it).
    pub async fn record(&self, keys: &Keys, event: AuditEvent) -> Result<(), SharedError> {
        match self {
            Backplane::Local => {
                let store = Arc::clone(keys.store());
                tokio::task::spawn_blocking(move || store.append_audit(&event.entry()))
                    .await
                    .map_err(|_| SharedError::Failed("recording was interrupted".into()))?
                    .map_err(SharedError::from)
            }
            Backplane::Nats(cluster) => {
                let dedup = event.dedup.clone();
                Ok(cluster.audit.record(&event.entry(), dedup).await?)
            }
        }
    }

    /// Shares this node's key usage with the other nodes.
    pub async fn share_usage(&self, keys: &Keys) {
        if let Backplane::Nats(cluster) = self {
            cluster.publish_usage(keys).await;
        }
    }

    /// Claims a notice for this node to send, so that it goes out once.
    pub async fn claim_notice(&self, dedup: &str) -> Claim {
        match self {
            Backplane::Local => Claim::Mine,
            Backplane::Nats(cluster) => cluster.claim_notice(dedup).await,
        }
    }

    /// Writes a hub's settings (or, with `None`, removes them) everywhere, then applies them here.
    pub async fn put_hub_settings(
        &self,
        settings: &Arc<HubSettings>,
        hub: &str,
        properties: Option<HubProperties>,
        now: i64,
    ) -> Result<(), SharedError> {
        match self {
            Backplane::Local => {
                let (settings, hub) = (Arc::clone(settings), hub.to_string());
                tokio::task::spawn_blocking(move || match properties {
                    Some(properties) => settings.put(&hub, properties, now),
                    None => settings.delete(&hub).map(|_| ()),
                })
                .await
                .map_err(|_| SharedError::Failed("the change was interrupted".into()))?
                .map_err(SharedError::from)
            }
            Backplane::Nats(cluster) => Ok(cluster
                .put_hub_settings(settings, hub, properties, now)
                .await?),
        }
    }

    /// Lets this node's trace listeners ask for every node's events, and forwards this node's
    /// events while another node's listeners ask (nothing to do on a single node).
    pub fn follow_trace(
        &self,
        tracer: &crate::trace::Tracer,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if let Backplane::Nats(cluster) = self {
            tokio::spawn(nats::trace::follow(
                cluster.wire.clone(),
                Arc::clone(&cluster.node_id),
                tracer.clone(),
                shutdown,
            ));
        }
    }

    /// What `/metrics` shows of the connection to the other nodes (none on a single node).
    pub fn stats(&self) -> Option<Stats> {
        match self {
            Backplane::Local => None,
            Backplane::Nats(cluster) => Some(cluster.stats()),
        }
    }

    /// One line for the start-up banner.
    pub fn describe(&self) -> Option<String> {
        self.node_id().map(|node| {
            format!("cluster node: {node} (keys, messages and the audit log shared through NATS)")
        })
    }
}
