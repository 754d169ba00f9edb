//! Hub settings on the admin listener: `/admin/hubs/{hub}` and the ARM-shaped
//! `.../webPubSub/{name}/hubs/{hub}`, plus the event-handler problems operators should see.

use crate::api::validate_hub;
use crate::backplane::SharedError;
use crate::dataplane::hub::canonical_hub;
use crate::error::{read_body, ApiError};
use crate::state::AppState;
use crate::upstream::hub_settings::HubProperties;
use crate::upstream::HandlerProblem;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

const MAX_HUB_BODY_BYTES: usize = 256 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/hubs", get(list))
        .route("/admin/hubs/{hub}", get(show).put(put).delete(delete))
        .route("/admin/event-handlers", get(problems))
}

#[derive(Serialize)]
pub struct HubView {
    pub name: String,
    pub properties: HubProperties,
}

#[derive(Serialize)]
pub struct HubList {
    pub value: Vec<HubView>,
}

async fn list(State(state): State<AppState>) -> Json<HubList> {
    let value = state
        .hub_settings
        .all()
        .into_iter()
        .map(|(name, properties)| HubView {
            name,
            properties: (*properties).clone(),
        })
        .collect();
    Json(HubList { value })
}

/// A valid hub name from a path, in its canonical (lower-case) form.
pub(crate) fn hub_name(hub: &str) -> Result<String, ApiError> {
    validate_hub(hub)?;
    Ok(canonical_hub(hub))
}

async fn show(
    State(state): State<AppState>,
    Path(hub): Path<String>,
) -> Result<Json<HubView>, ApiError> {
    let name = hub_name(&hub)?;
    let properties = state
        .hub_settings
        .find(&name)
        .ok_or_else(|| ApiError::not_found(format!("hub '{name}' has no settings")))?;
    Ok(Json(HubView {
        name,
        properties: (*properties).clone(),
    }))
}

/// Reads `HubProperties`, bare or wrapped in `{"properties": …}` as ARM sends it.
fn parse_properties(body: &[u8]) -> Result<HubProperties, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("InvalidRequestBody", format!("the body is not JSON: {e}"))
    })?;
    let inner = match value.get("properties") {
        Some(properties) => properties.clone(),
        None => value,
    };
    let properties: HubProperties = serde_json::from_value(inner).map_err(|e| {
        ApiError::bad_request("InvalidHubSettings", format!("invalid hub settings: {e}"))
    })?;
    properties
        .validate()
        .map_err(|e| ApiError::bad_request("InvalidHubSettings", e.0))?;
    Ok(properties)
}

/// The answer to a hub-settings change that did not take effect: 503 while the nodes cannot
/// agree on it, 500 otherwise; nothing was changed either way.
fn not_changed(e: SharedError, what: &str) -> ApiError {
    match e {
        SharedError::Refused(reason) => {
            tracing::warn!(error = %reason, "a hub settings change was refused");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                reason,
            )
        }
        other => {
            tracing::error!(error = %other, "hub settings could not be {what}");
            ApiError::internal(format!(
                "the hub settings could not be {what}; nothing was changed"
            ))
        }
    }
}

async fn store(
    state: &AppState,
    name: String,
    properties: HubProperties,
) -> Result<HubView, ApiError> {
    let now = state.keys.clock().now_millis();
    state
        .backplane
        .put_hub_settings(&state.hub_settings, &name, Some(properties.clone()), now)
        .await
        .map_err(|e| not_changed(e, "stored"))?;
    tracing::info!(hub = %name, "hub settings changed");
    Ok(HubView { name, properties })
}

async fn remove(state: &AppState, name: String) -> Result<(), ApiError> {
    let now = state.keys.clock().now_millis();
    state
        .backplane
        .put_hub_settings(&state.hub_settings, &name, None, now)
        .await
        .map_err(|e| not_changed(e, "deleted"))
}

