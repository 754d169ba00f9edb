//! The four send operations: to all, to a group, to a user, to a connection. Each answers 202.

use super::{
    existing_hub, validate_group, validate_id, QueryParams, RestCaller, MAX_MESSAGE_BYTES,
};
use crate::backplane::nats::bus::Target;
use crate::error::{read_body, ApiError};
use crate::dataplane::hub::{canonical_hub, Selection};
use crate::dataplane::message::Outgoing;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use bytes::Bytes;
use hubbub_proto::client_protocol::DataType;
use std::time::Duration;

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

/// Reads and checks a message body: its type from Content-Type, UTF-8 for text, valid JSON for
/// JSON, at most 1 MiB; and the optional `messageTtlSeconds` (0-300).
async fn read_message(
    headers: &HeaderMap,
    query: &QueryParams,
    body: axum::body::Body,
) -> Result<Outgoing, ApiError> {
    let kind = data_type(headers)?;
    let ttl = query.number("messageTtlSeconds", 0..=300)?;
    let bytes: Bytes = read_body(body, headers, MAX_MESSAGE_BYTES).await?;
    match kind {
        DataType::Text if std::str::from_utf8(&bytes).is_err() => {
            return Err(ApiError::bad_request(
                "InvalidText",
                "a text/plain body must be UTF-8",
            ));
        }
        DataType::Json if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() => {
            return Err(ApiError::bad_request(
                "InvalidJson",
                "the body is declared application/json but is not valid JSON",
            ));
        }
        _ => {}
    }
    let message = Outgoing::server(kind, bytes);
    Ok(match ttl {
        Some(secs) if secs > 0 => message.with_ttl(Duration::from_secs(secs as u64)),
        _ => message,
    })
}

/// Cluster mode: hands the message to the other nodes (this node has delivered it already).
fn forward(
    state: &AppState,
    hub: &str,
    target: Target<'_>,
    message: &Outgoing,
    query: &QueryParams,
    excluded: &std::collections::HashSet<&str>,
) {
    if let Some(cluster) = &state.cluster {
        cluster.bus.publish(
            &canonical_hub(hub),
            target,
            message,
            excluded,
            query.one("filter"),
        );
    }
}

pub async fn send_to_all(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path(hub_name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let hub = existing_hub(&state, &hub_name)?;
    let query = QueryParams::from_uri(&uri);
    let filter = query.filter()?;
    let message = read_message(&headers, &query, body).await?;
    let excluded = query.excluded();
    if let Some(hub) = hub {
        hub.send_to_all(
            &message,
            &Selection {
                excluded: excluded.clone(),
                filter: filter.as_ref(),
            },
        );
    }
    forward(&state, &hub_name, Target::All, &message, &query, &excluded);
    Ok(StatusCode::ACCEPTED)
}

pub async fn send_to_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub_name, group)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let hub = existing_hub(&state, &hub_name)?;
    validate_group(&group)?;
    let query = QueryParams::from_uri(&uri);
    let filter = query.filter()?;
    let message = read_message(&headers, &query, body)
        .await?
        .into_group(group.as_str().into());
    let excluded = query.excluded();
    if let Some(hub) = hub {
        hub.send_to_group(
            &group,
            &message,
            &Selection {
                excluded: excluded.clone(),
                filter: filter.as_ref(),
            },
        );
    }
    let target = Target::Group(&group);
    forward(&state, &hub_name, target, &message, &query, &excluded);
    Ok(StatusCode::ACCEPTED)
}

pub async fn send_to_user(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub_name, user)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let hub = existing_hub(&state, &hub_name)?;
    validate_id("user id", &user)?;
    let query = QueryParams::from_uri(&uri);
    let filter = query.filter()?;
    let message = read_message(&headers, &query, body).await?;
    if let Some(hub) = hub {
        hub.send_to_user(
            &user,
            &message,
            &Selection {
                excluded: Default::default(),
                filter: filter.as_ref(),
            },
        );
    }
    let target = Target::User(&user);
    forward(
        &state,
        &hub_name,
        target,
        &message,
        &query,
        &Default::default(),
    );
    Ok(StatusCode::ACCEPTED)
}

pub async fn send_to_connection(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub_name, connection)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let hub = existing_hub(&state, &hub_name)?;
    validate_id("connection id", &connection)?;
    let query = QueryParams::from_uri(&uri);
    let message = read_message(&headers, &query, body).await?;
    if hub.is_some_and(|hub| hub.send_to_connection(&connection, &message)) {
        return Ok(StatusCode::ACCEPTED);
    }
    // A connection of another node: straight to the node named in its id (the bus skips this
    // node's ids); a node that handed its session over passes it on.
    let target = Target::Connection(&connection);
    forward(
        &state,
        &hub_name,
        target,
        &message,
        &query,
        &Default::default(),
    );
    Ok(StatusCode::ACCEPTED)
}
