//! `:generateToken`: client access tokens issued by the service, signed with the salt and marked
//! with a `kid`, so regenerating the salt revokes them (and only them).

use super::{existing_hub, validate_group, QueryParams, RestCaller};
use crate::dataplane::hub::canonical_hub;
use crate::error::ApiError;
use crate::keys::auth::SERVICE_KID_PREFIX;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Longest lifetime a generated token may ask for: one year.
const MAX_MINUTES: i64 = 365 * 24 * 60;

#[derive(Serialize)]
pub struct TokenResponse {
    token: String,
}

pub async fn generate(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path(hub): Path<String>,
    uri: Uri,
) -> Result<Json<TokenResponse>, ApiError> {
    existing_hub(&state, &hub)?;
    let query = QueryParams::from_uri(&uri);
    // The client path the token is for: WebSocket clients' or MQTT clients'.
    let client_path = match query.one("clientType") {
        None => "client",
        Some(kind) if kind.eq_ignore_ascii_case("Default") => "client",
        Some(kind) if kind.eq_ignore_ascii_case("MQTT") => "clients/mqtt",
        Some(kind) => {
            return Err(ApiError::bad_request(
                "UnsupportedClientType",
                format!(
                    "clientType '{}' is not supported; Default and MQTT clients are served",
                    kind.chars().take(32).collect::<String>()
                ),
            ))
        }
    };
    let minutes = query
        .number("minutesToExpire", 1..=MAX_MINUTES)?
        .unwrap_or(60);
    let groups: Vec<&str> = query.all("group").collect();
    for group in &groups {
        validate_group(group)?;
    }
    let roles: Vec<&str> = query.all("role").filter(|r| !r.is_empty()).collect();
    let now = state.keys.clock().now_secs();
    let ring = state.keys.current();
    let mut claims = Map::new();
    claims.insert(
        "aud".into(),
        json!(format!(
            "{}/{client_path}/hubs/{}",
            state.primary_endpoint(),
            canonical_hub(&hub)
        )),
    );
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + minutes * 60));
    claims.insert("iss".into(), json!("https://webpubsub.azure.com"));
    if let Some(user) = query.one("userId").filter(|u| !u.is_empty()) {
        claims.insert("sub".into(), json!(user));
    }
    if !roles.is_empty() {
        claims.insert("role".into(), Value::from(roles));
    }
    if !groups.is_empty() {
        claims.insert("webpubsub.group".into(), Value::from(groups));
    }
    let kid = format!("{SERVICE_KID_PREFIX}{}", ring.salt.version);
    let token = hubbub_proto::jwt::sign(&claims, ring.salt.value.expose().as_bytes(), Some(&kid));
    Ok(Json(TokenResponse { token }))
}
