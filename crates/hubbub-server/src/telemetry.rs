//! The counters and histograms of events that are not on the message hot path: connections
//! opened and closed, REST calls, refused tokens, event-handler calls. Each is a
//! `prometheus-client` family; `/metrics` registers them (with the gauges read from the state at
//! scrape time) and encodes them in the Prometheus text format. Messages and bytes are counted
//! apart, per hub and per thread ([`crate::dataplane::traffic`]).
//!
//! Every label value is bounded: hub names are capped (see [`crate::dataplane::traffic`]),
//! operations, reasons, outcomes and events come from fixed lists, never from a caller's text.

use crate::dataplane::traffic::{MAX_HUB_LABELS, OTHER_HUBS};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubProtocol {
    pub hub: Arc<str>,
    pub protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubReason {
    pub hub: Arc<str>,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationStatus {
    pub operation: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindReason {
    pub kind: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubEventOutcome {
    pub hub: Arc<str>,
    pub event: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerKind {
    pub issuer: Arc<str>,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubEvent {
    pub hub: Arc<str>,
    pub event: &'static str,
}

/// Histogram buckets in seconds: a REST call or an event-handler call.
#[derive(Debug, Clone, Copy)]
pub struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

const REST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const EVENT_HANDLER_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// This node's event counters.
#[derive(Debug)]
pub struct Telemetry {
    pub connections_opened: Family<HubProtocol, Counter>,
    pub connections_closed: Family<HubReason, Counter>,
    pub rest_requests: Family<OperationStatus, Counter>,
    pub rest_duration: Family<Operation, Histogram, Buckets>,
    pub auth_failures: Family<KindReason, Counter>,
    pub event_handler_requests: Family<HubEventOutcome, Counter>,
    pub event_handler_duration: Family<HubEvent, Histogram, Buckets>,
    pub identity_authentications: Family<IssuerKind, Counter>,
    /// The hub names labels were made for (bounded like the traffic table's).
    hubs: Mutex<HashSet<Arc<str>>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            connections_opened: Family::default(),
            connections_closed: Family::default(),
            rest_requests: Family::default(),
            rest_duration: Family::new_with_constructor(Buckets(REST_BUCKETS)),
            auth_failures: Family::default(),
            event_handler_requests: Family::default(),
            event_handler_duration: Family::new_with_constructor(Buckets(EVENT_HANDLER_BUCKETS)),
            identity_authentications: Family::default(),
            hubs: Mutex::default(),
        }
    }
}

impl Telemetry {
    /// The label of hub `name`: itself, or [`OTHER_HUBS`] once [`MAX_HUB_LABELS`] hubs have one.
    fn hub(&self, name: &str) -> Arc<str> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = hubs.get(name) {
            return Arc::clone(known);
        }
        if hubs.len() >= MAX_HUB_LABELS {
            return OTHER_HUBS.into();
        }
        let label: Arc<str> = name.into();
        hubs.insert(Arc::clone(&label));
        label
    }

    /// A connection began (a new session, not a resumed one).
    pub fn opened(&self, hub: &str, protocol: Option<&'static str>) {
        self.connections_opened
            .get_or_create(&HubProtocol {
                hub: self.hub(hub),
                protocol: protocol.unwrap_or("simple"),
            })
            .inc();
    }

    /// A connection ended for good, for `reason` (a [`close_reason`]).
    pub fn closed(&self, hub: &str, reason: &'static str) {
        self.connections_closed
            .get_or_create(&HubReason {
                hub: self.hub(hub),
                reason,
            })
            .inc();
    }

    /// A REST call answered.
    pub fn rest(&self, operation: &'static str, status: u16, seconds: f64) {
        self.rest_requests
            .get_or_create(&OperationStatus { operation, status })
            .inc();
        self.rest_duration
            .get_or_create(&Operation { operation })
            .observe(seconds);
    }

    /// A call an identity-provider token authenticated (`kind`: `rest` or `admin`); issuers are
    /// the configured ones, so the label is bounded.
    pub fn identity(&self, issuer: &str, kind: &'static str) {
        self.identity_authentications
            .get_or_create(&IssuerKind {
                issuer: issuer.into(),
                kind,
            })
            .inc();
    }

    /// A token or key refused: `kind` is `rest` or `connection`.
    pub fn auth_failure(&self, kind: &'static str, reason: &'static str) {
        self.auth_failures
            .get_or_create(&KindReason { kind, reason })
            .inc();
    }

    /// An event-handler call: `event` as [`event_label`] names it, `outcome` `success`,
    /// `refused` (the handler answered an error status) or `failed` (no answer).
    pub fn event_handler(
        &self,
        hub: &str,
        event: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        let hub = self.hub(hub);
        self.event_handler_requests
            .get_or_create(&HubEventOutcome {
                hub: Arc::clone(&hub),
                event,
                outcome,
            })
            .inc();
        self.event_handler_duration
            .get_or_create(&HubEvent { hub, event })
            .observe(seconds);
    }

    /// Registers every family in `registry` (for one scrape; the registry ends each help text
    /// with a period).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hubbub_connections_opened",
            "Client connections opened (sessions begun), by hub and protocol (the subprotocol: json.webpubsub.azure.v1, json.reliable.webpubsub.azure.v1, protobuf..., mqtt; simple for a client without one)",
            self.connections_opened.clone(),
        );
        registry.register(
            "hubbub_connections_closed",
            "Client connections ended for good, by hub and reason: client (the client closed it), lost (the socket broke, or a reliable session was not resumed in time), rest_close, key_revoked, slow_client, ping_timeout, limit, forbidden, error (a malformed message), event_handler, session_taken_over, shutdown, server",
            self.connections_closed.clone(),
        );
        registry.register(
            "hubbub_rest_requests",
            "REST API calls by operation and HTTP status",
            self.rest_requests.clone(),
        );
        registry.register(
            "hubbub_rest_request_duration_seconds",
            "Time to answer a REST API call, by operation",
            self.rest_duration.clone(),
        );
        registry.register(
            "hubbub_auth_failures",
            "Tokens and keys refused, by kind (rest, connection, identity: an identity-provider token) and reason (missing, not_bearer, expired, not_yet_valid, bad_signature, missing_expiry, malformed, audience, audience_host, disabled_key, stale_key)",
            self.auth_failures.clone(),
        );
        registry.register(
            "hubbub_identity_authentications",
            "Calls identity-provider tokens authenticated, by issuer and kind (rest, admin)",
            self.identity_authentications.clone(),
        );
        registry.register(
            "hubbub_event_handler_requests",
            "Calls to event handlers by hub, event (connect, connected, disconnected, joined, left: group presence, user: every user event) and outcome (success, refused: an error status, failed: no answer)",
            self.event_handler_requests.clone(),
        );
        registry.register(
            "hubbub_event_handler_duration_seconds",
            "Time an event handler took to answer, by hub and event",
            self.event_handler_duration.clone(),
        );
    }
}

/// An event's label: the system events by name, every user event as `user` (their names are the
/// clients' to choose).
pub fn event_label(system: bool, event: &str) -> &'static str {
    match (system, event) {
        (true, "connect") => "connect",
        (true, "connected") => "connected",
        (true, "disconnected") => "disconnected",
        (true, "joined") => "joined",
        (true, "left") => "left",
        (true, _) => "system",
        (false, _) => "user",
    }
}

