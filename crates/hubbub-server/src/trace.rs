//! The live trace: what this node does, as it happens, for `GET /admin/trace` (Server-Sent
//! Events). Connections opened and closed, messages and their fan-out, REST calls, event-handler
//! calls, authentication failures. Events carry
//! names, ids, sizes, codes and reasons, never a payload, a token or a key. Nobody listening
//! costs one atomic load per event site; a listener that falls more than [`BUFFER`] events
//! behind is dropped, never waited for.
//!
//! In a cluster a listener may ask for every node's events (`?cluster=true`): while it listens
//! the backplane tells the other nodes, which then forward their events to it (and only then:
//! nobody asking costs the other nodes nothing).

use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

/// Events a listener may fall behind before it is dropped.
pub const BUFFER: usize = 4096;
/// Listeners at once, on this node.
pub const MAX_LISTENERS: usize = 16;
/// The most of a payload a capturing listener is shown (bytes of text, or of binary data before
/// base64).
pub const MAX_CAPTURED_BYTES: usize = 4096;

/// One thing that happened.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum TraceEvent {
    /// A client connection was made (its session began).
    #[serde(rename_all = "camelCase")]
    ConnectionOpened {
        hub: String,
        connection_id: String,
        user_id: Option<String>,
        /// The subprotocol (`null`: a simple client).
        protocol: Option<String>,
        /// Which key signed its token: `primary`, `secondary`, `salt` (a generated token), or
        /// `null` (anonymous).
        key_slot: Option<String>,
    },
    /// A client connection ended for good.
    #[serde(rename_all = "camelCase")]
    ConnectionClosed {
        hub: String,
        connection_id: String,
        user_id: Option<String>,
        /// `server` (the service closed it, with `code`) or `client`.
        by: &'static str,
        code: Option<u16>,
        reason: String,
        /// The reason's category, as `hubbub_connections_closed_total` counts it (`client`,
        /// `lost`, `rest_close`, `key_revoked`, `slow_client`...).
        cause: &'static str,
    },
    /// A REST call under `/api`.
    #[serde(rename_all = "camelCase")]
    Rest {
        request_id: String,
        method: String,
        /// The path, never the query.
        path: String,
        status: u16,
        ms: f64,
        /// Who the call authenticated as: `primary` or `secondary` (an access key), or
        /// `oidc:<subject>@<issuer>` (an identity); absent when it was refused or needs none.
        #[serde(skip_serializing_if = "Option::is_none")]
        caller: Option<String>,
    },
    /// A message sent on this node (by the REST API, a client or the service), and how many of
    /// this node's connections it was handed to. Never its payload.
    #[serde(rename_all = "camelCase")]
    Message {
        hub: String,
        /// `all`, `group`, `user` or `connection`.
        target: &'static str,
        /// The group, user or connection id (`null` for `all`).
        name: Option<String>,
        /// The connection that sent it, for a client's message.
        from_connection_id: Option<String>,
        data_type: &'static str,
        bytes: usize,
        delivered_here: usize,
    },
    /// A call to an event handler: its status, or why it failed (never its URL or body).
    #[serde(rename_all = "camelCase")]
    EventHandler {
        hub: String,
        connection_id: String,
        /// The event's name (`connect`, `connected`, a user event...).
        name: String,
        status: Option<u16>,
        error: Option<String>,
        ms: f64,
    },
    /// A token or a key refused.
    #[serde(rename_all = "camelCase")]
    AuthFailure {
        /// `rest` or `connection`.
        kind: &'static str,
        hub: Option<String>,
        reason: String,
    },
}

