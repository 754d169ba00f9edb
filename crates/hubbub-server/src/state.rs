//! `AppState`: the cheap-to-clone handles every request handler needs, and the operations of
//! this node that span the data plane and the backplane: a delivery here and to the other nodes,
//! a question answered here and by the other nodes, the end of a connection.

use crate::backplane::{Backplane, Node};
use crate::dataplane::connection::Connection;
use crate::dataplane::delivery::{self, Delivered, Delivery};
use crate::dataplane::hub::{Hub, Hubs};
use crate::dataplane::ops::{self, Answer, Ask, Question};
use crate::keys::Keys;
use crate::upstream::hub_settings::HubSettings;
use crate::upstream::{EventContext, Upstream};
use futures_util::future::BoxFuture;
use hubbub_proto::audience::PublicEndpoint;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The reason of a connection whose socket broke without a close.
pub const LOST: &str = "ConnectionLost";
/// The reason of a reliable session not resumed in time.
pub const EXPIRED: &str = "SessionExpired";

/// Settings of the client endpoint.
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    /// WebSocket ping interval; a client silent for three intervals is closed.
    pub keep_alive: Duration,
    /// How long a dropped reliable session waits to be resumed.
    pub reconnect_grace: Duration,
}

/// What every request handler and socket task shares, behind one reference: a clone is one
/// reference count, and a socket task holds 8 bytes of it rather than the whole set of handles.
/// `Debug` shows no key, token or notification secret.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The service's state: its keys, hubs, settings and the handles of its parts.
pub struct Shared {
    pub keys: Keys,
    /// Every public endpoint; the first one is used in connection strings.
    pub endpoints: Arc<[PublicEndpoint]>,
    pub admin_token: Arc<crate::secret::AdminToken>,
    pub token_leeway_secs: i64,
    /// Proxies whose `X-Forwarded-For` names a caller's address.
    pub trusted_proxies: Arc<crate::peer::TrustedProxies>,
    pub hubs: Arc<Hubs>,
    pub hub_settings: Arc<HubSettings>,
    pub upstream: Arc<Upstream>,
    pub client: ClientSettings,
    /// Every socket task and session timer, so shutdown can wait for them.
    pub sockets: TaskTracker,
    /// Key age policy: keys older than this many days are due for rotation.
    pub key_max_age_days: Option<u32>,
    /// Days an earlier key value is recognised after it was replaced (stale callers).
    pub stale_key_window_days: u32,
    pub notifications: Arc<crate::keys::notices::NotificationSettings>,
    /// Portal sign-in sessions.
    pub portal: Arc<crate::admin::portal::sessions::Sessions>,
    /// The last (time, delivered messages) sample, for the portal's message rate.
    pub rate_sample: Arc<std::sync::Mutex<Option<(std::time::Instant, u64)>>>,
    /// Open connections and limit counters of the public and admin listeners.
    pub listeners: Arc<crate::listener::Listeners>,
    /// What the nodes share: this node alone, or its membership of a cluster.
    pub backplane: Backplane,
    /// The live trace (`/admin/trace`).
    pub trace: crate::trace::Tracer,
    /// Counters and histograms of connections, REST calls, refused tokens and event-handler
    /// calls (`/metrics`); messages and bytes are counted per hub in `hubs`.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The last hour of traffic and key use, sampled for the portal's charts.
    pub history: Arc<crate::history::History>,
    /// Identity providers whose tokens the REST and admin APIs accept (none configured: keys
    /// only).
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// Revocations this node has enforced (connections closed).
    pub revocations: Arc<crate::keys::ring::Enforced>,
    /// Notices this node need not claim or queue again.
    pub notices_settled: Arc<crate::keys::notices::Settled>,
    /// How far the audit log has been read for key events (CloudEvents).
    pub key_events: Arc<crate::keys::policy::EventCursor>,
    /// Sinks of the rotation policy that failed here, and when to try them again.
    pub sink_retries: Arc<crate::keys::policy::SinkRetries>,
    /// Where file sinks may write, and whether command sinks may run.
    pub sink_rules: Arc<crate::keys::policy::SinkRules>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("keys", &self.keys)
            .field("endpoints", &self.endpoints)
            .field("admin_token", &self.admin_token)
            .field("token_leeway_secs", &self.token_leeway_secs)
            .field("client", &self.client)
            .field("key_max_age_days", &self.key_max_age_days)
            .field("notifications", &self.notifications)
            .field("backplane", &self.backplane)
            .finish_non_exhaustive()
    }
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

