//! The live trace: what this node does, as it happens, for `GET /admin/trace` (Server-Sent
//! Events). Connections opened and closed, messages and their fan-out, REST calls, event-handler
//! calls, authentication failures. Events carry
//! names, ids, sizes, codes and reasons, never a payload, a token or a key. Nobody listening
//! costs one atomic load per event site; a listener that falls more than [`BUFFER`] events
//! behind is dropped, never waited for.

use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events a listener may fall behind before it is dropped.
pub const BUFFER: usize = 4096;
/// Listeners at once, on this node.
pub const MAX_LISTENERS: usize = 16;

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

/// An event with when it happened, as a listener gets it.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped {
    pub time: String,
    pub category: &'static str,
    #[serde(flatten)]
    pub event: TraceEvent,
}

/// What a listener wants: every given field must match (hubs case-insensitively).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceFilter {
    pub hub: Option<String>,
    pub connection_id: Option<String>,
    pub user_id: Option<String>,
    pub category: Option<String>,
}

impl TraceFilter {
    pub fn matches(&self, event: &TraceEvent) -> bool {
        let hub_ok = self
            .hub
            .as_deref()
            .is_none_or(|h| event.hub().is_some_and(|e| e.eq_ignore_ascii_case(h)));
        hub_ok
            && self
                .connection_id
                .as_deref()
                .is_none_or(|c| event.connection_id() == Some(c))
            && self
                .user_id
                .as_deref()
                .is_none_or(|u| event.user_id() == Some(u))
            && self
                .category
                .as_deref()
                .is_none_or(|c| event.category() == c)
    }
}

/// Where events go. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    sender: broadcast::Sender<Arc<Stamped>>,
    /// Listeners now (the channel's own count takes a lock; this is one atomic load).
    listeners: Arc<AtomicUsize>,
    clock: Arc<dyn crate::clock::Clock>,
}

/// One listener's events; leaving (dropping it) is counted.
pub struct Listener {
    receiver: broadcast::Receiver<Arc<Stamped>>,
    listeners: Arc<AtomicUsize>,
}

impl Listener {
    pub async fn recv(&mut self) -> Result<Arc<Stamped>, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    pub fn try_recv(&mut self) -> Result<Arc<Stamped>, broadcast::error::TryRecvError> {
        self.receiver.try_recv()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
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
            clock,
        }
    }

    /// Whether anybody listens (event sites skip building events otherwise).
    pub fn on(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Records an event made by `make`, only when somebody listens.
    pub fn emit(&self, make: impl FnOnce() -> TraceEvent) {
        if !self.on() {
            return;
        }
        let event = make();
        let stamped = Stamped {
            time: crate::clock::rfc3339(self.clock.now_millis()),
            category: event.category(),
            event,
        };
        // No receiver left meanwhile: nothing to do.
        let _ = self.sender.send(Arc::new(stamped));
    }

    /// A new listener; `None` when [`MAX_LISTENERS`] listen already.
    pub fn listen(&self) -> Option<Listener> {
        self.listeners
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_LISTENERS).then_some(n + 1)
            })
            .ok()?;
        Some(Listener {
            receiver: self.sender.subscribe(),
            listeners: Arc::clone(&self.listeners),
        })
    }
}

/// A delivery's `message` event.
pub fn message(
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
        let mut listener = tracer.listen().unwrap();
        for i in 1..=3 {
            tracer.emit(|| opened("h", &format!("c{i}"), None));
        }
        for i in 1..=3 {
            let got = listener.try_recv().unwrap();
            assert_eq!(got.event.connection_id(), Some(format!("c{i}").as_str()));
            assert_eq!(got.category, "connection");
        }
    }

    #[test]
    fn a_listener_that_falls_behind_is_told_it_lagged_and_the_sender_never_waits() {
        let tracer = Tracer::new(Arc::new(crate::clock::SystemClock));
        let mut listener = tracer.listen().unwrap();
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
        assert!(filter.matches(&opened("chat", "c", Some("u"))));
        assert!(!filter.matches(&opened("chat", "c", Some("v"))));
        assert!(!filter.matches(&opened("other", "c", Some("u"))));
        let rest = TraceEvent::Rest {
            request_id: "r".into(),
            method: "POST".into(),
            path: "/api/hubs/chat/:send".into(),
            status: 202,
            ms: 1.0,
        };
        let by_hub = TraceFilter {
            hub: Some("chat".into()),
            category: Some("rest".into()),
            ..Default::default()
        };
        assert!(by_hub.matches(&rest));
        assert!(!by_hub.matches(&opened("chat", "c", None)));
        let tracer = Tracer::new(Arc::new(crate::clock::SystemClock));
        let listeners: Vec<_> = (0..MAX_LISTENERS)
            .map(|_| tracer.listen().unwrap())
            .collect();
        assert!(tracer.listen().is_none());
        drop(listeners);
        assert!(tracer.listen().is_some());
    }
}