impl TraceEvent {
    /// `connection`, `rest` or `auth`, for filtering.
    pub fn category(&self) -> &'static str {
        match self {
            TraceEvent::ConnectionOpened { .. } | TraceEvent::ConnectionClosed { .. } => {
                "connection"
            }
            TraceEvent::Rest { .. } => "rest",
            TraceEvent::Message { .. } => "message",
            TraceEvent::EventHandler { .. } => "eventHandler",
            TraceEvent::AuthFailure { .. } => "auth",
        }
    }

    fn hub(&self) -> Option<&str> {
        match self {
            TraceEvent::ConnectionOpened { hub, .. }
            | TraceEvent::ConnectionClosed { hub, .. }
            | TraceEvent::Message { hub, .. }
            | TraceEvent::EventHandler { hub, .. } => Some(hub),
            TraceEvent::AuthFailure { hub, .. } => hub.as_deref(),
            TraceEvent::Rest { path, .. } => path
                .strip_prefix("/api/hubs/")
                .and_then(|rest| rest.split('/').next()),
        }
    }

    fn connection_id(&self) -> Option<&str> {
        match self {
            TraceEvent::ConnectionOpened { connection_id, .. }
            | TraceEvent::ConnectionClosed { connection_id, .. }
            | TraceEvent::EventHandler { connection_id, .. } => Some(connection_id),
            TraceEvent::Message {
                from_connection_id, ..
            } => from_connection_id.as_deref(),
            _ => None,
        }
    }

    fn user_id(&self) -> Option<&str> {
        match self {
            TraceEvent::ConnectionOpened { user_id, .. }
            | TraceEvent::ConnectionClosed { user_id, .. } => user_id.as_deref(),
            _ => None,
        }
    }
}

/// An event with when (and, in a cluster, where) it happened, as a listener gets it.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped {
    pub time: String,
    pub category: &'static str,
    /// The node it happened on (cluster mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(flatten)]
    pub event: TraceEvent,
}

/// What a filter looks at in an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub hub: Option<String>,
    pub connection_id: Option<String>,
    pub user_id: Option<String>,
    pub category: String,
}

impl Fields {
    pub fn of(event: &TraceEvent) -> Self {
        Self {
            hub: event.hub().map(str::to_owned),
            connection_id: event.connection_id().map(str::to_owned),
            user_id: event.user_id().map(str::to_owned),
            category: event.category().to_string(),
        }
    }

    /// The same fields of an event another node sent as JSON.
    fn of_json(value: &Value) -> Self {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let hub = text("hub").or_else(|| {
            value
                .get("path")
                .and_then(Value::as_str)
                .and_then(|p| p.strip_prefix("/api/hubs/"))
                .and_then(|rest| rest.split('/').next())
                .map(str::to_owned)
        });
        Self {
            hub,
            connection_id: text("connectionId").or_else(|| text("fromConnectionId")),
            user_id: text("userId"),
            category: text("category").unwrap_or_default(),
        }
    }
}

/// One event as it goes to listeners: its JSON (made once), what filters look at, and whether
/// it happened on this node.
#[derive(Debug)]
pub struct Entry {
    pub json: String,
    /// The same event with its payload, made only while a listener captures its hub's
    /// payloads (this node's messages only; never forwarded to other nodes).
    pub with_payload: Option<String>,
    pub fields: Fields,
    pub local: bool,
}

/// What a listener wants: every given field must match (hubs case-insensitively); `cluster`:
/// every node's events, not only this node's.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceFilter {
    pub hub: Option<String>,
    pub connection_id: Option<String>,
    pub user_id: Option<String>,
    pub category: Option<String>,
    #[serde(default)]
    pub cluster: bool,
    /// Messages with their payloads (needs `hub`: one hub at a time; audited).
    #[serde(default)]
    pub payloads: bool,
}

impl TraceFilter {
    pub fn matches(&self, fields: &Fields) -> bool {
        let hub_ok = self.hub.as_deref().is_none_or(|h| {
            fields
                .hub
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(h))
        });
        hub_ok
            && self
                .connection_id
                .as_deref()
                .is_none_or(|c| fields.connection_id.as_deref() == Some(c))
            && self
                .user_id
                .as_deref()
                .is_none_or(|u| fields.user_id.as_deref() == Some(u))
            && self
                .category
                .as_deref()
                .is_none_or(|c| fields.category == c)
    }
}

/// How long other nodes keep forwarding their events after a node last asked (it asks every
/// [`ASK_EVERY`] while a cluster listener listens).
pub const FORWARD_FOR_MS: i64 = 15_000;
/// How often a node with a cluster listener asks the others for their events.
pub const ASK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The cluster's part: this node's id, where its events go when other nodes want them, and
/// until when they do.
#[derive(Default)]
struct Cluster {
    node: OnceLock<Arc<str>>,
    forward: OnceLock<Box<dyn Fn(String) + Send + Sync>>,
    /// Unix ms until which other nodes want this node's events; 0: nobody.
    wanted_until: AtomicI64,
    /// This node's listeners that want every node's events.
    listeners: AtomicUsize,
    /// Wakes the backplane to ask the other nodes at once when such a listener arrives.
    arrived: tokio::sync::Notify,
}

