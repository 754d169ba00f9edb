//! `/metrics` in the Prometheus text format, on the admin listener only, through
//! `prometheus-client`: the event families of [`crate::telemetry`], and gauges and counters read
//! from the state at scrape time (keys, hubs, traffic, listeners, the cluster). Every metric name
//! is here or there; labels carry slot, hub and node names and fixed categories, never key
//! material.

use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use hubbub_proto::keys::KeySlot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// One metric and its samples, encoded through the descriptor encoder.
struct Metric<'a, 'e> {
    encoder: &'a mut DescriptorEncoder<'e>,
}

impl Metric<'_, '_> {
    /// A gauge with one sample per label set.
    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, i64)>,
    ) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A counter (named without `_total`, which the encoder adds) with one sample per label set.
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn slot_label(slot: KeySlot) -> Labels {
    vec![("slot", slot.to_string())]
}

fn hub_label(hub: &str) -> Labels {
    vec![("hub", hub.to_string())]
}

/// The metrics read from the state at each scrape.
#[derive(Debug)]
struct StateMetrics(AppState);

impl Collector for StateMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let state = &self.0;
        let mut m = Metric {
            encoder: &mut encoder,
        };
        key_metrics(&mut m, state)?;
        hub_metrics(&mut m, state)?;
        listener_metrics(&mut m, &state.listeners, &client_limits(state))?;
        if let Some(stats) = state.backplane.stats() {
            backplane_metrics(&mut m, &stats)?;
        }
        Ok(())
    }
}

/// Renders every metric.
pub fn render(state: &AppState) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StateMetrics(state.clone())));
    state.telemetry.register(&mut registry);
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "metrics could not be encoded");
    }
    out
}

fn key_metrics(m: &mut Metric, state: &AppState) -> std::fmt::Result {
    let now = state.keys.clock().now_millis();
    let ring = state.keys.current();
    let both = [KeySlot::Primary, KeySlot::Secondary];
    m.gauge(
        "hubbub_key_version",
        "Version of each key slot (bumped by every regeneration).",
        KeySlot::ALL.map(|slot| (slot_label(slot), ring.slot(slot).version as i64)),
    )?;
    m.gauge(
        "hubbub_key_age_seconds",
        "Age of each key.",
        KeySlot::ALL.map(|slot| {
            let age = (now - ring.slot(slot).created_at).max(0) / 1000;
            (slot_label(slot), age)
        }),
    )?;
    m.gauge(
        "hubbub_key_rotation_required",
        "1 when rotation of the key is required.",
        both.map(|slot| {
            let required = ring.requirement(slot).is_some();
            (slot_label(slot), i64::from(required))
        }),
    )?;
    m.gauge(
        "hubbub_key_rotation_deadline_seconds",
        "Unix time by which the key must be rotated.",
        both.iter().filter_map(|&slot| {
            ring.requirement(slot)
                .map(|r| (slot_label(slot), r.deadline / 1000))
        }),
    )?;
    m.gauge(
        "hubbub_key_disabled",
        "1 when the key passed its rotation deadline and no longer authenticates.",
        both.map(|slot| {
            let disabled = ring.disabled(slot, now).is_some();
            (slot_label(slot), i64::from(disabled))
        }),
    )?;
    m.gauge(
        "hubbub_key_retiring",
        "Old values of the key still accepted during a grace period.",
        both.map(|slot| {
            let retiring = ring
                .retiring
                .iter()
                .filter(|k| k.slot == slot && k.until > now)
                .count();
            (slot_label(slot), retiring as i64)
        }),
    )?;
    let usage: Vec<_> = both
        .iter()
        .filter_map(|&slot| state.keys.usage(slot).map(|u| (slot, u)))
        .collect();
    m.counter(
        "hubbub_key_authentications",
        "Things each access key authenticated.",
        usage.iter().flat_map(|(slot, u)| {
            [
                ("rest", u.rest_requests),
                ("connection", u.client_connections),
            ]
            .map(|(kind, count)| {
                (
                    vec![("slot", slot.to_string()), ("kind", kind.to_string())],
                    count,
                )
            })
        }),
    )?;
    m.gauge(
        "hubbub_key_last_used_seconds",
        "Unix time each access key last authenticated something.",
        usage
            .iter()
            .filter_map(|(slot, u)| u.last_used_at.map(|last| (slot_label(*slot), last / 1000))),
    )?;
    m.counter(
        "hubbub_key_stale_authentications",
        "Tokens refused because a regenerated value of the access key signed them (stale callers; see /admin/keys/stale-callers).",
        both.map(|slot| (slot_label(slot), state.keys.stale_callers().refused(slot))),
    )?;
    if let Ok(notices) = state.keys.store().notices() {
        m.gauge(
            "hubbub_notices",
            "Notices about keys by delivery status (the latest 200).",
            ["pending", "sent"].map(|status| {
                let count = notices.iter().filter(|n| n.status == status).count();
                (vec![("status", status.to_string())], count as i64)
            }),
        )?;
    }
    Ok(())
}