impl AppState {
    /// Delivers a message to its target's connections here, then hands it to the other nodes
    /// (unless it was for one connection, found here).
    pub fn send(&self, delivery: &Delivery) {
        let here = delivery::deliver(&self.hubs, delivery);
        self.trace.message(delivery, &here);
        if here == Delivered::NotHere || delivery.target.connection_id().is_none() {
            self.backplane.publish(delivery);
        }
    }

    /// The connections open on this node (reliable sessions waiting to resume included).
    pub fn connection_count(&self) -> u64 {
        self.hubs
            .all()
            .iter()
            .map(|h| h.connection_count() as u64)
            .sum()
    }

    /// Samples this node's traffic for the portal's charts every interval until shutdown.
    pub async fn sample_history(self) {
        let mut every = tokio::time::interval(crate::history::INTERVAL);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = every.tick() => {
                    let now = self.keys.clock().now_millis();
                    let total = self.hubs.traffic().total();
                    self.history.sample(now, self.connection_count(), total);
                }
            }
        }
    }

    /// Sends a message the REST API took (counted as received from REST).
    pub fn send_rest(&self, delivery: &Delivery) {
        self.hubs.traffic_of(&delivery.hub).received_rest();
        self.send(delivery);
    }

    /// A connection began (a new session): counted, traced.
    pub fn opened(&self, connection: &Connection) {
        self.telemetry
            .opened(&connection.hub, connection.protocol.name());
        self.trace.emit(|| crate::trace::opened(connection));
    }

    /// A token or key was refused: counted, traced. `kind` is `rest` or `connection`.
    pub fn auth_failed(
        &self,
        kind: &'static str,
        hub: Option<&str>,
        error: &crate::keys::auth::AuthError,
    ) {
        self.token_refused(kind, hub, crate::trace::auth_reason(error));
    }

    /// An identity-provider token was refused: counted, traced (kind `identity`).
    pub fn identity_refused(&self, hub: Option<&str>, error: &crate::oidc::OidcError) {
        self.token_refused("identity", hub, error.reason());
    }

    fn token_refused(&self, kind: &'static str, hub: Option<&str>, reason: &'static str) {
        self.telemetry.auth_failure(kind, reason);
        self.trace.emit(|| crate::trace::TraceEvent::AuthFailure {
            kind,
            hub: hub.map(str::to_owned),
            reason: reason.to_string(),
        });
    }

    /// Answers a question here and on the other nodes its target reaches (unless this node's
    /// answer is already `enough`). Every answer received, this node's first.
    pub async fn ask(&self, question: &Question, enough: fn(&Answer) -> bool) -> Vec<Answer> {
        let local = self.answer_here(question).await;
        if enough(&local) {
            return vec![local];
        }
        let mut answers = vec![local];
        answers.extend(self.backplane.ask(question, enough).await);
        answers
    }

    /// Answers a question for this node's connections: the app server hears of the connections
    /// it closed, and joins wait (bounded) until the other nodes send this node their groups.
    pub async fn answer_here(&self, question: &Question) -> Answer {
        let answered = ops::answer(&self.hubs, question);
        if let Ask::Close { reason, .. } = &question.ask {
            for connection in &answered.closed {
                self.departed(connection, reason);
            }
        }
        let now = self.keys.clock().now_millis();
        for (connection, group) in &answered.cleared {
            self.send(&crate::dataplane::delivery::group_state_change(
                connection, group, None, now,
            ));
        }
        if answered.joined {
            self.backplane.settle().await;
        }
        answered.answer
    }

    /// Tells the app server a connection is gone (once per connection: call after a removal).
    pub fn departed(&self, connection: &Connection, reason: &str) {
        // An MQTT client's DISCONNECT is the client's doing, though the service then closes.
        let closing = connection
            .close_requested()
            .filter(|c| !connection.protocol.closed_for_client(c));
        let cause = match &closing {
            Some(request) => request.cause.label(),
            None if reason == LOST || reason == EXPIRED => "lost",
            None => "client",
        };
        self.telemetry.closed(&connection.hub, cause);
        self.trace
            .emit(|| crate::trace::TraceEvent::ConnectionClosed {
                hub: connection.hub.to_string(),
                connection_id: connection.id.to_string(),
                user_id: connection.user_id.as_deref().map(str::to_owned),
                by: if closing.is_some() {
                    "server"
                } else {
                    "client"
                },
                code: closing.as_ref().map(|c| c.code),
                reason: reason.to_string(),
                cause,
            });
        // Its streams end and its group state is cleared, for the members on every node.
        for delivery in crate::dataplane::stream_end::end_all(connection) {
            self.send(&delivery);
        }
        let now = self.keys.clock().now_millis();
        for delivery in crate::dataplane::delivery::group_state_ended(connection, now) {
            self.send(&delivery);
        }
        // A session handed over to this node: its first node may keep a forward entry.
        self.backplane
            .session_ended(&connection.hub, &connection.id);
        let settings = self.hub_settings.get(&connection.hub);
        self.upstream.notify(
            &settings,
            EventContext::of(connection),
            "disconnected",
            disconnected_body(connection, reason),
        );
    }

    /// Closes the stream `serial` of `connection` when it goes quiet for its idle timeout.
    pub fn watch_stream(&self, connection: &Arc<Connection>, stream_id: String, serial: u64) {
        let sender = self.clone();
        crate::dataplane::stream_end::watch(
            &self.sockets,
            self.shutdown.clone(),
            Arc::downgrade(connection),
            stream_id,
            serial,
            move |delivery| sender.send(&delivery),
        );
    }

    /// Watches the open streams of a session restored here (their idle timeouts).
    pub fn watch_streams(&self, connection: &Arc<Connection>) {
        for (stream_id, serial) in crate::dataplane::stream_end::open_streams(connection) {
            self.watch_stream(connection, stream_id, serial);
        }
    }

    /// Keeps a detached session for `grace`; if no socket resumed it by then
    /// (still at `epoch`), it is removed and the app server told.
    pub fn expire_unless_resumed(
        &self,
        hub: &Arc<Hub>,
        connection: &Arc<Connection>,
        epoch: u64,
        grace: Duration,
    ) {
        let (state, hub, connection) = (self.clone(), Arc::clone(hub), Arc::clone(connection));
        self.sockets.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = state.shutdown.cancelled() => {}
            }
            if connection.still_detached(epoch) && hub.remove(&connection) {
                tracing::debug!(connection_id = %connection.id, "reliable session expired");
                state.departed(&connection, EXPIRED);
            }
        });
    }
}

/// The `disconnected` event's body: the reason, and the connection protocol's own fields.
fn disconnected_body(connection: &Connection, reason: &str) -> serde_json::Value {
    let mut body = serde_json::json!({ "reason": reason });
    if let Some((name, fields)) = connection.protocol.disconnected_fields() {
        body[name] = fields;
    }
    body
}

impl Node for AppState {
    fn hubs(&self) -> &Hubs {
        &self.hubs
    }

    fn answer<'a>(&'a self, question: &'a Question) -> BoxFuture<'a, Answer> {
        Box::pin(self.answer_here(question))
    }

    fn departed(&self, connection: &Connection, reason: &str) {
        AppState::departed(self, connection, reason);
    }

    fn keep_detached(&self, hub: &Arc<Hub>, connection: &Arc<Connection>) {
        self.watch_streams(connection);
        let grace = connection
            .protocol
            .keep_session(true, None, self.client.reconnect_grace)
            .unwrap_or(self.client.reconnect_grace);
        self.expire_unless_resumed(hub, connection, 1, grace);
    }
}

impl axum::extract::FromRequestParts<AppState> for crate::peer::Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, &state.trusted_proxies))
    }
}
