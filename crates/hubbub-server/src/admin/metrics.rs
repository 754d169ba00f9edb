//! `/metrics` in the Prometheus text format, on the admin listener only. Every metric name is
//! here; labels carry slot and hub names, never key material.

use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use hubbub_proto::keys::KeySlot;
use std::fmt::Write;

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders every metric from the current state.
pub fn render(state: &AppState) -> String {
    let mut out = String::new();
    let now = state.keys.clock().now_millis();
    let ring = state.keys.current();

    metric(
        &mut out,
        "hubbub_key_version",
        "gauge",
        "Version of each key slot (bumped by every regeneration).",
    );
    for slot in KeySlot::ALL {
        let _ = writeln!(
            out,
            "hubbub_key_version{{slot=\"{slot}\"}} {}",
            ring.slot(slot).version
        );
    }
    metric(
        &mut out,
        "hubbub_key_age_seconds",
        "gauge",
        "Age of each key.",
    );
    for slot in KeySlot::ALL {
        let age = (now - ring.slot(slot).created_at).max(0) / 1000;
        let _ = writeln!(out, "hubbub_key_age_seconds{{slot=\"{slot}\"}} {age}");
    }
    metric(
        &mut out,
        "hubbub_key_rotation_required",
        "gauge",
        "1 when rotation of the key is required.",
    );
    metric(
        &mut out,
        "hubbub_key_rotation_deadline_seconds",
        "gauge",
        "Unix time by which the key must be rotated.",
    );
    metric(
        &mut out,
        "hubbub_key_disabled",
        "gauge",
        "1 when the key passed its rotation deadline and no longer authenticates.",
    );
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        let requirement = ring.requirement(slot);
        let _ = writeln!(
            out,
            "hubbub_key_rotation_required{{slot=\"{slot}\"}} {}",
            u8::from(requirement.is_some())
        );
        if let Some(r) = requirement {
            let _ = writeln!(
                out,
                "hubbub_key_rotation_deadline_seconds{{slot=\"{slot}\"}} {}",
                r.deadline / 1000
            );
        }
        let _ = writeln!(
            out,
            "hubbub_key_disabled{{slot=\"{slot}\"}} {}",
            u8::from(ring.disabled(slot, now).is_some())
        );
    }
    metric(
        &mut out,
        "hubbub_key_retiring",
        "gauge",
        "Old values of the key still accepted during a grace period.",
    );
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        let retiring = ring
            .retiring
            .iter()
            .filter(|k| k.slot == slot && k.until > now)
            .count();
        let _ = writeln!(out, "hubbub_key_retiring{{slot=\"{slot}\"}} {retiring}");
    }
    metric(
        &mut out,
        "hubbub_key_authentications_total",
        "counter",
        "Things each access key authenticated.",
    );
    metric(
        &mut out,
        "hubbub_key_last_used_seconds",
        "gauge",
        "Unix time each access key last authenticated something.",
    );
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        if let Some(usage) = state.keys.usage(slot) {
            let _ = writeln!(
                out,
                "hubbub_key_authentications_total{{slot=\"{slot}\",kind=\"rest\"}} {}",
                usage.rest_requests
            );
            let _ = writeln!(
                out,
                "hubbub_key_authentications_total{{slot=\"{slot}\",kind=\"connection\"}} {}",
                usage.client_connections
            );
            if let Some(last) = usage.last_used_at {
                let _ = writeln!(
                    out,
                    "hubbub_key_last_used_seconds{{slot=\"{slot}\"}} {}",
                    last / 1000
                );
            }
        }
    }
    metric(
        &mut out,
        "hubbub_key_stale_authentications_total",
        "counter",
        "Tokens refused because a regenerated value of the access key signed them (stale callers; see /admin/keys/stale-callers).",
    );
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        let _ = writeln!(
            out,
            "hubbub_key_stale_authentications_total{{slot=\"{slot}\"}} {}",
            state.keys.stale_callers().refused(slot)
        );
    }
    metric(
        &mut out,
        "hubbub_connections",
        "gauge",
        "Client connections per hub (including reliable sessions waiting to resume).",
    );
    for hub in state.hubs.all() {
        let _ = writeln!(
            out,
            "hubbub_connections{{hub=\"{}\"}} {}",
            escape(&hub.name),
            hub.connection_count()
        );
    }
    metric(
        &mut out,
        "hubbub_notices",
        "gauge",
        "Notices about keys by delivery status (the latest 200).",
    );
    if let Ok(notices) = state.keys.store().notices() {
        for status in ["pending", "sent"] {
            let count = notices.iter().filter(|n| n.status == status).count();
            let _ = writeln!(out, "hubbub_notices{{status=\"{status}\"}} {count}");
        }
    }
    metric(
        &mut out,
        "hubbub_event_handler_problems",
        "gauge",
        "Event handler URLs with a current problem.",
    );
    let _ = writeln!(
        out,
        "hubbub_event_handler_problems {}",
        state.upstream.problems().len()
    );
    listener_metrics(&mut out, &state.listeners, &client_limits(state));
    if let Some(stats) = state.backplane.stats() {
        backplane_metrics(&mut out, &stats);
    }
    out
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
    out: &mut String,
    listeners: &crate::listener::Listeners,
    client_limits: &[(&str, &str, u64)],
) {
    let both = [("public", &listeners.public), ("admin", &listeners.admin)];
    metric(
        out,
        "hubbub_http_connections",
        "gauge",
        "Open TCP connections per listener (WebSockets included).",
    );
    for (listener, stats) in both {
        let _ = writeln!(
            out,
            "hubbub_http_connections{{listener=\"{listener}\"}} {}",
            stats.open()
        );
    }
    metric(
        out,
        "hubbub_limit_rejections_total",
        "counter",
        "Connections refused because the listener was full (max_connections), or closed because they did not send request headers in time (header_timeout); joins beyond a connection's group limit (groups_per_connection), connections beyond a user's limit (connections_per_user), user events beyond a connection's queue for the event handler (event_queue), group streams beyond a connection's limit (streams_per_connection), group state larger than a connection may set (group_state), group presence events dropped because too many were waiting (presence_events), reliable connections closed because their recovery buffer overflowed (reliable_buffer), connections closed as too slow to read (outbox), MQTT connections closed for a packet over the size limit (mqtt_packet_size), MQTT sockets closed for sending no CONNECT in time (mqtt_connect_timeout), portal sign-ins beyond the rate limit (portal_sign_in).",
    );
    for (listener, stats) in both {
        for (limit, count) in [
            ("max_connections", stats.refused()),
            ("header_timeout", stats.header_timeouts()),
        ] {
            let _ = writeln!(
                out,
                "hubbub_limit_rejections_total{{limit=\"{limit}\",listener=\"{listener}\"}} {count}"
            );
        }
    }
    for (limit, listener, count) in client_limits {
        let _ = writeln!(
            out,
            "hubbub_limit_rejections_total{{limit=\"{limit}\",listener=\"{listener}\"}} {count}"
        );
    }
    metric(
        out,
        "hubbub_http_idle_closed_total",
        "counter",
        "HTTP keep-alive connections closed after sitting idle (http_idle_timeout_secs).",
    );
    for (listener, stats) in both {
        let _ = writeln!(
            out,
            "hubbub_http_idle_closed_total{{listener=\"{listener}\"}} {}",
            stats.idle_closed()
        );
    }
}