/// The REST API operation a request is (Azure's operation names), from its method and path;
/// `other` for anything else.
pub fn operation(method: &axum::http::Method, path: &str) -> &'static str {
    use axum::http::Method;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The last segment's action (`:send`), which may arrive percent-encoded (`%3Asend`).
    let action = segments.last().map_or("", |s| {
        s.strip_prefix(':')
            .or_else(|| s.strip_prefix("%3A"))
            .or_else(|| s.strip_prefix("%3a"))
            .unwrap_or("")
    });
    let is = |m: &Method| method == m;
    match segments.as_slice() {
        ["api", "health"] => "health",
        ["api", "hubs", _, rest @ ..] => {
            let shape: Vec<&str> = rest
                .iter()
                .enumerate()
                .map(|(i, s)| if i % 2 == 1 { "*" } else { *s })
                .collect();
            match (shape.as_slice(), action) {
                ([_], "send") => "sendToAll",
                ([_], "closeConnections") => "closeAllConnections",
                ([_], "generateToken") => "generateClientToken",
                ([_], "addToGroups") => "addConnectionsToGroups",
                ([_], "removeFromGroups") => "removeConnectionsFromGroups",
                (["groups", "*", _], "send") => "sendToGroup",
                (["groups", "*", _], "closeConnections") => "closeGroupConnections",
                (["users", "*", _], "send") => "sendToUser",
                (["users", "*", _], "closeConnections") => "closeUserConnections",
                (["connections", "*", _], "send") => "sendToConnection",
                (["connections", "*"], _) if is(&Method::DELETE) => "closeConnection",
                (["connections", "*"], _) => "connectionExists",
                (["connections", "*", "groups"], _) => "removeConnectionFromAllGroups",
                (["groups", "*"], _) => "groupExists",
                (["users", "*"], _) => "userExists",
                (["users", "*", "groups"], _) => "removeUserFromAllGroups",
                (["groups", "*", "connections"], _) => "listConnectionsInGroup",
                (["groups", "*", "connections", "*"], _) if is(&Method::PUT) => {
                    "addConnectionToGroup"
                }
                (["groups", "*", "connections", "*"], _) => "removeConnectionFromGroup",
                (["users", "*", "groups", "*"], _) if is(&Method::PUT) => "addUserToGroup",
                (["users", "*", "groups", "*"], _) => "removeUserFromGroup",
                (["permissions", "*", "connections", "*"], _) if is(&Method::PUT) => {
                    "grantPermission"
                }
                (["permissions", "*", "connections", "*"], _) if is(&Method::DELETE) => {
                    "revokePermission"
                }
                (["permissions", "*", "connections", "*"], _) => "checkPermission",
                _ => "other",
            }
        }
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn rest_paths_name_their_operation() {
        for (method, path, operation_name) in [
            (Method::POST, "/api/hubs/chat/:send", "sendToAll"),
            (Method::POST, "/api/hubs/chat/%3Asend", "sendToAll"),
            (
                Method::POST,
                "/api/hubs/chat/groups/g1/:send",
                "sendToGroup",
            ),
            (Method::POST, "/api/hubs/chat/users/u1/:send", "sendToUser"),
            (
                Method::POST,
                "/api/hubs/chat/connections/c1/:send",
                "sendToConnection",
            ),
            (
                Method::DELETE,
                "/api/hubs/chat/connections/c1",
                "closeConnection",
            ),
            (
                Method::HEAD,
                "/api/hubs/chat/connections/c1",
                "connectionExists",
            ),
            (
                Method::POST,
                "/api/hubs/chat/:closeConnections",
                "closeAllConnections",
            ),
            (
                Method::POST,
                "/api/hubs/chat/groups/g/:closeConnections",
                "closeGroupConnections",
            ),
            (
                Method::POST,
                "/api/hubs/chat/users/u/:closeConnections",
                "closeUserConnections",
            ),
            (
                Method::POST,
                "/api/hubs/chat/:generateToken",
                "generateClientToken",
            ),
            (
                Method::PUT,
                "/api/hubs/chat/groups/g/connections/c",
                "addConnectionToGroup",
            ),
            (
                Method::DELETE,
                "/api/hubs/chat/groups/g/connections/c",
                "removeConnectionFromGroup",
            ),
            (
                Method::PUT,
                "/api/hubs/chat/users/u/groups/g",
                "addUserToGroup",
            ),
            (
                Method::DELETE,
                "/api/hubs/chat/users/u/groups/g",
                "removeUserFromGroup",
            ),
            (
                Method::DELETE,
                "/api/hubs/chat/users/u/groups",
                "removeUserFromAllGroups",
            ),
            (
                Method::DELETE,
                "/api/hubs/chat/connections/c/groups",
                "removeConnectionFromAllGroups",
            ),
            (
                Method::GET,
                "/api/hubs/chat/groups/g/connections",
                "listConnectionsInGroup",
            ),
            (Method::HEAD, "/api/hubs/chat/groups/g", "groupExists"),
            (Method::HEAD, "/api/hubs/chat/users/u", "userExists"),
            (
                Method::PUT,
                "/api/hubs/chat/permissions/sendToGroup/connections/c",
                "grantPermission",
            ),
            (
                Method::DELETE,
                "/api/hubs/chat/permissions/sendToGroup/connections/c",
                "revokePermission",
            ),
            (
                Method::HEAD,
                "/api/hubs/chat/permissions/sendToGroup/connections/c",
                "checkPermission",
            ),
            (
                Method::POST,
                "/api/hubs/chat/:addToGroups",
                "addConnectionsToGroups",
            ),
            (Method::GET, "/api/health", "health"),
            (Method::GET, "/api/nothing/here", "other"),
            (Method::POST, "/api/hubs/chat/a/b/c/d/e/f", "other"),
        ] {
            assert_eq!(operation(&method, path), operation_name, "{method} {path}");
        }
    }

    #[test]
    fn hub_labels_are_bounded() {
        let telemetry = Telemetry::default();
        for i in 0..MAX_HUB_LABELS + 5 {
            telemetry.opened(&format!("hub{i}"), Some("json"));
        }
        let mut registry = Registry::default();
        telemetry.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"hub="_other",protocol="json"} 5"#),
            "{text}"
        );
        assert_eq!(
            text.matches("hubbub_connections_opened_total{").count(),
            MAX_HUB_LABELS + 1
        );
    }
}