/// Connections per hub, and each hub's traffic on this node.
fn hub_metrics(m: &mut Metric, state: &AppState) -> std::fmt::Result {
    let mut hubs = state.hubs.all();
    hubs.sort_by(|a, b| a.name.cmp(&b.name));
    m.gauge(
        "hubbub_connections",
        "Client connections per hub (including reliable sessions waiting to resume).",
        hubs.iter()
            .map(|hub| (hub_label(&hub.name), hub.connection_count() as i64)),
    )?;
    let traffic = state.hubs.traffic().counts();
    m.counter(
        "hubbub_messages_received",
        "Messages this node took to send, by hub and source: rest (the REST API) or client (a client's group message or event).",
        traffic.iter().flat_map(|(hub, t)| {
            [
                ("rest", t.messages_received_rest),
                ("client", t.messages_received_client),
            ]
            .map(|(source, count)| {
                (
                    vec![("hub", hub.to_string()), ("source", source.to_string())],
                    count,
                )
            })
        }),
    )?;
    m.counter(
        "hubbub_messages_delivered",
        "Messages handed to this node's connections (one per connection a message reached), by hub.",
        traffic
            .iter()
            .map(|(hub, t)| (hub_label(hub), t.messages_delivered)),
    )?;
    m.counter(
        "hubbub_bytes_sent",
        "WebSocket payload bytes written to this node's client connections, by hub.",
        traffic
            .iter()
            .map(|(hub, t)| (hub_label(hub), t.bytes_sent)),
    )?;
    m.counter(
        "hubbub_bytes_received",
        "WebSocket payload bytes read from this node's client connections, by hub.",
        traffic
            .iter()
            .map(|(hub, t)| (hub_label(hub), t.bytes_received)),
    )?;
    m.gauge(
        "hubbub_event_handler_problems",
        "Event handler URLs with a current problem.",
        [(Labels::new(), state.upstream.problems().len() as i64)],
    )
}

/// What the per-client limits refused, as (limit, listener, count): joins beyond a connection's
/// group limit and connections beyond a user's (public listener), sign-ins beyond the portal's
/// rate limit (admin listener).
fn client_limits(state: &AppState) -> [(&'static str, &'static str, u64); 11] {
    use std::sync::atomic::Ordering::Relaxed;
    let counts = state.hubs.limit_counts();
    let buffers = state.hubs.connection_limits();
    [
        ("event_queue", "public", counts.event_queue.load(Relaxed)),
        (
            "streams_per_connection",
            "public",
            counts.streams.load(Relaxed),
        ),
        ("group_state", "public", counts.group_state.load(Relaxed)),
        (
            "presence_events",
            "public",
            counts.presence_events.load(Relaxed),
        ),
        (
            "reliable_buffer",
            "public",
            buffers.reliable_buffer_overflows.load(Relaxed),
        ),
        ("outbox", "public", buffers.outbox_overflows.load(Relaxed)),
        (
            "mqtt_packet_size",
            "public",
            counts.mqtt_packet_size.load(Relaxed),
        ),
        (
            "mqtt_connect_timeout",
            "public",
            counts.mqtt_connect_timeout.load(Relaxed),
        ),
        (
            "groups_per_connection",
            "public",
            counts.groups_per_connection.load(Relaxed),
        ),
        (
            "connections_per_user",
            "public",
            counts.connections_per_user.load(Relaxed),
        ),
        ("portal_sign_in", "admin", state.portal.refused_sign_ins()),
    ]
}

