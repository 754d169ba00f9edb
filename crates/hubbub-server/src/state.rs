//! `AppState`: the cheap-to-clone handles every request handler needs.

use crate::dataplane::hub::Hubs;
use crate::upstream::hub_settings::HubSettings;
use crate::keys::Keys;
use crate::secret::Secret;
use crate::upstream::Upstream;
use hubbub_proto::audience::PublicEndpoint;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of the client endpoint.
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    /// WebSocket ping interval; a client silent for three intervals is closed.
    pub keep_alive: Duration,
    /// How long a dropped reliable session waits to be resumed.
    pub reconnect_grace: Duration,
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub keys: Keys,
    /// Every public endpoint; the first one is used in connection strings.
    pub endpoints: Arc<[PublicEndpoint]>,
    pub admin_token: Arc<Secret>,
    pub token_leeway_secs: i64,
    pub hubs: Arc<Hubs>,
    pub hub_settings: Arc<HubSettings>,
    pub upstream: Arc<Upstream>,
    pub client: ClientSettings,
    /// Every socket task and session timer, so shutdown can wait for them.
    pub sockets: TaskTracker,
    /// Key age policy: keys older than this many days are due for rotation.
    pub key_max_age_days: Option<u32>,
    pub notifications: Arc<crate::keys::notices::NotificationSettings>,
    /// Portal sign-in sessions.
    pub portal: Arc<crate::admin::portal::Sessions>,
    /// The last (time, delivered messages) sample, for the portal's message rate.
    pub rate_sample: Arc<std::sync::Mutex<Option<(std::time::Instant, u64)>>>,
    /// Cluster mode: this node's membership of the NATS cluster.
    pub cluster: Option<Arc<crate::backplane::nats::Cluster>>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The endpoint written into connection strings.
    pub fn primary_endpoint(&self) -> String {
        self.endpoints
            .first()
            .map(PublicEndpoint::url)
            .unwrap_or_default()
    }
}
