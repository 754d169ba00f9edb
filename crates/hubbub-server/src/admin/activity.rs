//! What is happening, for the portal: the last hour of traffic and key use (`/admin/history`),
//! and one hub's connections, largest groups, traffic and event handlers
//! (`/admin/hubs/{hub}/status`). This node's view; key use counts every node's.

use crate::clock::rfc3339;
use crate::dataplane::traffic::TrafficCounts;
use crate::error::ApiError;
use crate::history::TrafficPoint;
use crate::state::AppState;
use crate::upstream::hub_settings::HubProperties;
use crate::upstream::HandlerProblem;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use hubbub_proto::keys::KeySlot;
use serde::Serialize;

/// Groups listed on a hub's page.
const LARGEST_GROUPS: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/history", get(history))
        .route("/admin/hubs/{hub}/status", get(hub_status))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryView {
    interval_seconds: u64,
    traffic: Vec<TrafficPoint>,
    key_use: Vec<KeyUsePoint>,
}

/// One minute's uses of each key slot: its current value (every node), and an earlier value in
/// its grace period (this node).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct KeyUsePoint {
    at: String,
    primary: u64,
    secondary: u64,
    primary_retiring: u64,
    secondary_retiring: u64,
}

async fn history(State(state): State<AppState>) -> Json<HistoryView> {
    let now = state.keys.clock().now_millis();
    let traffic = state
        .history
        .points(now, state.connection_count(), state.hubs.traffic().total());
    // Every minute of the last hour, quiet ones as zeros, oldest first.
    let current = now.div_euclid(60_000);
    let mut key_use: Vec<KeyUsePoint> = (current - 59..=current)
        .map(|minute| KeyUsePoint {
            at: rfc3339(minute * 60_000),
            ..Default::default()
        })
        .collect();
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        for (minute, uses, retiring) in state.keys.usage_minutes(slot) {
            let Some(point) = usize::try_from(minute - (current - 59))
                .ok()
                .and_then(|i| key_use.get_mut(i))
            else {
                continue;
            };
            if slot == KeySlot::Primary {
                point.primary += uses;
                point.primary_retiring += retiring;
            } else {
                point.secondary += uses;
                point.secondary_retiring += retiring;
            }
        }
    }
    Json(HistoryView {
        interval_seconds: crate::history::INTERVAL.as_secs(),
        traffic,
        key_use,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HubStatus {
    name: String,
    connections: usize,
    users: usize,
    groups: Vec<GroupSize>,
    traffic: TrafficView,
    /// `null` when the hub has no settings.
    settings: Option<HubProperties>,
    event_handlers: Vec<HandlerStatus>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupSize {
    name: String,
    connections: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TrafficView {
    messages_received: u64,
    messages_delivered: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

impl From<TrafficCounts> for TrafficView {
    fn from(t: TrafficCounts) -> Self {
        Self {
            messages_received: t.messages_received(),
            messages_delivered: t.messages_delivered,
            bytes_received: t.bytes_received,
            bytes_sent: t.bytes_sent,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HandlerStatus {
    url_template: String,
    /// The handler's latest failure, until a call succeeds again.
    problem: Option<HandlerProblem>,
}

async fn hub_status(
    State(state): State<AppState>,
    Path(hub): Path<String>,
) -> Result<Json<HubStatus>, ApiError> {
    let name = crate::admin::hubs::hub_name(&hub)?;
    let (connections, (users, groups)) = match state.hubs.get(&name) {
        Some(live) => (live.connection_count(), live.census(LARGEST_GROUPS)),
        None => (0, (0, Vec::new())),
    };
    let settings = state.hub_settings.find(&name).map(|p| (*p).clone());
    let event_handlers = settings
        .iter()
        .flat_map(|p| &p.event_handlers)
        .map(|handler| HandlerStatus {
            url_template: handler.url_template.clone(),
            problem: state.upstream.problem_of(handler, &name),
        })
        .collect();
    let traffic = state.hubs.traffic().counts_of(&name).unwrap_or_default();
    Ok(Json(HubStatus {
        connections,
        users,
        groups: groups
            .into_iter()
            .map(|(name, connections)| GroupSize { name, connections })
            .collect(),
        traffic: traffic.into(),
        settings,
        event_handlers,
        name,
    }))
}