/// The connection to the other nodes and the messages crossing it (cluster mode).
fn backplane_metrics(out: &mut String, stats: &crate::backplane::Stats) {
    metric(
        out,
        "hubbub_cluster_connected",
        "gauge",
        "1 while this node's NATS connection is up (key changes need it).",
    );
    let _ = writeln!(
        out,
        "hubbub_cluster_connected{{node=\"{}\"}} {}",
        escape(&stats.node),
        u8::from(stats.connected)
    );
    metric(
        out,
        "hubbub_cluster_messages_total",
        "counter",
        "Messages forwarded to other nodes (published), taken from them (received), or not forwarded (dropped: the outbox to NATS was full, or a message exceeded NATS's max_payload).",
    );
    for (direction, count) in [
        ("published", stats.published),
        ("received", stats.received),
        ("dropped", stats.dropped),
    ] {
        let _ = writeln!(
            out,
            "hubbub_cluster_messages_total{{direction=\"{direction}\"}} {count}"
        );
    }
    metric(
        out,
        "hubbub_cluster_refused_total",
        "counter",
        "Messages between nodes and values in the cluster's buckets refused because no node with this cluster secret wrote them (unsigned, forged, altered, replayed too late, or sealed with another secret).",
    );
    for (what, count) in [
        ("message", stats.refused_messages),
        ("value", stats.refused_values),
    ] {
        let _ = writeln!(
            out,
            "hubbub_cluster_refused_total{{what=\"{what}\"}} {count}"
        );
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    // Reading notice counts touches SQLite: render on a blocking thread.
    let text = tokio::task::spawn_blocking(move || render(&state))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