async fn put(
    State(state): State<AppState>,
    Path(hub): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<HubView>, ApiError> {
    let name = hub_name(&hub)?;
    let body = read_body(body, &headers, MAX_HUB_BODY_BYTES).await?;
    let properties = parse_properties(&body)?;
    Ok(Json(store(&state, name, properties).await?))
}

async fn delete(
    State(state): State<AppState>,
    Path(hub): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&state, hub_name(&hub)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn problems(State(state): State<AppState>) -> Json<Vec<HandlerProblem>> {
    Json(state.upstream.problems())
}

/// `.../webPubSub/{name}/hubs` (list) or `.../webPubSub/{name}/hubs/{hub}`, case-insensitive.
pub fn arm_hub_path(path: &str) -> Option<Option<String>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |s: &str, expected: &str| s.eq_ignore_ascii_case(expected);
    let base_ok = segments.len() >= 9
        && is(segments[0], "subscriptions")
        && is(segments[2], "resourceGroups")
        && is(segments[4], "providers")
        && is(segments[5], "Microsoft.SignalRService")
        && is(segments[6], "webPubSub")
        && is(segments[8], "hubs");
    match (base_ok, segments.len()) {
        (true, 9) => Some(None),
        (true, 10) => Some(Some(segments[9].to_string())),
        _ => None,
    }
}

fn arm_view(path: &str, view: &HubView) -> Value {
    serde_json::json!({
        "id": path.trim_end_matches('/'),
        "name": view.name,
        "type": "Microsoft.SignalRService/WebPubSub/hubs",
        "properties": view.properties,
    })
}

/// The ARM hub operations: GET list, GET/PUT/DELETE one.
pub async fn arm(state: AppState, request: Request, hub: Option<String>) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let result: Result<Response, ApiError> = async {
        match (method, hub) {
            (Method::GET, None) => {
                let value: Vec<Value> = state
                    .hub_settings
                    .all()
                    .into_iter()
                    .map(|(name, p)| {
                        arm_view(
                            &format!("{}/{name}", path.trim_end_matches('/')),
                            &HubView {
                                name: name.clone(),
                                properties: (*p).clone(),
                            },
                        )
                    })
                    .collect();
                Ok(Json(serde_json::json!({ "value": value })).into_response())
            }
            (Method::GET, Some(hub)) => {
                let name = hub_name(&hub)?;
                let properties = state.hub_settings.find(&name).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "ResourceNotFound",
                        format!("hub '{name}' has no settings"),
                    )
                })?;
                Ok(Json(arm_view(
                    &path,
                    &HubView {
                        name,
                        properties: (*properties).clone(),
                    },
                ))
                .into_response())
            }
            (Method::PUT, Some(hub)) => {
                let name = hub_name(&hub)?;
                let body = read_body(request.into_body(), &headers, MAX_HUB_BODY_BYTES).await?;
                let view = store(&state, name, parse_properties(&body)?).await?;
                Ok(Json(arm_view(&path, &view)).into_response())
            }
            (Method::DELETE, Some(hub)) => {
                remove(&state, hub_name(&hub)?).await?;
                Ok(StatusCode::OK.into_response())
            }
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "hubs support GET, PUT and DELETE",
            )),
        }
    }
    .await;
    result.unwrap_or_else(|e| e.into_arm().into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_hub_paths() {
        let base =
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.SignalRService/webPubSub/n/hubs";
        assert_eq!(arm_hub_path(base), Some(None));
        assert_eq!(
            arm_hub_path(&format!("{base}/Chat")),
            Some(Some("Chat".into()))
        );
        assert_eq!(arm_hub_path("/subscriptions/s/resourceGroups/g/providers/Microsoft.SignalRService/webPubSub/n/listKeys"), None);
    }

    #[test]
    fn properties_bare_or_wrapped() {
        let bare =
            br#"{"eventHandlers":[{"urlTemplate":"http://h/{event}","systemEvents":["connect"]}]}"#;
        let wrapped = br#"{"properties":{"eventHandlers":[{"urlTemplate":"http://h/{event}","systemEvents":["connect"]}]}}"#;
        assert_eq!(
            parse_properties(bare).unwrap(),
            parse_properties(wrapped).unwrap()
        );
        assert_eq!(
            parse_properties(br#"{"eventHandlers":[{"urlTemplate":"ftp://x"}]}"#)
                .unwrap_err()
                .code,
            "InvalidHubSettings"
        );
        assert_eq!(
            parse_properties(b"nope").unwrap_err().code,
            "InvalidRequestBody"
        );
        assert_eq!(
            parse_properties(br#"{"anonymousConnectPolicy":"maybe"}"#)
                .unwrap_err()
                .code,
            "InvalidHubSettings"
        );
    }
}
