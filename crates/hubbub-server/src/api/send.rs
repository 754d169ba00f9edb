//! The four send operations: to all, to a group, to a user, to a connection. Each checks its
//! request, makes one [`Delivery`] and answers 202.

use super::{
    validate_group, validate_hub, validate_id, QueryParams, RestCaller, MAX_MESSAGE_BYTES,
};
use crate::dataplane::delivery::{Delivery, Target};
use crate::dataplane::filter::Filter;
use crate::dataplane::message::Outgoing;
use crate::error::{read_body, ApiError};
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
    let metadata = crate::upstream::metadata_from(headers)
        .map_err(|reason| ApiError::bad_request("InvalidMetadata", reason))?;
    let message = Outgoing::server(kind, bytes).with_metadata(metadata);
    Ok(match ttl {
        Some(secs) if secs > 0 => message.with_ttl(Duration::from_secs(secs as u64)),
        _ => message,
    })
}

/// The `filter` parameter, parsed (a 400 saying where it is wrong) and as written.
fn filter(query: &QueryParams) -> Result<Option<(Filter, String)>, ApiError> {
    let text = query.one("filter").unwrap_or_default();
    Ok(query.filter()?.map(|filter| (filter, text.to_string())))
}

fn excluded(query: &QueryParams) -> Vec<String> {
    query.excluded().into_iter().map(str::to_owned).collect()
}

pub async fn send_to_all(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path(hub): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    let query = QueryParams::from_uri(&uri);
    let filter = filter(&query)?;
    let message = read_message(&headers, &query, body).await?;
    let delivery = Delivery::new(&hub, Target::All, message)
        .excluding(excluded(&query))
        .filtered(filter);
    state.send_rest(&delivery);
    Ok(StatusCode::ACCEPTED)
}

pub async fn send_to_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, group)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_group(&group)?;
    let query = QueryParams::from_uri(&uri);
    let filter = filter(&query)?;
    let message = read_message(&headers, &query, body)
        .await?
        .into_group(group.as_str().into());
    let delivery = Delivery::new(&hub, Target::Group(group), message)
        .excluding(excluded(&query))
        .filtered(filter);
    state.send_rest(&delivery);
    Ok(StatusCode::ACCEPTED)
}

pub async fn send_to_user(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, user)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_id("user id", &user)?;
    let query = QueryParams::from_uri(&uri);
    let filter = filter(&query)?;
    let message = read_message(&headers, &query, body).await?;
    state.send_rest(&Delivery::new(&hub, Target::User(user), message).filtered(filter));
    Ok(StatusCode::ACCEPTED)
}

/// A connection of another node: straight to the node named in its id; a node that handed its
/// session over passes it on.
pub async fn send_to_connection(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, connection)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_id("connection id", &connection)?;
    let query = QueryParams::from_uri(&uri);
    let message = read_message(&headers, &query, body).await?;
    state.send_rest(&Delivery::new(
        &hub,
        Target::Connection(connection),
        message,
    ));
    Ok(StatusCode::ACCEPTED)
}
