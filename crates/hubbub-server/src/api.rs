//! The data-plane REST API under `/api`: authentication of every hub call, request validation,
//! and status codes exactly as the SDKs expect them (202 for sends).
//!
//! Delivery to WebSocket clients arrives with the client endpoint; until then a send reaches
//! no one, which is what the service does for a hub without connections.

use crate::auth::{bearer_token, verify_rest_token};
use crate::error::{read_body, ApiError};
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use hubbub_proto::keys::KeySlot;

/// Largest accepted message body.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .without_v07_checks()
        .route("/api/health", get(health).head(health))
        .route("/api/hubs/{hub}/:send", post(send_to_all))
        .route("/api/hubs/{hub}/groups/{group}/:send", post(send_to_group))
        .route("/api/hubs/{hub}/users/{user}/:send", post(send_to_user))
        .route(
            "/api/hubs/{hub}/connections/{connection}/:send",
            post(send_to_connection),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such operation")
}

/// A request whose bearer token verified; carries the slot that signed it.
#[derive(Debug, Clone, Copy)]
pub struct RestCaller {
    pub slot: KeySlot,
}

impl FromRequestParts<AppState> for RestCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = bearer_token(header)?;
        let ring = state.keys.current();
        let result = verify_rest_token(
            token,
            &ring,
            &state.endpoints,
            parts.uri.path(),
            state.keys.clock().now_secs(),
            state.token_leeway_secs,
        );
        match result {
            Ok(slot) => {
                state.keys.record_use(slot);
                Ok(RestCaller { slot })
            }
            Err(e) => {
                tracing::debug!(path = parts.uri.path(), reason = %e, "REST request refused");
                Err(e.into())
            }
        }
    }
}

/// How a message body is to be delivered, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Text,
    Json,
    Binary,
}

fn data_type(headers: &HeaderMap) -> Result<DataType, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = value.split(';').next().unwrap_or("").trim();
    match media.to_ascii_lowercase().as_str() {
        "text/plain" => Ok(DataType::Text),
        "application/json" => Ok(DataType::Json),
        "application/octet-stream" => Ok(DataType::Binary),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be text/plain, application/json or application/octet-stream",
        )),
    }
}

/// Hub names: a letter, then up to 127 letters, digits or `` _`,.[] ``.
pub fn validate_hub(hub: &str) -> Result<(), ApiError> {
    let mut chars = hub.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_`,.[]".contains(c));
    if first_ok && rest_ok && hub.len() <= 128 {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidHubName",
            "the hub name must start with a letter and have at most 128 letters, digits or _`,.[] characters",
        ))
    }
}

/// Group names: 1 to 1024 characters, not only whitespace.
pub fn validate_group(group: &str) -> Result<(), ApiError> {
    let len = group.chars().count();
    if (1..=1024).contains(&len) && !group.trim().is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidGroupName",
            "the group name must have 1 to 1024 characters and not be only whitespace",
        ))
    }
}

/// Validates and reads a message: its data type and its bytes.
async fn read_message(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(DataType, axum::body::Bytes), ApiError> {
    let kind = data_type(headers)?;
    let bytes = read_body(body, headers, MAX_MESSAGE_BYTES).await?;
    if kind == DataType::Json && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return Err(ApiError::bad_request(
            "InvalidJson",
            "the body is declared application/json but is not valid JSON",
        ));
    }
    Ok((kind, bytes))
}

async fn send_to_all(
    _caller: RestCaller,
    Path(hub): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    read_message(&headers, body).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn send_to_group(
    _caller: RestCaller,
    Path((hub, group)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_group(&group)?;
    read_message(&headers, body).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn send_to_user(
    _caller: RestCaller,
    Path((hub, _user)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    read_message(&headers, body).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn send_to_connection(
    _caller: RestCaller,
    Path((hub, _connection)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    read_message(&headers, body).await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names() {
        for ok in ["a", "Chat_Hub1", "h`,.[]", &format!("a{}", "b".repeat(127))] {
            assert!(validate_hub(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1hub", "my-hub", "_x", &format!("a{}", "b".repeat(128))] {
            assert!(validate_hub(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names() {
        assert!(validate_group("g 1/x").is_ok());
        assert!(validate_group(&"g".repeat(1024)).is_ok());
        assert!(validate_group("").is_err());
        assert!(validate_group("   ").is_err());
        assert!(validate_group(&"g".repeat(1025)).is_err());
    }
}