/// Where events go. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    sender: broadcast::Sender<Arc<Entry>>,
    /// Listeners now (the channel's own count takes a lock; this is one atomic load).
    listeners: Arc<AtomicUsize>,
    cluster: Arc<Cluster>,
    capture: Arc<Capture>,
    clock: Arc<dyn crate::clock::Clock>,
}

/// The hubs whose payloads listeners capture, and how many capture each.
#[derive(Default)]
struct Capture {
    /// Capturing listeners in all (one atomic load when there are none).
    count: AtomicUsize,
    hubs: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Capture {
    fn hubs(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        self.hubs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One listener's events; leaving (dropping it) is counted.
pub struct Listener {
    receiver: broadcast::Receiver<Arc<Entry>>,
    /// Other nodes' events too.
    cluster: bool,
    /// The hub whose payloads this listener captures.
    captures: Option<String>,
    tracer: Tracer,
}

impl Listener {
    /// The JSON this listener is sent for `entry`: with the payload only when it captures.
    pub fn json<'e>(&self, entry: &'e Entry) -> &'e str {
        match (&self.captures, &entry.with_payload) {
            (Some(hub), Some(with_payload))
                if entry
                    .fields
                    .hub
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(hub)) =>
            {
                with_payload
            }
            _ => &entry.json,
        }
    }

    /// The next event for this listener (other nodes' only for a cluster listener).
    pub async fn recv(&mut self) -> Result<Arc<Entry>, broadcast::error::RecvError> {
        loop {
            let entry = self.receiver.recv().await?;
            if entry.local || self.cluster {
                return Ok(entry);
            }
        }
    }