/// Open connections per listener and the connections its limits turned away or closed.
fn listener_metrics(
    m: &mut Metric,
    listeners: &crate::listener::Listeners,
    client_limits: &[(&'static str, &'static str, u64)],
) -> std::fmt::Result {
    let both = [("public", &listeners.public), ("admin", &listeners.admin)];
    let listener = |name: &str| vec![("listener", name.to_string())];
    m.gauge(
        "hubbub_http_connections",
        "Open TCP connections per listener (WebSockets included).",
        both.map(|(name, stats)| (listener(name), stats.open() as i64)),
    )?;
    let limit = |limit: &str, name: &str| {
        vec![("limit", limit.to_string()), ("listener", name.to_string())]
    };
    let listener_limits = both.iter().flat_map(|(name, stats)| {
        [
            ("max_connections", stats.refused()),
            ("header_timeout", stats.header_timeouts()),
        ]
        .map(|(which, count)| (limit(which, name), count))
    });
    let client = client_limits
        .iter()
        .map(|(which, name, count)| (limit(which, name), *count));
    m.counter(
        "hubbub_limit_rejections",
        "Connections refused because the listener was full (max_connections), or closed because they did not send request headers in time (header_timeout); joins beyond a connection's group limit (groups_per_connection), connections beyond a user's limit (connections_per_user), user events beyond a connection's queue for the event handler (event_queue), group streams beyond a connection's limit (streams_per_connection), group state larger than a connection may set (group_state), group presence events dropped because too many were waiting (presence_events), reliable connections closed because their recovery buffer overflowed (reliable_buffer), connections closed as too slow to read (outbox), MQTT connections closed for a packet over the size limit (mqtt_packet_size), MQTT sockets closed for sending no CONNECT in time (mqtt_connect_timeout), portal sign-ins beyond the rate limit (portal_sign_in).",
        listener_limits.chain(client),
    )?;
    m.counter(
        "hubbub_http_idle_closed",
        "HTTP keep-alive connections closed after sitting idle (http_idle_timeout_secs).",
        both.map(|(name, stats)| (listener(name), stats.idle_closed())),
    )
}

/// The connection to the other nodes and the messages crossing it (cluster mode).
fn backplane_metrics(m: &mut Metric, stats: &crate::backplane::Stats) -> std::fmt::Result {
    m.gauge(
        "hubbub_cluster_connected",
        "1 while this node's NATS connection is up (key changes need it).",
        [(
            vec![("node", stats.node.to_string())],
            i64::from(stats.connected),
        )],
    )?;
    let direction = |d: &str| vec![("direction", d.to_string())];
    m.counter(
        "hubbub_cluster_messages",
        "Messages forwarded to other nodes (published), taken from them (received), or not forwarded (dropped: the outbox to NATS was full, or a message exceeded NATS's max_payload).",
        [
            ("published", stats.published),
            ("received", stats.received),
            ("dropped", stats.dropped),
        ]
        .map(|(d, count)| (direction(d), count)),
    )?;
    m.counter(
        "hubbub_cluster_bytes",
        "Bytes of the messages this node published to the other nodes and received from them (NATS payloads, headers aside).",
        [
            ("published", stats.published_bytes),
            ("received", stats.received_bytes),
        ]
        .map(|(d, count)| (direction(d), count)),
    )?;
    m.counter(
        "hubbub_cluster_refused",
        "Messages between nodes and values in the cluster's buckets refused because no node with this cluster secret wrote them (unsigned, forged, altered, replayed too late, or sealed with another secret).",
        [
            ("message", stats.refused_messages),
            ("value", stats.refused_values),
        ]
        .map(|(what, count)| (vec![("what", what.to_string())], count)),
    )
}

pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    // Reading notice counts touches SQLite: render on a blocking thread.
    let text = tokio::task::spawn_blocking(move || render(&state))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        text,
    )
}