    pub fn try_recv(&mut self) -> Result<Arc<Entry>, broadcast::error::TryRecvError> {
        loop {
            let entry = self.receiver.try_recv()?;
            if entry.local || self.cluster {
                return Ok(entry);
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.tracer.listeners.fetch_sub(1, Ordering::Relaxed);
        if self.cluster {
            self.tracer
                .cluster
                .listeners
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("listeners", &self.listeners.load(Ordering::Relaxed))
            .finish()
    }
}

impl Tracer {
    pub fn new(clock: Arc<dyn crate::clock::Clock>) -> Self {
        Self {
            sender: broadcast::channel(BUFFER).0,
            listeners: Arc::default(),
            cluster: Arc::default(),
            capture: Arc::default(),
            clock,
        }
    }

    /// Whether a listener captures the payloads of hub `hub` (canonical).
    fn capturing(&self, hub: &str) -> bool {
        self.capture.count.load(Ordering::Relaxed) > 0
            && self
                .capture
                .hubs()
                .keys()
                .any(|h| h.eq_ignore_ascii_case(hub))
    }

    /// A delivery's `message` event; with its payload for listeners capturing its hub.
    pub fn message(
        &self,
        delivery: &crate::dataplane::delivery::Delivery,
        here: &crate::dataplane::delivery::Delivered,
    ) {
        if !self.on() {
            return;
        }
        let capture = self.capturing(&delivery.hub);
        self.emit_with(
            || message(delivery, here),
            capture.then(|| payload(&delivery.message)),
        );
    }

    /// Joins a cluster: events carry `node`, and go to `forward` while other nodes want them.
    pub fn join_cluster(&self, node: Arc<str>, forward: Box<dyn Fn(String) + Send + Sync>) {
        let _ = self.cluster.node.set(node);
        let _ = self.cluster.forward.set(forward);
    }

    /// Another node wants this node's events, for [`FORWARD_FOR_MS`] from now.
    pub fn wanted_elsewhere(&self) {
        let until = self.clock.now_millis() + FORWARD_FOR_MS;
        self.cluster
            .wanted_until
            .fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a listener here wants every node's events (then this node asks the others).
    pub fn wants_cluster(&self) -> bool {
        self.cluster.listeners.load(Ordering::Relaxed) > 0
    }

    /// Resolves when a listener of every node's events arrives.
    pub async fn cluster_listener_arrived(&self) {
        self.cluster.arrived.notified().await;
    }

    /// Whether anybody listens, here or on another node (event sites skip building events
    /// otherwise).
    pub fn on(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
            || self.cluster.wanted_until.load(Ordering::Relaxed) > 0
    }

    /// Whether other nodes still want this node's events; forgets them once they stop asking.
    fn forwarding(&self) -> bool {
        let until = self.cluster.wanted_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if self.clock.now_millis() < until {
            return true;
        }
        let _ = self.cluster.wanted_until.compare_exchange(
            until,
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        false
    }

    /// Records an event made by `make`, only when somebody listens.
    pub fn emit(&self, make: impl FnOnce() -> TraceEvent) {
        self.emit_with(make, None);
    }

    /// Records an event, and a copy with `payload`'s fields for capturing listeners.
    fn emit_with(
        &self,
        make: impl FnOnce() -> TraceEvent,
        payload: Option<serde_json::Map<String, Value>>,
    ) {
        if !self.on() {
            return;
        }
        let here = self.listeners.load(Ordering::Relaxed) > 0;
        let elsewhere = self.forwarding();
        if !here && !elsewhere {
            return;
        }
        let event = make();
        let fields = Fields::of(&event);
        let stamped = Stamped {
            time: crate::clock::rfc3339(self.clock.now_millis()),
            category: event.category(),
            node: self.cluster.node.get().map(|n| n.to_string()),
            event,
        };
        let json = serde_json::to_string(&stamped).unwrap_or_default();
        if elsewhere {
            if let Some(forward) = self.cluster.forward.get() {
                forward(json.clone());
            }
        }
        if here {
            let with_payload = payload.and_then(|extra| {
                let mut value = serde_json::to_value(&stamped).ok()?;
                value.as_object_mut()?.extend(extra);
                Some(value.to_string())
            });
            // No receiver left meanwhile: nothing to do.
            let _ = self.sender.send(Arc::new(Entry {
                json,
                with_payload,
                fields,
                local: true,
            }));
        }
    }

    /// An event another node forwarded (its JSON), for this node's cluster listeners.
    pub fn received(&self, json: &[u8]) {
        if !self.wants_cluster() {
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(json) else {
            return;
        };
        let from_here =
            value.get("node").and_then(Value::as_str) == self.cluster.node.get().map(|n| &**n);
        if from_here || !value.is_object() {
            return;
        }
        let _ = self.sender.send(Arc::new(Entry {
            fields: Fields::of_json(&value),
            json: value.to_string(),
            with_payload: None,
            local: false,
        }));
    }

    /// A new listener (of every node's events when `cluster`); `None` when [`MAX_LISTENERS`]
    /// listen already.
    pub fn listen(&self, cluster: bool) -> Option<Listener> {
        self.listen_capturing(cluster, None)
    }

    /// A new listener that also captures the payloads of hub `captures`' messages on this node.
    pub fn listen_capturing(&self, cluster: bool, captures: Option<&str>) -> Option<Listener> {
        self.listeners
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_LISTENERS).then_some(n + 1)
            })
            .ok()?;
        if cluster {
            self.cluster.listeners.fetch_add(1, Ordering::Relaxed);
            self.cluster.arrived.notify_one();
        }
        let captures = captures.map(|hub| hub.to_ascii_lowercase());
        if let Some(hub) = &captures {
            *self.capture.hubs().entry(hub.clone()).or_default() += 1;
            self.capture.count.fetch_add(1, Ordering::Relaxed);
        }
        Some(Listener {
            receiver: self.sender.subscribe(),
            cluster,
            captures,
            tracer: self.clone(),
        })
    }
}

/// A message's payload for a capturing listener: `data` (text as is, anything else in base64),
/// cut to [`MAX_CAPTURED_BYTES`], and `dataTruncated`.
fn payload(message: &crate::dataplane::message::Outgoing) -> serde_json::Map<String, Value> {
    use base64::Engine;
    use hubbub_proto::client_protocol::DataType;
    let data = message.data();
    let (shown, truncated) = if matches!(message.data_type(), DataType::Binary | DataType::Protobuf)
    {
        let end = data.len().min(MAX_CAPTURED_BYTES);
        let shown = base64::engine::general_purpose::STANDARD.encode(&data[..end]);
        (shown, data.len() > end)
    } else {
        let text = String::from_utf8_lossy(data);
        let mut end = text.len().min(MAX_CAPTURED_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        (text[..end].to_string(), text.len() > end)
    };
    let mut fields = serde_json::Map::new();
    fields.insert("data".into(), Value::from(shown));
    fields.insert("dataTruncated".into(), Value::from(truncated));
    fields
}

/// A delivery's `message` event.
fn message(
    delivery: &crate::dataplane::delivery::Delivery,
    here: &crate::dataplane::delivery::Delivered,
) -> TraceEvent {
    use crate::dataplane::delivery::{Delivered, Target};
    let (target, name) = match &delivery.target {
        Target::All => ("all", None),
        Target::Group(group) => ("group", Some(group.clone())),
        Target::User(user) => ("user", Some(user.clone())),
        Target::Connection(id) => ("connection", Some(id.clone())),
    };
    let message = &delivery.message;
    TraceEvent::Message {
        hub: delivery.hub.clone(),
        target,
        name,
        from_connection_id: message.sender.as_deref().map(str::to_owned),
        data_type: message.data_type().as_str(),
        bytes: message.data().len(),
        delivered_here: match here {
            Delivered::Here(count) => *count,
            Delivered::NotHere => 0,
        },
    }
}

/// A connection's `connectionOpened` event.
pub fn opened(connection: &crate::dataplane::connection::Connection) -> TraceEvent {
    TraceEvent::ConnectionOpened {
        hub: connection.hub.to_string(),
        connection_id: connection.id.to_string(),
        user_id: connection.user_id.as_deref().map(str::to_owned),
        protocol: connection.protocol.name().map(str::to_owned),
        key_slot: connection
            .signed_by
            .map(|(slot, _)| slot.to_string().to_ascii_lowercase()),
    }
}

/// A refused token's reason, short and stable: what the trace and the logs say.
pub fn auth_reason(error: &crate::keys::auth::AuthError) -> &'static str {
    use crate::keys::auth::AuthError;
    use hubbub_proto::audience::AudienceError;
    use hubbub_proto::jwt::JwtError;
    match error {
        AuthError::MissingToken => "missing",
        AuthError::NotBearer => "not_bearer",
        AuthError::Token(JwtError::Expired) => "expired",
        AuthError::Token(JwtError::NotYetValid) => "not_yet_valid",
        AuthError::Token(JwtError::BadSignature) => "bad_signature",
        AuthError::Token(JwtError::MissingExpiry) => "missing_expiry",
        AuthError::Token(_) => "malformed",
        AuthError::Audience(AudienceError::WrongHost { .. }) => "audience_host",
        AuthError::Audience(_) => "audience",
        AuthError::RotationRequired { .. } => "disabled_key",
        AuthError::StaleKey { .. } => "stale_key",
        AuthError::LocalAuthDisabled => "local_auth_disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(hub: &str, id: &str, user: Option<&str>) -> TraceEvent {
        TraceEvent::ConnectionOpened {
            hub: hub.into(),
            connection_id: id.into(),
            user_id: user.map(Into::into),
            protocol: None,
            key_slot: Some("primary".into()),
        }
    }

    #[test]
    fn nothing_is_made_without_a_listener_and_a_listener_gets_events_in_order() {
        let tracer = Tracer::new(Arc::new(crate::clock::SystemClock));
        let made = std::cell::Cell::new(0);
        tracer.emit(|| {
            made.set(made.get() + 1);
            opened("h", "c0", None)
        });
        assert_eq!(made.get(), 0, "not even built");
        let mut listener = tracer.listen(false).unwrap();
        for i in 1..=3 {
            tracer.emit(|| opened("h", &format!("c{i}"), None));
        }
        for i in 1..=3 {
            let got = listener.try_recv().unwrap();
            assert_eq!(got.fields.connection_id, Some(format!("c{i}")));
            assert_eq!(got.fields.category, "connection");
            let json: Value = serde_json::from_str(&got.json).unwrap();
            assert_eq!(json["event"], "connectionOpened");
            assert!(json.get("node").is_none(), "no node on a single node");
        }
    }

    #[test]
    fn a_listener_that_falls_behind_is_told_it_lagged_and_the_sender_never_waits() {
        let tracer = Tracer::new(Arc::new(crate::clock::SystemClock));
        let mut listener = tracer.listen(false).unwrap();
        for i in 0..BUFFER + 10 {
            tracer.emit(|| opened("h", &i.to_string(), None));
        }
        assert!(matches!(
            listener.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }

    #[test]
    fn filters_and_the_listener_limit() {
        let filter = TraceFilter {
            hub: Some("Chat".into()),
            user_id: Some("u".into()),
            ..Default::default()
        };
        let fields = |event: TraceEvent| Fields::of(&event);
        assert!(filter.matches(&fields(opened("chat", "c", Some("u")))));
        assert!(!filter.matches(&fields(opened("chat", "c", Some("v")))));
        assert!(!filter.matches(&fields(opened("other", "c", Some("u")))));
        let rest = TraceEvent::Rest {
            request_id: "r".into(),
            method: "POST".into(),
            path: "/api/hubs/chat/:send".into(),
            status: 202,
            ms: 1.0,
            caller: Some("primary".into()),
        };
        let by_hub = TraceFilter {
            hub: Some("chat".into()),
            category: Some("rest".into()),
            ..Default::default()
        };
        // Another node's events are filtered alike, from their JSON.
        let json = |event: TraceEvent| {
            let stamped = Stamped {
                time: String::new(),
                category: event.category(),
                node: Some("b".into()),
                event,
            };
            Fields::of_json(&serde_json::to_value(&stamped).unwrap())
        };
        assert_eq!(json(rest.clone()), fields(rest.clone()));
        assert_eq!(
            json(opened("chat", "c", Some("u"))),
            fields(opened("chat", "c", Some("u")))
        );
        assert!(by_hub.matches(&fields(rest)));
        assert!(!by_hub.matches(&fields(opened("chat", "c", None))));
        let tracer = Tracer::new(Arc::new(crate::clock::SystemClock));
        let listeners: Vec<_> = (0..MAX_LISTENERS)
            .map(|_| tracer.listen(false).unwrap())
            .collect();
        assert!(tracer.listen(true).is_none());
        drop(listeners);
        assert!(tracer.listen(false).is_some());
    }

    #[test]
    fn other_nodes_get_events_only_while_they_ask_and_cluster_listeners_get_theirs() {
        let clock = crate::clock::ManualClock::new(1_000_000);
        let tracer = Tracer::new(clock.clone());
        let forwarded = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&forwarded);
        tracer.join_cluster(
            "a".into(),
            Box::new(move |json| sink.lock().unwrap().push(json)),
        );
        tracer.emit(|| opened("h", "nobody-asked", None));
        assert!(forwarded.lock().unwrap().is_empty());
        tracer.wanted_elsewhere();
        tracer.emit(|| opened("h", "asked", None));
        clock.set_millis(1_000_000 + FORWARD_FOR_MS + 1);
        tracer.emit(|| opened("h", "stopped-asking", None));
        assert!(!tracer.on(), "costs nothing again");
        let sent = forwarded.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        let sent: Value = serde_json::from_str(&sent[0]).unwrap();
        assert_eq!(
            (&sent["connectionId"], &sent["node"]),
            (&Value::from("asked"), &Value::from("a"))
        );

        // A local listener never sees other nodes' events; a cluster listener does, and not its
        // own node's twice.
        let mut local = tracer.listen(false).unwrap();
        tracer.received(br#"{"event":"connectionOpened","hub":"h","connectionId":"b-1","node":"b","category":"connection"}"#);
        assert!(
            local.try_recv().is_err(),
            "nobody wants other nodes' events yet"
        );
        let mut everywhere = tracer.listen(true).unwrap();
        assert!(tracer.wants_cluster());
        tracer.received(br#"{"event":"connectionOpened","hub":"h","connectionId":"b-2","node":"b","category":"connection"}"#);
        tracer.received(br#"{"event":"connectionOpened","hub":"h","connectionId":"a-9","node":"a","category":"connection"}"#);
        tracer.received(b"not json");
        let got = everywhere.try_recv().unwrap();
        assert_eq!(got.fields.connection_id.as_deref(), Some("b-2"));
        assert!(!got.local);
        assert!(everywhere.try_recv().is_err());
        assert!(local.try_recv().is_err());
        drop(everywhere);
        assert!(!tracer.wants_cluster());
    }
}
